"""Build a run's partitions: in the flow process when the work is small, else on the Dask cluster, at most
`partitions_in_flight` at a time; a JSONL record id found in two partitions is kept where it came first."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger

from tasks.embed import embedding
from tasks.errors import SettingsError
from tasks.ingest.cluster import EmbeddingCluster, run_partitions
from tasks.ingest.partitions import BuildContext, Partition, PartitionResult, estimated_chunks, partitions
from tasks.ingest.run_plan import IngestRun, RunPlan
from tasks.ingest.steps import TableState, build_partition, prepare_table, remove_dead_runs
from tasks.progress import report_progress
from tasks.settings import Settings
from tasks.store import fragments


@dataclass
class Built:
    """What building left: the partitions' results (in index order) and where and against what they were built."""

    results: list[PartitionResult]
    state: TableState  # the table the partitions were built against (the first run creates it)
    on_cluster: bool = False
    orphans: int = 0  # staged files of dead runs removed first


def build_run(run: IngestRun, planned: RunPlan, cluster: EmbeddingCluster) -> Built:
    """Build every partition of the plan (nothing when nothing is to be read), under the run's heartbeat."""
    settings = run.settings
    if not planned.plan.reads:
        return Built([], planned.state)
    check_chunk_size(settings)
    state = prepare_table(settings, planned.switch is not None)  # the first run creates the table
    orphans = remove_dead_runs(settings, run.run_id)
    with run.clock.stage("build partitions"), fragments.heartbeat(settings, settings.table, run.run_id, state.version):
        results, on_cluster = build_partitions(planned, state, run.run_id, cluster, settings)
    return Built(results, state, on_cluster, orphans)


def check_chunk_size(settings: Settings) -> None:
    """Refuse chunks bigger than the model reads, before the table or any worker is touched."""
    limit = embedding.content_token_limit(embedding.embed_spec(settings))
    if settings.chunk_tokens > limit:
        raise SettingsError(f"chunk_tokens {settings.chunk_tokens} exceeds what the model reads ({limit} tokens)")


def runs_locally(estimate: int, settings: Settings) -> bool:
    """True when so few chunks are expected that starting a cluster would take longer than the work."""
    return estimate <= settings.embed_local_max_chunks and not settings.dask_address


def build_partitions(
    planned: RunPlan, state: TableState, run_id: str, cluster: EmbeddingCluster, settings: Settings
) -> tuple[list[PartitionResult], bool]:
    """Build every partition, in this process when the work is small (a cluster would take longer to start than
    the work), else on Dask; a JSONL record id found in two partitions is kept where it came first. Returns the
    results and whether they were built on the cluster."""
    logger = get_run_logger()
    assert state.schema is not None
    plan = planned.plan
    parts = list(partitions(plan, settings))
    total = sum(p.size for p in parts)
    estimate = estimated_chunks([w.file for w in plan.files] + plan.record_files, settings.chunk_tokens)
    local = runs_locally(estimate, settings)
    threads = settings.torch_threads or (os.cpu_count() or 1) if local else 0
    ctx = BuildContext(
        planned.listing.source,
        settings,
        settings.table,
        state.version,
        planned.fingerprint,
        state.schema,
        embedding.embed_spec(settings, threads),
        run_id,
        planned.resolved.entry.name,
        planned.resolved.relocated,
    )
    logger.info(
        "building %d partitions (%.1f MiB, about %d chunks) %s",
        len(parts),
        total / (1 << 20),
        estimate,
        "in the flow process (no cluster for so few)" if local else "on Dask",
    )
    results = collect(run_each(parts, ctx, cluster, local), total)
    retry = duplicate_records(results)
    if retry:  # a record id in two byte ranges: rebuild the later ranges without it (their files are unused)
        logger.warning("rebuilding %d partition(s) that repeat record ids of earlier ones", len(retry))
        redo = [Partition(p.index, p.files, p.records, frozenset(retry[p.index])) for p in parts if p.index in retry]
        results = [r for r in results if r.index not in retry] + collect(run_each(redo, ctx, cluster, local), 0)
    return sorted(results, key=lambda r: r.index), not local


def run_each(
    parts: list[Partition], ctx: BuildContext, cluster: EmbeddingCluster, local: bool
) -> Iterator[PartitionResult]:
    """Each partition's result as it finishes: built here one after another, or on the cluster's workers."""
    if local:
        for part in parts:
            yield build_partition(part, ctx)
        return
    runner, threads = cluster.task_runner()
    ctx = dataclasses.replace(ctx, spec=embedding.embed_spec(ctx.settings, threads))
    with runner:
        yield from run_partitions(parts, ctx, runner, ctx.settings.partitions_in_flight)


def collect(results: Iterable[PartitionResult], total_bytes: int) -> list[PartitionResult]:
    """The results, reporting progress (bytes read of `total_bytes`, or partitions) and logging each."""
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


def duplicate_records(results: list[PartitionResult]) -> dict[int, set[str]]:
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


def on_workers(cluster: EmbeddingCluster, task: Any, settings: Settings) -> Any:
    """Run a one-off task on the cluster and return its result."""
    runner, _ = cluster.task_runner()
    with runner:
        return runner.submit(task, {"settings": settings}).result()
