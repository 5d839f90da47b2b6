"""Distributed writes of the chunk table, with Lance's distributed-write API.

Workers write their rows as Lance fragments straight into the dataset's storage (`write_fragments`) and hand back
only the fragments' metadata. The flow then commits once (`commit_staged`): one `Update` that adds every staged
fragment and deletes the stale rows of changed and deleted documents, under the table's commit lock. Until that
commit, readers and `production` see nothing of the run.

A staging ledger beside the table (`<table>.staging/<run id>/`) lists the files each partition wrote, the deletion
files the commit writes before it commits, and carries the run's heartbeat; a later run removes the unused files of
runs whose heartbeat stopped (a crash before commit, or inside it).
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.schemas import Chunk, Document, chunk_schema
from tasks.settings import Settings
from tasks.store.lance_reads import dataset_uri
from tasks.store.lancedb_store import raise_if_io_failure
from tasks.store.lineage import LINEAGE_KEY, RUN_KEY, SourceChange, apply_change, table_metadata
from tasks.store.locks import require_shared_lock_server, table_lock
from tasks.store.sql import in_list

log = logging.getLogger(__name__)

STORED_COLUMNS = ["doc_id", "doc_hash", "source", "source_meta"]


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one commit."""

    version: int
    inserted: int
    updated: int
    deleted: int
    attempts: int
    data_version: int = 0  # the commit of the rows, when metadata was recorded after it (version)


def chunk_rows(
    chunks: list[Chunk],
    vectors: np.ndarray,
    documents: dict[str, Document],
    doc_hashes: dict[str, str],
    model: str,
    dim: int,
    metas: dict[str, str | None] | None = None,
) -> pa.Table:
    """Build the Arrow rows for chunks and their vectors, in the table's schema (`metas`: doc_id → source_meta)."""
    now = datetime.now(UTC)
    vector_array = pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)), dim
    )
    docs = [documents[c.doc_id] for c in chunks]
    return pa.table(
        {
            "chunk_id": [c.chunk_id for c in chunks],
            "doc_id": [c.doc_id for c in chunks],
            "text": [c.text for c in chunks],
            "vector": vector_array,
            "n_tokens": pa.array([c.n_tokens for c in chunks], pa.int32()),
            "position": pa.array([c.position for c in chunks], pa.int32()),
            "content_hash": [c.content_hash for c in chunks],
            "doc_hash": [doc_hashes[c.doc_id] for c in chunks],
            "source": [d.source for d in docs],
            "title": [d.title for d in docs],
            "section": [c.section for c in chunks],
            "metadata": [
                json.dumps({"location": d.location, "format": d.format, **d.metadata}, ensure_ascii=False) for d in docs
            ],
            "embedding_model": [model] * len(chunks),
            "ingested_at": pa.array([now] * len(chunks), pa.timestamp("us", tz="UTC")),
            "source_meta": pa.array([(metas or {}).get(c.doc_id) for c in chunks], pa.string()),
        },
        schema=chunk_schema(dim),
    )


def write_fragments(rows: pa.Table, settings: Settings, table: str) -> list[str]:
    """Write rows as new, uncommitted fragments of the table's dataset; their metadata as JSON strings."""
    import lance

    uri = dataset_uri(settings, table)
    try:
        fragments = lance.fragment.write_fragments(
            rows, uri, schema=rows.schema, max_rows_per_file=1 << 20, storage_options=settings.object_store_options()
        )
    except (OSError, RuntimeError, ValueError) as exc:
        raise_if_io_failure(exc, table, uri)
        raise
    return [json.dumps(fragment.to_json()) for fragment in fragments]


def fragment_files(fragments: list[str]) -> list[str]:
    """Data file paths (relative to the dataset's `data/` folder) of staged fragments."""
    return [file["path"] for fragment in fragments for file in json.loads(fragment)["files"]]


def fragment_rows(fragments: list[str]) -> int:
    """Rows in staged fragments."""
    return sum(int(json.loads(fragment)["physical_rows"]) for fragment in fragments)


