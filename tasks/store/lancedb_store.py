"""The LanceDB calls behind the storage seam: table setup, stored state, tags, indexes, the promotion log.

Only tasks/store/ imports it: everything above the store asks `open_store(settings)` (tasks/store/interface.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import StoreSchemaError, StoreWriteError, VersionNotFoundError
from tasks.schemas import PROMOTION_SCHEMA, chunk_schema
from tasks.settings import Settings
from tasks.store.interface import CANDIDATE_PREFIX as CANDIDATE_PREFIX  # for callers that name it from here
from tasks.store.interface import PRODUCTION_TAG as PRODUCTION_TAG
from tasks.store.lance_reads import dataset_versions
from tasks.store.locks import require_shared_lock_server
from tasks.store.sql import sql_string

log = logging.getLogger(__name__)


def connect(settings: Settings) -> Any:
    """A LanceDB connection for the configured URI and storage options."""
    try:
        import lancedb  # here, not at import: commands that only read through Lance never load it

        return lancedb.connect(settings.lancedb_uri, storage_options=settings.object_store_options())
    except OSError as exc:  # a local folder that cannot be created
        reason = "a file is in the way" if isinstance(exc, FileExistsError) else io_failure(exc)
        raise StoreWriteError(
            f"could not create the LanceDB folder {settings.lancedb_uri}: {reason}; "
            "set RAGOPS_LANCEDB_URI to a writable folder"
        ) from exc


def table_exists(db: Any, name: str) -> bool:
    """True when the table exists."""
    try:
        db.open_table(name)
    except ValueError:
        return False
    return True


def open_table(db: Any, name: str, version: int | str | None = None) -> Any:
    """Open a table, checked out at a version number or tag when given."""
    table = db.open_table(name)
    if version is None or version == "latest":
        return table
    try:
        table.checkout(int(version) if isinstance(version, str) and version.isdigit() else version)
    except (ValueError, RuntimeError, OSError) as exc:
        raise VersionNotFoundError(f"table {name!r} has no version or tag {version!r}: {exc}") from exc
    return table


def ensure_chunk_table(db: Any, name: str, dim: int, model: str, switch: bool = False) -> Any:
    """Open the chunk table, creating it empty with its full-text index on first use; check dimension and model
    (`switch`: the run re-embeds every row with `model`, so rows of another model are expected).

    An ingest calls it before it writes anything, so an object store without a shared lock server is refused here,
    before a single file is written (tasks/store/locks.py)."""
    require_shared_lock_server(str(db.uri))
    if not table_exists(db, name):
        try:
            table = db.create_table(name, schema=chunk_schema(dim))
            table.create_fts_index("text")
        except (ValueError, OSError, RuntimeError) as exc:
            if not table_exists(db, name):  # a concurrent run creating it at the same time is fine
                raise_if_io_failure(exc, name, db.uri)
                raise
            log.info("table %s was created concurrently (%s)", name, exc)
    table = db.open_table(name)
    if "source_meta" not in table.schema.names:  # a table from before metadata change detection
        table.add_columns([pa.field("source_meta", pa.string())])
    if not any(idx.index_type == "FTS" for idx in table.list_indices()):
        table.create_fts_index("text")  # a creator that died between the two steps
    stored_dim = table.schema.field("vector").type.list_size
    if stored_dim != dim:
        raise StoreSchemaError(
            f"table {name!r} holds {stored_dim}-dimensional vectors but the model gives {dim}: a model of another "
            "dimension needs its own table (another RAGOPS_TABLE / --table)"
        )
    # count rows of another model (the column is read only to report a mismatch)
    if not switch and table.count_rows(f"embedding_model != {sql_string(model)}"):
        models = stored_models(table)
        raise StoreSchemaError(
            f"table {name!r} was embedded with {sorted(models)}, not {model!r}: switch it with "
            "`ragops ingest --model`, or use another RAGOPS_TABLE"
        )
    return table


def stored_models(table: Any) -> set[str]:
    """The embedding models the table's rows were made with."""
    if table.count_rows() == 0:
        return set()
    column = table.to_lance().to_table(columns=["embedding_model"]).column("embedding_model")
    return set(pa.compute.unique(column).to_pylist())


def io_failure(exc: BaseException) -> str | None:
    """What the file system refused, in one line ("File too large (os error 27)"); None for other errors."""
    if isinstance(exc, OSError):
        return f"{exc.strerror} ({exc.filename})" if exc.strerror and exc.filename else str(exc)
    found = re.search(r"LanceError\(IO\): ([^\n]*?)(?:, /\S+\.rs:\d+:\d+)?(?:\n|$)", str(exc))
    return found.group(1) if found else None


def raise_if_io_failure(exc: BaseException, table: str, location: str) -> None:
    """Re-raise a file-system refusal (disk full, read-only) as a StoreWriteError saying what and where."""
    reason = io_failure(exc)
    if reason is not None:
        raise StoreWriteError(
            f"could not write table {table!r} at {location}: {reason}; free disk space or make the location writable"
        ) from exc


def tag_version(table: Any, tag: str, version: int) -> None:
    """Point `tag` at `version` (creating or moving it)."""
    tags = table.tags.list()
    if tag in tags:
        table.tags.update(tag, version)
    else:
        table.tags.create(tag, version)


