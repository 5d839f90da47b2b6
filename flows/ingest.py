"""Ingest flow: discover → plan → extract → chunk → embed on Dask → one LanceDB commit → tag candidate."""

from __future__ import annotations

import math
import os
import time
import uuid
from datetime import UTC, datetime

import numpy as np
from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run

from tasks.ingest import embedding
from tasks.ingest.cluster import EmbeddingCluster, embedding_cluster
from tasks.ingest.plan import estimated_chunks, plan_embeddings
from tasks.ingest.steps import (
    EmbeddedBatch,
    chunk_documents,
    discover_documents,
    embed_batch,
    extract_documents,
    maintain_indexes,
    plan_changes,
    publish_summary,
    read_table_state,
    record_quarantine,
    reusable_vectors,
    tag_candidate,
    write_chunks,
)
from tasks.progress import StageClock, report_progress
from tasks.schemas import IngestSummary
from tasks.settings import Settings

DEFAULT_SOURCE = "datasets/python-docs"


@flow(name="ingest")
def ingest(source: str = DEFAULT_SOURCE, table: str | None = None, sync: bool | None = None) -> IngestSummary:
    """Bring the table in line with `source`, as one new version tagged `candidate-<run id>`."""
    settings = Settings()
    if table:
        settings = settings.model_copy(update={"table": table})
    if sync is not None:
        settings = settings.model_copy(update={"sync_deletes": sync})
    started, started_at = time.perf_counter(), datetime.now(UTC)
    run_id = str(flow_run.id or uuid.uuid4())

    clock = StageClock()
    report_progress("discover and plan", 0, 0)
    with clock.stage("discover and plan"):
        discovery = discover_documents(source, settings)
        stored = read_table_state.fn(settings)  # a read, not worth a task run of its own
        plan = plan_changes(discovery, stored, settings)
    report_progress("discover and plan", 1, 1)
    with embedding_cluster(settings) as cluster:
        if estimated_chunks(plan.to_build, settings.chunk_tokens) > settings.embed_local_max_chunks:
            cluster.start()  # workers boot and load the model while this process extracts and chunks
        with clock.stage("extract"):
            documents, failed = extract_documents(plan, discovery, settings) if plan.to_build else ([], [])
        with clock.stage("chunk"):
            chunks = chunk_documents(documents, settings) if documents else []

        built = {d.doc_id for d in documents}
        replaced = sorted({item.doc_id for item in plan.changed if item.doc_id in built} | set(plan.deleted))
        with clock.stage("embed"):
            known = reusable_vectors(settings, [i.doc_id for i in plan.changed]) if plan.changed else {}
            work = plan_embeddings(chunks, known)
            computed, workers = embed_chunks(list(work.pending.values()), settings, cluster)
            work.add_computed(computed)
    vectors = np.stack([work.vectors[c.content_hash] for c in chunks]) if chunks else np.zeros((0, 0), np.float32)

    report_progress("write", 0, 0)
    with clock.stage("write"):
        # nothing built and nothing deleted: no commit, and no task runs for it (a no-change run stays quick)
        result = write_chunks(settings, chunks, vectors, documents, plan, replaced) if chunks or replaced else None
    with clock.stage("index and tag"):
        indexed_version = maintain_indexes(settings) if result else None
        tag, version = tag_candidate(settings, run_id, indexed_version or result.version) if result else (None, None)
        quarantined = discovery.quarantined + failed
        if quarantined:
            record_quarantine(settings, run_id, discovery.source, quarantined)
    report_progress("write", 1, 1)

    summary = IngestSummary(
        run_id=run_id,
        source=discovery.source,
        table=settings.table,
        docs_seen=len(discovery.items) + len(discovery.quarantined),
        docs_new=sum(1 for i in plan.new if i.doc_id in built),
        docs_changed=sum(1 for i in plan.changed if i.doc_id in built),
        docs_unchanged=len(plan.unchanged),
        docs_deleted=len(plan.deleted),
        docs_quarantined=len(quarantined),
        chunks_written=(result.inserted + result.updated) if result else 0,
        chunks_embedded=len(work.pending),
        chunks_reused=work.reused_chunks,
        chunks_deleted=result.deleted if result else 0,
        table_version=version,
        data_version=result.version if result else None,
        candidate_tag=tag,
        quarantined=[{"location": q.location, "reason": q.reason} for q in quarantined],
        embed_workers=workers,
        embed_backend=embedding.resolve_backend(settings.embed_backend, embedding.resolve_device(settings.device))
        if work.pending
        else "",
        seconds=round(time.perf_counter() - started, 3),
        stage_seconds=clock.seconds,
        started_at=started_at,
    )
    publish_summary(summary)
    get_run_logger().info(
        "%s: %d embedded, %d written, %d deleted; %s",
        settings.table,
        summary.chunks_embedded,
        summary.chunks_written,
        summary.chunks_deleted,
        f"version {version} tagged {tag}" if tag else "nothing changed, no new version",
    )
    return summary


def embed_chunks(
    texts: list[str], settings: Settings, cluster: EmbeddingCluster
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Embed texts: in this process when there are few (a cluster would take longer to start than the work),
    else in large batches on Dask. Returns vectors in order and, per worker, chunks embedded and model loads."""
    if not texts:
        return np.zeros((0, 0), np.float32), {}
    if len(texts) <= settings.embed_local_max_chunks and not settings.dask_address:
        spec = embedding.embed_spec(settings, threads=settings.torch_threads or os.cpu_count() or 1)
        get_run_logger().info("embedding %d chunks in the flow process (no cluster for so few)", len(texts))
        report_progress("embed", 0, len(texts))
        batch = embed_batch(texts, spec)
        report_progress("embed", len(texts), len(texts))
        return batch.vectors, {batch.worker: {"chunks": len(texts), "model_loads": batch.model_loads}}
    return embed_on_dask(texts, settings, cluster)


def embed_on_dask(
    texts: list[str], settings: Settings, cluster: EmbeddingCluster
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Embed texts in large batches on the Dask cluster."""
    logger = get_run_logger()
    waited = time.perf_counter()
    runner, threads = cluster.task_runner()
    logger.info(
        "cluster ready after %.1f s more (workers start and load the model in the background)",
        time.perf_counter() - waited,
    )
    spec = embedding.embed_spec(settings, threads)
    workers = settings.local_workers(gpus=0)  # only sizes the batches, so a rough count will do
    size = max(1, min(settings.embed_task_chunks, math.ceil(len(texts) / workers)))
    batches = [texts[i : i + size] for i in range(0, len(texts), size)]
    logger.info("embedding %d chunks in %d batches of up to %d", len(texts), len(batches), size)
    results: dict[int, EmbeddedBatch] = {}
    with runner:
        futures: list[PrefectFuture[EmbeddedBatch]] = [
            runner.submit(embed_batch, {"texts": batch, "spec": spec}) for batch in batches
        ]
        index = {id(f): i for i, f in enumerate(futures)}
        done = 0
        report_progress("embed", 0, len(texts))
        for future in as_completed(futures):
            i = index[id(future)]
            results[i] = future.result()
            done += len(batches[i])
            report_progress("embed", done, len(texts))
            logger.info("embedded %d/%d chunks (%s)", done, len(texts), results[i].worker)
    per_worker: dict[str, dict[str, int]] = {}
    for i, batch in enumerate(batches):
        stats = per_worker.setdefault(results[i].worker, {"chunks": 0, "model_loads": 0})
        stats["chunks"] += len(batch)
        stats["model_loads"] = max(stats["model_loads"], results[i].model_loads)
    return np.concatenate([results[i].vectors for i in range(len(batches))]), per_worker