def stored_documents(dataset: Any) -> pa.Table:
    """One row per document a dataset version holds: doc_id, doc_hash, source, source_meta and its chunk count.

    Read in batches, each folded to one row per document at once, so memory follows documents, not chunks."""
    names = set(dataset.schema.names)
    columns = [c for c in STORED_COLUMNS if c in names]
    parts: list[pa.Table] = []
    for batch in dataset.to_batches(columns=columns, batch_size=65536):
        data = pa.Table.from_batches([batch])
        if "source_meta" not in names:  # a table from before metadata change detection: every file is read once
            data = data.append_column("source_meta", pa.nulls(data.num_rows, pa.string()))
        parts.append(_per_document(data.append_column("chunks", pa.array([1] * data.num_rows, pa.int64()))))
    return _per_document(pa.concat_tables(parts)) if parts else stored_documents_empty()


def stored_documents_empty() -> pa.Table:
    """`stored_documents` of a table that does not exist yet."""
    return pa.table({**{c: pa.array([], pa.string()) for c in STORED_COLUMNS}, "chunks": pa.array([], pa.int64())})


def _per_document(data: pa.Table) -> pa.Table:
    grouped = data.group_by("doc_id").aggregate(
        [("doc_hash", "max"), ("source", "max"), ("source_meta", "max"), ("chunks", "sum")]
    )
    return pa.table(
        {
            "doc_id": grouped.column("doc_id"),
            "doc_hash": grouped.column("doc_hash_max").cast(pa.string()),
            "source": grouped.column("source_max").cast(pa.string()),
            "source_meta": grouped.column("source_meta_max").cast(pa.string()),
            "chunks": grouped.column("chunks_sum"),
        }
    )


def dataset_version(settings: Settings, table: str, version: int) -> Any:
    """The table's Lance dataset at one version (the version an ingest planned against, read on a worker)."""
    import lance

    return lance.dataset(dataset_uri(settings, table), version=version, storage_options=settings.object_store_options())


def stored_rows(dataset: Any, doc_ids: list[str], columns: list[str] | None = None) -> pa.Table:
    """Rows of these documents in a dataset version: filtered by Lance for a few ids, in one scan for many."""
    wanted = columns or dataset.schema.names
    if len(doc_ids) <= 500:
        if not doc_ids:
            return dataset.schema.empty_table().select(wanted)
        return dataset.to_table(columns=wanted, filter=in_list("doc_id", doc_ids))
    ids = pa.array(doc_ids, pa.string())
    read = list(dict.fromkeys(["doc_id", *wanted]))
    parts = []
    for batch in dataset.to_batches(columns=read, batch_size=65536):
        hit = batch.filter(pc.is_in(batch.column("doc_id"), value_set=ids))
        if hit.num_rows:
            parts.append(pa.Table.from_batches([hit]).select(wanted))
    return pa.concat_tables(parts) if parts else dataset.schema.empty_table().select(wanted)


@dataclass
class CommitResult:
    """The commit's version and row counts (inserted: rows added; deleted: rows removed)."""

    version: int
    inserted: int
    deleted: int
    read_version: int
    data_version: int = 0  # the commit of the rows (version: the metadata commit after it, when lineage is kept)


