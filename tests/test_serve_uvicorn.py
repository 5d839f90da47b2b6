"""`ragops serve` as users run it: a real uvicorn process on loopback, a short concurrent load, a rollback and a
promotion from other processes picked up live, a clean shutdown that writes the query log, and `--workers 2` whose
every /metrics scrape reports the totals over both worker processes."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import lancedb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasks.settings import Settings

from .conftest import REPO
from .processes import free_port, spawn, stop, wait_for_http
from .test_faults_promotion import build_versions, promote

BIN = Path(sys.executable).parent
LIMIT = 24  # RAGOPS_SERVE_LIMIT_CONCURRENCY: above the 8 clients of the load test, each on a new connection
TOKEN = "uvicorn-test-token-0d9e"
QUESTIONS = [
    "How do I keep the packages of two projects apart?",
    "Which module parses TOML documents?",
    "How often is Python released?",
    "How do I activate a virtual environment?",
]


@dataclass
class Served:
    base: str
    root: Path
    env: dict[str, str]
    known: dict[int, frozenset[str]]
    proc: subprocess.Popen[bytes]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def version(self) -> int:
        return int(httpx.get(f"{self.base}/version", headers=self.headers(), timeout=10).json()["version"])


@dataclass
class Tables:
    root: Path
    env: dict[str, str]
    known: dict[int, frozenset[str]]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Tables:
    """Five table versions, the first two promoted in turn, and the environment that serves them."""
    root = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_")}
    env.update(
        RAGOPS_LANCEDB_URI=str(root / "db"),
        RAGOPS_TABLE="chunks",
        RAGOPS_API_TOKEN=TOKEN,
        RAGOPS_SERVE_REFRESH_S="0.5",
        RAGOPS_QUERY_LOG_FLUSH_S="0.5",
        RAGOPS_SERVE_LIMIT_CONCURRENCY=str(LIMIT),
    )
    settings = Settings(_env_file=None, lancedb_uri=str(root / "db"), table="chunks")  # type: ignore[call-arg]
    known = build_versions(settings)
    first, second = sorted(known)[:2]
    promote(settings, first, None)
    promote(settings, second, first)
    return Tables(root, env, known)


@pytest.fixture(scope="module")
def served(tables: Tables) -> Iterator[Served]:
    """`ragops serve` of those tables on a free loopback port."""
    root, env = tables.root, tables.env
    port = free_port()
    proc = spawn([str(BIN / "ragops"), "serve", "--port", str(port)], root / "serve.log", env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/health", proc, root / "serve.log")
    yield Served(base, root, env, tables.known, proc)
    stop([proc])


def test_a_short_concurrent_load_is_served_without_errors(served: Served) -> None:
    # given 8 clients sending 160 queries in all
    def one(i: int) -> tuple[int, float, int]:
        with httpx.Client(headers=served.headers(), timeout=60) as client:
            started = time.perf_counter()
            response = client.post(f"{served.base}/query", json={"question": QUESTIONS[i % len(QUESTIONS)], "k": 3})
            return response.status_code, time.perf_counter() - started, response.json().get("version", -1)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(160)))
    # then every one is answered, from the production version, and the latencies are recorded
    assert [status for status, _, _ in results] == [200] * 160
    assert {version for _, _, version in results} == {served.version()}
    latencies = sorted(seconds for _, seconds, _ in results)
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]
    print(f"loopback load, 8 concurrent: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, 0 errors of 160")
    assert 0 < p50 <= p95
    metrics = httpx.get(f"{served.base}/metrics", headers=served.headers(), timeout=10).text
    assert 'ragops_requests_total{method="POST",route="/query",status="200"} 160.0' in metrics


def test_only_the_promoted_mode_is_served_and_another_is_refused_naming_the_setting(served: Served) -> None:
    # given `ragops serve` of production, promoted in vector mode, without RAGOPS_SERVE_ANY_MODE
    assert "RAGOPS_SERVE_ANY_MODE" not in served.env

    # when a client asks in fulltext mode, then in vector mode by name
    ask = {"question": QUESTIONS[1], "k": 2}
    refused = httpx.post(f"{served.base}/query", json={**ask, "mode": "fulltext"}, headers=served.headers())
    explicit = httpx.post(f"{served.base}/query", json={**ask, "mode": "vector"}, headers=served.headers())

    # then fulltext is a 422 that names both modes and the setting, and vector is answered as gated
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "mode 'fulltext' was not judged by the gate" in detail and "promoted in mode 'vector'" in detail
    assert "RAGOPS_SERVE_ANY_MODE=true" in detail
    assert explicit.status_code == 200, explicit.text
    assert explicit.json()["mode"] == "vector" and explicit.json()["gated"] is True


def test_a_rollback_by_the_cli_and_a_promotion_are_followed_live(served: Served) -> None:
    first, second = sorted(served.known)[:2]
    assert served.version() == second
    # when an operator rolls back from another process
    rolled = subprocess.run(
        [str(BIN / "ragops"), "rollback"], env=served.env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert rolled.returncode == 0, rolled.stderr
    # then the running server serves the previous version, whole, without a restart
    wait_for_version(served, first)
    answer = httpx.post(f"{served.base}/query", json={"question": QUESTIONS[0], "k": 10}, headers=served.headers())
    assert answer.json()["version"] == first
    assert {hit["chunk_id"] for hit in answer.json()["chunks"]} <= served.known[first]
    # and a promotion is followed the same way
    third = sorted(served.known)[2]
    settings = Settings(_env_file=None, lancedb_uri=served.env["RAGOPS_LANCEDB_URI"], table="chunks")  # type: ignore[call-arg]
    promote(settings, third, first)
    wait_for_version(served, third)


def test_beyond_the_concurrency_limit_a_request_is_a_503_at_once(served: Served) -> None:
    # given the server's limit of LIMIT connections and requests (RAGOPS_SERVE_LIMIT_CONCURRENCY), and LIMIT - 1
    # clients holding a keep-alive connection each
    clients = [httpx.Client(base_url=served.base, timeout=30) for _ in range(LIMIT - 1)]
    try:
        for client in clients:
            assert client.get("/health").status_code == 200
        # when one more client asks (its connection is the LIMIT-th)
        refused = httpx.post(f"{served.base}/query", json={"question": QUESTIONS[0]}, headers=served.headers())
    finally:
        for client in clients:
            client.close()
    # then uvicorn refuses it with a 503 without queueing it, and serves it again once the others have gone
    assert refused.status_code == 503, refused.text
    deadline = time.monotonic() + 30
    while (status := httpx.get(f"{served.base}/health", timeout=10).status_code) == 503:
        assert time.monotonic() < deadline, "the server still refuses after the clients closed"
        time.sleep(0.1)
    assert status == 200


def test_the_token_guards_the_routes_and_shutdown_writes_the_query_log(served: Served) -> None:
    assert httpx.get(f"{served.base}/health", timeout=10).status_code == 200
    assert httpx.post(f"{served.base}/query", json={"question": "x"}, timeout=10).status_code == 401
    asked = httpx.post(
        f"{served.base}/query", json={"question": "the last question"}, headers=served.headers(), timeout=30
    )
    assert asked.status_code == 200
    # when the server is stopped (SIGTERM, as an orchestrator does)
    stop([served.proc])
    # uvicorn shuts down gracefully, then re-raises the signal: exit status -15, after the shutdown completed
    assert "Application shutdown complete" in (served.root / "serve.log").read_text()
    # then every answered query is in the log, the last one included, and the token nowhere
    log = lancedb.connect(served.env["RAGOPS_LANCEDB_URI"]).open_table("query_log").to_arrow()
    assert "the last question" in log.column("question").to_pylist()
    assert log.num_rows >= 162
    assert TOKEN not in str(log.to_pylist())


def wait_for_version(served: Served, version: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while served.version() != version:
        assert time.monotonic() < deadline, f"the server still serves {served.version()}, not {version}"
        time.sleep(0.2)


def test_served_queries_export_as_drafts_for_new_evaluation_cases(served: Served) -> None:
    # given the queries the server logged (the earlier tests); when an engineer exports them for review
    drafts_file = served.root / "drafts.jsonl"
    listed = subprocess.run(
        [str(BIN / "ragops"), "queries", "--limit", "5", "--export", str(drafts_file)],
        env={**served.env, "COLUMNS": "200"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    # then the newest five are drafts with the question, the version and the text of what was returned
    drafts = [json.loads(line) for line in drafts_file.read_text().splitlines()]
    assert len(drafts) == 5 and drafts[0]["question"] == "the last question"
    for draft in drafts:
        assert draft["id"].startswith("served-") and draft["version"] in served.known
        assert draft["retrieved"] and all(hit["text"] for hit in draft["retrieved"])
        assert {hit["chunk_id"] for hit in draft["retrieved"]} <= served.known[draft["version"]]
    assert "5 drafts written" in listed.stdout


def test_every_metrics_scrape_of_two_workers_reports_the_totals_of_both(tables: Tables) -> None:
    # given `ragops serve --workers 2` (its own query log table, so the tests above are not affected)
    log = tables.root / "serve-workers.log"
    tmp = tables.root / "tmp"  # where the workers put their shared metrics files
    tmp.mkdir()
    env = {**tables.env, "RAGOPS_QUERY_LOG_TABLE": "query_log_workers", "TMPDIR": str(tmp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    proc = spawn([str(BIN / "ragops"), "serve", "--port", str(port), "--workers", "2"], log, env, cwd=REPO)
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_for_http(f"{base}/health", proc, log)
        deadline = time.monotonic() + 120
        while log.read_text().count("Application startup complete") < 2:  # both workers accept connections
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        version = int(httpx.get(f"{base}/version", headers=headers, timeout=10).json()["version"])

        # when 4 clients send M queries, each on a new connection (so both workers answer some)
        queries = 24

        def ask(i: int) -> int:
            question = {"question": QUESTIONS[i % len(QUESTIONS)], "k": 2}
            return httpx.post(f"{base}/query", json=question, headers=headers, timeout=60).status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(ask, range(queries))) == [200] * queries

        # then every scrape, whichever worker answers it, counts all M queries, and the served version once
        scrapes = [scrape(base, headers) for _ in range(10)]
        assert [answered for answered, _ in scrapes] == [queries] * len(scrapes), scrapes
        assert {versions for _, versions in scrapes} == {(version,)}
    finally:
        stop([proc])
    # and both workers shut down cleanly; the directory they shared is removed with the server
    assert log.read_text().count("Application shutdown complete") == 2
    assert not list(tmp.glob("ragops-metrics-*"))


def test_serving_a_non_loopback_address_without_a_token_is_refused_with_one_error_line(tables: Tables) -> None:
    # given no RAGOPS_API_TOKEN
    env = {k: v for k, v in tables.env.items() if k != "RAGOPS_API_TOKEN"}
    # when `ragops serve` is asked to listen on every interface
    refused = subprocess.run(
        [str(BIN / "ragops"), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env={**env, "COLUMNS": "200"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # then it refuses before serving anything: exit 2, one `error:` line naming the ways out, no traceback
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve on 0.0.0.0"), lines
    assert "RAGOPS_API_TOKEN" in lines[0] and "--insecure" in lines[0]


def scrape(base: str, headers: dict[str, str]) -> tuple[float, tuple[float, ...]]:
    """One /metrics scrape on a new connection: answered queries (all series summed), and the served version(s)."""
    text = httpx.get(f"{base}/metrics", headers=headers, timeout=10).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    answered = sum(
        s.value
        for s in samples
        if s.name == "ragops_requests_total" and s.labels.get("route") == "/query" and s.labels.get("status") == "200"
    )
    return answered, tuple(s.value for s in samples if s.name == "ragops_served_version")
