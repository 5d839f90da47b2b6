"""Promote and pipeline flows: gate a candidate into production; ingest → evaluate → gate → promote."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from evaluations.evaluation_tasks import record_decision
from evaluations.golden import golden_notes
from flows.evaluate import GoldenRef, evaluate, reading
from flows.ingest import DEFAULT_SOURCE, ingest
from tasks.ingest.summary import IngestResult
from tasks.settings import Settings


@flow(name="promote", persist_result=True, result_serializer="json")
def promote(
    version: str | None = None,
    table: str | None = None,
    golden_set: str | None = None,
    policy: str | None = None,
    source: str | None = None,
    trigger: str = "manual",
    allow_drafts: bool = False,
    golden: GoldenRef | None = None,
    ingested: IngestResult | None = None,
) -> dict[str, Any]:
    """Evaluate `version` and move `production` to it only if the gate says promote (`golden`, `ingested`: what a
    pipeline has read already, handed on to the evaluation)."""
    summary = evaluate(
        version=version,
        table=table,
        golden_set=golden_set,
        policy=policy,
        source=source,
        allow_drafts=allow_drafts,
        golden=golden,
        ingested=ingested,
    )
    settings = Settings().model_copy(update={"table": table} if table else {})
    held = [v for v in (summary.get("candidate_version"), summary.get("production_version")) if v is not None]
    with reading(settings, str(flow_run.id or "local"), held):  # maintenance keeps them until the tag moves
        summary["action"] = record_decision(settings, summary, trigger)
    return summary


@flow(name="pipeline", persist_result=True, result_serializer="json")
def pipeline(
    source: str = DEFAULT_SOURCE,
    table: str | None = None,
    golden_set: str | None = None,
    policy: str | None = None,
    trigger: str = "pipeline",
    allow_drafts: bool = False,
    as_source: str | None = None,
    new_source: str | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    """Ingest the source, then evaluate and gate the new candidate (the latest version if nothing changed).

    `as_source` / `new_source`: the source moved / a new source (see the ingest flow); `revision`: the code or data
    revision CI was given, recorded in the version's lineage."""
    settings = Settings().model_copy(update={k: v for k, v in {"table": table, "golden_set": golden_set}.items() if v})
    golden = GoldenRef.read(settings.golden_set)  # read once, handed on: an unusable set fails first
    golden_notes(golden.load(), settings.table, allow_drafts)
    summary = ingest(
        source=source, table=table, as_source=as_source, new_source=new_source, trigger=trigger, revision=revision
    )
    version = str(summary.table_version) if summary.table_version is not None else None
    result = promote(
        version=version,
        table=table,
        golden_set=golden_set,
        policy=policy,
        source=source,
        trigger=trigger,
        allow_drafts=allow_drafts,
        golden=golden,
        ingested=summary,
    )
    result["ingest"] = summary.model_dump(mode="json", exclude={"quarantined"})
    result["pipeline_run_id"] = str(flow_run.id) if flow_run.id else None
    get_run_logger().info("pipeline: %s version %s", result["action"], result["candidate_version"])
    return result