def commit_staged(
    settings: Settings,
    table: str,
    fragments: list[str],
    remove_doc_ids: pa.Array,
    run_id: str,
    change: SourceChange | None = None,
) -> CommitResult | None:
    """One commit: add the staged fragments and delete every stored row of `remove_doc_ids`; None when nothing to do.

    It runs under the table's commit lock, against the latest version read inside the lock, so rows another run
    committed in the meantime are seen and replaced, never duplicated: every document a run writes is among the
    documents whose stored rows the same commit removes. `change`: the run's source registry entry and lineage,
    carried by the commit's transaction and then recorded in the table metadata under the same lock
    (tasks/store/lineage.py); the result's version is the metadata version then.
    """
    import lance
    from lance.fragment import FragmentMetadata

    # a source without rows still leaves; a JSONL corpus touched but unchanged records its new metadata
    registry_only = change is not None and (change.remove is not None or change.registry_only)
    if not fragments and len(remove_doc_ids) == 0 and not registry_only:
        return None
    uri = dataset_uri(settings, table)
    options = settings.object_store_options()
    with table_lock(settings, "commit"):
        dataset = lance.dataset(uri, storage_options=options)
        if not fragments and len(remove_doc_ids) == 0 and change is not None:
            dataset.update_metadata(apply_change(table_metadata(dataset), change, int(dataset.version)))
            return CommitResult(int(dataset.version), 0, 0, int(dataset.version) - 1, int(dataset.version))
        removed_ids, updated, deleted = _deletions(dataset, remove_doc_ids)
        # the deletion files are on disk now, referenced by nothing until the commit: a run killed before it
        # leaves them to the next run's `remove_orphans`
        record_deletions(settings, table, run_id, [d.deletion_file.path(d.id) for d in updated if d.deletion_file])
        new = [FragmentMetadata.from_json(fragment) for fragment in fragments]
        properties = {RUN_KEY: run_id, "__lance_commit_message": f"ragops ingest {run_id}"}
        if change is not None:
            properties[LINEAGE_KEY] = json.dumps(change.lineage, sort_keys=True)
        operation = lance.LanceOperation.Update(
            removed_fragment_ids=removed_ids, updated_fragments=updated, new_fragments=new
        )
        try:
            committed = lance.LanceDataset.commit(
                uri,
                lance.Transaction(int(dataset.version), operation, transaction_properties=properties),
                storage_options=options,
            )
            data_version = int(committed.version)
            if change is not None:
                committed.update_metadata(apply_change(table_metadata(committed), change, data_version))
        except (OSError, RuntimeError, ValueError) as exc:
            raise_if_io_failure(exc, table, uri)
            raise
        clear_staging(settings, table, run_id)
    return CommitResult(int(committed.version), fragment_rows(fragments), deleted, int(dataset.version), data_version)


def write_rows(
    settings: Settings, table: str, rows: pa.Table, remove_doc_ids: list[str], run_id: str = "direct"
) -> CommitResult | None:
    """The one-process form of the distributed write (used by tests and small tools): stage, then commit once."""
    import lance

    if rows.num_rows == 0 and not remove_doc_ids:
        return None
    require_shared_lock_server(settings.lancedb_uri)  # before any file is staged
    schema = lance.dataset(dataset_uri(settings, table), storage_options=settings.object_store_options()).schema
    staged = write_fragments(rows.select(schema.names).cast(schema), settings, table) if rows.num_rows else []
    return commit_staged(settings, table, staged, pa.array(remove_doc_ids, pa.string()), run_id)


def _deletions(dataset: Any, doc_ids: pa.Array) -> tuple[list[int], list[Any], int]:
    """Fragments emptied, fragments with new deletion files, and rows deleted, for removing these documents."""
    if len(doc_ids) == 0 or dataset.count_rows() == 0:
        return [], [], 0
    scan = dataset.scanner(columns=["doc_id"], with_row_address=True).to_table()
    hit = scan.filter(pc.is_in(scan.column("doc_id"), value_set=pa.array(doc_ids, pa.string())))
    if hit.num_rows == 0:
        return [], [], 0
    fragment_of = pc.shift_right(hit.column("_rowaddr"), 32)
    removed: list[int] = []
    updated: list[Any] = []
    for fragment_id in pc.unique(fragment_of).to_pylist():
        ids = pc.unique(hit.filter(pc.equal(fragment_of, fragment_id)).column("doc_id")).to_pylist()
        fragment = dataset.get_fragment(int(fragment_id))
        result = None
        for i in range(0, len(ids), 1000):  # a predicate of at most 1,000 ids at a time
            result = fragment.delete(in_list("doc_id", ids[i : i + 1000]))
            if result is None:
                break
            fragment = _as_fragment(dataset, result)
        if result is None:
            removed.append(int(fragment_id))
        else:
            updated.append(result)
    return removed, updated, hit.num_rows


def _as_fragment(dataset: Any, metadata: Any) -> Any:
    from lance.fragment import LanceFragment

    return LanceFragment(dataset, None, fragment=metadata)


