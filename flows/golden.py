"""Golden flow: generate a golden set (drafts to review) from the chunks of a table version."""

from __future__ import annotations

from typing import Any

from prefect import flow

from evaluations.golden_tasks import generate_golden_set, publish_golden_set, refuse_overwrite
from flows.evaluate import resolve_version
from tasks.run_names import namer
from tasks.settings import Settings


def default_out(table: str) -> str:
    """Where a generated set goes unless told: datasets/golden/<table>.jsonl."""
    return f"datasets/golden/{table}.jsonl"


@flow(name="golden", flow_run_name=namer("golden", with_version=True), persist_result=True, result_serializer="json")
def golden(
    version: str | None = None,
    table: str | None = None,
    n: int = 60,
    out: str | None = None,
    seed: int = 0,
    from_queries_hours: float | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write up to `n` verified draft questions from `version` (default: the latest, the candidate) to `out`.

    Through the LLM endpoint in RAGOPS_LLM_*; `from_queries_hours` instead drafts cases offline from the queries
    served in that many hours. Every item is a draft until `ragops golden review` accepts it.
    """
    settings = Settings().model_copy(update={"table": table} if table else {})
    out = out or default_out(settings.table)
    refuse_overwrite(out, force)
    resolved = resolve_version(settings, version)
    summary = generate_golden_set(settings, resolved, n, out, seed, from_queries_hours)
    publish_golden_set(settings, summary)
    return summary
