"""The served-query log: a LanceDB table the query service appends to in batches and the monitor flow reads.

Requests never wait for a write: entries are queued and a background thread commits them together, at least
every `query_log_flush_s` seconds, so a busy server makes one table version per batch rather than per query.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.schemas import query_log_schema
from tasks.settings import Settings
from tasks.store import lancedb_store

log = logging.getLogger(__name__)
MAX_PENDING = 50_000  # entries kept while the store refuses writes; older ones are dropped (and counted)


@dataclass(frozen=True)
class LoggedQuery:
    """One served query."""

    query_id: str
    at: datetime
    table: str
    version: int
    mode: str
    k: int
    question: str
    retrieved_ids: list[str]
    scores: list[float]
    top1_similarity: float | None
    best_similarity: float | None
    latency_ms: float
    answer: str | None
    status: int
    vector: np.ndarray


def to_arrow(entries: list[LoggedQuery], dim: int) -> pa.Table:
    """The entries as rows of the log's schema."""
    vectors = np.asarray([e.vector for e in entries], dtype=np.float32).reshape(-1)
    schema = query_log_schema(dim)
    columns = {name: [getattr(e, name) for e in entries] for name in schema.names if name != "vector"}
    return pa.table({**columns, "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors), dim)}, schema=schema)


def append(db: Any, name: str, entries: list[LoggedQuery], dim: int) -> None:
    """Append entries to the log table, creating it on first use."""
    if not entries:
        return
    data = to_arrow(entries, dim)
    if lancedb_store.table_exists(db, name):
        db.open_table(name).add(data)
    else:
        db.create_table(name, data, schema=query_log_schema(dim), exist_ok=True)


class QueryLogWriter:
    """Queues served queries and commits them from a background thread; `close()` writes what is left."""

    def __init__(self, db: Any, name: str, dim: int, flush_s: float) -> None:
        self.db, self.name, self.dim, self.flush_s = db, name, dim, flush_s
        self.dropped = 0  # entries lost because the store refused writes for too long
        self.written = 0
        self._pending: list[LoggedQuery] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="query-log-writer", daemon=True)
        self._thread.start()

    def record(self, entry: LoggedQuery) -> None:
        """Queue one entry (never blocks on the store)."""
        with self._lock:
            self._pending.append(entry)
            if len(self._pending) > MAX_PENDING:
                self.dropped += len(self._pending) - MAX_PENDING
                del self._pending[: len(self._pending) - MAX_PENDING]

    def flush(self) -> None:
        """Write everything queued so far."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                append(self.db, self.name, batch, self.dim)
                self.written += len(batch)
            except Exception as exc:  # the store may be full or busy: keep the entries for the next attempt
                log.warning("could not write %d logged queries to %s: %s", len(batch), self.name, exc)
                with self._lock:
                    self._pending[:0] = batch

    def close(self) -> None:
        """Stop the thread and write what is queued."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()


def recent_queries(db: Any, settings: Settings, since: datetime, until: datetime | None = None) -> pa.Table | None:
    """Logged queries of the chunk table served at or after `since` (before `until`); None when nothing is logged."""
    if not settings.query_log_table or not lancedb_store.table_exists(db, settings.query_log_table):
        return None
    condition = f"table = {lancedb_store.sql_string(settings.table)} AND at >= {_timestamp(since)}"
    if until is not None:
        condition += f" AND at < {_timestamp(until)}"
    return db.open_table(settings.query_log_table).to_lance().to_table(filter=condition)


def compact(db: Any, name: str, retention: timedelta | None, keep: timedelta = timedelta(hours=1)) -> int:
    """Delete entries older than `retention` (None: keep all), merge the small appends into larger files and drop
    table versions older than `keep`; returns how many entries were deleted."""
    if not lancedb_store.table_exists(db, name):
        return 0
    table = db.open_table(name)
    deleted = 0
    if retention is not None:
        expired = f"at < {_timestamp(datetime.now(UTC) - retention)}"
        deleted = table.count_rows(expired)
        if deleted:
            table.delete(expired)
    table.optimize(cleanup_older_than=keep)
    return deleted


def _timestamp(value: datetime) -> str:
    return f"TIMESTAMP '{value.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def retrieved_texts(
    db: Any, table: str, rows: list[dict[str, Any]], per_row: int | None = None
) -> dict[tuple[int, str], str]:
    """(version, chunk_id) → text of the chunks logged rows retrieved (the first `per_row` of each), read from the
    version that served them."""
    texts: dict[tuple[int, str], str] = {}
    for version in {row["version"] for row in rows}:
        ids = [i for row in rows if row["version"] == version for i in row["retrieved_ids"][:per_row]]
        found = lancedb_store.chunk_texts(db, table, version, ids)
        texts.update(((version, chunk_id), text) for chunk_id, text in found.items())
    return texts


def review_drafts(
    rows: list[dict[str, Any]], texts: dict[tuple[int, str], str], contexts: int = 3
) -> list[dict[str, Any]]:
    """Served queries as drafts for new golden-set cases: the question, what was returned and answered.

    A reviewer adds `kind`, `reference_answer` and `evidence` (datasets/golden/README.md) to turn a draft into a case.
    """
    return [
        {
            "id": f"served-{row['query_id']}",
            "question": row["question"],
            "served_at": row["at"].isoformat(),
            "version": row["version"],
            "mode": row["mode"],
            "top1_similarity": row["top1_similarity"],
            "answer": row["answer"],
            "retrieved": [
                {"chunk_id": chunk_id, "text": texts.get((row["version"], chunk_id), "")}
                for chunk_id in row["retrieved_ids"][:contexts]
            ],
        }
        for row in rows
    ]