# --- the staging ledger ----------------------------------------------------------------------------------------


def _filesystem(settings: Settings, path: str) -> tuple[Any, str]:
    """An fsspec filesystem for a path of the store (local or object store), with the store's credentials."""
    import fsspec

    options = settings.object_store_options() or {}
    kwargs: dict[str, Any] = {}
    if path.startswith("s3://"):
        client: dict[str, str] = {}
        if "aws_endpoint" in options:
            client["endpoint_url"] = options["aws_endpoint"]
        if "aws_region" in options:
            client["region_name"] = options["aws_region"]
        if client:
            kwargs["client_kwargs"] = client
        if "aws_access_key_id" in options:
            kwargs["key"] = options["aws_access_key_id"]
            kwargs["secret"] = options.get("aws_secret_access_key", "")
    fs, root = fsspec.core.url_to_fs(path, **kwargs)
    return fs, root


def staging_root(settings: Settings, table: str) -> str:
    """Where runs keep their staging ledgers."""
    return dataset_uri(settings, table).removesuffix(".lance") + ".staging"


def record_staged(settings: Settings, table: str, run_id: str, partition: int, fragments: list[str]) -> None:
    """Note the data files a partition wrote, so they can be removed if the run never commits."""
    fs, root = _filesystem(settings, staging_root(settings, table))
    folder = posixpath.join(root, run_id)
    fs.makedirs(folder, exist_ok=True)
    fs.pipe_file(posixpath.join(folder, f"part-{partition:06d}.json"), json.dumps(fragment_files(fragments)).encode())


def record_deletions(settings: Settings, table: str, run_id: str, paths: list[str]) -> None:
    """Note the deletion files (paths within the dataset) a commit wrote before committing them."""
    if not paths:
        return
    fs, root = _filesystem(settings, staging_root(settings, table))
    folder = posixpath.join(root, run_id)
    fs.makedirs(folder, exist_ok=True)
    fs.pipe_file(posixpath.join(folder, "deletions.json"), json.dumps(paths).encode())


def clear_staging(settings: Settings, table: str, run_id: str) -> None:
    """Forget a run's ledger (after its commit, or when it had nothing to commit)."""
    fs, root = _filesystem(settings, staging_root(settings, table))
    folder = posixpath.join(root, run_id)
    try:
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
    except OSError as exc:  # a leftover ledger only costs the next run a look
        log.warning("could not remove the staging ledger %s: %s", folder, exc)


@contextmanager
def heartbeat(
    settings: Settings,
    table: str,
    run_id: str,
    read_version: int | None = None,
    versions: Iterable[int] = (),
    reader: str = "ingest",
    clear_on_exit: bool = False,
) -> Iterator[None]:
    """Keep the run's heartbeat fresh while it works, so no other run takes its files for orphans, and maintenance
    keeps the versions it reads (`read_version` and any further `versions`).

    `reader` names the kind of run in maintenance's reasons ("ingest", "evaluation", ...); a run that stages no files
    (an evaluation) passes `clear_on_exit` so its ledger folder goes when it ends. The first beat is written before
    the body runs: maintenance that starts after this call sees the versions."""
    fs, root = _filesystem(settings, staging_root(settings, table))
    folder = posixpath.join(root, run_id)
    path = posixpath.join(folder, "heartbeat")
    read = sorted({int(v) for v in [*([] if read_version is None else [read_version]), *versions]})
    stop = threading.Event()

    def write() -> None:
        beat = {"at": time.time(), "version": read_version, "versions": read, "reader": reader}
        try:
            fs.makedirs(folder, exist_ok=True)
            fs.pipe_file(path, json.dumps(beat).encode())
        except OSError as exc:
            log.warning("could not refresh the staging heartbeat %s: %s", path, exc)

    def beat() -> None:
        while not stop.wait(settings.staging_stale_s / 4):
            write()

    write()
    beat_thread = threading.Thread(target=beat, name="ragops-staging-heartbeat", daemon=True)
    beat_thread.start()
    try:
        yield
    finally:
        stop.set()
        beat_thread.join(timeout=5)
        if clear_on_exit:
            clear_staging(settings, table, run_id)


