"""BEIR corpora: titles are part of the indexed text, and evaluation ranks k distinct documents (real LanceDB)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evaluations.beir import evaluate_beir
from flows.ingest import ingest
from tasks.embed import embedding
from tasks.ingest.chunking import ChunkingConfig, TokenizerCounter, chunk_document
from tasks.ingest.formats import normalize_text, titled_text
from tasks.schemas import Document
from tasks.serve.retrieval import search
from tasks.settings import Settings
from tasks.store.backends import open_store
from tasks.store.interface import TableVersion

RECORDS = [
    # the title's words are nowhere in the text: only the title can find this record
    {
        "_id": "iceland",
        "title": "Volcanic eruptions in Iceland",
        "text": "The report lists the year's events, their costs and the agencies that responded to them.",
    },
    {
        "_id": "hawaii",
        "title": "",
        "text": "Lava flows and ash clouds: how the mountains of fire on Hawaii's Big Island erupt and build new land.",
    },
    {
        "_id": "budget",
        "text": "The agency's annual report lists the year's events and what the response to each one cost.",
    },
    {
        "_id": "bread",
        "title": "Baking bread at home",
        "text": "Baking bread at home takes flour, water, salt and yeast, kneaded and left to rise overnight.",
    },
]


@pytest.fixture
def local_store(store_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LanceDB folder; tiny corpora are embedded in this process (no Dask cluster)."""
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")
    return store_env


def write_corpus(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def open_beir_table() -> tuple[TableVersion, embedding.EmbedSpec]:
    settings = Settings(table="beir")
    return open_store(settings).at(), embedding.embed_spec(settings)


def stored_texts(table: TableVersion) -> dict[str, list[str]]:
    rows = table.rows(["chunk_id", "doc_id", "text"]).to_pylist()
    out: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r["chunk_id"]):
        out.setdefault(row["doc_id"], []).append(row["text"])
    return out


# --- the title in the text --------------------------------------------------------------------------------------


def test_a_title_leads_the_text_once_and_only_when_there_is_one() -> None:
    assert titled_text("Alpha", "first text") == "Alpha: first text"
    assert titled_text("Is it safe?", "Mostly.") == "Is it safe? Mostly."  # ends with punctuation: a space
    assert titled_text("  Two \n words ", "\n\nbody") == "Two words: body"
    assert titled_text("", "body") == titled_text(" \u200b ", "body") == "body"  # no visible title: unchanged
    # the text already starts with the title (case and spacing aside): not repeated
    assert titled_text("Baking bread", "baking\n bread at home") == "baking\n bread at home"
    assert titled_text("Cat", "Category theory") == "Cat: Category theory"  # a prefix of a word is not the title
    assert titled_text("Only a title", "  \n ") == "Only a title"  # BEIR indexes such records by their title


def test_a_title_never_becomes_a_chunk_of_its_own() -> None:
    # a blank line after the title would leave it alone whenever the first paragraph fills the rest of a chunk
    spec = embedding.embed_spec(Settings(device="cpu"))
    counter = TokenizerCounter(embedding.tokenizer(spec))
    config = ChunkingConfig(200, 32, embedding.max_content_tokens(spec))
    title = "Aspirin and the risk of cardiovascular events in older adults"
    words = ["the", "study", "measured", "outcomes", "in", "patients", "over", "several", "years", "with", "care"]
    for n in (150, 185, 195, 199, 230, 400):
        body = " ".join(words[i % len(words)] for i in range(n)) + ". A second sentence closes it."
        text = normalize_text(titled_text(title, body))
        chunks = chunk_document(Document("d", text, title, "s", "l", "beir"), config, counter)
        assert chunks[0].text.startswith(f"{title}: the study")
        assert all(c.n_tokens > 20 for c in chunks[:-1]), (n, [c.n_tokens for c in chunks])
        assert body[:400] in chunks[0].text  # passages quoting the text still match


