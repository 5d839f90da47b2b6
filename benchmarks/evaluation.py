"""Evaluation speed: seconds per golden question with the offline metrics, model load and process start included.

The bundled sample is ingested and promoted once (`ragops run`); then `ragops evaluate` scores the latest version
and production (the same version here: retrieved once, as any version is, then answered and judged for each side)
in a fresh process against a running Prefect server: the mode sweep, answers, IR metrics, the offline ragas metrics,
Great Expectations and the reports. Medians.

`--baseline PATH`: a checkout of earlier code (e.g. `git worktree add /tmp/eval-before HEAD`) whose `ragops evaluate`
runs in turn with this checkout's, on the same table and server, so both are timed in the same conditions; its runs
and median are recorded beside, with whether it reached the same decision, mode and metrics.

Usage: python benchmarks/evaluation.py [--repeats 3] [--baseline PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import ROOT, SAMPLE, Cli, write_result

from evaluations.golden import load_golden_set
from tasks.settings import Settings

sys.path.insert(0, str(ROOT))
from tests.processes import start_prefect_server, stop


def timed_evaluation(cli: Cli, out: Path, **env: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One `ragops evaluate` in a fresh process: its wall time, decision and mode, and its candidate's metrics."""
    wall = cli.run("evaluate", "--json", str(out), **env)
    result = json.loads(out.read_text())
    metrics = {row["metric"]: row["candidate"] for row in result["metrics"]}
    return {"wall_s": wall, "decision": result["decision"], "mode": result["mode"]}, metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout of earlier code, timed in turn with this one")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ragops-bench-eval-"))
    server, api = start_prefect_server(work / "prefect-home", dict(os.environ))
    runs: list[dict[str, Any]] = []
    baseline_runs: list[dict[str, Any]] = []
    baseline_metrics: list[dict[str, Any]] = []
    try:
        cli = Cli(api, RAGOPS_LANCEDB_URI=str(work / "lancedb"), RAGOPS_REPORTS_DIR=str(work / "reports"))
        setup_s = cli.run("run", str(SAMPLE))
        for i in range(args.repeats):
            if args.baseline is not None:  # the earlier code first, then this one: alternating, same conditions
                old = {"PYTHONPATH": str(args.baseline.resolve())}
                run, found = timed_evaluation(cli, work / f"baseline-{i}.json", **old)
                baseline_runs.append(run)
                baseline_metrics.append(found)
                print("baseline", run, flush=True)
            run, metrics = timed_evaluation(cli, work / f"evaluate-{i}.json")
            runs.append(run)
            print(run, flush=True)
    finally:
        stop([server])
        shutil.rmtree(work, ignore_errors=True)

    questions = len(load_golden_set(Settings().golden_set))
    wall = statistics.median(r["wall_s"] for r in runs)
    result: dict[str, Any] = {
        "questions": questions,
        "versions_scored": 2,
        "setup_run_s": setup_s,
        "runs": runs,
        "median_s": wall,
        "seconds_per_question": round(wall / questions, 3),
        "seconds_for_60_questions": round(wall / questions * 60, 1),
        "metrics": metrics,
    }
    if baseline_runs:
        before = statistics.median(r["wall_s"] for r in baseline_runs)
        same = all(
            (old["decision"], old["mode"], found) == (new["decision"], new["mode"], metrics)
            for old, new, found in zip(baseline_runs, runs, baseline_metrics, strict=True)
        )
        result["baseline"] = {
            "code": str(args.baseline),
            "runs": baseline_runs,
            "median_s": before,
            "same_decision_mode_and_metrics": same,
            "speedup": round(before / wall, 3),
        }
    write_result("evaluation", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
