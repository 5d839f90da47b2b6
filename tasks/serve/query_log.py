"""The served-query log: a side table of the store that the query service appends to in batches and the monitor
flow reads.

Requests never wait for a write: entries are queued and a background thread commits them together, at least
every `query_log_flush_s` seconds, so a busy server makes one table version per batch rather than per query.

What a row keeps of the question follows `query_log_questions`: the text as asked (`raw`), an HMAC-SHA-256 of it
keyed with the table's own random salt (`hashed`: equal questions stay countable, the text is gone), or nothing
(`none`). Under `hashed` and `none` the generated answer is not kept either. The query vector is always kept: the
monitor's drift checks work from it. README.md, "The query log", says what each column holds and for how long.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from tasks.schemas import query_log_schema
from tasks.settings import Settings
from tasks.store.interface import Store

log = logging.getLogger(__name__)
MAX_PENDING = 50_000  # entries kept while the store refuses writes; older ones are dropped (and counted)
QuestionPolicy = Literal["raw", "hashed", "none"]
# The salt lives in the log table's schema metadata: made at random with the table, readable by whoever can read
# the log (and only them), so a hash matches nothing outside this table. It is not a secret from those readers:
# they can hash a guessed question and look for it. `none` is the setting for questions nobody may confirm.
SALT_KEY = "ragops.question_salt"
HASH_PREFIX = "hmac-sha256:"
_HASHED = re.compile(rf"{HASH_PREFIX}[0-9a-f]{{64}}")


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


def to_arrow(entries: list[LoggedQuery], dim: int, salt: bytes | None = None) -> pa.Table:
    """The entries as rows of the log's schema (`salt`: the table's, to hash questions with)."""
    vectors = np.asarray([e.vector for e in entries], dtype=np.float32).reshape(-1)
    schema = query_log_schema(dim)
    columns = {name: [getattr(e, name) for e in entries] for name in schema.names if name != "vector"}
    if salt is not None:
        columns["question"] = [question_hash(q, salt) for q in columns["question"]]
    return pa.table({**columns, "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors), dim)}, schema=schema)


def question_hash(question: str, salt: bytes) -> str:
    """The question as the log keeps it under `hashed`: an HMAC-SHA-256 keyed with the table's salt."""
    return HASH_PREFIX + hmac.new(salt, question.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def question_kept(question: str) -> bool:
    """Whether a logged question is the text as asked (not a hash, not left out)."""
    return bool(question) and not _HASHED.fullmatch(question)


def as_policy(entry: LoggedQuery, policy: QuestionPolicy) -> LoggedQuery:
    """What the log may keep of one query: under `hashed` and `none` no answer; under `none` no question either
    (under `hashed` the question is hashed as it is written, with the table's salt)."""
    if policy == "raw":
        return entry
    return replace(entry, question="" if policy == "none" else entry.question, answer=None)


def append(store: Store, name: str, entries: list[LoggedQuery], dim: int, policy: QuestionPolicy = "raw") -> None:
    """Append entries to the log table, creating it (with a fresh salt) on first use."""
    if not entries:
        return
    entries = [as_policy(e, policy) for e in entries]
    if not store.table_exists(name):
        salt = secrets.token_bytes(16)
        data = to_arrow(entries, dim, salt if policy == "hashed" else None)
        data = data.replace_schema_metadata({**(data.schema.metadata or {}), SALT_KEY: salt.hex()})
        if store.create_rows(name, data):
            return
        # another writer (a second worker) created it first: append to theirs, hashed with its salt
    store.append_rows(name, to_arrow(entries, dim, table_salt(store, name) if policy == "hashed" else None))


def table_salt(store: Store, name: str) -> bytes:
    """The log table's salt; a log made before salts existed gets one now."""
    metadata = store.side_metadata(name)
    if SALT_KEY not in metadata:
        metadata = store.set_side_metadata(name, {SALT_KEY: secrets.token_hex(16)})  # a racing writer's may win
    return bytes.fromhex(metadata[SALT_KEY])


class QueryLogWriter:
    """Queues served queries and commits them from a background thread; `close()` writes what is left.

    `questions` is `query_log_questions`: what is kept of each question and answer (`append`). `from_settings`
    passes it."""

    @classmethod
    def from_settings(cls, store: Store, settings: Settings, dim: int) -> QueryLogWriter:
        """The writer of `settings.query_log_table`, keeping questions as `query_log_questions` says."""
        return cls(store, settings.query_log_table, dim, settings.query_log_flush_s, settings.query_log_questions)

    def __init__(self, store: Store, name: str, dim: int, flush_s: float, questions: QuestionPolicy = "raw") -> None:
        self.store, self.name, self.dim, self.flush_s, self.questions = store, name, dim, flush_s, questions
        self.dropped = 0  # entries lost because the store refused writes for too long
        self.written = 0
        self._pending: list[LoggedQuery] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="query-log-writer", daemon=True)
        self._thread.start()

    def record(self, entry: LoggedQuery) -> None:
        """Queue one entry (never blocks on the store); what the policy drops is dropped here, not at write."""
        entry = as_policy(entry, self.questions)
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
                append(self.store, self.name, batch, self.dim, self.questions)
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


def recent_queries(store: Store, settings: Settings, since: datetime, until: datetime | None = None) -> pa.Table | None:
    """Logged queries of the chunk table served at or after `since` (before `until`); None when nothing is logged."""
    if not settings.query_log_table:
        return None
    return store.side_rows(settings.query_log_table, {"table": store.table}, since=since, until=until)


def retrieved_texts(store: Store, rows: list[dict[str, Any]], per_row: int | None = None) -> dict[tuple[int, str], str]:
    """(version, chunk_id) → text of the chunks logged rows retrieved (the first `per_row` of each), read from the
    version that served them."""
    texts: dict[tuple[int, str], str] = {}
    for version in {row["version"] for row in rows}:
        ids = [i for row in rows if row["version"] == version for i in row["retrieved_ids"][:per_row]]
        if not ids:
            continue
        found = store.at(version).rows(["chunk_id", "text"], chunk_ids=ids)
        chunk_ids, chunk_texts = found.column("chunk_id").to_pylist(), found.column("text").to_pylist()
        texts.update(((version, chunk_id), text) for chunk_id, text in zip(chunk_ids, chunk_texts, strict=True))
    return texts


def review_drafts(
    rows: list[dict[str, Any]], texts: dict[tuple[int, str], str], contexts: int = 3
) -> list[dict[str, Any]]:
    """Served queries as drafts for new golden-set cases: the question, what was returned and answered.

    A reviewer adds `kind`, `reference_answer` and `evidence` (datasets/golden/README.md) to turn a draft into a case.
    Rows whose question was logged hashed or not at all make no draft.
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
        if question_kept(row["question"])
    ]
