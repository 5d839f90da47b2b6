"""Chunking specification: token limits, headings, overlap, determinism (plain functions, real tokenizer)."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from tasks.embed import embedding
from tasks.ingest.chunking import ChunkingConfig, TokenizerCounter, chunk_document, split_sections
from tasks.ingest.formats import extract
from tasks.ingest.sources import discover
from tasks.schemas import Document
from tasks.settings import Settings

from .conftest import SAMPLE


@pytest.fixture(scope="module")
def counter() -> TokenizerCounter:
    spec = embedding.embed_spec(Settings(device="cpu"))
    return TokenizerCounter(embedding.tokenizer(spec))


@pytest.fixture(scope="module")
def max_tokens() -> int:
    return embedding.max_content_tokens(embedding.embed_spec(Settings(device="cpu")))


def doc(text: str, doc_id: str = "d.md") -> Document:
    return Document(doc_id=doc_id, text=text, title="t", source="s", location=doc_id, format="md")


def test_model_limit_is_the_bundled_models_sequence_length(max_tokens: int) -> None:
    # all-MiniLM-L6-v2 reads 256 tokens, two of which are [CLS] and [SEP]
    assert max_tokens == 254


def test_no_chunk_of_the_sample_exceeds_the_model_limit(counter: TokenizerCounter, max_tokens: int) -> None:
    settings = Settings()
    found = discover(str(SAMPLE / "library"), settings)
    config = ChunkingConfig(200, 32, max_tokens)
    chunks = []
    for item in found.items[:25]:
        document = extract(item, found.fs, settings, found.source)
        assert isinstance(document, Document), document
        chunks += chunk_document(document, config, counter)
    assert len(chunks) > 50
    assert max(c.n_tokens for c in chunks) <= config.chunk_tokens
    # n_tokens is the true count of the stored text, special tokens excluded
    for chunk in chunks[:40]:
        assert counter([chunk.text])[0] == chunk.n_tokens


def test_text_without_separators_is_cut_at_token_boundaries(counter: TokenizerCounter, max_tokens: int) -> None:
    text = "# Title\n\n" + "a," * 5_000 + "\n\nend"  # 10,000 tokens and no space, newline or sentence end
    chunks = chunk_document(doc(text), ChunkingConfig(100, 10, max_tokens), counter)
    assert len(chunks) >= 100
    assert all(c.n_tokens <= 100 for c in chunks)
    assert "".join(c.text for c in chunks).count("a,") == 5_000


def test_small_sections_are_packed_but_never_split(counter: TokenizerCounter, max_tokens: int) -> None:
    sections = [f"## Part {i}\n\nParagraph {i} talks about topic {i} in a few words." for i in range(12)]
    chunks = chunk_document(doc("\n\n".join(sections)), ChunkingConfig(60, 8, max_tokens), counter)
    assert 1 < len(chunks) < 12
    for chunk in chunks:
        # every chunk starts at a heading and holds only whole sections
        assert chunk.text.startswith("## Part")
        assert len(re.findall(r"## Part", chunk.text)) == len(re.findall(r"Paragraph \d+", chunk.text))


def test_a_long_section_is_split_on_paragraphs_with_overlap(counter: TokenizerCounter, max_tokens: int) -> None:
    paragraphs = [f"Sentence number {i} explains one more idea about queues and stacks." for i in range(60)]
    text = "# Long\n\n" + "\n\n".join(paragraphs)
    chunks = chunk_document(doc(text), ChunkingConfig(80, 20, max_tokens), counter)
    assert len(chunks) >= 5
    for first, second in pairwise(chunks):
        last_paragraph = first.text.split("\n\n")[-1]
        assert last_paragraph in second.text  # the overlap repeats the previous chunk's tail
    for paragraph in paragraphs:  # nothing lost
        assert any(paragraph in c.text for c in chunks)
    assert all(c.section == "Long" for c in chunks)


def test_chunk_ids_are_deterministic_and_change_with_content(counter: TokenizerCounter, max_tokens: int) -> None:
    config = ChunkingConfig(50, 5, max_tokens)
    text = "# A\n\nalpha beta gamma.\n\n# B\n\n" + "delta epsilon. " * 40
    first = [c.chunk_id for c in chunk_document(doc(text), config, counter)]
    again = [c.chunk_id for c in chunk_document(doc(text), config, counter)]
    edited = [c.chunk_id for c in chunk_document(doc(text.replace("alpha", "omega")), config, counter)]
    assert first == again
    assert len(set(first)) == len(first)
    assert first[0] != edited[0] and first[1:] == edited[1:]
    assert first[0].startswith("d.md#0000:")


def test_headings_in_markdown_and_rest_and_not_in_code() -> None:
    text = "Intro\n=====\n\ntext\n\n```\n# not a heading\n```\n\nSub\n---\n\nmore\n\n## Md heading\n\nbody"
    sections = split_sections(text)
    assert [s.path for s in sections] == [
        "Intro",
        "Intro > Sub",
        "Intro > Md heading",
    ]  # "##" is level 2, a sibling of Sub
    assert "# not a heading" in sections[0].text


def test_token_budget_batches_cover_every_text_once_and_respect_the_budget() -> None:
    from tasks.embed.embedding import token_budget_batches

    texts = ["x" * n for n in (4000, 40, 400, 8, 4000, 400, 40, 1200)]
    batches = token_budget_batches(texts, budget=1000)
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    for batch in batches:
        longest = max(len(texts[i]) for i in batch) / 4
        assert len(batch) == 1 or len(batch) * longest <= 1000
    assert [len(texts[i]) for b in batches for i in b] == sorted(len(t) for t in texts)


def test_token_budget_embeddings_equal_fixed_batches() -> None:
    from dataclasses import replace

    import numpy as np

    spec = embedding.embed_spec(Settings(device="cpu"))
    texts = ["short text", "a somewhat longer sentence about queues and stacks " * 5, "mid length text " * 3] * 4
    fixed = embedding.embed_texts(texts, spec, role="passage")
    budget = embedding.embed_texts(texts, replace(spec, token_budget=256), role="passage")
    np.testing.assert_allclose(budget, fixed, atol=1e-5)
