"""The storage seam: evaluation, serving and promotion run unchanged on any `Store`.

An in-memory store (a few dozen lines over pyarrow tables) and the LanceDB store, holding the same two versions,
answer the same questions alike: rows, documents, tags, a vector search, the stale check of a golden set, a coverage
check, and a promotion followed by a rollback. And, read from the source files, nothing above `tasks/store/` opens
LanceDB or Lance.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from evaluations import promotion
from evaluations.golden import GoldenCoverageError, GoldenQuestion, GoldenSet, check_coverage
from evaluations.judgement import prepare
from tasks.embed.embedding import EmbedSpec
from tasks.errors import StoreConflictError, VersionNotFoundError
from tasks.schemas import Chunk, Document
from tasks.serve.retrieval import search
from tasks.settings import Settings
from tasks.store import fragments
from tasks.store.backends import open_store
from tasks.store.interface import Store, TableVersion
from tasks.store.production import ProductionState, production_state

from .conftest import REPO

DIM, MODEL = 3, "m"
FLUSHED = "The cache is flushed when the process exits cleanly."
LOCKS = "Locks are released in reverse order of acquisition."
TOKENS = "Tokens are generated with the secrets module for safety."
TIMER = "The cache is flushed every ten seconds by a timer."
COMPOST = "Compost heaps need air and moisture to work well."
# version 1: a.md and b.md; version 2: a.md edited (its first chunk rewritten, the second kept) and c.md added
FIRST = {"a.md": [(FLUSHED, [1, 0, 0]), (LOCKS, [0, 1, 0])], "b.md": [(TOKENS, [0, 0, 1])]}
SECOND = {"a.md": [(TIMER, [0.8, 0.6, 0]), (LOCKS, [0, 1, 0])], "c.md": [(COMPOST, [0.6, 0, 0.8])]}
QUERY = np.asarray([0.9, 0.1, 0.0], np.float32) / np.linalg.norm([0.9, 0.1, 0.0])
NO_MODEL = cast(EmbedSpec, None)  # every search below brings its query vector: no model is loaded


def rows_of(docs: dict[str, list[tuple[str, list[float]]]], version: int) -> pa.Table:
    """Chunk rows in the table's schema; a document's hash changes with its version's text."""
    chunks = [
        Chunk(doc, i, text, len(text.split())) for doc, parts in docs.items() for i, (text, _) in enumerate(parts)
    ]
    documents = {doc: Document(doc, "", doc, "src", doc, "md") for doc in docs}
    hashes = {doc: f"{doc}-{hash(tuple(t for t, _ in parts)) & 0xFFFF}" for doc, parts in docs.items()}
    vectors = np.asarray([v for parts in docs.values() for _, v in parts], np.float32)
    return fragments.chunk_rows(chunks, vectors, documents, hashes, MODEL, DIM)


# --- an in-memory store ------------------------------------------------------------------------------------------


class MemoryVersion:
    """One version: a pyarrow table."""

    def __init__(self, name: str, version: int, data: pa.Table) -> None:
        self.name, self.version, self._data = name, version, data

    def count(self) -> int:
        return self._data.num_rows

    def schema(self) -> pa.Schema:
        return self._data.schema

    def rows(
        self,
        columns: list[str] | None = None,
        *,
        doc_ids: Iterable[str] | None = None,
        chunk_ids: Iterable[str] | None = None,
    ) -> pa.Table:
        data = self._data
        for column, wanted in (("doc_id", doc_ids), ("chunk_id", chunk_ids)):
            if wanted is not None:
                data = data.filter(pc.is_in(data.column(column), value_set=pa.array(list(wanted), pa.string())))
        return data.select(columns) if columns else data

    def take(self, indices: list[int], columns: list[str]) -> pa.Table:
        return self._data.take(indices).select(columns)

    def doc_ids(self) -> set[str]:
        return set(self._data.column("doc_id").to_pylist())

    def search(self, *, mode: str, k: int, columns: list[str], vector: Any = None, **_: Any) -> list[dict[str, Any]]:
        if mode != "vector":
            raise NotImplementedError(mode)
        matrix = np.asarray(self._data.column("vector").to_pylist(), np.float32)
        cosine = matrix @ vector / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector))
        best = np.argsort(-cosine, kind="stable")[:k]
        rows = self._data.take(best).select(columns).to_pylist()
        return [{**row, "_distance": float(1 - cosine[i])} for row, i in zip(rows, best, strict=True)]

    def same_rows(self, other: TableVersion) -> bool:
        def digest(version: TableVersion) -> list[tuple[str, bytes]]:
            data = version.rows(["chunk_id", "vector"])
            vectors = np.asarray(data.column("vector").to_pylist(), np.float32)
            return sorted(zip(data.column("chunk_id").to_pylist(), (v.tobytes() for v in vectors), strict=True))

        return digest(self) == digest(other)

    def metadata(self) -> dict[str, str]:
        return {}


