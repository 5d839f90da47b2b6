"""Serving latency: `ragops serve` (real uvicorn, loopback) on the bundled sample, at several client concurrencies.

The sample is ingested by `ragops ingest` and its version tagged production. The baseline is the same search in
this process (`tasks.serve.retrieval.search`, query embedding included, sequential): the ratio of served to
direct p50 is what HTTP, validation, metrics and the query log add. Then N requests per concurrency level
go through httpx clients in threads; latency is measured at the client.

Overload: the same burst (--overload-clients clients, each request on a new connection, as independent callers
arrive) against a server with RAGOPS_SERVE_LIMIT_CONCURRENCY=--overload-limit and against one without a limit (0).
With the limit, uvicorn answers the excess with an immediate 503; without it, every request queues. Reported: the
share of 503s and the p99 latency of each run, and the ratio of the p99s (limit off / on).

Usage: python benchmarks/serve_load.py [--requests 400] [--concurrency 1 4 16] [--overload-clients 96]
       [--overload-limit 16] [--overload-requests 600]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from common import RESULTS, ROOT, SAMPLE, Cli, percentile, write_result

from evaluations.golden import load_golden_set
from evaluations.promotion import record_decision
from tasks.embed import embedding
from tasks.serve import retrieval
from tasks.settings import Settings
from tasks.store import lancedb_store
from tasks.store.backends import open_store

sys.path.insert(0, str(ROOT))
from tests.processes import free_port, spawn, start_prefect_server, stop, wait_for_port

MODE = "hybrid"
K = 5


def summarize(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def promote_latest(settings: Settings) -> int:
    store = open_store(settings)
    version = store.latest_version()
    decision = {"decision": "promote", "reasons": ["benchmark"]}
    record_decision(
        store,
        settings,
        version=version,
        production_version=None,
        mode=MODE,
        decision=decision,
        metrics={},
        policy_hash="",
        run_id="bench",
        trigger="benchmark",
        report="",
    )
    return version


def direct_latencies(settings: Settings, questions: list[str]) -> list[float]:
    """The baseline: the same searches in this process, one at a time."""
    spec = embedding.embed_spec(settings)
    table = open_store(settings).at("production")
    ann = retrieval.AnnQuery.from_settings(settings)
    retrieval.search(table, questions[0], spec, mode=MODE, k=K, ann=ann, similarity=True)  # warm up
    times = []
    for question in questions:
        start = time.perf_counter()
        retrieval.search(table, question, spec, mode=MODE, k=K, ann=ann, similarity=True)
        times.append(time.perf_counter() - start)
    return times


def load(base: str, questions: list[str], requests: int, concurrency: int) -> dict[str, Any]:
    """`requests` queries from `concurrency` clients; latency at the client, errors counted."""

    def one(i: int) -> tuple[float, int]:
        client = clients[i % concurrency]
        start = time.perf_counter()
        try:
            status = client.post("/query", json={"question": questions[i % len(questions)], "k": K}).status_code
        except httpx.HTTPError:
            status = 0
        return time.perf_counter() - start, status

    clients = [httpx.Client(base_url=base, timeout=60) for _ in range(concurrency)]
    try:
        one(0)  # connect
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    finally:
        for client in clients:
            client.close()
    errors = sum(1 for _, status in results if status != 200)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": errors,
        "throughput_rps": round(requests / wall, 1),
        **summarize([seconds for seconds, _ in results]),
    }


def overload(base: str, questions: list[str], requests: int, clients: int) -> dict[str, Any]:
    """`requests` queries from `clients` threads, each on a new connection; 503s counted, latency of all."""

    def one(i: int) -> tuple[float, int]:
        start = time.perf_counter()
        try:
            body = {"question": questions[i % len(questions)], "k": K}
            status = httpx.post(f"{base}/query", json=body, timeout=300).status_code
        except httpx.HTTPError:
            status = 0
        return time.perf_counter() - start, status

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    statuses = [status for _, status in results]
    answered = [seconds for seconds, status in results if status == 200]
    return {
        "clients": clients,
        "requests": requests,
        "answered": len(answered),
        "refused_503": statuses.count(503),
        "share_503": round(statuses.count(503) / requests, 3),
        "other_errors": sum(1 for status in statuses if status not in (200, 503)),
        "wall_s": round(wall, 1),
        "all": summarize([seconds for seconds, _ in results]),
        "answered_latency": summarize(answered) if answered else None,
    }


def start_server(root: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], str]:
    """`ragops serve` on a free loopback port, once /health says it serves production."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "ragops"), "serve", "--port", str(port), "--log-level", "warning"]
    proc = spawn(command, root / f"{name}.log", env)
    wait_for_port(port, timeout=120)
    base = f"http://127.0.0.1:{port}"
    while httpx.get(f"{base}/health", timeout=5).status_code != 200:
        time.sleep(0.5)
    return proc, base


