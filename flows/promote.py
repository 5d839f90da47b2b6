"""Promote and pipeline flows: gate a candidate into production; ingest → evaluate → gate → promote."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from evaluations.evaluation_tasks import record_decision
from evaluations.golden import golden_notes
from evaluations.outcome import final_state, publish_decision
from evaluations.promotion import unchanged_result
from evaluations.review_step import ask_reviewer
from flows.evaluate import GoldenRef, evaluate, evaluation_settings, reading
from flows.ingest import DEFAULT_SOURCE, ingest
from tasks import events
from tasks.ingest.summary import IngestResult
from tasks.run_names import namer, rename_run, run_name
from tasks.settings import Settings


@flow(name="promote", flow_run_name=namer("promote", with_version=True), persist_result=True, result_serializer="json")
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
    """Evaluate `version`, ask a reviewer when the policy says so, and move `production` to it only if the gate (and
    the review) says promote (`golden`, `ingested`: what a pipeline has read already, handed on)."""
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
    settings = Settings().model_copy(update={"table": summary["table"]})
    rename_run(run_name("promote", settings.table, summary["candidate_version"]))
    held = [v for v in (summary.get("candidate_version"), summary.get("production_version")) if v is not None]
    with reading(settings, str(flow_run.id or "local"), held):  # maintenance keeps them until the tag moves
        summary = ask_reviewer(settings, summary)
        summary["action"] = record_decision(settings, summary, trigger)
    if summary.get("review"):
        events.gate_decided(settings, summary, summary["action"], summary.get("report_url"))
    publish_decision(summary)
    return final_state(summary)


@flow(name="pipeline", flow_run_name=namer("pipeline"), persist_result=True, result_serializer="json")
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
    gate_only: bool = False,
    model: str | None = None,
) -> dict[str, Any]:
    """Ingest the source, then evaluate and gate the new candidate; end at once when nothing changed.

    `as_source` / `new_source`: the source moved / a new source (see the ingest flow); `revision`: the code or data
    revision CI was given, recorded in the version's lineage; `gate_only`: decide, move no tag (a pull request);
    `model`: the embedding model (another than the table's: a model switch, every chunk re-embedded and gated)."""
    settings = evaluation_settings(table, golden_set, policy)
    golden = GoldenRef.read(settings.golden_set)  # read once, handed on: an unusable set fails first
    golden_notes(golden.load(), settings.table, allow_drafts)
    summary = ingest(
        source=source, table=settings.table, as_source=as_source, new_source=new_source, trigger=trigger,
        revision=revision, model=model,
    )  # fmt: skip
    result = unchanged_result(settings, summary.table_version)
    if result is None:
        version = str(summary.table_version) if summary.table_version is not None else None
        arguments: dict[str, Any] = {
            "version": version, "table": settings.table, "golden_set": settings.golden_set, "policy": policy,
            "source": source, "allow_drafts": allow_drafts, "golden": golden, "ingested": summary,
        }  # fmt: skip
        result = evaluate(**arguments) if gate_only else promote(**arguments, trigger=trigger)
        result["action"] = "evaluated" if gate_only else result["action"]
    result["ingest"] = summary.model_dump(mode="json", exclude={"quarantined"})
    result["pipeline_run_id"] = str(flow_run.id) if flow_run.id else None
    publish_decision(result, keyed=result["action"] in ("unchanged", "evaluated"))  # else promote's is the keyed one
    get_run_logger().info("pipeline: %s", final_state(result).message)
    return final_state(result)
