"""LanceDB store specification: one commit per write, quoting, conflicts retried, schema guarded (real LanceDB)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import lancedb
import numpy as np
import pytest

from tasks.errors import StoreSchemaError
from tasks.schemas import Chunk, Document
from tasks.store import lancedb_store

DIM = 8


def make_rows(doc_id: str, texts: list[str], seed: int = 0):
    document = Document(doc_id, "\n\n".join(texts), doc_id, "src", doc_id, "md")
    chunks = [Chunk(doc_id, i, text, 3) for i, text in enumerate(texts)]
    vectors = np.random.default_rng(seed).normal(size=(len(texts), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return lancedb_store.chunk_rows(chunks, vectors, {doc_id: document}, {doc_id: f"h-{doc_id}"}, "m", DIM)


@pytest.fixture
def table(tmp_path: Path):
    db = lancedb.connect(str(tmp_path / "db"))
    return lancedb_store.ensure_chunk_table(db, "chunks", DIM, "m")


def doc_texts(table) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in table.to_arrow().to_pylist():
        out.setdefault(row["doc_id"], []).append(row["text"])
    return {k: sorted(v) for k, v in out.items()}


def test_a_new_table_has_a_fulltext_index_and_no_rows(table) -> None:
    assert table.count_rows() == 0
    assert [idx.index_type for idx in table.list_indices()] == ["FTS"]


def test_one_write_is_one_version_that_upserts_and_deletes(table) -> None:
    lancedb_store.write_changes(table, make_rows("a.md", ["one", "two"]), [], attempts=3)
    lancedb_store.write_changes(table, make_rows("b.md", ["three"]), [], attempts=3)
    before = table.version

    result = lancedb_store.write_changes(table, make_rows("a.md", ["one", "TWO"]), ["a.md", "b.md"], attempts=3)

    assert result is not None and result.version == before + 1 == table.version
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 2)  # "one" kept its id
    assert doc_texts(table) == {"a.md": ["TWO", "one"]}


def test_ids_with_quotes_are_quoted_not_injected(table) -> None:
    lancedb_store.write_changes(table, make_rows("it's.md", ["x"]), [], attempts=3)
    lancedb_store.write_changes(table, make_rows("other.md", ["y"]), [], attempts=3)
    lancedb_store.write_changes(table, make_rows("x", [])[:0], ["it's.md"], attempts=3)
    assert doc_texts(table) == {"other.md": ["y"]}
    assert lancedb_store.in_list("doc_id", ["a'b"]) == "doc_id IN ('a''b')"


def test_nothing_to_write_writes_nothing(table) -> None:
    before = table.version
    assert lancedb_store.write_changes(table, make_rows("x", [])[:0], [], attempts=3) is None
    assert table.version == before


def test_concurrent_writers_on_the_same_table_lose_nothing(table, tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        own = lancedb.connect(str(tmp_path / "db")).open_table("chunks")  # each writer its own handle
        try:
            for round_ in range(3):
                rows = make_rows(f"doc{i}.md", [f"text {i} round {round_} part {p}" for p in range(3)], seed=i)
                lancedb_store.write_changes(own, rows, [f"doc{i}.md"], attempts=8)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    table.checkout_latest()
    texts = doc_texts(table)
    assert texts == {f"doc{i}.md": [f"text {i} round 2 part {p}" for p in range(3)] for i in range(4)}


def test_stored_vectors_are_found_by_content_hash(table) -> None:
    rows = make_rows("a.md", ["alpha", "beta"], seed=3)
    lancedb_store.write_changes(table, rows, [], attempts=3)
    found = lancedb_store.stored_vectors(table, ["a.md"], "m")
    expected = dict(zip(rows.column("content_hash").to_pylist(), rows.column("vector").to_pylist(), strict=True))
    assert set(found) == set(expected)
    for key, vector in found.items():
        assert np.allclose(vector, expected[key])
    assert lancedb_store.stored_vectors(table, ["a.md"], "another-model") == {}


def test_a_table_of_another_dimension_or_model_is_refused(table, tmp_path: Path) -> None:
    lancedb_store.write_changes(table, make_rows("a.md", ["alpha"]), [], attempts=3)
    db = lancedb.connect(str(tmp_path / "db"))
    with pytest.raises(StoreSchemaError, match="holds 8-dimensional vectors but the model gives 384"):
        lancedb_store.ensure_chunk_table(db, "chunks", 384, "m")
    with pytest.raises(StoreSchemaError, match="was embedded with \\['m'\\], not 'other'"):
        lancedb_store.ensure_chunk_table(db, "chunks", DIM, "other")


def test_tags_are_created_and_moved(table) -> None:
    lancedb_store.write_changes(table, make_rows("a.md", ["alpha"]), [], attempts=3)
    first = table.version
    lancedb_store.tag_version(table, "candidate-x", first)
    lancedb_store.write_changes(table, make_rows("b.md", ["beta"]), [], attempts=3)
    lancedb_store.tag_version(table, "candidate-x", table.version)
    assert table.tags.list()["candidate-x"]["version"] == table.version != first
    listed = {v["version"]: v["tags"] for v in lancedb_store.list_versions(table)}
    assert listed[table.version] == ["candidate-x"] and listed[first] == []


def test_a_promotion_log_from_an_older_ragops_gains_the_new_columns(tmp_path: Path) -> None:
    import pyarrow as pa

    from tasks.schemas import PROMOTION_SCHEMA

    db = lancedb.connect(str(tmp_path / "db"))
    old_schema = pa.schema([f for f in PROMOTION_SCHEMA if f.name not in ("golden_hash", "details")])
    old = {"table": "chunks", "action": "promote", "version": 3, "previous_version": None, "mode": "vector",
           "run_id": "r1", "trigger": "cli", "reasons": "[]", "metrics": "{}", "policy_hash": "p", "report": "",
           "at": datetime.now(UTC)}  # fmt: skip
    db.create_table("promotions", pa.Table.from_pylist([old], schema=old_schema))

    new = {**old, "version": 5, "previous_version": 3, "run_id": "r2", "golden_hash": "g" * 64, "details": "{}"}
    new.pop("at")
    lancedb_store.append_promotion_record(db, "promotions", new)

    records = lancedb_store.promotion_records(db, "promotions", "chunks")
    assert [(r["version"], r["golden_hash"], r["details"]) for r in records] == [(3, None, None), (5, "g" * 64, "{}")]


def test_same_rows_sees_identical_data_in_another_version_and_a_changed_vector(table, tmp_path: Path) -> None:
    table.add(make_rows("a", ["one text", "two text"]))
    first = table.version
    data = table.to_arrow()
    table.merge_insert("chunk_id").when_matched_update_all().execute(data)  # rewritten, identical
    rewritten = table.version
    changed = make_rows("a", ["one text", "two text"], seed=1)  # same chunk ids, other vectors
    table.merge_insert("chunk_id").when_matched_update_all().execute(changed)

    def at(version: int):
        return lancedb_store.open_table(lancedb.connect(str(tmp_path / "db")), "chunks", version)

    assert rewritten != first and lancedb_store.same_rows(at(first), at(rewritten))
    assert not lancedb_store.same_rows(at(first), at(table.version))
