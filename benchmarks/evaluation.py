"""Evaluation speed: seconds per golden question with the offline metrics, model load and process start included.

The bundled sample is ingested and promoted once (`ragops run`); then `ragops evaluate` scores the latest version
and production (the same version here, each scored in full) in a fresh process against a running Prefect server:
the mode sweep, answers, IR metrics, the offline ragas metrics, Great Expectations and the reports. Medians.

Usage: python benchmarks/evaluation.py [--repeats 3]
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

from common import ROOT, SAMPLE, Cli, write_result

from evaluations.golden import load_golden_set
from tasks.settings import Settings

sys.path.insert(0, str(ROOT))
from tests.processes import start_prefect_server, stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ragops-bench-eval-"))
    server, api = start_prefect_server(work / "prefect-home", dict(os.environ))
    try:
        cli = Cli(api, RAGOPS_LANCEDB_URI=str(work / "lancedb"), RAGOPS_REPORTS_DIR=str(work / "reports"))
        setup_s = cli.run("run", str(SAMPLE))
        runs = []
        for i in range(args.repeats):
            out = work / f"evaluate-{i}.json"
            wall = cli.run("evaluate", "--json", str(out))
            result = json.loads(out.read_text())
            runs.append({"wall_s": wall, "decision": result["decision"], "mode": result["mode"]})
            print(runs[-1], flush=True)
        metrics = {row["metric"]: row["candidate"] for row in result["metrics"]}
    finally:
        stop([server])
        shutil.rmtree(work, ignore_errors=True)

    questions = len(load_golden_set(Settings().golden_set))
    wall = statistics.median(r["wall_s"] for r in runs)
    write_result(
        "evaluation",
        {
            "questions": questions,
            "versions_scored": 2,
            "setup_run_s": setup_s,
            "runs": runs,
            "median_s": wall,
            "seconds_per_question": round(wall / questions, 3),
            "seconds_for_60_questions": round(wall / questions * 60, 1),
            "metrics": metrics,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
