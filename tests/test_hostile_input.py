"""Hostile input specification: fuzzed and pathological files, paths that try to leave the source, and broken
golden sets and policies. Every bad input ends as a quarantine record or a specific error that says where it is;
nothing crashes a run, nothing outside the source is read.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import lancedb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfWriter

from evaluations.gate import BadPolicyError, load_policy
from evaluations.golden import BadGoldenSetError, load_golden_set
from tasks.embed import embedding
from tasks.ingest.chunking import ChunkingConfig, TokenizerCounter, chunk_document, markdown_heading
from tasks.ingest.formats import extract, normalize_text
from tasks.ingest.sources import Quarantine, SourceFile, discover, file_items
from tasks.schemas import Chunk, Document, Quarantined
from tasks.settings import Settings

from .conftest import REPO, SAMPLE

SUFFIXES = [".md", ".txt", ".html", ".pdf", ".jsonl"]
SAMPLE_PDF = (SAMPLE / "pdf" / "secrets.pdf").read_bytes()
OUTSIDE_SECRET = "OUTSIDE-SECRET-b7e1c9 must never be read"
FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,  # no .hypothesis folder in the repository; a failure prints its example and a blob
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- helpers ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Chunker:
    """The chunking config and token counter, built as the ingest flow's chunk task builds them."""

    config: ChunkingConfig
    counter: TokenizerCounter


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    pipeline = Settings()
    driver = dataclasses.replace(embedding.embed_spec(pipeline), device="cpu")
    config = ChunkingConfig(pipeline.chunk_tokens, pipeline.chunk_overlap, embedding.max_content_tokens(driver))
    return Chunker(config, TokenizerCounter(embedding.tokenizer(driver)))


def load(
    source: str | Path, config: Settings | None = None, counts: dict[str, int] | None = None
) -> tuple[dict[str, Document], dict[str, str]]:
    """Discover and extract: (documents by id, reasons by location); every outcome is one of the two. `counts`, when
    given, gets the inputs each quarantine record stands for (a JSONL file's bad lines of one class are one record)."""
    config = config or Settings()
    found = discover(str(source), config)
    docs: dict[str, Document] = {}
    skipped: dict[str, str] = {}
    counts = {} if counts is None else counts
    for q in found.quarantined:
        assert isinstance(q, Quarantined) and q.reason.strip(), q
        skipped[q.location] = q.reason
        counts[q.location] = counts.get(q.location, 0) + q.count
    for item in found.items:
        result = extract(item, found.fs, config, found.source)
        if isinstance(result, Quarantined):
            assert result.reason.strip(), result
            skipped[result.location] = result.reason
            counts[result.location] = counts.get(result.location, 0) + result.count
        else:
            assert isinstance(result, Document), result
            assert result.text.strip() and "\x00" not in result.text
            docs[result.doc_id] = result
    return docs, skipped


def squash(text: str) -> str:
    return "".join(text.split())


def assert_chunks_fit_and_cover(doc: Document, chunks: list[Chunk], chunker: Chunker) -> None:
    """No chunk over the model limit, n_tokens true, and the chunks together hold all the text (whitespace aside)."""
    assert [c.position for c in chunks] == list(range(len(chunks)))
    if chunks:
        counts = chunker.counter([c.text for c in chunks])
        for chunk, n in zip(chunks, counts, strict=True):
            assert chunk.text and chunk.text == chunk.text.strip()
            assert chunk.n_tokens == n <= chunker.config.max_tokens, (chunk.n_tokens, n, chunk.text[:200])
    whole, covered = squash(doc.text), 0
    for chunk in chunks:
        piece = squash(chunk.text)
        start = whole.rfind(piece, 0, covered + len(piece))  # the occurrence that extends the covered prefix most
        assert start >= 0, ("gap before" if piece in whole else "not text of the document", chunk.text[:200])
        covered = max(covered, start + len(piece))
    assert covered == len(whole), f"the chunks stop at {covered} of {len(whole)} characters"


def make_doc(text: str) -> Document:
    return Document(doc_id="fuzz.md", text=text, title="t", source="s", location="fuzz.md", format="md")