@dataclass
class Cleanup:
    """What removing dead runs' staged files did."""

    runs: list[str]
    files: int


def remove_orphans(settings: Settings, table: str, current_run: str) -> Cleanup:
    """Remove the staged data files of runs that died before their commit (heartbeat older than staging_stale_s).

    A file is removed only if no version of the table references it (a run may have died after its commit but
    before clearing its ledger).
    """
    fs, root = _filesystem(settings, staging_root(settings, table))
    if not fs.exists(root):
        return Cleanup([], 0)
    dead: list[str] = []
    for folder in fs.ls(root, detail=False):
        run = posixpath.basename(folder.rstrip("/"))
        if run == current_run:
            continue
        try:
            beat = json.loads(fs.cat_file(posixpath.join(folder, "heartbeat")))["at"]
        except (OSError, ValueError, KeyError):
            beat = fs.info(folder).get("mtime") or fs.info(folder).get("LastModified") or 0
            beat = beat.timestamp() if hasattr(beat, "timestamp") else float(beat)
        if time.time() - float(beat) > settings.staging_stale_s:
            dead.append(folder)
    if not dead:
        return Cleanup([], 0)
    import lance

    uri = dataset_uri(settings, table)
    referenced: set[str] = set()  # data files (within data/) and deletion files (within the dataset)
    try:
        dataset = lance.dataset(uri, storage_options=settings.object_store_options())
        for version in dataset.versions():
            old = dataset.checkout_version(version["version"])
            for fragment in old.get_fragments():
                referenced.update(f.path for f in fragment.data_files())
                deletion = fragment.metadata.deletion_file
                if deletion is not None:
                    referenced.add(deletion.path(fragment.fragment_id))
    except (ValueError, FileNotFoundError, OSError):
        pass  # no table yet: nothing references anything
    data_fs, data_root = _filesystem(settings, uri)
    removed = 0
    for folder in dead:
        staged = [
            posixpath.join("data", name)
            for ledger in fs.glob(posixpath.join(folder, "part-*.json"))
            for name in json.loads(fs.cat_file(ledger))
            if name not in referenced
        ]
        deletions = posixpath.join(folder, "deletions.json")
        if fs.exists(deletions):
            staged += [name for name in json.loads(fs.cat_file(deletions)) if name not in referenced]
        for name in staged:
            path = posixpath.join(data_root, name)
            if data_fs.exists(path):
                data_fs.rm(path)
                removed += 1
        fs.rm(folder, recursive=True)
    return Cleanup([posixpath.basename(f.rstrip("/")) for f in dead], removed)


def live_runs(settings: Settings, table: str) -> dict[str, list[int]]:
    """Runs working now (heartbeat fresher than staging_stale_s), each named "<reader> <run id>", and the versions
    each reads (maintenance keeps them)."""
    fs, root = _filesystem(settings, staging_root(settings, table))
    if not fs.exists(root):
        return {}
    live: dict[str, list[int]] = {}
    for folder in fs.ls(root, detail=False):
        try:
            beat = json.loads(fs.cat_file(posixpath.join(folder, "heartbeat")))
        except (OSError, ValueError):
            continue  # no heartbeat: a run before its first beat, or a dead one; neither holds a version
        if time.time() - float(beat.get("at", 0)) <= settings.staging_stale_s:
            read = beat.get("versions")
            if read is None:  # a beat of an older ragops: one version
                read = [] if beat.get("version") is None else [beat["version"]]
            name = f"{beat.get('reader', 'ingest')} {posixpath.basename(folder.rstrip('/'))}"
            live[name] = [int(v) for v in read]
    return live


def merge_counts(result: CommitResult, kept: int) -> WriteResult:
    """The commit as the ingest summary counts it: rows whose chunk id was stored before count as updated."""
    return WriteResult(
        result.version, result.inserted - kept, kept, result.deleted - kept, 1, result.data_version or result.version
    )