class MemoryStore:
    """Versions, tags and side tables in memory."""

    def __init__(self, table: str = "chunks") -> None:
        self.table, self.location = table, "memory://"
        self._versions: list[pa.Table] = []
        self._tags: dict[str, int] = {}
        self._side: dict[str, list[dict[str, Any]]] = {}

    def commit(self, data: pa.Table) -> int:
        """A new version holding `data` (the test's write path)."""
        self._versions.append(data)
        return len(self._versions)

    def exists(self) -> bool:
        return bool(self._versions)

    def at(self, version: int | str | None = None) -> MemoryVersion:
        number = len(self._versions) if version in (None, "latest") else self._tags.get(str(version), version)
        if not isinstance(number, int) or not 1 <= number <= len(self._versions):
            raise VersionNotFoundError(f"table {self.table!r} has no version or tag {version!r}")
        return MemoryVersion(self.table, number, self._versions[number - 1])

    def latest_version(self) -> int:
        return len(self._versions)

    def versions(self) -> list[dict[str, Any]]:
        return [
            {"version": v, "tags": sorted(t for t, n in self._tags.items() if n == v)}
            for v in range(1, len(self._versions) + 1)
        ]

    def tagged(self, tag: str) -> int | None:
        return self._tags.get(tag)

    def tag(self, tag: str, version: int) -> None:
        self._tags[tag] = version

    def log_records(self, log_table: str) -> list[dict[str, Any]]:
        return [r for r in self._side.get(log_table, []) if r["table"] == self.table]

    def append_log(self, log_table: str, record: dict[str, Any]) -> None:
        self._side.setdefault(log_table, []).append({**record, "at": datetime.now(UTC)})


# --- the same two versions in each store -------------------------------------------------------------------------


def memory_store(tmp_path: Path) -> tuple[Store, Settings, int, int]:
    store = MemoryStore()
    v1 = store.commit(rows_of(FIRST, 1))
    kept = store.at(v1).rows()
    kept = kept.filter(pc.not_equal(kept.column("doc_id"), "a.md"))
    v2 = store.commit(pa.concat_tables([kept, rows_of(SECOND, 2)]))
    return cast(Store, store), settings_at(tmp_path / "locks"), v1, v2


def lance_store(tmp_path: Path) -> tuple[Store, Settings, int, int]:
    settings = settings_at(tmp_path / "db")
    store = open_store(settings)
    store.create_chunk_table(DIM, MODEL)
    first = fragments.write_rows(settings, "chunks", rows_of(FIRST, 1), [])
    second = fragments.write_rows(settings, "chunks", rows_of(SECOND, 2), ["a.md"])
    assert first is not None and second is not None
    return store, settings, first.version, second.version


def settings_at(uri: Path) -> Settings:
    return Settings(_env_file=None, lancedb_uri=str(uri), table="chunks")  # type: ignore[call-arg]


@pytest.fixture(params=["memory", "lance"])
def versions(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, Settings, int, int]:
    """(store, settings, version 1, version 2) of one backend."""
    return (memory_store if request.param == "memory" else lance_store)(tmp_path)


def texts(table: pa.Table) -> list[str]:
    return sorted(table.column("text").to_pylist())


def question(qid: str, doc: str, passage: str) -> GoldenQuestion:
    return GoldenQuestion(
        id=qid,
        question=f"What does {doc} say?",
        kind="factoid",
        reference_answer="It says so.",
        evidence=[{"doc_id": doc, "passage": passage}],  # type: ignore[list-item]
    )


# --- conformance: both stores answer alike -----------------------------------------------------------------------


