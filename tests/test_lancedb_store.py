"""LanceDB store specification: one commit per write, quoting, concurrent writers, schema guarded (real LanceDB).

Writes go through Lance's distributed-write API (`fragments.write_rows`: staged fragments and removals, one commit).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from tasks.errors import StoreSchemaError
from tasks.schemas import Chunk, Document
from tasks.settings import Settings
from tasks.store import fragments, lance_reads, lancedb_store
from tasks.store.sql import in_list

DIM = 8


def make_rows(doc_id: str, texts: list[str], seed: int = 0, meta: str | None = None):
    document = Document(doc_id, "\n\n".join(texts), doc_id, "src", doc_id, "md")
    chunks = [Chunk(doc_id, i, text, 3) for i, text in enumerate(texts)]
    vectors = np.random.default_rng(seed).normal(size=(len(texts), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return fragments.chunk_rows(
        chunks, vectors, {doc_id: document}, {doc_id: f"h-{doc_id}"}, "m", DIM, metas={doc_id: meta}
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(lancedb_uri=str(tmp_path / "db"), table="chunks")


@pytest.fixture
def table(settings: Settings):
    return lancedb_store.ensure_chunk_table(lancedb.connect(settings.lancedb_uri), "chunks", DIM, "m")


def write(settings: Settings, rows: pa.Table, remove: list[str]) -> fragments.CommitResult | None:
    return fragments.write_rows(settings, "chunks", rows, remove)


def latest(settings: Settings):
    return lance_reads.open_dataset(settings, "chunks")


def doc_texts(settings: Settings) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in latest(settings).to_table(columns=["doc_id", "text"]).to_pylist():
        out.setdefault(row["doc_id"], []).append(row["text"])
    return {k: sorted(v) for k, v in out.items()}


def test_a_new_table_has_a_fulltext_index_and_no_rows(table) -> None:
    assert table.count_rows() == 0
    assert [idx.index_type for idx in table.list_indices()] == ["FTS"]


def test_one_write_is_one_version_that_adds_rows_and_removes_the_replaced_documents(table, settings) -> None:
    write(settings, make_rows("a.md", ["one", "two"]), [])
    write(settings, make_rows("b.md", ["three"]), [])
    before = latest(settings).version

    result = write(settings, make_rows("a.md", ["one", "TWO"]), ["a.md", "b.md"])

    assert result is not None and result.version == before + 1 == latest(settings).version
    assert (result.inserted, result.deleted, result.read_version) == (2, 3, before)
    assert doc_texts(settings) == {"a.md": ["TWO", "one"]}


def test_ids_with_quotes_are_quoted_not_injected(table, settings) -> None:
    write(settings, make_rows("it's.md", ["x"]), [])
    write(settings, make_rows("other.md", ["y"]), [])
    result = write(settings, make_rows("x", []), ["it's.md"])
    assert result is not None and (result.inserted, result.deleted) == (0, 1)
    assert doc_texts(settings) == {"other.md": ["y"]}
    assert in_list("doc_id", ["a'b"]) == "doc_id IN ('a''b')"


def test_nothing_to_write_writes_nothing(table, settings) -> None:
    before = latest(settings).version
    assert write(settings, make_rows("x", []), []) is None
    assert fragments.commit_staged(settings, "chunks", [], pa.array([], pa.string()), "run") is None
    assert latest(settings).version == before


def test_concurrent_writers_on_the_same_table_lose_nothing_and_duplicate_nothing(table, settings) -> None:
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for round_ in range(3):
                rows = make_rows(f"doc{i}.md", [f"text {i} round {round_} part {p}" for p in range(3)], seed=i)
                fragments.write_rows(settings, "chunks", rows, [f"doc{i}.md"], run_id=f"writer{i}-{round_}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert doc_texts(settings) == {f"doc{i}.md": [f"text {i} round 2 part {p}" for p in range(3)] for i in range(4)}
    ids = latest(settings).to_table(columns=["chunk_id"]).column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids)) == 12


def test_stored_documents_has_one_row_per_document_with_its_chunk_count(table, settings) -> None:
    write(settings, make_rows("a.md", ["one", "two", "three"], meta="size=3"), [])
    write(settings, make_rows("b.md", ["four"]), [])

    stored = fragments.stored_documents(latest(settings)).sort_by("doc_id").to_pylist()

    assert stored == [
        {"doc_id": "a.md", "doc_hash": "h-a.md", "source": "src", "source_meta": "size=3", "chunks": 3},
        {"doc_id": "b.md", "doc_hash": "h-b.md", "source": "src", "source_meta": None, "chunks": 1},
    ]


def test_stored_rows_are_the_rows_of_the_documents_asked_for(table, settings) -> None:
    rows = make_rows("a.md", ["alpha", "beta"], seed=3)
    write(settings, rows, [])
    write(settings, make_rows("b.md", ["gamma"]), [])
    columns = ["content_hash", "vector"]

    found = fragments.stored_rows(latest(settings), ["a.md", *(f"absent{i}" for i in range(600))], columns)

    expected = dict(zip(rows.column("content_hash").to_pylist(), rows.column("vector").to_pylist(), strict=True))
    got = dict(zip(found.column("content_hash").to_pylist(), found.column("vector").to_pylist(), strict=True))
    assert found.column_names == columns and set(got) == set(expected)
    for key, vector in got.items():
        assert np.allclose(vector, expected[key])
    none = fragments.stored_rows(latest(settings), [], columns)
    assert none.num_rows == 0 and none.column_names == columns


def test_a_table_of_another_dimension_or_model_is_refused(table, settings, tmp_path: Path) -> None:
    write(settings, make_rows("a.md", ["alpha"]), [])
    db = lancedb.connect(str(tmp_path / "db"))
    with pytest.raises(StoreSchemaError, match="holds 8-dimensional vectors but the model gives 384"):
        lancedb_store.ensure_chunk_table(db, "chunks", 384, "m")
    with pytest.raises(StoreSchemaError, match="was embedded with \\['m'\\], not 'other'"):
        lancedb_store.ensure_chunk_table(db, "chunks", DIM, "other")


def test_tags_are_created_and_moved(table, settings) -> None:
    write(settings, make_rows("a.md", ["alpha"]), [])
    table.checkout_latest()
    first = table.version
    lancedb_store.tag_version(table, "candidate-x", first)
    write(settings, make_rows("b.md", ["beta"]), [])
    table.checkout_latest()
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
