"""The served-query log: batched writes, nothing lost when the store refuses a write, windows read back by time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import lancedb
import numpy as np
import pytest

from tasks.serve import query_log
from tasks.serve.query_log import LoggedQuery, QueryLogWriter
from tasks.settings import Settings

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
    db = lancedb.connect(str(tmp_path))
    writer = QueryLogWriter(db, "query_log", DIM, flush_s=3600)  # no timed flush during the test
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
    db = lancedb.connect(str(tmp_path))
    writer = QueryLogWriter(db, "query_log", DIM, flush_s=3600)
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
    db = lancedb.connect(str(tmp_path))
    now = datetime.now(UTC)
    entries = [entry(0, now - timedelta(hours=30)), entry(1, now - timedelta(hours=2)), entry(2, now)]
    query_log.append(db, "query_log", [*entries, entry(3, now, table="other")], DIM)
    settings = Settings(_env_file=None, lancedb_uri=str(tmp_path), table="chunks")  # type: ignore[call-arg]
    window = query_log.recent_queries(db, settings, now - timedelta(hours=24))
    assert window is not None and sorted(window.column("query_id").to_pylist()) == ["q1", "q2"]
    earlier = query_log.recent_queries(db, settings, now - timedelta(hours=48), until=now - timedelta(hours=24))
    assert earlier is not None and earlier.column("query_id").to_pylist() == ["q0"]
    nothing = Settings(_env_file=None, lancedb_uri=str(tmp_path / "empty"))  # type: ignore[call-arg]
    assert query_log.recent_queries(lancedb.connect(str(tmp_path / "empty")), nothing, now) is None


def test_compaction_applies_the_retention_and_keeps_everything_without_one(tmp_path: Path) -> None:
    db = lancedb.connect(str(tmp_path))
    now = datetime.now(UTC)
    for i, age in enumerate([40, 20, 0]):  # days; three appends, three versions
        query_log.append(db, "query_log", [entry(i, now - timedelta(days=age))], DIM)
    assert query_log.compact(db, "query_log", retention=None) == 0
    assert db.open_table("query_log").count_rows() == 3
    assert query_log.compact(db, "query_log", retention=timedelta(days=30)) == 1
    assert sorted(db.open_table("query_log").to_arrow().column("query_id").to_pylist()) == ["q1", "q2"]
