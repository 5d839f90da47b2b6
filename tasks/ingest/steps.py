"""Prefect tasks of the ingest flow: each wraps plain functions from the modules beside it.

Tasks use NO_CACHE on purpose: idempotence comes from the content hashes stored in the table, which
survive a reset Prefect database and are shared by every machine that writes the table.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.errors import SettingsError
from tasks.ingest import embedding
from tasks.ingest.chunking import ChunkingConfig, TokenizerCounter, chunk_document
from tasks.ingest.formats import EXTRACTOR_VERSION, extract
from tasks.ingest.plan import IngestPlan, plan_ingest
from tasks.ingest.sources import Discovery, discover
from tasks.schemas import Chunk, Document, IngestSummary, Quarantined
from tasks.settings import Settings
from tasks.store import lance_reads, lancedb_store


@dataclass
class EmbeddedBatch:
    """Vectors of one batch and which worker made them."""

    vectors: np.ndarray
    worker: str
    model_loads: int


def pipeline_fingerprint(settings: Settings) -> str:
    """Everything besides document bytes that decides a document's chunks and vectors."""
    return "|".join(
        [
            embedding.model_name(settings),
            f"chunk{settings.chunk_tokens}/{settings.chunk_overlap}",
            f"extract{EXTRACTOR_VERSION}",
        ]
    )


@task(name="discover-documents", cache_policy=NO_CACHE)
def discover_documents(source: str, settings: Settings) -> Discovery:
    """List and fingerprint the source's documents."""
    discovery = discover(source, settings)
    get_run_logger().info(
        "found %d documents under %s (%d skipped)", len(discovery.items), discovery.source, len(discovery.quarantined)
    )
    return discovery


@task(name="read-table-state", cache_policy=NO_CACHE)
def read_table_state(settings: Settings) -> dict[str, lancedb_store.StoredDoc]:
    """What the table holds now, per document ({} before the first run); read with Lance alone, so that a run
    with nothing to write never loads LanceDB."""
    dataset = lance_reads.open_dataset(settings, settings.table)
    return {} if dataset is None else lancedb_store.stored_documents(dataset)


@task(name="plan-changes", cache_policy=NO_CACHE)
def plan_changes(discovery: Discovery, stored: dict[str, lancedb_store.StoredDoc], settings: Settings) -> IngestPlan:
    """New, changed, unchanged and deleted documents."""
    skipped = {q.doc_id for q in discovery.quarantined if q.doc_id}
    plan = plan_ingest(
        discovery.items, stored, discovery.source, pipeline_fingerprint(settings), settings.sync_deletes, skipped
    )
    get_run_logger().info(
        "plan: %d new, %d changed, %d unchanged, %d deleted",
        len(plan.new),
        len(plan.changed),
        len(plan.unchanged),
        len(plan.deleted),
    )
    return plan


@task(name="extract-documents", cache_policy=NO_CACHE)
def extract_documents(
    plan: IngestPlan, discovery: Discovery, settings: Settings
) -> tuple[list[Document], list[Quarantined]]:
    """Text of every new or changed document; failures are quarantined."""
    documents: list[Document] = []
    failed: list[Quarantined] = []
    for item in plan.to_build:
        result = extract(item, discovery.fs, settings, discovery.source)
        (documents if isinstance(result, Document) else failed).append(result)  # type: ignore[arg-type]
    return documents, failed


@task(name="chunk-documents", cache_policy=NO_CACHE)
def chunk_documents(documents: list[Document], settings: Settings) -> list[Chunk]:
    """Token-aware chunks of the documents, sized for the embedding model."""
    spec = embedding.embed_spec(settings)
    driver = dataclasses.replace(spec, device="cpu")
    config = ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap, embedding.max_content_tokens(driver))
    if config.chunk_tokens > config.max_tokens:
        raise SettingsError(
            f"chunk_tokens {config.chunk_tokens} exceeds what the model reads ({config.max_tokens} tokens)"
        )
    counter = TokenizerCounter(embedding.tokenizer(driver))
    chunks = [chunk for doc in documents for chunk in chunk_document(doc, config, counter)]
    get_run_logger().info("cut %d documents into %d chunks", len(documents), len(chunks))
    return chunks