def plot(levels: list[dict[str, Any]], direct: dict[str, float]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    x = [level["concurrency"] for level in levels]
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
        ax.plot(x, [level[key] for level in levels], style, label=f"served {key[:-3]}")
    ax.axhline(direct["p50_ms"], color="grey", linewidth=1, label="direct search p50")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(c) for c in x])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency (ms)")
    ax.set_title("ragops serve on loopback, bundled sample, hybrid k=5", fontsize=9)
    ax.legend(fontsize=7)
    path = RESULTS / "serve_latency.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--overload-clients", type=int, default=96)
    parser.add_argument("--overload-limit", type=int, default=16)
    parser.add_argument("--overload-requests", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server_proc, api = start_prefect_server(root / "prefect", Cli("").env)
        cli = Cli(api, RAGOPS_LANCEDB_URI=str(root / "db"), RAGOPS_REPORTS_DIR=str(root / "reports"))
        procs: list[subprocess.Popen[bytes]] = [server_proc]
        try:
            ingest_s = cli.run("ingest", str(SAMPLE))
            settings = Settings(_env_file=None, lancedb_uri=str(root / "db"))  # type: ignore[call-arg]
            version = promote_latest(settings)
            rows = lancedb_store.connect(settings).open_table(settings.table).count_rows()
            questions = [q.question for q in load_golden_set(ROOT / settings.golden_set)]
            direct = summarize(direct_latencies(settings, questions * 3))
            server, base = start_server(root, cli.env | cli_env(root), "serve")
            procs.append(server)
            levels = [load(base, questions, args.requests, c) for c in args.concurrency]
            stop(procs[1:])
            del procs[1:]
            overloads = {}
            for label, limit in (("limit_on", args.overload_limit), ("limit_off", 0)):
                env = cli.env | cli_env(root) | {"RAGOPS_SERVE_LIMIT_CONCURRENCY": str(limit)}
                server, base = start_server(root, env, f"serve-{label}")
                procs.append(server)
                overloads[label] = {
                    "limit": limit,
                    **overload(base, questions, args.overload_requests, args.overload_clients),
                }
                stop(procs[1:])
                del procs[1:]
        finally:
            stop(procs[1:])
            stop(procs[:1])
        logged = lancedb_store.connect(settings).open_table("query_log").count_rows()  # written at shutdown
        picture = plot(levels, direct)
    sequential = next((level for level in levels if level["concurrency"] == 1), levels[0])
    write_result(
        "serve_load",
        {
            "table_rows": rows,
            "version": version,
            "mode": MODE,
            "k": K,
            "ingest_s": ingest_s,
            "direct": direct,
            "levels": levels,
            "served_over_direct_p50": round(sequential["p50_ms"] / direct["p50_ms"], 2),
            "errors": sum(level["errors"] for level in levels),
            "queries_logged": logged,
            "overload": overloads,
            "overload_p99_off_over_on": round(
                overloads["limit_off"]["all"]["p99_ms"] / overloads["limit_on"]["all"]["p99_ms"], 1
            ),
            "plot": str(picture.relative_to(ROOT)),
        },
    )
    return 0


def cli_env(root: Path) -> dict[str, str]:
    return {"RAGOPS_LANCEDB_URI": str(root / "db"), "RAGOPS_QUERY_LOG_FLUSH_S": "1"}


if __name__ == "__main__":
    raise SystemExit(main())