def pdf_bomb(pages: int, chars_per_page: int) -> bytes:
    """A decompression bomb: one Flate content stream of a few KB drawing `chars_per_page` characters (lines of 99
    letters), shared by every page."""
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 1 Tf 1 TL " + (b"(" + b"A" * 99 + b") Tj T* ") * (chars_per_page // 99) + b"ET")
    contents = writer._add_object(stream.flate_encode(level=9))
    font = DictionaryObject(
        {
            NameObject(k): NameObject(v)
            for k, v in [("/Type", "/Font"), ("/Subtype", "/Type1"), ("/BaseFont", "/Helvetica")]
        }
    )
    resources = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
    for _ in range(pages):
        page = writer.add_blank_page(width=200, height=200)
        page[NameObject("/Contents")] = contents
        page[NameObject("/Resources")] = resources
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def encrypted_pdf(algorithm: str = "RC4-128") -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt(user_password="secret", owner_password="owner", algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


# --- 1. fuzzing the loaders and the chunker ----------------------------------------------------------------------

SPECIALS = [
    "\x00", "\u200b", "\ufeff", "\u202e", "\u202c", "\u200f", "\ufffd", "\r\n", "\r", "\n", "\n\n", " ", "\t",
    "# ", "## ", "=====", "```", ". ", "<div>", "</div>", "<script>", "<h1>", "&amp;", "é", "e\u0301", "日本語", "🙂",
    "%PDF-1.4\n", '{"_id": ', "a" * 150,
]  # fmt: skip
hostile_text = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.sampled_from(SPECIALS),
        st.text(alphabet="ab ,.#\n", max_size=60),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzß0123456789日", min_size=20, max_size=120),  # long words
    ),
    max_size=40,
).map("".join)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
beir_record = st.fixed_dictionaries(
    {"_id": st.one_of(hostile_text, st.integers(), st.sampled_from(["ok", "../up", "/abs", "a\\b", "a\x00b"]))},
    optional={"text": st.one_of(hostile_text, json_value), "title": json_value, "metadata": json_value},
)
beir_line = st.one_of(
    beir_record.map(json.dumps),  # ASCII: every special character as a \u escape
    beir_record.map(lambda r: json.dumps(r, ensure_ascii=False)),
    st.sampled_from(
        [
            '{"_id": "s1", "text": "a lone \\ud800 surrogate"}',
            '{"_id": 1' + "1" * 5000 + ', "text": "an id over 4300 digits"}',
            "[" * 50_000,
            '{"_id": "m", "text": "t", "metadata": {"path": "../../etc/passwd"}}',
        ]
    ),
    hostile_text,
)
file_bytes = st.one_of(
    st.binary(max_size=3000),
    hostile_text.map(lambda t: t.encode("utf-8")),
    st.tuples(hostile_text, st.binary(min_size=1, max_size=6), hostile_text).map(
        lambda p: p[0].encode("utf-8") + p[1] + p[2].encode("utf-8")  # invalid UTF-8 in the middle
    ),
    st.integers(0, len(SAMPLE_PDF)).map(lambda n: SAMPLE_PDF[:n]),  # truncated anywhere
    st.binary(max_size=600).map(lambda b: b"%PDF-1.7\n" + b),
    st.lists(beir_line, max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8")),
)


@FUZZ
@given(data=file_bytes, suffix=st.sampled_from(SUFFIXES))
def test_fuzzed_files_load_or_are_quarantined_with_a_reason_and_their_text_chunks(
    chunker: Chunker, data: bytes, suffix: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"fuzz{suffix}").write_bytes(data)

        docs, skipped = load(tmp)  # raises nothing; asserts every outcome is a document or has a reason

        assert len(docs) + len(skipped) >= 1
        for doc in docs.values():
            assert_chunks_fit_and_cover(doc, chunk_document(doc, chunker.config, chunker.counter), chunker)


@FUZZ
@given(lines=st.lists(beir_line, min_size=1, max_size=8))
def test_fuzzed_beir_lines_each_become_a_safe_document_or_a_reason(chunker: Chunker, lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "corpus.jsonl").write_text("\n".join(lines), encoding="utf-8")

        counts: dict[str, int] = {}
        docs, _ = load(tmp, counts=counts)

        records = sum(1 for line in "\n".join(lines).split("\n") if line.strip())
        assert len(docs) + sum(counts.values()) == max(records, 1)  # one outcome per record; an empty file is one
        for doc_id, doc in docs.items():
            assert ".." not in doc_id.split("/") and not doc_id.startswith("/") and "\\" not in doc_id
            assert all(".." not in value.split("/") for value in doc.metadata.values())
            doc.content_hash  # noqa: B018 - storable: no lone surrogates
            assert_chunks_fit_and_cover(doc, chunk_document(doc, chunker.config, chunker.counter), chunker)


@pytest.mark.parametrize("config", ["pipeline", "tight"])
@FUZZ
@given(text=hostile_text)
def test_fuzzed_text_chunks_within_the_model_limit_and_covers_the_text(
    chunker: Chunker, config: str, text: str
) -> None:
    # "tight": chunks the size of the hard limit, so every cut and re-count lands on the limit
    cfg = chunker.config if config == "pipeline" else ChunkingConfig(24, 6, 24)
    doc = make_doc(normalize_text(text) or "x")

    chunks = chunk_document(doc, cfg, chunker.counter)

    assert_chunks_fit_and_cover(doc, chunks, dataclasses.replace(chunker, config=cfg))


@FUZZ
@given(line=st.text(alphabet="# \t=a-\u3000\u2003\x1c\r\x0b\x85", max_size=30))
def test_markdown_heading_parses_like_the_reference_regex(line: str) -> None:
    match = re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", line)
    assert markdown_heading(line) == ((len(match.group(1)), match.group(2)) if match else None)


# --- 1. explicit pathological files ------------------------------------------------------------------------------

MB50 = 50_000_000  # 50 MB: under max_file_bytes (50 MiB), ten times max_doc_chars


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("name", "make", "outcome"),
    [
        ("words.txt", lambda: b"word " * (MB50 // 5), "oversized"),
        ("one-word.md", lambda: b"a" * MB50, "oversized"),
        # runs of spaces made the trailing-space regex backtrack quadratically and the title regex cubically
        ("spaces.txt", lambda: b"x" + b" " * MB50, "the document 'x'"),
        ("heading.md", lambda: b"# a" + b" " * MB50 + b"b", "oversized"),
    ],
)
def test_a_single_50_mb_line_is_handled_in_seconds_and_bounded_memory(
    tmp_path: Path, name: str, make: Callable[[], bytes], outcome: str
) -> None:
    (tmp_path / name).write_bytes(make())
    found = discover(str(tmp_path), Settings())
    [item] = found.items
    started = time.perf_counter()
    tracemalloc.start()
    try:
        result = extract(item, found.fs, Settings(), found.source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    seconds = time.perf_counter() - started

    if outcome == "oversized":
        assert isinstance(result, Quarantined) and result.reason.startswith("oversized: "), result
    else:  # trailing spaces are normalized away, and what is left is a document
        assert isinstance(result, Document) and result.text == "x"
    assert seconds < 30, seconds
    assert peak < 6 * MB50, f"{peak / 1e6:.0f} MB traced while extracting a 50 MB file"


@pytest.mark.timeout(120)
def test_a_heading_line_with_long_space_runs_is_chunked_in_linear_time(chunker: Chunker, tmp_path: Path) -> None:
    # The old heading regex backtracked in cubic time: 2 s for 1,000 spaces, 18 s for 2,000, hours for this.
    (tmp_path / "wide.md").write_text("# a" + " " * 200_000 + "b\n\n## b" + " " * 200_000 + "c #\n\ntext")
    [doc] = load(tmp_path)[0].values()
    started = time.perf_counter()

    chunks = chunk_document(doc, chunker.config, chunker.counter)

    assert time.perf_counter() - started < 30
    assert doc.title == "a" and [c.section for c in chunks] == ["a" + " " * 200_000 + "b"]
    assert_chunks_fit_and_cover(doc, chunks, chunker)


@pytest.mark.timeout(300)
def test_deeply_nested_html_is_quarantined_in_seconds(chunker: Chunker, tmp_path: Path) -> None:
    # BeautifulSoup's tree edits took time quadratic in the depth: 2.5 s at 4,000 levels, about an hour at 100,000
    depth = 100_000
    (tmp_path / "nested.html").write_text(
        "<html><body>" + "<div>" * depth + "deep text at the bottom" + "</div>" * depth + "</body></html>"
    )
    (tmp_path / "nested-inline.html").write_text("<p>" + "<b><i>" * depth + "inline" + "</i></b>" * depth)
    (tmp_path / "shallow.html").write_text("<html><body>" + "<div>" * 400 + "shallow text" + "</div>" * 400)
    started = time.perf_counter()

    docs, skipped = load(tmp_path)

    assert time.perf_counter() - started < 60
    assert set(docs) == {"shallow.html"} and docs["shallow.html"].text == "shallow text"
    assert {Path(loc).name: reason for loc, reason in skipped.items()} == {
        "nested.html": "malformed HTML: elements nested more than 512 deep",
        "nested-inline.html": "malformed HTML: elements nested more than 512 deep",
    }
    assert_chunks_fit_and_cover(
        docs["shallow.html"], chunk_document(docs["shallow.html"], chunker.config, chunker.counter), chunker
    )


def test_truncated_and_encrypted_pdfs_are_quarantined(tmp_path: Path) -> None:
    cuts = [0, 8, 100, 1000, len(SAMPLE_PDF) // 2, len(SAMPLE_PDF) - 1000, len(SAMPLE_PDF) - 10]
    for cut in cuts:
        (tmp_path / f"cut-{cut}.pdf").write_bytes(SAMPLE_PDF[:cut])
    (tmp_path / "rc4.pdf").write_bytes(encrypted_pdf("RC4-128"))
    (tmp_path / "aes.pdf").write_bytes(encrypted_pdf("AES-256"))

    docs, skipped = load(tmp_path)

    reasons = {Path(loc).name: reason for loc, reason in skipped.items()}
    for cut in cuts:
        name = f"cut-{cut}.pdf"
        # a cut near the end can lose only the trailer: pypdf recovers the pages, which is fine
        assert name in docs or reasons[name].startswith(("malformed PDF", "empty")), (name, reasons.get(name))
    assert "cut-0.pdf" in reasons and "cut-100.pdf" in reasons
    assert reasons["rc4.pdf"] == "encrypted PDF: no password available"
    assert reasons["aes.pdf"] == "encrypted PDF: no password available"


def test_a_pdf_decompression_bomb_stops_at_the_page_that_passes_max_doc_chars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read whole, this 10 KB file is 2 M characters for a 150,000 limit (at the default limit, 77 pages of 1 M
    # characters from 17 KB took 254 s and 257 MB before max_doc_chars quarantined them).
    from pypdf import PageObject

    page_chars, limit = 100_000, 150_000
    bomb = pdf_bomb(20, page_chars)
    (tmp_path / "bomb.pdf").write_bytes(bomb)
    pages_read: list[int] = []
    extract_page = PageObject.extract_text

    def counted(page: PageObject, *args: object, **kwargs: object) -> str:
        pages_read.append(1)
        return extract_page(page, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PageObject, "extract_text", counted)
    config = Settings(max_doc_chars=limit)
    found = discover(str(tmp_path), config)
    [item] = found.items
    tracemalloc.start()
    try:
        result = extract(item, found.fs, config, found.source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert len(bomb) < 20_000
    assert isinstance(result, Quarantined), result
    assert result.reason == f"oversized: text passes max_doc_chars {limit} at page 2 of 20 (extraction stopped there)"
    assert len(pages_read) * page_chars <= limit + page_chars  # not one page more than the limit needs
    assert peak < 8 * (limit + page_chars), f"{peak / 1e6:.1f} MB traced"  # 13 MB when every page was read


def test_twenty_thousand_bad_jsonl_lines_are_a_few_grouped_records_with_exact_counts(tmp_path: Path) -> None:
    lines = [b"x"] * 19_990 + [b"[1]"] * 7 + [b'{"_id": "ok", "text": "a good record"}']
    lines += [b'{"_id": "t%d"}' % i for i in range(3)]  # a valid id, no text
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")  # 40 KB
    file = SourceFile("bad.jsonl", str(path), str(path), "beir", path.stat().st_size, "")
    quarantine = Quarantine()
    tracemalloc.start()
    try:
        items = list(file_items(file, path.read_bytes(), quarantine))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert [item.doc_id for item in items] == ["ok"]
    assert quarantine.count == 20_000
    assert quarantine.records() == [
        Quarantined(
            f"{path}:1",
            "malformed JSON: 19990 lines (1, 2, 3, 4, 5, ...); the first: malformed JSON: Expecting value at column 1",
            count=19_990,
        ),
        Quarantined(f"{path}:19991", "not a JSON object: 7 lines (19991, 19992, 19993, 19994, 19995, ...); the first: "
                    "not a JSON object", count=7),
        Quarantined(f"{path}:19999", "missing or non-string 'text': 3 lines (19999, 20000, 20001); the first: "
                    "missing or non-string 'text'", count=3),
    ]  # fmt: skip
    assert quarantine.skipped_ids == {"t0", "t1", "t2"}  # their stored rows are not deleted by --sync
    assert peak < 1_000_000, f"{peak / 1e6:.1f} MB traced for 40 KB of bad lines"  # 5.9 MB, one record a line


def test_empty_and_invisible_files_of_every_format_are_quarantined_as_empty(tmp_path: Path) -> None:
    for suffix in SUFFIXES:
        (tmp_path / f"empty{suffix}").write_bytes(b"")
    (tmp_path / "invisible.md").write_text("\u200b\ufeff\u202e \u200f\n\n\u2060\t\u202c")
    (tmp_path / "invisible.txt").write_text("\ufeff\x01\x02\u200b")
    (tmp_path / "marks.html").write_text("<p>\u200b\u202e</p><p>&#8203;&#xFEFF;</p>")
    (tmp_path / "blank-lines.jsonl").write_text("\n\n  \n")

    docs, skipped = load(tmp_path)

    assert docs == {}
    reasons = {Path(loc).name: reason for loc, reason in skipped.items()}
    assert set(reasons) == {*(f"empty{s}" for s in SUFFIXES), "invisible.md", "invisible.txt", "marks.html",
                            "blank-lines.jsonl"}  # fmt: skip
    for name, reason in reasons.items():
        assert reason.startswith(("empty", "malformed PDF")), (name, reason)
    assert reasons["empty.jsonl"] == reasons["blank-lines.jsonl"] == "empty: no records in the JSONL file"


def test_visible_text_with_zero_width_and_right_to_left_marks_loads_and_chunks(
    chunker: Chunker, tmp_path: Path
) -> None:
    text = "# Zero\u200bwidth\n\n\ufeffBidi \u202eevil.exe\u202c text and\u200b joined\u200bwords stay.\n"
    (tmp_path / "marks.md").write_text(text)

    docs, skipped = load(tmp_path)

    assert skipped == {}
    doc = docs["marks.md"]
    assert doc.title == "Zero\u200bwidth" and "\u202eevil.exe" in doc.text
    chunks = chunk_document(doc, chunker.config, chunker.counter)
    assert len(chunks) == 1 and chunks[0].n_tokens > 5
    assert_chunks_fit_and_cover(doc, chunks, chunker)


def test_symlink_loops_are_quarantined_and_discovery_ends(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Good\n\nreal text")
    (tmp_path / "self.md").symlink_to(tmp_path / "self.md")
    (tmp_path / "ping.md").symlink_to(tmp_path / "pong.md")
    (tmp_path / "pong.md").symlink_to(tmp_path / "ping.md")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path)  # a folder loop: sub/up/sub/up/...

    docs, skipped = load(tmp_path)

    assert set(docs) == {"good.md"}
    reasons = {os.path.relpath(loc, tmp_path): reason for loc, reason in skipped.items()}
    assert set(reasons) == {"self.md", "ping.md", "pong.md", "sub/up"}
    assert all(r.startswith("symbolic link") for r in reasons.values()), reasons


def test_a_file_name_that_is_not_utf8_is_quarantined_with_a_storable_location(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Good\n\nreal text")
    fd = os.open(os.fsencode(tmp_path) + b"/bad\xff\xfename.md", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"# Bad name\n\ncontent")
    os.close(fd)

    docs, skipped = load(tmp_path)

    assert set(docs) == {"good.md"}
    [(location, reason)] = skipped.items()
    assert location == f"{tmp_path}/bad\\xff\\xfename.md" and location.encode("utf-8")
    assert reason == "file name is not valid UTF-8 (rename the file)"


def test_beir_lines_that_break_the_json_parser_are_quarantined(tmp_path: Path) -> None:
    lines = [
        json.dumps({"_id": "good", "text": "a good record"}),
        '{"_id": 1' + "1" * 5000 + ', "text": "id over the int limit"}',
        "[" * 100_000,
        '{"_id": "surrogate", "text": "lone \\udc80 surrogate"}',
        '{"_id": "\\ud800", "text": "lone surrogate id"}',
    ]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")

    docs, skipped = load(tmp_path)

    assert set(docs) == {"good"}
    reasons = {loc.rsplit(":", 1)[1]: reason for loc, reason in skipped.items()}  # one per reason class
    assert set(reasons) == {"2", "4"}
    assert reasons["2"].startswith("malformed JSON: 2 lines (2, 3); the first: malformed JSON: ValueError")
    assert reasons["4"].startswith("invalid Unicode: 2 lines (4, 5); the first: invalid Unicode: a lone surrogate")


def test_an_ingest_of_a_hostile_corpus_completes_and_quarantines_every_bad_file(
    tmp_path: Path, store_env: Path, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from flows.cli import output, pipeline
    from flows.ingest import ingest
    from tasks.ingest.steps import summary_markdown
    from tasks.schemas import QUARANTINE_SHOWN

    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")  # the cluster is not what this test is about
    monkeypatch.setenv("RAGOPS_PARTITION_MB", "1")  # each JSONL file read as one part: its bad lines in one record
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(f"# Secret\n\n{OUTSIDE_SECRET}\n")
    good = {
        "good/venv.txt": "tutorial/venv.txt",
        "good/editors.md": "using/editors.md",
        "good/tty.html": "library/tty.html",
        "good/secrets.pdf": "pdf/secrets.pdf",
    }
    for rel, sample in good.items():
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        (corpus / rel).write_bytes((SAMPLE / sample).read_bytes())
    (corpus / "good/marks.md").write_text("# Marks\n\nZero\u200bwidth and \u202eright-to-left\u202c marks are text.")
    bad = corpus / "bad"
    bad.mkdir()
    rng = np.random.default_rng(7)
    files: dict[str, bytes] = {
        "random.pdf": rng.bytes(4000),
        "random.txt": b"\x00" + rng.bytes(4000),
        "invalid-utf8.md": b"# Caf\xe9\n\n\xff\xfe broken",
        "nul.md": b"# Nul\n\n\x00\x00\x00",
        "invisible.md": "\u200b\ufeff\u202e\n\n\u200b".encode(),
        "empty.md": b"",
        "empty.jsonl": b"",
        "huge-line.txt": b"word " * (MB50 // 5),
        "truncated.pdf": SAMPLE_PDF[:5000],
        "encrypted.pdf": encrypted_pdf(),
        **{f"blank-{i}.txt": b"  \n" for i in range(5)},  # more records than a summary lists
    }
    for name, data in files.items():
        (bad / name).write_bytes(data)
    (bad / "loop.md").symlink_to(bad / "loop.md")
    (bad / "loop-dir").symlink_to(corpus)
    (bad / "outside.md").symlink_to(outside / "secret.md")
    (bad / "outside-dir").symlink_to(outside)
    fd = os.open(os.fsencode(bad) + b"/name\xff.md", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"# Bad name\n\ncontent")
    os.close(fd)
    records = [
        {"_id": "beir-good", "title": "Good record", "text": "A well-formed BEIR record about queues and stacks."},
        {"_id": "../escape", "text": "traversal id"},
        {"_id": "/etc/passwd", "text": "absolute id"},
        {"_id": "nul\x00id", "text": "NUL id"},
        {"_id": "back\\slash", "text": "backslash id"},
        {"_id": "meta", "text": "traversal metadata", "metadata": {"path": "../../outside/secret.md"}},
    ]
    lines = [json.dumps(r) for r in records] + ['{"_id": "s", "text": "\\ud800"}', "[" * 100_000]
    (bad / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    (bad / "many-bad.jsonl").write_bytes(b"x\n" * 20_000)  # 40 KB: was 20,000 records, a 1.8 MB artifact

    summary = ingest(str(corpus))

    reasons = {q["location"]: q["reason"] for q in summary.quarantined}
    expected: dict[str, str | tuple[str, ...]] = {
        "random.pdf": ("malformed PDF", "empty"),
        "random.txt": "binary content",
        "invalid-utf8.md": "invalid UTF-8",
        "nul.md": "binary content",
        "invisible.md": "empty",
        "empty.md": "empty",
        "empty.jsonl": "empty",
        "huge-line.txt": "oversized",
        "truncated.pdf": ("malformed PDF", "empty"),
        "encrypted.pdf": "encrypted PDF",
        "loop.md": "symbolic link",
        "loop-dir": "symbolic link",
        "outside.md": "symbolic link",
        "outside-dir": "symbolic link",
        "name\\xff.md": "file name is not valid UTF-8",
        "corpus.jsonl:2": "unsafe '_id': 4 lines (2, 3, 4, 5); the first: unsafe '_id' '../escape'",
        "corpus.jsonl:6": "unsafe metadata 'path'",
        "corpus.jsonl:7": "invalid Unicode",
        "corpus.jsonl:8": "malformed JSON",
        "many-bad.jsonl:1": "malformed JSON: 20000 lines (1, 2, 3, 4, 5, ...); the first: malformed JSON: Expecting",
        **{f"blank-{i}.txt": "empty" for i in range(5)},
    }
    for name, prefix in expected.items():
        location = f"{bad}/{name}"
        assert location in reasons, (name, sorted(reasons))
        assert reasons[location].startswith(prefix), (name, reasons[location])
    assert len(summary.quarantined) == len(expected) > QUARANTINE_SHOWN  # one record per file and reason class
    assert summary.docs_quarantined == len(expected) - 2 + 4 + 20_000  # every bad line counted
    artifact = summary_markdown(summary)
    assert len(artifact) < 10_000 and artifact.split("## Quarantined")[1].count("\n| ") == 1 + QUARANTINE_SHOWN
    assert f"And {len(expected) - QUARANTINE_SHOWN} more quarantine records, all in table 'quarantine'." in artifact
    printed = io.StringIO()
    monkeypatch.setattr(output, "out", Console(file=printed, width=1000))
    pipeline.print_ingest_summary(summary)
    assert printed.getvalue().count("\nquarantined ") == QUARANTINE_SHOWN + 1 and printed.getvalue().count("\n") < 60
    assert f"and {len(expected) - QUARANTINE_SHOWN} more quarantine records, all in table 'quarantine'\n" in (
        printed.getvalue()
    )

    rows = lancedb.connect(str(store_env)).open_table("chunks").to_arrow().to_pylist()
    assert {r["doc_id"] for r in rows} == {*good, "good/marks.md", "beir-good"}
    vectors = np.array([r["vector"] for r in rows], dtype=np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert all(r["text"].strip() and "\x00" not in r["text"] and 0 < r["n_tokens"] <= 254 for r in rows)
    assert not any("OUTSIDE-SECRET" in r["text"] for r in rows)
    quarantine = lancedb.connect(str(store_env)).open_table("quarantine").to_arrow().to_pylist()
    assert {q["location"] for q in quarantine} == set(reasons)


# --- 2. path safety ----------------------------------------------------------------------------------------------


def test_symlinks_out_of_the_root_are_refused_and_their_targets_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.ingest.formats
    import tasks.ingest.sources

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "docs").mkdir(parents=True)
    outside.mkdir()
    (root / "docs" / "inside.md").write_text("# Inside\n\ninside text")
    (outside / "secret.md").write_text(OUTSIDE_SECRET)
    (outside / "nested").mkdir()
    (outside / "nested" / "deep.txt").write_text(OUTSIDE_SECRET)
    (root / "docs" / "file-link.md").symlink_to(outside / "secret.md")
    (root / "docs" / "relative-link.md").symlink_to("../../outside/secret.md")
    (root / "dir-link").symlink_to(outside)
    (root / "dir-link.md").symlink_to(outside)  # a folder link with a document's name
    opened: list[str] = []
    real_read = tasks.ingest.sources.read_bytes

    def spy(fs: object, path: str) -> bytes:
        opened.append(os.path.realpath(path))
        return real_read(fs, path)

    monkeypatch.setattr(tasks.ingest.sources, "read_bytes", spy)
    monkeypatch.setattr(tasks.ingest.formats, "read_bytes", spy)

    docs, skipped = load(root)

    assert set(docs) == {"docs/inside.md"}
    reasons = {os.path.relpath(loc, root): reason for loc, reason in skipped.items()}
    assert set(reasons) == {"docs/file-link.md", "docs/relative-link.md", "dir-link", "dir-link.md"}
    assert all(r.startswith("symbolic link: not followed") for r in reasons.values()), reasons
    assert opened and all(path.startswith(f"{root}/") for path in opened), opened
    assert not any(OUTSIDE_SECRET in d.text for d in docs.values())


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"_id": "../../etc/passwd", "text": "t"}, "unsafe '_id' '../../etc/passwd': has a '..' path segment"),
        ({"_id": "a/../../b", "text": "t"}, "unsafe '_id' 'a/../../b': has a '..' path segment"),
        ({"_id": "..", "text": "t"}, "unsafe '_id' '..': has a '..' path segment"),
        ({"_id": "/etc/passwd", "text": "t"}, "unsafe '_id' '/etc/passwd': is an absolute path"),
        ({"_id": "a\x00b", "text": "t"}, "unsafe '_id' 'a\\x00b': contains a NUL or control character"),
        ({"_id": "a\\..\\b", "text": "t"}, "unsafe '_id' 'a\\\\..\\\\b': contains a backslash"),
        (
            {"_id": "m1", "text": "t", "metadata": {"url": "ok", "file": "../../secret"}},
            "unsafe metadata 'file': has a '..' path segment",
        ),
        (
            {"_id": "m2", "text": "t", "metadata": {"file": "docs\\..\\..\\secret"}},
            "unsafe metadata 'file': has a '..' path segment",
        ),
    ],
)
def test_beir_records_with_path_like_ids_or_metadata_are_refused(
    tmp_path: Path, record: dict[str, object], reason: str
) -> None:
    safe = {"_id": "docs/1..2/x.y", "text": "dots inside a segment are fine", "metadata": {"url": "https://x/a..b"}}
    (tmp_path / "corpus.jsonl").write_text(json.dumps(safe) + "\n" + json.dumps(record) + "\n")

    docs, skipped = load(tmp_path / "corpus.jsonl")

    assert set(docs) == {"docs/1..2/x.y"}
    assert skipped == {f"{tmp_path}/corpus.jsonl:2": reason}


def test_a_file_url_with_dot_segments_is_normalized_and_reads_only_under_the_resolved_root(tmp_path: Path) -> None:
    (tmp_path / "a" / "docs").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "docs" / "in-a.md").write_text("# A\n\nfrom a")
    (tmp_path / "b" / "in-b.md").write_text("# B\n\nfrom b")

    # the URL names b, spelled through a: b is the root, and nothing of a is read
    found = discover(f"file://{tmp_path}/a/docs/../../b", Settings())
    assert found.source == f"{tmp_path}/b"
    assert [(i.doc_id, i.location) for i in found.items] == [("in-b.md", f"{tmp_path}/b/in-b.md")]

    # the same folder spelled two ways is one source, with the same ids and locations
    plain = discover(str(tmp_path / "a" / "docs"), Settings())
    dotted = discover(f"file://{tmp_path}/b/../a/./docs/", Settings())
    assert dotted.source == plain.source == f"{tmp_path}/a/docs"
    assert [(i.doc_id, i.location) for i in dotted.items] == [(i.doc_id, i.location) for i in plain.items]
    assert all(".." not in i.location for i in [*found.items, *dotted.items])


# --- 3. golden sets and policies ---------------------------------------------------------------------------------

GOOD_QUESTION = {
    "id": "a",
    "question": "What is x?",
    "kind": "factoid",
    "reference_answer": "x",
    "evidence": [{"doc_id": "d.md", "passage": "x is the letter after w."}],
}


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ({**GOOD_QUESTION, "id": "b", "answer": "x"}, r"g\.jsonl:2: field 'answer': Extra inputs are not permitted"),
        ({**GOOD_QUESTION, "id": 7}, r"g\.jsonl:2: field 'id': Input should be a valid string"),
        ({**GOOD_QUESTION, "id": "b", "kind": "trivia"}, r"g\.jsonl:2: field 'kind': Input should be 'factoid'"),
        (
            {**GOOD_QUESTION, "id": "b", "evidence": [{"doc_id": "d.md", "passage": "long enough", "relevance": "hi"}]},
            r"g\.jsonl:2: field 'evidence\.0\.relevance': Input should be a valid integer",
        ),
        (
            {**GOOD_QUESTION, "id": "b", "evidence": [{"doc_id": "d.md", "passage": "long enough", "url": "u"}]},
            r"g\.jsonl:2: field 'evidence\.0\.url': Extra inputs are not permitted",
        ),
        ({k: v for k, v in GOOD_QUESTION.items() if k != "question"}, r"g\.jsonl:2: field 'question': Field required"),
        ([GOOD_QUESTION], r"g\.jsonl:2: field '\(line\)': Input should be a valid dictionary"),
        ('{"id": 1' + "1" * 5000 + "}", r"g\.jsonl:2: not valid JSON \(ValueError: "),
        ("[" * 100_000, r"g\.jsonl:2: not valid JSON \(RecursionError: "),
        (b'{"id": "caf\xe9"}', r"g\.jsonl:2: not valid UTF-8 \(byte 11 of the line\)"),
    ],
)
def test_a_bad_golden_line_names_the_file_line_and_field(tmp_path: Path, second_line: object, message: str) -> None:
    path = tmp_path / "g.jsonl"
    if isinstance(second_line, bytes):
        line = second_line
    else:
        line = (second_line if isinstance(second_line, str) else json.dumps(second_line)).encode()
    path.write_bytes(json.dumps(GOOD_QUESTION).encode() + b"\n" + line + b"\n")
    with pytest.raises(BadGoldenSetError, match=message):
        load_golden_set(path)


def test_an_empty_golden_set_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "g.jsonl").write_text("\n\n")
    with pytest.raises(BadGoldenSetError, match=r"g\.jsonl has no questions"):
        load_golden_set(tmp_path / "g.jsonl")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            "primary_metric: chunk_ndcg\n",
            r"field 'primary_metric' \(line 1\): .*unknown metric name\(s\) \['chunk_ndcg'\]",
        ),
        (
            "primary_metric: chunk_ndcg@10\nrequired: [chunk_ndcg@10]\ngated: [faithfulnes]\n",
            r"field 'gated' \(line 3\): .*unknown metric name\(s\) \['faithfulnes'\]",
        ),
        (
            "primary_metric: chunk_ndcg@10\nrequired: [doc_recall@ten]\n",
            r"field 'required' \(line 2\): .*\['doc_recall@ten'\]",
        ),
        (
            "primary_metric: chunk_ndcg@10\nminimums:\n  doc_hit_rate@10: high\n",
            r"field 'minimums\.doc_hit_rate@10' \(line 3\): Input should be a valid number",
        ),
        (
            "primary_metric: chunk_ndcg@10\nminimums:\n  doc_hit_rate@10: .nan\n",
            r"field 'minimums\.doc_hit_rate@10' \(line 3\): Input should be a finite number",
        ),
        ("primary_metric: chunk_ndcg@10\nmodes: vector\n", r"field 'modes' \(line 2\): Input should be a valid list"),
        (
            "primary_metric: chunk_ndcg@10\nmodes: [vector, semantic]\n",
            r"field 'modes' \(line 2\): .*unknown retrieval mode 'semantic'",
        ),
        (
            "primary_metric: chunk_ndcg@10\nminimum:\n  doc_hit_rate@10: 0.5\n",
            r"field 'minimum' \(line 2\): Extra inputs are not permitted",
        ),
        (
            "primary_metric: chunk_ndcg@10\nmax_regression:\n  absolute: 0.02\n  relative: -1\n",
            r"field 'max_regression\.relative' \(line 4\): Input should be greater than or equal to 0",
        ),
        ("gated: [chunk_ndcg@10]\n", r"field 'primary_metric': Field required"),
        ("- chunk_ndcg@10\n", r"field '\(top level\)': Input should be a valid dictionary"),
        ("primary_metric: [unclosed\n", r"not valid YAML"),
        (b"primary_metric: caf\xe9\n", r"not valid YAML"),
    ],
)
def test_a_bad_policy_names_the_file_line_and_field(tmp_path: Path, policy: str | bytes, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(policy if isinstance(policy, bytes) else policy.encode())
    with pytest.raises(BadPolicyError, match=r"p\.yaml: " + message):
        load_policy(path)


@pytest.mark.parametrize("broken", ["golden", "policy"])
def test_evaluate_fails_on_a_bad_golden_set_or_policy_before_touching_the_table(
    broken: str, tmp_path: Path, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.evaluate

    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps(GOOD_QUESTION) + "\n" + ('{"id": "b"}\n' if broken == "golden" else ""))
    policy = tmp_path / "policy.yaml"
    default = (REPO / "evaluations/policies/default.yaml").read_text()
    assert "tolerance: 0.03" in default
    policy.write_text(default.replace("tolerance: 0.03", "tolerance: lots") if broken == "policy"
                      else default)  # fmt: skip
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(tmp_path / "db"))
    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(tmp_path / "reports"))
    touched: list[str] = []

    def must_not_run(*args: object, **kwargs: object) -> None:
        touched.append("resolve_version")
        raise AssertionError("the table was opened")

    monkeypatch.setattr(flows.evaluate, "resolve_version", must_not_run)
    started = time.perf_counter()

    error = BadGoldenSetError if broken == "golden" else BadPolicyError
    with pytest.raises(error, match=r"golden\.jsonl:2: field 'question'" if broken == "golden" else r"policy\.yaml: "):
        flows.evaluate.evaluate(golden_set=str(golden), policy=str(policy))

    assert time.perf_counter() - started < 30
    assert touched == []
    assert not (tmp_path / "db").exists() and not (tmp_path / "reports").exists()
