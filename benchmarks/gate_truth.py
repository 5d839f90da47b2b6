"""The true change of candidates whose evidence chunks were deleted, on every golden question.

`prepare` leaves out a question whose passage is no longer verbatim in its document's merged chunks, and a document
that lost a chunk holding the passage is such a document: the questions whose evidence was deleted are left out as
"stale", and the candidate is judged on the questions it did not harm. The truth is measured here on all questions:
the candidate and production scored by `score_table` with production's evidence as the shared ideal units (the
candidate's chunks are a subset of production's).

Usage: python benchmarks/gate_truth.py --corpus sample --out truth-sample.json, then
       gate_calibration.py --merge ... --truth sample=truth-sample.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]
import gate_calibration as gc  # noqa: E402  (sets the paths and environment)

from evaluations.scoring import reference_chunks  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="scenario name → true Δ on all questions (JSON)")
    parser.add_argument("--corpus", choices=["sample", "packages"], required=True)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ragops-gate-calibration")
    args = parser.parse_args()
    packages = gc.write_package_corpus(args.cache / "packages-corpus")
    source = gc.SAMPLE if args.corpus == "sample" else packages
    store = gc.cached_store(args.corpus, source, args.cache)
    golden = gc.SAMPLE_GOLDEN if args.corpus == "sample" else store.parent / "golden-60.jsonl"
    work = Path(tempfile.mkdtemp(prefix="ragops-gatetruth-"))
    shutil.copytree(store, work / "lancedb")
    settings = gc.Settings().model_copy(update={"lancedb_uri": str(work / "lancedb"), "table": "chunks"})
    policy, _ = gc.load_policy(gc.POLICY)
    questions = [q for q in gc.read_golden_set(golden).questions if getattr(q, "status", None) != "draft"]
    production = int(gc.open_latest(settings).version)
    other = packages if args.corpus == "sample" else gc.SAMPLE
    plan = gc.scenarios(settings, production, questions, other, work, False, False)
    table = gc.table_version(settings, production)
    units = {
        qid: [r.passages for r in refs]
        for qid, refs in reference_chunks(table, [q for q in questions if q.answerable]).items()
    }
    everything = gc.Preparation(questions, {}, units, len(questions))
    scorer = gc.Scorer(settings, policy, store.parent / "scores-cache")
    prod = scorer.score(production, everything, cache=True)
    truths: dict[str, float] = {}
    for scenario in plan:
        if "evidence chunks removed" not in scenario.name:
            continue
        gc.restore_production(settings, production)
        candidate = int(scenario.build(settings, production))
        cand = scorer.score(candidate, everything)
        truths[scenario.name] = round(gc.true_delta(cand, prod, policy.primary_metric), 4)
        gc.console.print(f"{scenario.name}: true Δ on all {len(questions)} questions {truths[scenario.name]:+.4f}")
        args.out.write_text(json.dumps(truths, indent=1))  # after each: a late stop keeps the rest
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
