"""A local Prefect server (API and UI) with a process worker, kept running in the background for this project.

`ragops server start` starts both with their own Prefect home (database, logs) under `.ragops/prefect`, and records
them in `server.json` there; every `ragops` command that runs a flow then reports to that API, so runs, artifacts and
reports stay in the UI after the command ends. Without one, Prefect's temporary (ephemeral) server is the fallback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import RagopsError

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


def server_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of the server and worker processes: their own Prefect home, no telemetry."""
    env = {**os.environ, "PREFECT_HOME": str(home.resolve()), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def start(home: Path, port: int, timeout_s: float = 180.0) -> tuple[ServerState, bool]:
    """Start the server and a worker of the process pool (or reuse the running ones); returns (state, started)."""
    home = home.resolve()
    current = running(home)
    if current is not None:
        if not alive(current.worker_pid):
            current = ServerState(**{**current.__dict__, "worker_pid": _start_worker(home, current.api_url)})
            write_state(current)
        return current, False
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
    _create_pool(home, state.api_url)
    state = ServerState(url, process.pid, _start_worker(home, state.api_url), str(home))
    write_state(state)
    return state, True


def _create_pool(home: Path, api_url: str) -> None:
    command = [sys.executable, "-m", "prefect", "work-pool", "create", WORK_POOL, "--type", "process"]
    done = subprocess.run(command, env=server_env(home, api_url), capture_output=True, text=True, check=False)
    if done.returncode != 0 and "already exists" not in done.stdout + done.stderr:
        raise ServerError(f"could not create the work pool {WORK_POOL}: {(done.stdout + done.stderr)[-500:]}")


def _start_worker(home: Path, api_url: str) -> int:
    log = open(home / "worker.log", "ab")  # noqa: SIM115 (the child keeps it open)
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL]
    worker = subprocess.Popen(
        command, env=server_env(home, api_url), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return worker.pid


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
    """Stop the recorded server and worker; False when none was recorded."""
    state = read_state(home)
    if state is None:
        return False
    for pid in (state.worker_pid, state.pid):
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
