"""How long quick `ragops` commands take, as a user runs them, against a running local Prefect server.

Each command runs in a fresh process (`python -m flows.cli …` in the checkout measured), `--repeats` times after one
warm-up; the figure is the median wall time. Measured: a no-change `ragops ingest` of the bundled sample, `ragops
versions` and `ragops search` (model load included). The baseline is the same commands on another checkout, in the
same script run (`--baseline PATH`, e.g. a `git worktree` of the commit before a change), so both see the same machine.

    python benchmarks/cli_latency.py --baseline /tmp/before   # measures /tmp/before, then this checkout
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, SAMPLE, write_result

COMMANDS = {
    "ingest (no change)": ["ingest", str(SAMPLE)],
    "versions": ["versions"],
    "search": ["search", "how do I create a virtual environment", "--k", "5"],
}
BARS = {"ingest (no change)": 3.0, "versions": 1.0, "search": 2.0}
IMPORTS = ["prefect", "lancedb", "lance", "distributed"]


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise RuntimeError("the Prefect server did not start")


def timed(repo: Path, args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=repo, env=env, capture_output=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed in {repo}: {done.stderr.decode()[-1500:]}")
    return elapsed


def import_seconds(module: str, repeats: int) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(repeats)]
    return round(statistics.median(runs), 3)


def measure(repo: Path, work: Path, api_url: str, repeats: int) -> dict[str, Any]:
    """Median wall seconds of each command run from `repo`, on a table of its own."""
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "RAGOPS_LANCEDB_URI": str(work / "lancedb"),
        "RAGOPS_PREFECT_HOME": str(work / "no-local-server"),  # the API is given: no local-server lookup
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    timed(repo, ["ingest", str(SAMPLE)], env)  # the table, once (not timed)
    figures: dict[str, Any] = {}
    for name, args in COMMANDS.items():
        timed(repo, args, env)  # warm-up: file caches, the compiled-model cache
        runs = [round(timed(repo, args, env), 3) for _ in range(repeats)]
        figures[name] = {"median_s": round(statistics.median(runs), 3), "runs_s": runs}
        print(f"{repo}: {name}: median {figures[name]['median_s']} s {runs}", flush=True)
    return figures


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512", "amx", "avx2")))
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to measure first (e.g. the commit before)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--port", type=int, default=4391)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragops-cli-bench-"))
    server = start_server(work / "prefect", options.port)
    try:
        api_url = f"http://127.0.0.1:{options.port}/api"
        results: dict[str, Any] = {}
        if options.baseline:
            results["before"] = measure(options.baseline.resolve(), work / "before", api_url, options.repeats)
        results["after"] = measure(ROOT, work / "after", api_url, options.repeats)
        imports = {module: import_seconds(module, options.repeats) for module in IMPORTS}
        load = os.getloadavg()
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    write_result(
        "cli_latency",
        {
            "repeats": options.repeats,
            "cpu_flags": cpu_flags(),
            "load_average_after": [round(x, 2) for x in load],
            "bars_s": BARS,
            "commands": {name: " ".join(["ragops", *args]) for name, args in COMMANDS.items()},
            "import_s": imports,
            **results,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
