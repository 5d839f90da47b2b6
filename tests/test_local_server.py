"""The local Prefect server as a user runs it: `ragops server start|status|stop`, and the pipeline reporting to it
with its UI links, no warning on stderr, and the runs and artifacts still there after the command ended; beside it
the read-only web server of the reports folder, where the pipeline's report can be opened by URL."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasks.local_server import alive

from .conftest import REPO, copy_small_corpus

pytestmark = pytest.mark.slow
GOLDEN_IDS = {"q023", "q050", "q054", "q057", "q058"}  # questions whose evidence is in the small corpus


def ragops(*args: str, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("ragops")
    return subprocess.run(
        [str(exe), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    """`ragops server start` in a home of its own; stopped (and checked stopped) at the end."""
    root = tmp_path_factory.mktemp("local-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "PREFECT_"))}
    port = free_port()
    env.update(
        RAGOPS_PREFECT_HOME=str(root / "prefect"),
        RAGOPS_PREFECT_SERVER_PORT=str(port),
        RAGOPS_LANCEDB_URI=str(root / "db"),
        RAGOPS_REPORTS_DIR=str(root / "reports"),
        RAGOPS_EMBED_LOCAL_MAX_CHUNKS="100000",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="200",
    )
    started = ragops("server", "start", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"Prefect server started: UI http://127.0.0.1:{port}" in started.stdout
    try:
        yield env, f"http://127.0.0.1:{port}"
    finally:
        state = json.loads((root / "prefect" / "server.json").read_text())
        stopped = ragops("server", "stop", env=env)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        status = ragops("server", "status", env=env)
        assert status.returncode == 1 and "no local Prefect server runs" in status.stdout
        assert not alive(state["reports_pid"])
        with pytest.raises(httpx.ConnectError):
            httpx.get(state["reports_url"], timeout=5)


def test_start_twice_reuses_the_server_and_status_says_where_it_is(server: tuple[dict[str, str], str]) -> None:
    env, url = server
    again = ragops("server", "start", env=env)
    assert again.returncode == 0 and "already running" in again.stdout
    status = ragops("server", "status", env=env)
    assert status.returncode == 0 and f"UI {url}" in status.stdout and "worker running" in status.stdout
    state = json.loads((Path(env["RAGOPS_PREFECT_HOME"]) / "server.json").read_text())
    assert state["url"] == url and httpx.get(f"{url}/api/health", timeout=10).status_code == 200


def test_start_serves_the_reports_folder_read_only_and_status_says_where(server: tuple[dict[str, str], str]) -> None:
    env, url = server
    state = json.loads((Path(env["RAGOPS_PREFECT_HOME"]) / "server.json").read_text())
    reports = Path(env["RAGOPS_REPORTS_DIR"])
    assert state["reports_url"].startswith("http://127.0.0.1:") and state["reports_url"] != url  # (the next port)
    assert state["reports_dir"] == str(reports.resolve()) and reports.is_dir()  # made for it
    (reports / "chunks-v4-0a1b2c3d.html").write_text("<p>PROMOTE</p>", encoding="utf-8")
    page = httpx.get(f"{state['reports_url']}/chunks-v4-0a1b2c3d.html", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text == "<p>PROMOTE</p>"
    assert httpx.get(f"{state['reports_url']}/", timeout=10).status_code == 404  # no listing
    assert httpx.post(f"{state['reports_url']}/chunks-v4-0a1b2c3d.html", timeout=10).status_code == 501

    # the worker's flow runs are told of the folder and its URL
    worker_env = Path(f"/proc/{state['worker_pid']}/environ")
    if worker_env.exists():  # Linux
        told = worker_env.read_bytes().split(b"\0")
        assert f"RAGOPS_REPORTS_URL={state['reports_url']}".encode() in told
        assert f"RAGOPS_REPORTS_DIR={reports.resolve()}".encode() in told

    status = ragops("server", "status", "--json", env=env)
    shown = json.loads(status.stdout)
    assert shown["reports_url"] == state["reports_url"] and shown["reports_running"] is True
    text = ragops("server", "status", env=env)
    assert f"reports: {state['reports_url']} (the folder {reports.resolve()})" in text.stdout


def test_the_pipeline_reports_to_the_local_server_quietly_and_links_its_run(
    server: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    env, url = server
    corpus = copy_small_corpus(tmp_path / "corpus")
    lines = (REPO / "datasets/golden/python-docs.jsonl").read_text().splitlines()
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(x for x in lines if json.loads(x).get("id") in GOLDEN_IDS) + "\n")
    run = ragops("run", str(corpus), "--golden-set", str(golden), env=env)

    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Prefect API: {url}/api (local server; UI {url})" in run.stderr  # said once
    assert run.stderr.count("Prefect API:") == 1
    # no third-party warning, no log line, no traceback: only the API line and the progress bars
    noise = [
        line
        for line in run.stderr.splitlines()
        if line.strip() and not line.startswith("Prefect API:") and not re.search(r"━|\d+/\d+|^\s*$", line)
    ]
    assert not noise, noise
    assert not re.search(r"warn|Traceback|INFO|ERROR", run.stderr, re.IGNORECASE), run.stderr[-3000:]

    # the links it printed lead to this run and its evaluation artifact, still there after the command ended
    flow_run_id = re.search(rf"this run: {re.escape(url)}/runs/flow-run/([0-9a-f-]{{36}})", run.stdout)
    assert flow_run_id, run.stdout[-2000:]
    flow_run = httpx.get(f"{url}/api/flow_runs/{flow_run_id.group(1)}", timeout=30).json()
    assert flow_run["state_type"] == "COMPLETED" and flow_run["name"]
    assert f"artifact evaluation-chunks: {url}/artifacts/key/evaluation-chunks" in run.stdout
    artifact = httpx.get(f"{url}/api/artifacts/evaluation-chunks/latest", timeout=30).json()
    assert artifact["flow_run_id"] is not None and "PROMOTE" in artifact["data"]

    # the HTML report it wrote is served under the reports URL
    report = re.search(r"^report: (.+\.html)$", run.stdout, re.MULTILINE)
    assert report, run.stdout[-2000:]
    reports_url = json.loads((Path(env["RAGOPS_PREFECT_HOME"]) / "server.json").read_text())["reports_url"]
    page = httpx.get(f"{reports_url}/{Path(report.group(1)).name}", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "PROMOTE" in page.text
