"""Loader fuzzing campaign: the generated inputs of tests/test_loader_fuzz.py by the thousand, per format, with the
worst time and traced memory per case (the figures of RELIABILITY.md's "bad inputs tried" table).

    .venv/bin/python benchmarks/loader_fuzz.py [CASES_PER_FORMAT]   (or RAGOPS_FUZZ_CASES; default 500)

Every case must meet the test's bar (a document or a quarantine reason for each input, memory within the bound);
a failure stops the campaign with hypothesis's minimal example. Time is measured on a second, untraced load.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hypothesis import given, settings

from benchmarks.common import write_result
from tests.test_loader_fuzz import FORMATS, FUZZ, INPUTS, check, load_bytes, warm_up


def campaign(fmt: str, cases: int) -> dict[str, float | int]:
    """Run `cases` generated inputs of one format; counts, worst seconds and worst traced MB."""
    stats: dict[str, float | int] = {"cases": 0, "bytes_max": 0, "worst_seconds": 0.0, "worst_mb": 0.0}

    @settings(FUZZ, max_examples=cases)
    @given(data=INPUTS[fmt])
    def one(data: bytes) -> None:
        peak = check(fmt, data)
        started = time.perf_counter()
        load_bytes(fmt, data)
        seconds = time.perf_counter() - started
        stats["cases"] = int(stats["cases"]) + 1
        stats["bytes_max"] = max(int(stats["bytes_max"]), len(data))
        stats["worst_seconds"] = max(float(stats["worst_seconds"]), seconds)
        stats["worst_mb"] = max(float(stats["worst_mb"]), peak / 1e6)

    one()
    return stats


def main() -> None:
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("RAGOPS_FUZZ_CASES", "500"))
    warm_up()
    rows = {}
    print(f"{'format':<6} {'cases':>6} {'largest input':>14} {'worst time':>11} {'worst memory':>13}")
    for fmt in FORMATS:
        started = time.perf_counter()
        stats = campaign(fmt, cases)
        stats["total_seconds"] = round(time.perf_counter() - started, 1)
        rows[fmt] = stats
        print(
            f"{fmt:<6} {stats['cases']:>6} {stats['bytes_max']:>12} B {stats['worst_seconds']:>9.2f} s "
            f"{stats['worst_mb']:>10.1f} MB",
            flush=True,
        )
    write_result("loader_fuzz", {"cases_per_format": cases, "formats": rows})


if __name__ == "__main__":
    main()
