"""Loader fuzzing: random bytes, truncated and mutated PDFs and HTML, huge lines, deep nesting and invalid UTF-8 for
every supported format. Every input lands as documents or is quarantined with a reason (a JSONL file accounts for
every record), within a memory bound proportional to the input. The plain loading functions are called directly (no
Prefect), so a case takes milliseconds; benchmarks/loader_fuzz.py runs the same cases by the thousand.
"""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.ingest.formats import extract
from tasks.ingest.sources import Quarantine, SourceFile, file_items
from tasks.schemas import Document, Quarantined
from tasks.settings import Settings

from .conftest import SAMPLE

FORMATS = ["md", "txt", "html", "pdf", "beir"]
SUFFIX = {"md": ".md", "txt": ".txt", "html": ".html", "pdf": ".pdf", "beir": ".jsonl"}
SAMPLE_PDF = (SAMPLE / "pdf" / "secrets.pdf").read_bytes()
SAMPLE_HTML = (SAMPLE / "library" / "tty.html").read_bytes()
SAMPLE_MD = (SAMPLE / "using" / "editors.md").read_bytes()
# max_doc_chars small enough that huge lines cross it: the oversized path is fuzzed too
CONFIG = Settings(max_doc_chars=200_000)
MEMORY_SLACK = 32_000_000  # bytes traced beyond the per-byte bound (parsers' tables, pypdf's page objects)
MEMORY_PER_BYTE = 40  # bytes traced per input byte: a parse tree of a small HTML file is tens of times its size
FUZZ = settings(
    max_examples=60,  # per format (PDF and HTML fewer, being slower): about 15 s in all on 2 busy cores
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

FUZZ_SLOW = settings(FUZZ, max_examples=15)


def _cut(sample: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, len(sample)).map(lambda n: sample[:n])


def _mutated(sample: bytes) -> st.SearchStrategy[bytes]:
    """The sample with a few bytes overwritten at random places (a damaged download)."""
    edits = st.lists(st.tuples(st.integers(0, len(sample) - 1), st.binary(min_size=1, max_size=8)), max_size=6)

    def apply(changes: list[tuple[int, bytes]]) -> bytes:
        data = bytearray(sample)
        for at, new in changes:
            data[at : at + len(new)] = new
        return bytes(data)

    return edits.map(apply)


def _invalid_utf8(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    bad = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80\x80"])
    return st.tuples(text, bad, text).map(lambda p: p[0].encode() + p[1] + p[2].encode())


words = st.text(alphabet="abc xyz.#\n\t<>&é日\u200b", max_size=200)
huge_line = st.tuples(st.sampled_from([b"a", b"word ", b" ", b"# ", b"&amp;", b"\t"]), st.integers(1, 300_000)).map(
    lambda p: p[0] * (p[1] // len(p[0]) + 1)
)
deep_html = st.tuples(
    st.sampled_from(["div", "b", "span", "table", "li", "p"]), st.integers(0, 3000), st.booleans()
).map(lambda p: (f"<{p[0]}>" * p[1] + "deep text" + (f"</{p[0]}>" * p[1] if p[2] else "")).encode())
common = st.one_of(
    st.binary(max_size=4000),  # random bytes
    words.map(str.encode),
    _invalid_utf8(words),
    huge_line,
    st.binary(max_size=200).map(lambda b: b"\x00" + b),
)
deep_json = st.tuples(st.sampled_from(["[", '{"a":']), st.integers(1, 60_000)).map(lambda p: (p[0] * p[1]).encode())
record = st.fixed_dictionaries(
    {"_id": st.one_of(st.text(max_size=10), st.integers(), st.just("../x"))},
    optional={"text": st.one_of(words, st.integers(), st.none()), "title": words, "metadata": st.just({"p": "a"})},
).map(lambda r: json.dumps(r).encode())
jsonl_line = st.one_of(record, deep_json, huge_line, _invalid_utf8(words), st.binary(max_size=60), st.just(b""))
INPUTS: dict[str, st.SearchStrategy[bytes]] = {
    "md": st.one_of(common, _cut(SAMPLE_MD), _mutated(SAMPLE_MD)),
    "txt": st.one_of(common, _cut(SAMPLE_MD)),
    "html": st.one_of(common, deep_html, _cut(SAMPLE_HTML), _mutated(SAMPLE_HTML)),
    "pdf": st.one_of(
        common, _cut(SAMPLE_PDF), _mutated(SAMPLE_PDF), st.binary(max_size=600).map(lambda b: b"%PDF-1.7\n" + b)
    ),
    "beir": st.one_of(common, st.lists(jsonl_line, max_size=30).map(b"\n".join)),
}


@dataclass
class Outcome:
    """What loading one input gave: documents, quarantine records and the inputs they stand for."""

    documents: list[Document]
    quarantined: list[Quarantined]
    skipped: int  # inputs quarantined (a record of grouped bad lines counts each line)
    records: int  # JSONL: non-blank lines read; other formats: 1


def load_bytes(fmt: str, data: bytes, config: Settings = CONFIG) -> Outcome:
    """Load one file's bytes as ingest does, through the plain functions: find its documents, extract each."""
    name = "fuzz" + SUFFIX[fmt]
    file = SourceFile(name, name, name, fmt, len(data), "")
    quarantine = Quarantine()
    documents = []
    for item in file_items(file, data, quarantine):
        result = extract(item, None, config, "fuzz", data=data)
        if isinstance(result, Document):
            documents.append(result)
        else:
            quarantine.add_item(item, result.reason.split(":", 1)[0], result.reason)
    records = sum(1 for line in data.split(b"\n") if line.strip()) if fmt == "beir" else 1
    return Outcome(documents, quarantine.records(), quarantine.count, records)


def warm_up() -> None:
    """Import every parser and fill its caches first: an import under tracemalloc costs seconds and megabytes."""
    for fmt, sample in [("md", SAMPLE_MD), ("html", SAMPLE_HTML), ("pdf", SAMPLE_PDF), ("beir", b"x")]:
        load_bytes(fmt, sample)


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    warm_up()


def check(fmt: str, data: bytes) -> int:
    """Load `data` and assert the bar; the peak of traced memory, in bytes."""
    tracemalloc.start()
    try:
        outcome = load_bytes(fmt, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for doc in outcome.documents:
        assert doc.text.strip() and "\x00" not in doc.text and len(doc.text) <= CONFIG.max_doc_chars
        doc.content_hash  # noqa: B018 - storable: no lone surrogates
    for q in outcome.quarantined:
        assert q.reason.strip() and q.location.startswith("fuzz") and q.count >= 1, q
        q.reason.encode("utf-8")  # storable
    # one outcome per input: a file is a document or a reason; a JSONL file accounts for each record (or is empty)
    assert len(outcome.documents) + outcome.skipped == max(outcome.records, 1), outcome
    assert peak <= MEMORY_PER_BYTE * len(data) + MEMORY_SLACK, f"{peak / 1e6:.1f} MB for {len(data)} bytes"
    return peak


@FUZZ
@given(data=INPUTS["md"])
def test_fuzzed_markdown_lands_or_is_quarantined_with_a_reason(data: bytes) -> None:
    check("md", data)


@FUZZ
@given(data=INPUTS["txt"])
def test_fuzzed_text_lands_or_is_quarantined_with_a_reason(data: bytes) -> None:
    check("txt", data)


@FUZZ_SLOW
@given(data=INPUTS["html"])
def test_fuzzed_html_lands_or_is_quarantined_with_a_reason(data: bytes) -> None:
    check("html", data)


@FUZZ_SLOW
@given(data=INPUTS["pdf"])
def test_fuzzed_pdf_lands_or_is_quarantined_with_a_reason(data: bytes) -> None:
    check("pdf", data)


@FUZZ
@given(data=INPUTS["beir"])
def test_fuzzed_jsonl_accounts_for_every_record(data: bytes) -> None:
    check("beir", data)
