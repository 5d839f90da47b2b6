"""The start of an ingest run, before a byte of the source is read: the run's settings and clock, then what the table
holds, which of its sources the location is, the listing of the source and the plan of files to read."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger

from tasks.embed import models
from tasks.ingest.formats import EXTRACTOR_VERSION
from tasks.ingest.model_switch import switch_from, table_model
from tasks.ingest.partitions import SourcePlan, pipeline_fingerprint, plan_source
from tasks.ingest.source_identity import ResolvedSource, check_namespace, pipeline_settings, resolve_source
from tasks.ingest.sources import canonical_location
from tasks.ingest.steps import Listing, TableState, list_documents, read_table_state
from tasks.progress import StageClock, report_progress
from tasks.settings import Settings
from tasks.store.lineage import SourceEntry, legacy_sources, now_iso, read_sources


@dataclass
class IngestRun:
    """One ingest run: its settings (read once), its id, and the clock that times its stages."""

    settings: Settings
    run_id: str
    model: str | None = None  # the embedding model asked for (None: the table's own, or the default for a new one)
    clock: StageClock = field(default_factory=StageClock)
    started: float = field(default_factory=time.perf_counter)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def start_run(
    run_id: str, table: str | None, sync: bool | None, verify: bool | None, model: str | None = None
) -> IngestRun:
    """The run, with the flow's overrides of the settings (None: the setting as configured)."""
    updates = {"table": table, "sync_deletes": sync, "verify": verify}
    settings = Settings().model_copy(update={k: v for k, v in updates.items() if v is not None})
    return IngestRun(settings, run_id, model=model)


@dataclass(frozen=True)
class SourceRequest:
    """What the caller said about the source: its location and, optionally, which source of the table it is."""

    location: str
    source_name: str | None = None  # names a first source
    as_source: str | None = None  # the source of that name, moved here
    new_source: str | None = None  # a new source of that name, beside the others


@dataclass
class RunPlan:
    """What the run will do, decided from metadata alone."""

    state: TableState  # the table as planned against
    known: dict[str, SourceEntry]  # the table's sources (derived from its rows for a table from before a registry)
    seeded: bool  # True when `known` was derived: the commit records it as the registry
    fingerprint: str
    pipeline: dict[str, Any]  # the settings that shape chunks and vectors, as lineage records them
    resolved: ResolvedSource
    listing: Listing
    plan: SourcePlan
    switch: str | None = None  # a model switch: the model id the table's rows held before


def plan_run(run: IngestRun, request: SourceRequest) -> RunPlan:
    """Read the table's state, decide which source the location is, list it and plan what to read (timed as the
    `list and plan` stage)."""
    settings = run.settings
    report_progress("list and plan", 0, 0)
    with run.clock.stage("list and plan"):
        state = read_table_state.fn(settings)  # a read, not worth a task run of its own
        run.settings = settings = table_model(settings, state, run.model)
        registry = read_sources(state.metadata)
        known = registry or legacy_sources(state.documents, now_iso())
        fingerprint = pipeline_fingerprint(settings)
        pipeline = pipeline_settings(settings, models.resolve(settings), EXTRACTOR_VERSION)
        resolved = resolve_source(
            known,
            canonical_location(request.location),
            pipeline,
            table=settings.table,
            source_name=request.source_name,
            as_source=request.as_source,
            new_source=request.new_source,
            unknown=settings.unknown_source,
        )
        check_namespace(resolved, state.documents)
        switch = switch_from(settings, state, known, resolved.entry.name)
        listing = list_documents(request.location, settings, resolved.entry.prefix)
        verify = settings.verify or resolved.relocated
        plan = plan_source(listing.files, state.documents, fingerprint, verify, resolved.entry.record_files)
    logger = get_run_logger()
    logger.info("%s of table %s", resolved.describe(), settings.table)
    logger.info(
        "plan: %d files and %d JSONL corpora to read; %d files (%d JSONL corpora) unchanged by size and mtime/ETag, "
        "not read",
        len(plan.files),
        len(plan.record_files),
        plan.files_unread,
        len(plan.unread_corpora),
    )
    report_progress("list and plan", 1, 1)
    return RunPlan(state, known, not registry, fingerprint, pipeline, resolved, listing, plan, switch)