def test_a_version_reads_its_own_rows_documents_and_schema(versions: tuple[Store, Settings, int, int]) -> None:
    store, _, v1, v2 = versions
    first, second = store.at(v1), store.at(v2)
    assert store.latest_version() == v2 and store.at().version == v2
    assert (first.count(), second.count()) == (3, 4)
    assert (first.doc_ids(), second.doc_ids()) == ({"a.md", "b.md"}, {"a.md", "b.md", "c.md"})
    assert texts(first.rows(["text"], doc_ids=["a.md"])) == [LOCKS, FLUSHED]
    assert texts(second.rows(["text"], doc_ids=["a.md", "gone.md"])) == [LOCKS, TIMER]
    assert texts(second.rows(["text"], doc_ids=["c.md", "a.md"])) == [COMPOST, LOCKS, TIMER]
    assert second.rows(["text"], doc_ids=[]).num_rows == 0
    compost = second.rows(["chunk_id", "text"], doc_ids=["c.md"]).to_pylist()[0]
    assert second.rows(["text"], chunk_ids=[compost["chunk_id"]]).column("text").to_pylist() == [COMPOST]
    assert first.rows(["text"], chunk_ids=[compost["chunk_id"]]).num_rows == 0
    assert second.take([0], ["doc_id", "text"]).num_rows == 1
    assert second.schema().field("vector").type.list_size == DIM
    assert first.same_rows(store.at(v1)) and not first.same_rows(second)


def test_tags_point_at_versions_and_an_unknown_one_is_a_clear_error(
    versions: tuple[Store, Settings, int, int],
) -> None:
    store, _, v1, _ = versions
    store.tag("candidate-x", v1)
    assert store.tagged("candidate-x") == v1 and store.tagged("nothing") is None
    assert store.at("candidate-x").version == v1
    assert "candidate-x" in next(v["tags"] for v in store.versions() if v["version"] == v1)
    with pytest.raises(VersionNotFoundError, match="no version or tag 'nope'"):
        store.at("nope")


def test_vector_search_ranks_by_cosine_in_the_version_it_is_given(versions: tuple[Store, Settings, int, int]) -> None:
    # cosine with the query: flushed .994, locks .110, tokens 0; timer .861, compost .596
    store, _, v1, v2 = versions
    old = search(store.at(v1), "cache", NO_MODEL, "vector", k=3, query_vector=QUERY)
    new = search(store.at(v2), "cache", NO_MODEL, "vector", k=3, query_vector=QUERY, similarity=True)
    assert [h.text for h in old] == [FLUSHED, LOCKS, TOKENS] and [h.rank for h in old] == [1, 2, 3]
    assert old[0].score == pytest.approx(0.9939, abs=1e-4)
    assert [h.text for h in new] == [TIMER, COMPOST, LOCKS]
    assert [round(h.similarity or 0, 3) for h in new] == [0.861, 0.596, 0.11]


def test_the_stale_check_leaves_out_a_passage_edited_in_its_document(
    versions: tuple[Store, Settings, int, int],
) -> None:
    # a.md changed between the versions: its first passage is gone (stale), its second still verbatim (scored)
    store, _, v1, v2 = versions
    questions = [question("q1", "a.md", FLUSHED), question("q2", "a.md", LOCKS), question("q3", "b.md", TOKENS)]
    prepared = prepare(questions, [store.at(v2), store.at(v1)])
    assert [q.id for q in prepared.questions] == ["q2", "q3"]
    assert list(prepared.stale) == ["q1"] and prepared.stale["q1"][0].startswith(f"version {v2}: ")
    assert {q: len(units) for q, units in prepared.ideal_units.items()} == {"q2": 2, "q3": 2}  # a chunk per version
    assert prepare(questions, [store.at(v1)]).stale == {}


def test_coverage_counts_the_cited_documents_a_version_holds(versions: tuple[Store, Settings, int, int]) -> None:
    store, _, v1, _ = versions
    cites = [question("q1", "a.md", FLUSHED), question("q3", "b.md", TOKENS), question("q4", "gone.md", COMPOST)]
    golden = GoldenSet("golden.jsonl", cites)
    assert check_coverage(store.at(v1), golden, "chunks", 0.5) == {"cited_docs": 3, "cited_found": 2}
    with pytest.raises(GoldenCoverageError, match=f"2 are in table 'chunks' version {v1}"):
        check_coverage(store.at(v1), golden, "chunks", 0.9)


def test_promotion_and_rollback_move_the_tag_and_log_each_move(versions: tuple[Store, Settings, int, int]) -> None:
    store, settings, v1, v2 = versions

    def promote(version: int, against: int | None) -> str:
        return promotion.record_decision(
            store,
            settings,
            version=version,
            production_version=against,
            mode="vector",
            decision={"decision": "promote", "reasons": []},
            metrics={"doc_ndcg@10": 0.5},
            policy_hash="p",
            run_id=f"run-{version}",
            trigger="test",
            report="",
        )

    assert promote(v1, None) == "promote" and promote(v2, v1) == "promote"
    with pytest.raises(StoreConflictError, match=f"moved from version {v1} to {v2}"):
        promote(v1, v1)  # judged against a production that has moved since
    assert promotion.rollback(store, settings, run_id="operator", trigger="test") == (v2, v1)
    assert production_state(store, settings) == ProductionState(v1, "vector")
    log = store.log_records(settings.promotions_table)
    assert [(r["action"], r["version"], r["previous_version"]) for r in log] == [
        ("promote", v1, None),
        ("promote", v2, v1),
        ("rollback", v1, v2),
    ]
    assert promotion.production_history(log) == [v1]
    with pytest.raises(promotion.NothingToRollBackError):
        promotion.rollback(store, settings, run_id="operator", trigger="test")


