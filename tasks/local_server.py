"""A local Prefect server (API and UI) with a process worker, kept running in the background for this project.

`ragops server start` starts both with their own Prefect home (database, logs) under `.ragops/prefect`, and records
them in `server.json` there; every `ragops` command that runs a flow then reports to that API, so runs, artifacts and
reports stay in the UI after the command ends. Without one, Prefect's temporary (ephemeral) server is the fallback.

Beside them runs a read-only web server of the reports folder (tasks/report_server.py, at the Prefect port + 1 or a
free one), so that an evaluation artifact links its HTML report by URL: its address is handed to the worker and to
the commands as RAGOPS_REPORTS_URL (a RAGOPS_REPORTS_URL of the user's own wins). The folder served is the
`reports_dir` of `ragops server start`, made absolute; the worker's flow runs write there (RAGOPS_REPORTS_DIR is
handed to them too), and a command whose own `reports_dir` is another folder gets no URL (its artifacts name the file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tasks.errors import RagopsError
from tasks.report_links import is_uri

WORK_POOL = "ragops-process"
EPHEMERAL_STARTUP_TIMEOUT_S = 180  # Prefect's default (20 s) is missed on a busy 2-core machine


class ServerError(RagopsError):
    """The local Prefect server could not be started, reached or stopped."""


@dataclass(frozen=True)
class ServerState:
    """What `server.json` records of a started server."""

    url: str  # http://127.0.0.1:4200 (the API is url + /api, the UI is url)
    pid: int
    worker_pid: int | None
    home: str
    deployed: str = ""  # hash of prefect.yaml when it was last deployed
    reports_url: str = ""  # http://127.0.0.1:4201, where reports_dir is served ("" for none: older state files)
    reports_pid: int | None = None
    reports_dir: str = ""  # the folder served, absolute

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def state_file(home: Path) -> Path:
    return home / "server.json"


def read_state(home: Path) -> ServerState | None:
    """The recorded server, or None."""
    try:
        return ServerState(**json.loads(state_file(home).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_state(state: ServerState) -> None:
    home = Path(state.home)
    home.mkdir(parents=True, exist_ok=True)
    tmp = state_file(home).with_suffix(".tmp")
    tmp.write_text(json.dumps(state.__dict__, indent=2))
    os.replace(tmp, state_file(home))


def healthy(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Prefect API answers its health check at `url` (the server's base URL)."""
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def running(home: Path) -> ServerState | None:
    """The recorded server when it answers, else None."""
    state = read_state(home)
    return state if state is not None and healthy(state.url) else None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def server_env(home: Path, api_url: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the server and worker processes: their own Prefect home, no telemetry."""
    env = {**os.environ, "PREFECT_HOME": str(home.resolve()), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra or {})
    return env


def served_reports_url(state: ServerState, reports_dir: str) -> str:
    """The URL under which the local server serves `reports_dir`, or "" when it serves another folder or none."""
    if not state.reports_url or is_uri(reports_dir) or not alive(state.reports_pid):
        return ""
    return state.reports_url if Path(reports_dir).expanduser().resolve() == Path(state.reports_dir) else ""


def worker_reports_env(state: ServerState, reports_url: str = "") -> dict[str, str]:
    """What the worker's flow runs are told of the reports: the folder served, and its URL (unless `reports_url`,
    the user's own, is set: then that one)."""
    if not state.reports_url:
        return {"RAGOPS_REPORTS_URL": reports_url} if reports_url else {}
    return {"RAGOPS_REPORTS_DIR": state.reports_dir, "RAGOPS_REPORTS_URL": reports_url or state.reports_url}


def start(
    home: Path, port: int, reports_dir: str | None = None, reports_url: str = "", timeout_s: float = 180.0
) -> tuple[ServerState, bool]:
    """Start the server, a worker of the process pool and the reports' web server (or reuse the running ones);
    returns (state, started).

    `reports_dir` is the folder to serve (none when None or an object-store URI); `reports_url`, the user's own
    reports URL if set, is what the worker is handed instead of the served one. A running server keeps its folder
    and the worker its environment: a reports' web server that died is restarted on the folder and port it had (if
    that port was taken since, on another: `ragops server stop` and `start` tell the worker).
    """
    home = home.resolve()
    current = running(home)
    if current is not None:
        state = current
        if reports_dir is not None and not alive(current.reports_pid):
            folder = current.reports_dir or reports_dir  # the folder the worker was told of, if any
            wanted = _port_of(current.reports_url) or _port_of(current.url) + 1
            state = replace(state, **serve_reports(home, folder, wanted))
        if not alive(current.worker_pid):
            state = replace(
                state, worker_pid=_start_worker(home, state.api_url, worker_reports_env(state, reports_url))
            )
        if state != current:
            write_state(state)
        return state, False
    url = f"http://127.0.0.1:{port}"
    if healthy(url):
        raise ServerError(
            f"another Prefect server already answers at {url}: stop it, or choose another port with "
            "RAGOPS_PREFECT_SERVER_PORT (or set PREFECT_API_URL to use that server)"
        )
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "ab")  # noqa: SIM115 (the child keeps it open)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, env=server_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    while not healthy(url, timeout_s=2.0):
        if process.poll() is not None:
            raise ServerError(f"the Prefect server exited with {process.returncode}: see {home / 'server.log'}")
        if time.monotonic() > deadline:
            _terminate(process.pid)
            raise ServerError(f"the Prefect server did not answer within {timeout_s:g} s: see {home / 'server.log'}")
        time.sleep(0.5)
    state = ServerState(url, process.pid, None, str(home))
    try:
        _create_pool(home, state.api_url)
        if reports_dir is not None:
            state = replace(state, **serve_reports(home, reports_dir, port + 1))
    except ServerError:
        _terminate(process.pid)  # no server left running without a state file that names it
        raise
    worker_pid = _start_worker(home, state.api_url, worker_reports_env(state, reports_url))
    state = replace(state, worker_pid=worker_pid)
    write_state(state)
    return state, True


