"""The end of an ingest run: what its one commit changes (staged rows in, the rows of written and deleted documents
out), the commit itself, then indexes, the candidate tag, the quarantine record and the comparison with production."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from prefect import get_run_logger

from tasks.ingest.cluster import EmbeddingCluster
from tasks.ingest.partition_build import Built, on_workers
from tasks.ingest.partitions import corpora_read_whole, deleted_documents
from tasks.ingest.run_lineage import run_lineage
from tasks.ingest.run_plan import IngestRun, RunPlan
from tasks.ingest.sources import listing_digest
from tasks.ingest.steps import (
    commit,
    compare_with_production,
    emit_version_asset,
    maintain_indexes,
    record_quarantine,
    tag_candidate,
)
from tasks.progress import report_progress
from tasks.schemas import Quarantined
from tasks.settings import Settings
from tasks.store import fragments
from tasks.store.lineage import SourceChange


@dataclass
class RunChanges:
    """What the run's commit changes, and what it skipped."""

    staged: list[str]  # fragments the partitions wrote, uncommitted
    remove: pa.Array  # documents whose stored rows go: those the run wrote, then those it deletes
    deleted: pa.Array  # documents of this source no longer in it (empty unless deletions are synced)
    kept: int  # staged rows whose chunk id was stored before (counted as updated)
    quarantined: list[Quarantined]  # skipped inputs: the listing's, then each partition's
    skipped: set[str] = field(default_factory=set)  # ids of skipped inputs: their stored rows are kept


def run_changes(planned: RunPlan, built: Built, sync_deletes: bool) -> RunChanges:
    """Collect the partitions' results into the commit's changes; with `sync_deletes`, the stored documents of this
    source that were neither listed, read nor skipped are deleted (other sources' documents never are)."""
    results = built.results
    quarantined = list(planned.listing.quarantined) + [q for r in results for q in r.quarantined]
    skipped = {q.doc_id for q in quarantined if q.doc_id} | {doc for r in results for doc in r.skipped}
    present = [planned.plan.listed_ids] + [pa.array(r.seen, pa.string()) for r in results]
    deleted = (
        deleted_documents(built.state.documents, planned.resolved.entry.scope, present, skipped)
        if sync_deletes
        else pa.array([], pa.string())
    )
    written = pa.array([doc for r in results for doc in r.written_ids], pa.string())
    if planned.switch is not None:  # a model switch: no row of the old model stays, even of a document it skipped
        stored = built.state.documents.column("doc_id").combine_chunks()
        deleted = pc.filter(stored, pc.invert(pc.is_in(stored, value_set=written)))
    staged = [fragment for r in results for fragment in r.fragments]
    return RunChanges(
        staged, pa.concat_arrays([written, deleted]), deleted, sum(r.kept for r in results), quarantined, skipped
    )


def commit_run(
    run: IngestRun, planned: RunPlan, changes: RunChanges, trigger: str | None, revision: str | None
) -> fragments.WriteResult | None:
    """The run's single commit, with the source's registry entry and the version's lineage; None (and no task run)
    when nothing was built or deleted, so a no-change run stays quick."""
    settings = run.settings
    report_progress("write", 0, 0)
    with run.clock.stage("commit"):
        corpora = corpora_read_whole(planned.plan, changes.quarantined, planned.fingerprint)
        entry = dataclasses.replace(
            planned.resolved.entry, listing_digest=listing_digest(planned.listing.files), record_files=corpora
        )
        event = planned.resolved.describe()
        change = SourceChange(
            lineage=run_lineage(run.run_id, "ingest", settings, planned.pipeline, trigger, revision, event),
            put=entry,
            seed=tuple(planned.known.values()) if planned.seeded else (),
        )
        written: fragments.WriteResult | None = None
        if changes.staged or len(changes.remove):
            written = commit(settings, changes.staged, changes.remove, run.run_id, changes.kept, change)
        elif corpora != planned.resolved.entry.record_files and planned.state.version is not None:
            record_corpora(settings, dataclasses.replace(change, registry_only=True))
        if written is None and planned.plan.reads:
            fragments.clear_staging(settings, settings.table, run.run_id)
    return written


def record_corpora(settings: Settings, change: SourceChange) -> None:
    """A JSONL corpus read whole with no change (touched, or read for the first time since its records were
    marked): record its metadata in the source's registry entry alone, so the next run skips it unread. No data
    changes, and the version's lineage stays that of the run that wrote its data."""
    result = fragments.commit_staged(settings, settings.table, [], pa.array([], pa.string()), "registry", change)
    if result is not None:
        get_run_logger().info(
            "%s: JSONL corpus metadata recorded in version %d (no data changed)", settings.table, result.version
        )


@dataclass
class NewVersion:
    """The version a run made (all None when it made none) and how it differs from production."""

    version: int | None = None
    tag: str | None = None
    production: int | None = None  # what `source_changes` compares with (None: no production yet)
    source_changes: dict[str, dict[str, int]] = field(default_factory=dict)


def index_and_tag(
    run: IngestRun,
    planned: RunPlan,
    built: Built,
    changes: RunChanges,
    written: fragments.WriteResult | None,
    cluster: EmbeddingCluster,
) -> NewVersion:
    """Bring the indexes up to date and tag the version `candidate-<run id>`; record the skipped inputs, emit the
    version as a Prefect asset, and compare it with production."""
    settings = run.settings
    made = NewVersion()
    with run.clock.stage("index and tag"):
        if written is not None:
            # index builds grow with the table: on the cluster when there is one, so this process stays small
            indexed = (
                on_workers(cluster, maintain_indexes, settings) if built.on_cluster else maintain_indexes(settings)
            )
            made.tag, made.version = tag_candidate(settings, run.run_id, indexed or written.version)
        if changes.quarantined:
            record_quarantine(settings, run.run_id, planned.listing.source, changes.quarantined)
        if made.version is not None:
            entry = planned.resolved.entry
            held = {name: known.location for name, known in {**planned.known, entry.name: entry}.items()}
            emit_version_asset(settings, made.version, run.run_id, held, planned.resolved.describe())
            made.production, made.source_changes = compare_with_production(settings, made.version)
    report_progress("write", 1, 1)
    return made