def maintain_indexes(table: Any, settings: Settings, merge_segments: bool = False) -> tuple[list[str], int | None]:
    """Build the ANN index once the table is big enough; index new rows in a new full-text segment always, and fold
    them into a vector index past settings.reindex_unindexed_fraction. `merge_segments` (maintenance): every index
    merged into one segment holding every row.

    Returns what was done and the version the last action made (None when nothing was done).
    """
    actions: list[str] = []
    made: int | None = None
    rows = table.count_rows()
    indices = table.list_indices()
    has_vector_index = any("vector" in idx.columns and idx.index_type != "FTS" for idx in indices)
    if not has_vector_index and rows >= settings.ann_index_min_rows:
        partitions = max(1, int(math.sqrt(rows)))
        table.create_index(
            metric="cosine",
            vector_column_name="vector",
            index_type=settings.ann_index_type,
            num_partitions=partitions,
            num_sub_vectors=_sub_vectors(table.schema.field("vector").type.list_size),
        )
        actions.append(f"created {settings.ann_index_type} vector index ({partitions} partitions) on {rows} rows")
        made = int(table.version)
        indices = table.list_indices()
    dataset = table.to_lance()
    for idx in indices:
        stats = table.index_stats(idx.name)
        total = stats.num_indexed_rows + stats.num_unindexed_rows
        unindexed = stats.num_unindexed_rows
        segments = getattr(stats, "num_indices", 1) or 1
        if merge_segments and (unindexed or segments > 1):  # maintenance: one segment per index, every row in it
            dataset.optimize.optimize_indices(index_names=[idx.name], num_indices_to_merge=segments)
            actions.append(f"merged {segments} segments of {idx.name} and {unindexed} unindexed rows into one")
        elif idx.index_type == "FTS" and unindexed:
            # every query tokenizes unindexed rows again (109 of 3k rows: ~3 ms of an 11 ms hybrid query); a new
            # segment holds only the new rows (a merged index would be a new copy of the whole index each run,
            # kept by every retained version): BENCHMARKS.md §12
            dataset.optimize.optimize_indices(index_names=[idx.name], num_indices_to_merge=0)
            actions.append(f"indexed {unindexed} new rows in a new segment of {idx.name}")
        elif total and unindexed / total > settings.reindex_unindexed_fraction:
            dataset.optimize.optimize_indices(index_names=[idx.name])
            actions.append(f"folded {unindexed} unindexed rows into {idx.name}")
        else:
            continue
        made = int(dataset.version)
    return actions, made


def append_promotion_record(db: Any, log_table: str, record: dict[str, Any]) -> None:
    """Append one record to the append-only promotion log (a log from an older ragops gains the new columns)."""
    data = pa.Table.from_pylist([{**record, "at": datetime.now(UTC)}], schema=PROMOTION_SCHEMA)
    if table_exists(db, log_table):
        log_tbl = db.open_table(log_table)
        absent = [f for f in PROMOTION_SCHEMA if f.name not in log_tbl.schema.names]
        if absent:
            log_tbl.add_columns(absent)  # all null in the older records
        log_tbl.add(data)
    else:
        db.create_table(log_table, data, schema=PROMOTION_SCHEMA, exist_ok=True)


def promotion_records(db: Any, log_table: str, table: str) -> list[dict[str, Any]]:
    """The log's records for one chunk table, oldest first."""
    if not table_exists(db, log_table):
        return []
    rows = db.open_table(log_table).to_lance().to_table(filter=f"table = {sql_string(table)}").to_pylist()
    return sorted(rows, key=lambda r: r["at"])


def doc_ids(table: Any) -> set[str]:
    """Every document id a table version holds."""
    column = table.to_lance().to_table(columns=["doc_id"]).column("doc_id")
    return set(pc.unique(column).to_pylist())


def rows_digest(table: Any) -> tuple[int, int]:
    """An order-independent digest of a version's rows (chunk id and vector bytes): equal digests, same data."""
    total, mixed = 0, 0
    for batch in table.to_lance().to_batches(columns=["chunk_id", "vector"]):
        ids = batch.column("chunk_id").to_pylist()
        vectors = batch.column("vector").flatten().to_numpy(zero_copy_only=False).reshape(len(ids), -1)
        for chunk_id, vector in zip(ids, vectors, strict=True):
            h = int.from_bytes(hashlib.blake2b(chunk_id.encode() + vector.tobytes(), digest_size=8).digest(), "little")
            total, mixed = (total + h) % (1 << 64), mixed ^ h
    return total, mixed


def same_rows(a: Any, b: Any) -> bool:
    """True when two checked-out versions hold the same chunks with the same vectors (row order aside)."""
    return bool(a.count_rows() == b.count_rows() and rows_digest(a) == rows_digest(b))


def tagged_version(table: Any, tag: str) -> int | None:
    """The version a tag points at, or None."""
    info = table.tags.list().get(tag)
    return int(info["version"]) if info else None


def list_versions(table: Any) -> list[dict[str, Any]]:
    """Versions with their timestamps and the tags pointing at each."""
    return dataset_versions(table.to_lance())


def _sub_vectors(dim: int) -> int:
    for size in (8, 4, 2, 1):
        if dim % size == 0 and dim // size <= 96:
            return dim // size
    return 1
