"""Retrieval specification: each mode finds the right document for known queries, at any version or tag."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from flows.ingest import ingest
from tasks.embed import embedding
from tasks.errors import VersionNotFoundError
from tasks.schemas import IngestSummary
from tasks.serve.retrieval import search
from tasks.settings import Settings
from tasks.store.backends import open_store

from .conftest import SAMPLE, SMALL_DOCS

KNOWN = [
    ("How do I create an isolated virtual environment for a project?", "tutorial/venv.txt"),
    ("generate a secure random URL-safe token for password reset", "pdf/secrets.pdf"),
    ("put the terminal into raw mode", "library/tty.html"),
    ("Which IDEs and editors support Python?", "using/editors.md"),
]


@pytest.fixture(scope="module")
def indexed(
    prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, list[IngestSummary]]]:
    """The small corpus ingested twice: first without builtins.html, then with it."""
    root = tmp_path_factory.mktemp("retrieval")
    corpus = root / "corpus"
    for rel in SMALL_DOCS:
        if rel != "library/builtins.html":
            (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SAMPLE / rel, corpus / rel)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGOPS_LANCEDB_URI", str(root / "db"))
        mp.setenv("RAGOPS_DASK_WORKERS", "1")
        first = ingest(str(corpus))
        shutil.copyfile(SAMPLE / "library/builtins.html", corpus / "library/builtins.html")
        second = ingest(str(corpus))
        yield Settings(), [first, second]


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
@pytest.mark.parametrize(("query", "doc_id"), KNOWN)
def test_semantic_modes_find_the_known_document(indexed, mode: str, query: str, doc_id: str) -> None:
    settings, _ = indexed
    table = open_store(settings).at()
    hits = search(table, query, embedding.embed_spec(settings), mode=mode, k=3)  # type: ignore[arg-type]
    assert doc_id in [h.doc_id for h in hits]
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[-1].score


@pytest.mark.parametrize(
    ("query", "doc_id"),
    [
        ("token_urlsafe", "pdf/secrets.pdf"),
        ("tcsetattr", "library/tty.html"),
        ("pip install requests", "tutorial/venv.txt"),
    ],
)
def test_fulltext_finds_exact_terms(indexed, query: str, doc_id: str) -> None:
    settings, _ = indexed
    table = open_store(settings).at()
    hits = search(table, query, embedding.embed_spec(settings), mode="fulltext", k=3)
    assert hits and hits[0].doc_id == doc_id
    assert all(query.split()[0].lower() in h.text.lower() for h in hits[:1])


def test_search_reads_the_version_it_is_given(indexed) -> None:
    settings, (first, second) = indexed
    store = open_store(settings)
    spec = embedding.embed_spec(settings)
    query = "built-in functions module builtins"
    old = search(store.at(first.candidate_tag), query, spec, "hybrid", 10)
    by_number = search(store.at(str(first.table_version)), query, spec, "hybrid", 10)
    new = search(store.at(second.candidate_tag), query, spec, "hybrid", 10)
    assert "library/builtins.html" not in {h.doc_id for h in old}
    assert [h.chunk_id for h in old] == [h.chunk_id for h in by_number]
    assert new[0].doc_id == "library/builtins.html"


def test_unknown_version_and_bad_queries_are_clear_errors(indexed) -> None:
    settings, _ = indexed
    store = open_store(settings)
    with pytest.raises(VersionNotFoundError, match="no version or tag 'nope'"):
        store.at("nope")
    table = store.at()
    with pytest.raises(ValueError, match="unknown search mode"):
        search(table, "x", embedding.embed_spec(settings), mode="semantic", k=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty query"):
        search(table, "  ", embedding.embed_spec(settings), mode="vector", k=3)


def test_beir_evaluation_gives_the_hand_computed_ndcg(prefect_server: None, tmp_path, monkeypatch) -> None:
    import json
    import math

    from evaluations.beir import evaluate_beir

    corpus = tmp_path / "corpus.jsonl"
    records = [
        {"_id": "d1", "title": "", "text": "zebra zebra zebra stripes"},
        {"_id": "d2", "title": "", "text": "a zebra once"},
        {"_id": "d3", "title": "", "text": "the lion sleeps tonight"},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(tmp_path / "db"))
    monkeypatch.setenv("RAGOPS_DASK_WORKERS", "1")
    ingest(str(corpus), table="beir")
    settings = Settings(table="beir")
    table = open_store(settings).at()

    result = evaluate_beir(
        table, {"1": "zebra"}, {"1": {"d2": 2, "d1": 1}}, embedding.embed_spec(settings), ["fulltext"], 10
    )

    # BM25 ranks d1 (three "zebra") above d2 and does not return d3:
    # DCG = 1/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3)
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert result["modes"]["fulltext"]["per_query"]["1"]["doc_ndcg@10"] == pytest.approx(expected)
    assert result["modes"]["fulltext"]["doc_ndcg@10"] == pytest.approx(expected)
    assert result["modes"]["fulltext"]["doc_recall@10"] == 1.0
