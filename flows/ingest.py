"""Ingest flow: list → plan by metadata → build partitions on Dask (read, extract, chunk, embed, write fragments)
→ one atomic commit → indexes → tag candidate.

The flow process holds the listing, the plan, counts and fragment metadata; documents, chunks and vectors stay on
the workers, at most `partitions_in_flight` partitions at a time.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks import provenance
from tasks.embed import embedding
from tasks.errors import SettingsError
from tasks.ingest.cluster import EmbeddingCluster, embedding_cluster, run_partitions
from tasks.ingest.formats import EXTRACTOR_VERSION
from tasks.ingest.partitions import (
    BuildContext,
    Partition,
    PartitionResult,
    SourcePlan,
    deleted_documents,
    estimated_chunks,
    partitions,
    pipeline_fingerprint,
    plan_source,
)
from tasks.ingest.source_identity import ResolvedSource, check_namespace, pipeline_settings, resolve_source
from tasks.ingest.sources import canonical_location, listing_digest
from tasks.ingest.steps import (
    TableState,
    commit,
    compare_with_production,
    emit_version_asset,
    list_documents,
    maintain_indexes,
    prepare,
    prepare_table,
    publish_summary,
    read_table_state,
    record_quarantine,
    remove_dead_runs,
    tag_candidate,
    write_partition,
)
from tasks.progress import StageClock, report_progress
from tasks.schemas import IngestSummary
from tasks.settings import Settings
from tasks.store import fragments
from tasks.store.lineage import SourceChange, legacy_sources, now_iso, read_sources

DEFAULT_SOURCE = "datasets/python-docs"


@flow(name="ingest")
def ingest(
    source: str = DEFAULT_SOURCE,
    table: str | None = None,
    sync: bool | None = None,
    verify: bool | None = None,
    source_name: str | None = None,
    as_source: str | None = None,
    new_source: str | None = None,
    trigger: str | None = None,
    revision: str | None = None,
) -> IngestSummary:
    """Bring the table in line with `source`, as one new version tagged `candidate-<run id>`.

    `source` must be a location the table knows as one of its sources, or its first: `as_source` NAME declares it
    source NAME moved here (synced, deletions included), `new_source` NAME adds it beside the others; otherwise the
    `unknown_source` setting decides (default: stop with an error naming both choices). `source_name` names a first
    source (default: the location's last segment). `trigger` and `revision` are recorded in the version's lineage.
    """
    settings = Settings()
    updates = {"table": table, "sync_deletes": sync, "verify": verify}
    settings = settings.model_copy(update={k: v for k, v in updates.items() if v is not None})
    started, started_at = time.perf_counter(), datetime.now(UTC)
    run_id = str(flow_run.id or uuid.uuid4())
    logger = get_run_logger()

    clock = StageClock()
    report_progress("list and plan", 0, 0)
    with clock.stage("list and plan"):
        state = read_table_state.fn(settings)  # a read, not worth a task run of its own
        registry = read_sources(state.metadata)
        known = registry or legacy_sources(state.documents, now_iso())
        fingerprint = pipeline_fingerprint(settings)
        pipeline = pipeline_settings(settings, embedding.model_name(settings), EXTRACTOR_VERSION)
        resolved = resolve_source(
            known,
            canonical_location(source),
            pipeline,
            table=settings.table,
            source_name=source_name,
            as_source=as_source,
            new_source=new_source,
            unknown=settings.unknown_source,
        )
        check_namespace(resolved, state.documents)
        listing = list_documents(source, settings, resolved.entry.prefix)
        plan = plan_source(listing.files, state.documents, fingerprint, settings.verify or resolved.relocated)
    logger.info("%s of table %s", resolved.describe(), settings.table)
    logger.info(
        "plan: %d files to read, %d JSONL corpora, %d files unchanged by size and mtime/ETag (not read)",
        len(plan.files),
        len(plan.record_files),
        plan.unchanged,
    )
    report_progress("list and plan", 1, 1)

    results: list[PartitionResult] = []
    on_cluster = False
    quarantined = list(listing.quarantined)
    orphans = 0
    skipped = {q.doc_id for q in listing.quarantined if q.doc_id}
    with embedding_cluster(settings) as cluster:
        if plan.reads:
            check_chunk_size(settings)
            state = prepare_table(settings)  # the first run creates the table; workers write into it
            orphans = remove_dead_runs(settings, run_id)
            with clock.stage("build partitions"), fragments.heartbeat(settings, settings.table, run_id, state.version):
                results, on_cluster = build_partitions(
                    plan, settings, state, listing.source, fingerprint, run_id, cluster, resolved
                )
            for built in results:
                quarantined += built.quarantined
                skipped.update(built.skipped)
        skipped |= {q.doc_id for q in quarantined if q.doc_id}

        present = [plan.listed_ids] + [pa.array(r.seen, pa.string()) for r in results]
        deleted = (
            deleted_documents(state.documents, resolved.entry.scope, present, skipped)
            if settings.sync_deletes
            else pa.array([], pa.string())
        )
        written = [doc for r in results for doc in r.written_ids]
        staged = [fragment for r in results for fragment in r.fragments]
        remove = pa.concat_arrays([pa.array(written, pa.string()), deleted])

        report_progress("write", 0, 0)
        with clock.stage("commit"):
            kept = sum(r.kept for r in results)
            # nothing built and nothing deleted: no commit, and no task run for it (a no-change run stays quick)
            entry = dataclasses.replace(resolved.entry, listing_digest=listing_digest(listing.files))
            change = SourceChange(
                lineage=run_lineage(run_id, "ingest", settings, pipeline, trigger, revision, resolved.describe()),
                put=entry,
                seed=tuple(known.values()) if not registry else (),
            )
            result = commit(settings, staged, remove, run_id, kept, change) if staged or len(remove) else None
            if result is None and plan.reads:
                fragments.clear_staging(settings, settings.table, run_id)
        with clock.stage("index and tag"):
            # index builds grow with the table: on the cluster when there is one, so this process stays small
            indexed_version = (
                (on_workers(cluster, maintain_indexes, settings) if on_cluster else maintain_indexes(settings))
                if result
                else None
            )
            tag, version = (
                tag_candidate(settings, run_id, indexed_version or result.version) if result else (None, None)
            )
            if quarantined:
                record_quarantine(settings, run_id, listing.source, quarantined)
            if version is not None:
                held = {name: entry.location for name, entry in {**known, entry.name: entry}.items()}
                emit_version_asset(settings, version, run_id, held, resolved.describe())
            production, changes = compare_with_production(settings, version) if version is not None else (None, {})
    report_progress("write", 1, 1)

    skipped_inputs = sum(q.count for q in quarantined)  # a record of grouped bad lines counts each line
    summary = IngestSummary(
        run_id=run_id,
        source=listing.source,
        source_name=resolved.entry.name,
        source_event=resolved.describe(),
        table=settings.table,
        docs_seen=plan.unchanged
        + sum(len(r.new) + len(r.changed) + len(r.refreshed) + len(r.unchanged) for r in results)
        + skipped_inputs,
        docs_new=sum(len(r.new) for r in results),
        docs_changed=sum(len(r.changed) for r in results),
        docs_unchanged=plan.unchanged + sum(len(r.unchanged) for r in results),
        docs_deleted=len(deleted),
        docs_quarantined=skipped_inputs,
        docs_refreshed=sum(len(r.refreshed) for r in results),
        files_unread=plan.unchanged,
        bytes_read=sum(r.bytes_read for r in results),
        partitions=len(results),
        orphans_removed=orphans,
        chunks_written=(result.inserted + result.updated) if result else 0,
        chunks_embedded=sum(r.embedded for r in results),
        chunks_reused=sum(r.reused for r in results),
        chunks_deleted=result.deleted if result else 0,
        table_version=version,
        data_version=(result.data_version or result.version) if result else None,
        candidate_tag=tag,
        production_version=production,
        source_changes=changes,
        quarantined=[{"location": q.location, "reason": q.reason} for q in quarantined],
        quarantine_table=settings.quarantine_table,
        embed_workers=_per_worker(results),
        prepare_workers=_prepared_on(results),
        embed_backend=embedding.resolve_backend(settings.embed_backend, embedding.resolve_device(settings.device))
        if any(r.embedded for r in results)
        else "",
        seconds=round(time.perf_counter() - started, 3),
        stage_seconds=clock.seconds,
        started_at=started_at,
    )
    publish_summary(summary)
    logger.info(
        "%s: %d embedded, %d written, %d deleted; %s",
        settings.table,
        summary.chunks_embedded,
        summary.chunks_written,
        summary.chunks_deleted,
        f"version {version} tagged {tag}" if tag else "nothing changed, no new version",
    )
    for name, counts in changes.items():
        logger.info(
            "%s version %s against %s, source %s: %d added, %d changed, %d deleted documents",
            settings.table,
            version,
            f"production (version {production})" if production is not None else "an empty table (no production)",
            name,
            counts["added"],
            counts["changed"],
            counts["deleted"],
        )
    return summary


def run_lineage(
    run_id: str,
    flow_name: str,
    settings: Settings,
    pipeline: dict[str, Any],
    trigger: str | None,
    revision: str | None,
    event: str,
) -> dict[str, Any]:
    """What a version records of the run that wrote it (tasks/store/lineage.py adds the sources and its version)."""
    return {
        "run_id": run_id,
        "flow": flow_name,
        "flow_run_url": provenance.flow_run_link(str(flow_run.id) if flow_run.id else None),
        "trigger": provenance.trigger_of_run(trigger, revision),
        "event": event,
        "table": settings.table,
        "settings": {**pipeline, "embed_backend": settings.embed_backend, "device": settings.device},
        "ragops_version": provenance.ragops_version(),
        "code_revision": provenance.code_revision(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def check_chunk_size(settings: Settings) -> None:
    """Refuse chunks bigger than the model reads, before the table or any worker is touched."""
    limit = embedding.content_token_limit(embedding.embed_spec(settings))
    if settings.chunk_tokens > limit:
        raise SettingsError(f"chunk_tokens {settings.chunk_tokens} exceeds what the model reads ({limit} tokens)")


def build_partitions(
    plan: SourcePlan,
    settings: Settings,
    state: TableState,
    source: str,
    fingerprint: str,
    run_id: str,
    cluster: EmbeddingCluster,
    resolved: ResolvedSource,
) -> tuple[list[PartitionResult], bool]:
    """Build every partition, in this process when the work is small (a cluster would take longer to start than
    the work), else on Dask; a JSONL record id found in two partitions is kept where it came first. Returns the
    results and whether they were built on the cluster."""
    logger = get_run_logger()
    assert state.schema is not None
    parts = list(partitions(plan, settings))
    total = sum(p.size for p in parts)
    estimate = estimated_chunks([w.file for w in plan.files] + plan.record_files, settings.chunk_tokens)
    local = estimate <= settings.embed_local_max_chunks and not settings.dask_address
    threads = settings.torch_threads or (os.cpu_count() or 1) if local else 0
    ctx = BuildContext(
        source,
        settings,
        settings.table,
        state.version,
        fingerprint,
        state.schema,
        embedding.embed_spec(settings, threads),
        run_id,
        resolved.entry.name,
        resolved.relocated,
    )
    logger.info(
        "building %d partitions (%.1f MiB, about %d chunks) %s",
        len(parts),
        total / (1 << 20),
        estimate,
        "in the flow process (no cluster for so few)" if local else "on Dask",
    )
    results = _collect(_run(parts, ctx, cluster, local, settings), total)
    retry = _duplicate_records(results)
    if retry:  # a record id in two byte ranges: rebuild the later ranges without it (their files are unused)
        logger.warning("rebuilding %d partition(s) that repeat record ids of earlier ones", len(retry))
        redo = [Partition(p.index, p.files, p.records, frozenset(retry[p.index])) for p in parts if p.index in retry]
        results = [r for r in results if r.index not in retry] + _collect(_run(redo, ctx, cluster, local, settings), 0)
    return sorted(results, key=lambda r: r.index), not local


def on_workers(cluster: EmbeddingCluster, task: Any, settings: Settings) -> Any:
    """Run a one-off task on the cluster and return its result."""
    runner, _ = cluster.task_runner()
    with runner:
        return runner.submit(task, {"settings": settings}).result()


def _run(
    parts: list[Partition], ctx: BuildContext, cluster: EmbeddingCluster, local: bool, settings: Settings
) -> Iterator[PartitionResult]:
    if local:
        for part in parts:
            yield write_partition(prepare(part, ctx), ctx)
        return
    runner, threads = cluster.task_runner()
    ctx = dataclasses.replace(ctx, spec=embedding.embed_spec(settings, threads))
    with runner:
        yield from run_partitions(parts, ctx, runner, settings.partitions_in_flight)


def _collect(results: Iterable[PartitionResult], total_bytes: int) -> list[PartitionResult]:
    logger = get_run_logger()
    done: list[PartitionResult] = []
    read = 0
    for result in results:
        done.append(result)
        read += result.bytes_read
        report_progress("build", min(read, total_bytes) if total_bytes else len(done), total_bytes or len(done))
        logger.info(
            "partition %d: %d new, %d changed, %d rows staged, %d embedded (%s → %s)",
            result.index,
            len(result.new),
            len(result.changed),
            result.rows,
            result.embedded,
            result.prepared_on,
            result.written_on,
        )
    return done


def _duplicate_records(results: list[PartitionResult]) -> dict[int, set[str]]:
    """Partition index → record ids an earlier partition holds already."""
    first: dict[str, int] = {}
    later: dict[int, set[str]] = {}
    for result in sorted(results, key=lambda r: r.index):
        for doc_id in result.seen:
            if doc_id in first:
                later.setdefault(result.index, set()).add(doc_id)
            else:
                first[doc_id] = result.index
    return later


def _per_worker(results: list[PartitionResult]) -> dict[str, dict[str, int]]:
    workers: dict[str, dict[str, int]] = {}
    for r in results:
        stats = workers.setdefault(r.written_on, {"chunks": 0, "model_loads": 0})
        stats["chunks"] += r.embedded
        stats["model_loads"] = max(stats["model_loads"], r.model_loads)
    return workers


def _prepared_on(results: list[PartitionResult]) -> dict[str, int]:
    workers: dict[str, int] = {}
    for r in results:
        workers[r.prepared_on] = workers.get(r.prepared_on, 0) + 1
    return workers
