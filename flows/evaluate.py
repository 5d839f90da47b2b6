"""Evaluate flow: score a candidate version against production and decide, without moving any tag."""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from evaluations.gate import decide, load_policy
from evaluations.golden import load_golden_set
from evaluations.promotion import production_state
from evaluations.report import metric_rows
from tasks import lancedb_store
from tasks.errors import VersionNotFoundError
from tasks.evaluation_tasks import check_data_quality, publish_evaluation, score_table_version
from tasks.settings import Settings


def resolve_version(settings: Settings, version: str | int | None) -> int:
    """A version number from a number, a tag, or None (the table's latest version)."""
    db = lancedb_store.connect(settings)
    if not lancedb_store.table_exists(db, settings.table):
        raise VersionNotFoundError(f"no table {settings.table!r} at {settings.lancedb_uri}: run `ragops ingest` first")
    return int(lancedb_store.open_table(db, settings.table, version).version)


@flow(name="evaluate", persist_result=True, result_serializer="json")
def evaluate(
    version: str | None = None,
    table: str | None = None,
    golden_set: str | None = None,
    policy: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Score `version` (default: latest) and production on the golden set, check data quality, decide."""
    overrides = {"table": table, "golden_set": golden_set, "policy": policy}
    settings = Settings().model_copy(update={k: v for k, v in overrides.items() if v})
    questions = load_golden_set(settings.golden_set)  # bad inputs fail before any work
    gate_policy, policy_hash = load_policy(settings.policy)
    candidate_version = resolve_version(settings, version)
    prod = production_state(lancedb_store.connect(settings), settings)
    primary = gate_policy.primary_metric

    candidate = score_table_version(settings, candidate_version, questions, gate_policy.modes, primary)
    production = None
    production_rows = None
    if prod.version is not None:
        production = score_table_version(settings, prod.version, questions, [prod.mode or candidate.mode], primary)
        production_rows = lancedb_store.open_table(
            lancedb_store.connect(settings), settings.table, prod.version
        ).count_rows()
    quality = check_data_quality(settings, candidate_version, gate_policy, source, production_rows)

    metric_names = sorted(candidate.means)
    decision = decide(
        gate_policy,
        candidate.means,
        {m: candidate.per_question(m) for m in metric_names},
        production.means if production else None,
        {m: production.per_question(m) for m in metric_names} if production else None,
        [f"{q['expectation']} on {q['column']}: {q['observed']}" for q in quality if not q["success"]],
    )
    summary = {
        "run_id": str(flow_run.id or uuid.uuid4()),
        "table": settings.table,
        "candidate_version": candidate_version,
        "production_version": prod.version,
        "mode": candidate.mode,
        "answerer": candidate.answerer,
        "decision": decision["decision"],
        "reasons": decision["reasons"],
        "first_promotion": decision["first_promotion"],
        "policy": settings.policy,
        "policy_hash": policy_hash,
        "golden_set": settings.golden_set,
        "questions": len(questions),
        "metrics": metric_rows(candidate, production, decision["comparisons"]),
        "mode_sweep": candidate.sweep,
        "missing": candidate.missing,
        "quality": quality,
        "per_question": [
            {
                "id": q.id,
                "kind": q.kind,
                "scores": q.scores,
                "answer": q.answer,
                "errors": q.errors,
                "retrieved": [h["chunk_id"] for h in q.retrieved],
            }
            for q in candidate.questions
        ],
    }
    return publish_evaluation(settings, summary, candidate, production, quality, primary)
