"""What every benchmark shares: the real passages of the bundled sample, timing by medians, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "python-docs"
RESULTS = ROOT / "benchmarks" / "results"


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median wall time of `repeats` calls, every time, and what the last call returned."""
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def machine() -> dict[str, Any]:
    """The machine the figures came from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Save a benchmark's figures as benchmarks/results/NAME.json and print them."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    payload.update(data)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(payload, indent=2))
    return path


def sample_documents() -> list[Any]:
    """Every document of the bundled sample, extracted by the project's own loaders."""
    from tasks.ingest.formats import extract
    from tasks.ingest.sources import discover
    from tasks.schemas import Document
    from tasks.settings import Settings

    settings = Settings()
    found = discover(str(SAMPLE), settings)
    docs = [extract(item, found.fs, settings, found.source) for item in found.items]
    return [d for d in docs if isinstance(d, Document)]


def sample_chunks() -> list[Any]:
    """The bundled sample cut into chunks by the project's chunker, as an ingest would."""
    from tasks.embed import embedding
    from tasks.ingest.chunking import ChunkingConfig, TokenizerCounter, chunk_document
    from tasks.settings import Settings

    settings = Settings()
    spec = embedding.embed_spec(settings)
    counter = TokenizerCounter(embedding.tokenizer(spec))
    config = ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap, embedding.max_content_tokens(spec))
    return [chunk for doc in sample_documents() for chunk in chunk_document(doc, config, counter)]


class Cli:
    """Runs `ragops` commands as fresh processes against one Prefect server, as a deployment would."""

    def __init__(self, api: str, **env: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAGOPS_"))}
        self.env.update(PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1", **env)

    def run(self, *args: str, **env: str) -> float:
        """Wall seconds of `ragops ARGS`, process start-up included."""
        return self.run_script([str(Path(sys.executable).parent / "ragops"), *args], **env)

    def run_script(self, command: list[str], **env: str) -> float:
        """Wall seconds of any command, with this runner's environment."""
        start = time.perf_counter()
        done = subprocess.run(command, env={**self.env, **env}, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return round(time.perf_counter() - start, 2)
