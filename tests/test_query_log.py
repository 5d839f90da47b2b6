"""The served-query log: batched writes, nothing lost when the store refuses a write, windows read back by time,
retention that leaves no expired query in any file, and questions kept raw, hashed or not at all."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lancedb
import numpy as np
import pytest

from tasks.schemas import query_log_schema
from tasks.serve import query_log
from tasks.serve.query_log import LoggedQuery, QueryLogWriter
from tasks.settings import Settings
from tasks.store import maintenance
from tasks.store.backends import open_store
from tasks.store.interface import Store

DIM = 8


def entry(i: int, at: datetime | None = None, table: str = "chunks") -> LoggedQuery:
    return LoggedQuery(
        query_id=f"q{i}",
        at=at or datetime.now(UTC),
        table=table,
        version=3,
        mode="hybrid",
        k=5,
        question=f"question {i}",
        retrieved_ids=[f"doc#{i}"],
        scores=[0.5],
        top1_similarity=0.5,
        best_similarity=0.6,
        latency_ms=12.5,
        answer=None,
        status=200,
        vector=np.full(DIM, i, np.float32),
    )


def test_queued_entries_are_written_in_one_commit_at_close(tmp_path: Path) -> None:
    db, store = lancedb.connect(str(tmp_path)), store_at(tmp_path)
    writer = QueryLogWriter(store, "query_log", DIM, flush_s=3600)  # no timed flush during the test
    for i in range(25):
        writer.record(entry(i))
    writer.close()
    table = db.open_table("query_log")
    assert table.count_rows() == 25 and writer.written == 25
    assert len(table.list_versions()) == 1  # one batch, one version
    row = table.search().where("query_id = 'q7'").to_list()[0]
    assert row["question"] == "question 7" and row["retrieved_ids"] == ["doc#7"]
    assert np.allclose(row["vector"], 7.0)


def test_a_refused_write_keeps_the_batch_for_the_next_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db, store = lancedb.connect(str(tmp_path)), store_at(tmp_path)
    writer = QueryLogWriter(store, "query_log", DIM, flush_s=3600)
    real_append = query_log.append
    refusals = iter([OSError(28, "No space left on device")])

    def full_then_free(*args: object, **kwargs: object) -> None:
        error = next(refusals, None)
        if error:
            raise error
        real_append(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(query_log, "append", full_then_free)
    for i in range(3):
        writer.record(entry(i))
    writer.flush()  # refused: the disk is full
    assert writer.written == 0 and not (tmp_path / "query_log.lance").exists()
    writer.record(entry(3))
    writer.close()  # the store accepts again: nothing was lost, in order
    ids = db.open_table("query_log").to_arrow().column("query_id").to_pylist()
    assert ids == ["q0", "q1", "q2", "q3"]


def test_recent_queries_reads_one_tables_window(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    now = datetime.now(UTC)
    entries = [entry(0, now - timedelta(hours=30)), entry(1, now - timedelta(hours=2)), entry(2, now)]
    query_log.append(store, "query_log", [*entries, entry(3, now, table="other")], DIM)
    settings = Settings(_env_file=None, lancedb_uri=str(tmp_path), table="chunks")  # type: ignore[call-arg]
    window = query_log.recent_queries(store, settings, now - timedelta(hours=24))
    assert window is not None and sorted(window.column("query_id").to_pylist()) == ["q1", "q2"]
    earlier = query_log.recent_queries(store, settings, now - timedelta(hours=48), until=now - timedelta(hours=24))
    assert earlier is not None and earlier.column("query_id").to_pylist() == ["q0"]
    nothing = Settings(_env_file=None, lancedb_uri=str(tmp_path / "empty"))  # type: ignore[call-arg]
    assert query_log.recent_queries(open_store(nothing), nothing, now) is None


def settings_for(uri: Path, **values: object) -> Settings:
    return Settings(_env_file=None, lancedb_uri=str(uri), table="chunks", **values)  # type: ignore[call-arg]


def store_at(uri: Path) -> Store:
    """The store at `uri` (its chunk table need not exist: the log is a side table)."""
    return open_store(settings_for(uri))


def files_holding(folder: Path, text: str) -> list[str]:
    """Every file under `folder` whose bytes contain `text` (UTF-8): what a `grep -r` of the table would find."""
    needle = text.encode()
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_expiry_applies_the_retention_and_keeps_everything_without_one(tmp_path: Path) -> None:
    db, store = lancedb.connect(str(tmp_path)), store_at(tmp_path)
    now = datetime.now(UTC)
    for i, age in enumerate([40, 20, 0]):  # days; three appends, three versions
        query_log.append(store, "query_log", [entry(i, now - timedelta(days=age))], DIM)
    assert maintenance.expire_query_log(settings_for(tmp_path, query_log_retention_days=0)).deleted == 0
    assert db.open_table("query_log").count_rows() == 3
    expiry = maintenance.expire_query_log(settings_for(tmp_path, query_log_retention_days=30))
    assert expiry.deleted == 1 and expiry.bytes_after < expiry.bytes_before
    assert sorted(db.open_table("query_log").to_arrow().column("query_id").to_pylist()) == ["q1", "q2"]


def test_an_expired_question_is_in_no_file_of_the_log_afterwards(tmp_path: Path) -> None:
    # given one batch (one fragment) of 20 queries, one of them older than the retention: 5 % of the fragment, below
    # the share at which Lance's default compaction rewrites a fragment, plus an earlier batch of its own
    db, store = lancedb.connect(str(tmp_path)), store_at(tmp_path)
    now = datetime.now(UTC)
    secret = "my passport number is X1234567, where do I renew it"
    old = replace(entry(0, now - timedelta(days=45)), question=secret, answer=f"Answer about {secret}")
    query_log.append(
        store, "query_log", [replace(entry(99, now - timedelta(days=60)), question=f"{secret} (earlier)")], DIM
    )
    query_log.append(store, "query_log", [old, *(entry(i, now - timedelta(hours=i)) for i in range(1, 20))], DIM)
    folder = tmp_path / "query_log.lance"
    assert files_holding(folder, secret)  # the text is in the files as written (the check below can fail)
    # when the retention is applied
    expiry = maintenance.expire_query_log(settings_for(tmp_path, query_log_retention_days=30))
    # then both old rows are gone from the table and from every file under it; the young rows are intact
    assert expiry.deleted == 2 and db.open_table("query_log").count_rows() == 19
    assert files_holding(folder, secret) == []
    assert files_holding(folder, "question 7") and "deleted 2 logged queries" in expiry.note


def test_a_dry_run_expiry_counts_and_changes_nothing(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    query_log.append(store, "query_log", [entry(0, datetime.now(UTC) - timedelta(days=40)), entry(1)], DIM)
    files = {p: p.read_bytes() for p in (tmp_path / "query_log.lance").rglob("*") if p.is_file()}
    expiry = maintenance.expire_query_log(settings_for(tmp_path, query_log_retention_days=30), dry_run=True)
    assert expiry.deleted == 1 and expiry.note.startswith("would delete 1 logged queries")
    assert {p: p.read_bytes() for p in (tmp_path / "query_log.lance").rglob("*") if p.is_file()} == files
    assert maintenance.expire_query_log(settings_for(tmp_path / "none")).note == "no table 'query_log' yet"


# --- what the log keeps of a question ------------------------------------------------------------------------------


def test_hashed_questions_keep_no_text_and_no_answer_but_equal_questions_match(tmp_path: Path) -> None:
    # given a writer that hashes, and questions with answers; two of them the same question
    db, store = lancedb.connect(str(tmp_path)), store_at(tmp_path)
    writer = QueryLogWriter(store, "query_log", DIM, flush_s=3600, questions="hashed")
    asked = ["where does Alice Smith live", "where does Alice Smith live", "how do I open a file"]
    for i, question in enumerate(asked):
        writer.record(replace(entry(i), question=question, answer=f"generated answer {i} for {question}"))
    writer.close()
    # then no question or answer text is in any file of the log, and no answer is kept
    folder = tmp_path / "query_log.lance"
    assert files_holding(folder, "Alice Smith") == [] and files_holding(folder, "generated answer") == []
    rows = sorted(db.open_table("query_log").to_arrow().to_pylist(), key=lambda r: r["query_id"])
    assert all(r["answer"] is None for r in rows)
    hashes = [r["question"] for r in rows]
    assert hashes[0] == hashes[1] != hashes[2] and all(h.startswith("hmac-sha256:") and len(h) == 76 for h in hashes)
    # the hash is the HMAC-SHA-256 of the question keyed with the table's own salt, independently recomputed
    salt = bytes.fromhex(db.open_table("query_log").schema.metadata[b"ragops.question_salt"].decode())
    assert len(salt) == 16
    assert hashes[2] == "hmac-sha256:" + hmac.new(salt, asked[2].encode(), hashlib.sha256).hexdigest()
    # the vectors, retrieved ids and similarities the monitor reads are all kept
    assert np.allclose(rows[2]["vector"], 2.0) and rows[2]["retrieved_ids"] == ["doc#2"]
    assert rows[2]["top1_similarity"] == pytest.approx(0.5)
    # no golden-set draft can be made of a hashed question
    assert query_log.review_drafts(rows, {}) == []


def test_another_log_table_hashes_the_same_question_differently(tmp_path: Path) -> None:
    db, store = lancedb.connect(str(tmp_path)), store_at(tmp_path)
    for name in ("log_a", "log_b"):
        query_log.append(store, name, [replace(entry(0), question="the same question")], DIM, "hashed")
    a, b = (db.open_table(n).to_arrow().column("question")[0].as_py() for n in ("log_a", "log_b"))
    assert a != b and a.startswith("hmac-sha256:") and b.startswith("hmac-sha256:")


def test_none_keeps_neither_question_nor_answer(tmp_path: Path) -> None:
    db, store = lancedb.connect(str(tmp_path)), store_at(tmp_path)
    writer = QueryLogWriter.from_settings(store, settings_for(tmp_path, query_log_questions="none"), DIM)
    writer.record(replace(entry(0), question="my email is bob@example.org", answer="an answer"))
    writer.close()
    [row] = db.open_table("query_log").to_arrow().to_pylist()
    assert row["question"] == "" and row["answer"] is None and np.allclose(row["vector"], 0.0)
    assert files_holding(tmp_path / "query_log.lance", "bob@example.org") == []


def test_a_log_made_before_salts_gets_one_when_hashing_starts(tmp_path: Path) -> None:
    # given a log table created without a salt (as before this setting), holding raw questions
    db, store = lancedb.connect(str(tmp_path)), store_at(tmp_path)
    db.create_table("query_log", query_log.to_arrow([entry(0)], DIM), schema=query_log_schema(DIM))
    # when hashing starts, the table gets a salt, and keeps it
    query_log.append(store, "query_log", [replace(entry(1), question="secret question")], DIM, "hashed")
    query_log.append(store, "query_log", [replace(entry(2), question="secret question")], DIM, "hashed")
    rows = sorted(db.open_table("query_log").to_arrow().to_pylist(), key=lambda r: r["query_id"])
    assert rows[0]["question"] == "question 0"  # rows written raw stay raw until the retention removes them
    assert rows[1]["question"] == rows[2]["question"] and rows[1]["question"].startswith("hmac-sha256:")


def test_a_writer_that_finds_the_table_just_created_appends_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a second worker's writer that checked before the first one created the table
    db, store = lancedb.connect(str(tmp_path)), store_at(tmp_path)
    query_log.append(store, "query_log", [entry(0)], DIM, "hashed")
    monkeypatch.setattr(store, "table_exists", lambda *_: False)
    # when it writes, its batch is appended, not dropped, and hashed with the salt of the table it found
    query_log.append(store, "query_log", [entry(1), replace(entry(2), question="question 0")], DIM, "hashed")
    rows = sorted(db.open_table("query_log").to_arrow().to_pylist(), key=lambda r: r["query_id"])
    assert [r["query_id"] for r in rows] == ["q0", "q1", "q2"]
    assert rows[0]["question"] == rows[2]["question"] != rows[1]["question"]