@task(name="reusable-vectors", cache_policy=NO_CACHE)
def reusable_vectors(settings: Settings, doc_ids: list[str]) -> dict[str, np.ndarray]:
    """Stored vectors of the changed documents' chunks, by content hash."""
    db = lancedb_store.connect(settings)
    if not doc_ids or not lancedb_store.table_exists(db, settings.table):
        return {}
    table = db.open_table(settings.table)
    return lancedb_store.stored_vectors(table, doc_ids, embedding.model_name(settings))


@task(name="embed-batch", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def embed_batch(texts: list[str], spec: embedding.EmbedSpec) -> EmbeddedBatch:
    """Embed one batch on whichever worker runs it; the model loads once per worker process."""
    vectors = embedding.embed_texts(texts, spec)
    return EmbeddedBatch(vectors, _worker_name(), embedding.model_loads())


@task(name="write-chunks", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def write_chunks(
    settings: Settings,
    chunks: list[Chunk],
    vectors: np.ndarray,
    documents: list[Document],
    plan: IngestPlan,
    replaced_doc_ids: list[str],
) -> lancedb_store.WriteResult | None:
    """The run's single commit: upsert new chunks, drop stale ones."""
    db = lancedb_store.connect(settings)
    name = embedding.model_name(settings)
    if chunks:
        dim = int(vectors.shape[1])
    elif lancedb_store.table_exists(db, settings.table):
        dim = db.open_table(settings.table).schema.field("vector").type.list_size
    else:
        return None  # nothing to write and nothing to delete from
    table = lancedb_store.ensure_chunk_table(db, settings.table, dim, name)
    rows = lancedb_store.chunk_rows(chunks, vectors, {d.doc_id: d for d in documents}, plan.doc_hashes, name, dim)
    result = lancedb_store.write_changes(table, rows, replaced_doc_ids, settings.write_attempts)
    if result:
        get_run_logger().info(
            "committed version %d: %d inserted, %d updated, %d deleted (%d attempt(s))",
            result.version,
            result.inserted,
            result.updated,
            result.deleted,
            result.attempts,
        )
    return result


@task(name="tag-candidate", cache_policy=NO_CACHE)
def tag_candidate(settings: Settings, run_id: str, version: int) -> tuple[str, int]:
    """Tag the version this run made `candidate-<run id>` (never `production`): not simply the latest, which may
    be another run's."""
    table = lancedb_store.connect(settings).open_table(settings.table)
    tag = f"{lancedb_store.CANDIDATE_PREFIX}{run_id}"
    lancedb_store.tag_version(table, tag, version)
    return tag, version


@task(name="maintain-indexes", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)  # concurrent runs conflict
def maintain_indexes(settings: Settings) -> int | None:
    """Create or refresh the ANN and full-text indexes as the table grows; the version made, if any."""
    table = lancedb_store.connect(settings).open_table(settings.table)
    actions, made = lancedb_store.maintain_indexes(table, settings)
    for action in actions:
        get_run_logger().info(action)
    return made


@task(name="record-quarantine", cache_policy=NO_CACHE)
def record_quarantine(settings: Settings, run_id: str, source: str, records: list[Quarantined]) -> None:
    """Keep a lasting record of every skipped input."""
    if records:
        lancedb_store.record_quarantine(lancedb_store.connect(settings), settings, run_id, source, records)
        get_run_logger().warning("quarantined %d input(s); see table %r", len(records), settings.quarantine_table)


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary(summary: IngestSummary) -> None:
    """A markdown artifact in the Prefect UI with the run's counts and skipped inputs."""
    create_markdown_artifact(
        key=f"ingest-{_artifact_key(summary.table)}",
        markdown=summary_markdown(summary),
        description=f"ingest of {summary.source} into {summary.table}",
    )


def summary_markdown(summary: IngestSummary) -> str:
    """The summary as a markdown report."""
    lines = [f"# Ingest of `{summary.source}` into `{summary.table}`", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in summary.report_rows()]
    if summary.quarantined:
        lines += ["", "## Quarantined", "", "| location | reason |", "|---|---|"]
        lines += [f"| `{_md_cell(q['location'])}` | {_md_cell(q['reason'])} |" for q in summary.quarantined]
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _artifact_key(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "table"


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"