def _create_pool(home: Path, api_url: str) -> None:
    command = [sys.executable, "-m", "prefect", "work-pool", "create", WORK_POOL, "--type", "process"]
    done = subprocess.run(command, env=server_env(home, api_url), capture_output=True, text=True, check=False)
    if done.returncode != 0 and "already exists" not in done.stdout + done.stderr:
        raise ServerError(f"could not create the work pool {WORK_POOL}: {(done.stdout + done.stderr)[-500:]}")


def _start_worker(home: Path, api_url: str, extra_env: dict[str, str]) -> int:
    log = open(home / "worker.log", "ab")  # noqa: SIM115 (the child keeps it open)
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL]
    worker = subprocess.Popen(
        command, env=server_env(home, api_url, extra_env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return worker.pid


def serve_reports(home: Path, reports_dir: str, port: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Start the read-only web server of `reports_dir` (created if missing) on `port`, or a free port when that one
    is taken; returns its fields of the state (none for an object-store folder, which is not served from here)."""
    if is_uri(reports_dir):
        return {}
    folder = Path(reports_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if not (0 < port < 65536 and _port_free(port)):
        port = _any_free_port()
    log = open(home / "reports.log", "ab")  # noqa: SIM115 (the child keeps it open)
    command = [sys.executable, "-m", "tasks.report_server", str(folder), str(port)]
    process = subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parents[1],  # where `tasks` is importable from, installed or not
        env=server_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    see = f"see {home / 'reports.log'}"
    deadline = time.monotonic() + timeout_s
    while not _listening(port) or process.poll() is not None:  # listening, and not some other process that is
        if process.poll() is not None:
            raise ServerError(f"the reports' web server exited with {process.returncode}: {see}")
        if time.monotonic() > deadline:
            _terminate(process.pid)
            raise ServerError(f"the reports' web server did not start within {timeout_s:g} s: {see}")
        time.sleep(0.1)
    return {"reports_url": f"http://127.0.0.1:{port}", "reports_pid": process.pid, "reports_dir": str(folder)}


def _port_of(url: str) -> int:
    """The port of an http://host:port URL; 0 for none."""
    return (urlsplit(url).port or 0) if url else 0


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds (a closed port is free)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def deploy(state: ServerState, project: Path, force: bool = False) -> bool:
    """`prefect deploy --all` of the project's prefect.yaml to the server, unless it is deployed already."""
    digest = hashlib.sha256((project / "prefect.yaml").read_bytes()).hexdigest()[:16]
    if state.deployed == digest and not force:
        return False
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    done = subprocess.run(
        command,
        cwd=project,
        env=server_env(Path(state.home), state.api_url),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ServerError(f"`prefect deploy --all` failed: {(done.stdout + done.stderr)[-800:]}")
    write_state(ServerState(**{**state.__dict__, "deployed": digest}))
    return True


def stop(home: Path, timeout_s: float = 30.0) -> bool:
    """Stop the recorded server, worker and reports' web server; False when none was recorded."""
    state = read_state(home)
    if state is None:
        return False
    for pid in (state.worker_pid, state.reports_pid, state.pid):
        if pid:
            _terminate(pid, timeout_s)
    state_file(home).unlink(missing_ok=True)
    return True


def _terminate(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM the process group (server and its children), SIGKILL after `timeout_s`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    if alive(pid):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def ui_links(state: ServerState, flow_run_id: str | None, artifact_keys: list[str]) -> list[tuple[str, str]]:
    """(what, URL) of the UI pages of a run and its artifacts."""
    links = [("Prefect UI", state.url)]
    if flow_run_id:
        links.append(("this run", f"{state.url}/runs/flow-run/{flow_run_id}"))
    links += [(f"artifact {key}", f"{state.url}/artifacts/key/{key}") for key in artifact_keys]
    return links