@pytest.mark.usefixtures("prefect_server")
def test_a_record_is_found_by_the_words_of_its_title(tmp_path: Path, local_store: Path) -> None:
    ingest(str(write_corpus(tmp_path / "corpus.jsonl", RECORDS)), table="beir")
    table, spec = open_beir_table()

    texts = stored_texts(table)
    assert texts["iceland"] == [f"Volcanic eruptions in Iceland: {RECORDS[0]['text']}"]
    assert texts["hawaii"] == [RECORDS[1]["text"]] and texts["budget"] == [RECORDS[2]["text"]]  # no title
    assert texts["bread"] == [RECORDS[3]["text"]]  # the text starts with the title: not repeated

    assert [h.doc_id for h in search(table, "Iceland volcanic", spec, "fulltext", 10)] == ["iceland"]
    # the title alone beats a text about lava and ash clouds (which ranks first without the title)
    assert search(table, "volcanic eruptions in Iceland", spec, "vector", 4)[0].doc_id == "iceland"
    assert search(table, "volcanic eruptions in Iceland", spec, "hybrid", 4)[0].doc_id == "iceland"


@pytest.mark.usefixtures("prefect_server")
def test_tables_ingested_before_titles_counted_are_rebuilt(
    tmp_path: Path, local_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", RECORDS)
    with monkeypatch.context() as old:  # the previous extractor: titles left out, version 1
        old.setattr("tasks.ingest.formats.titled_text", lambda title, text: text)
        old.setattr("tasks.ingest.sources.BEIR_EXTRACTION", "1")
        ingest(str(corpus), table="beir")
    assert stored_texts(open_beir_table()[0])["iceland"] == [RECORDS[0]["text"]]

    summary = ingest(str(corpus), table="beir")

    # every document is re-extracted; only the text that changed (the titled record) needs the model again
    assert summary.docs_changed == len(RECORDS) and summary.docs_unchanged == 0
    assert summary.chunks_embedded == 1 and summary.chunks_reused == len(RECORDS) - 1
    assert stored_texts(open_beir_table()[0])["iceland"][0].startswith("Volcanic eruptions in Iceland: ")
    assert ingest(str(corpus), table="beir").docs_unchanged == len(RECORDS)


# --- document-level metrics over k distinct documents ------------------------------------------------------------


@pytest.mark.usefixtures("prefect_server")
def test_beir_metrics_rank_k_distinct_documents_fetching_more_chunks_when_needed(
    tmp_path: Path, local_store: Path
) -> None:
    # "herd": a dozen chunks, each full of the query word; "river": one chunk that says it once, the 2nd document
    paragraphs = [f"Note {i} on the herd. " + "zebra herds graze the plain " * 30 for i in range(12)]
    records = [
        {"_id": "herd", "title": "", "text": "\n\n".join(paragraphs)},
        {
            "_id": "river",
            "title": "",
            "text": "Near the river we saw one zebra among lions, elephants, giraffes, hippos and many birds "
            "that came to drink in the late afternoon when the heat of the day was over.",
        },
        {"_id": "desert", "title": "", "text": "Camels cross the desert for days without water."},
    ]
    ingest(str(write_corpus(tmp_path / "corpus.jsonl", records)), table="beir")
    table, spec = open_beir_table()
    k = 2
    assert len(stored_texts(table)["herd"]) > 5 * k
    assert {h.doc_id for h in search(table, "zebra", spec, "fulltext", 5 * k)} == {"herd"}  # 5k chunks: 1 document

    result = evaluate_beir(table, {"q": "zebra"}, {"q": {"river": 1}}, spec, ["fulltext"], k)

    metrics = result["modes"]["fulltext"]["per_query"]["q"]
    assert metrics["doc_hit_rate@2"] == metrics["doc_recall@2"] == 1.0
    assert metrics["doc_mrr@2"] == 0.5
    assert metrics["doc_ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert result["modes"]["fulltext"]["doc_recall@2"] == 1.0