# --- the rule: only tasks/store opens LanceDB or Lance -----------------------------------------------------------

ABOVE_THE_STORE = ["evaluations", "tasks/serve", "tasks/ingest"]
BACKEND_MODULES = ("lancedb", "lance", "tasks.store.lancedb_store", "tasks.store.lance_backend")


def imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def test_nothing_above_the_store_opens_lancedb_or_lance() -> None:
    offences = []
    for folder in ABOVE_THE_STORE:
        for path in sorted((REPO / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            for name in imported_modules(ast.parse(source)):
                if any(name == module or name.startswith(f"{module}.") for module in BACKEND_MODULES):
                    offences.append(f"{path.relative_to(REPO)} imports {name}")
            for call in re.findall(r"\.to_lance\(|\bopen_table\(", source):
                offences.append(f"{path.relative_to(REPO)} calls {call}")
    assert offences == []


def test_the_rule_catches_an_import_of_lance() -> None:
    tree = ast.parse("import lance\nfrom lancedb.rerankers import RRFReranker\nfrom tasks.store import fragments\n")
    assert imported_modules(tree) == ["lance", "lancedb.rerankers", "lancedb.rerankers.RRFReranker", "tasks.store",
                                      "tasks.store.fragments"]  # fmt: skip


def test_a_side_table_another_writer_created_meanwhile_still_gets_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a store whose existence check answers "absent" although another writer has just created the table
    store = open_store(settings_at(tmp_path / "db"))
    first = pa.table({"table": ["chunks"], "n": [1]})
    store.append_rows("side", first)
    monkeypatch.setattr(type(store), "table_exists", lambda self, name: False)
    # when this writer appends: its create fails on the existing table
    store.append_rows("side", pa.table({"table": ["chunks"], "n": [2]}))
    # then its rows were appended, not dropped (LanceDB's create with exist_ok=True drops them silently)
    monkeypatch.undo()
    rows = store.side_rows("side", {"table": "chunks"})
    assert rows is not None and sorted(rows.column("n").to_pylist()) == [1, 2]


@pytest.mark.parametrize("action", ["promote", "rollback", "maintain", "block"])
def test_record_action_moves_production_only_for_a_move_and_logs_every_field(
    versions: tuple[Store, Settings, int, int], action: str
) -> None:
    from tasks.store.production import MOVES, record_action

    store, settings, v1, v2 = versions
    store.tag("production", v1)
    record_action(
        store, settings, action=action, version=v2, previous=v1, mode="hybrid@0.7", run_id="run-9",
        trigger="ci", reasons=["because"], metrics={"chunk_ndcg@10": 0.5}, policy_hash="p" * 64,
        report="r.html", golden_hash="g" * 64, details={"when": datetime(2026, 1, 2, tzinfo=UTC)},
    )  # fmt: skip
    assert store.tagged("production") == (v2 if action in MOVES else v1)
    [record] = store.log_records(settings.promotions_table)
    assert {k: record[k] for k in record if k != "at"} == {
        "table": "chunks", "action": action, "version": v2, "previous_version": v1, "mode": "hybrid@0.7",
        "run_id": "run-9", "trigger": "ci", "reasons": '["because"]', "metrics": '{"chunk_ndcg@10": 0.5}',
        "policy_hash": "p" * 64, "report": "r.html", "golden_hash": "g" * 64,
        "details": '{"when": "2026-01-02 00:00:00+00:00"}',
    }  # fmt: skip
    assert MOVES == ("promote", "rollback", "maintain")


def test_a_move_without_a_decision_logs_empty_metrics_and_details(versions: tuple[Store, Settings, int, int]) -> None:
    from tasks.store.production import record_action

    store, settings, v1, v2 = versions
    record_action(
        store, settings, action="rollback", version=v1, previous=v2, mode=None, run_id="r", trigger="cli", reasons=[]
    )
    [record] = store.log_records(settings.promotions_table)
    assert (record["metrics"], record["details"], record["reasons"], record["policy_hash"]) == ("{}", "{}", "[]", "")
    assert (record["report"], record["golden_hash"], record["mode"]) == ("", "", None)
