"""Loading specification: every supported format, include/exclude, and every kind of bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from pypdf import PdfWriter

from tasks.errors import BadSourceError
from tasks.ingest.formats import extract
from tasks.ingest.sources import discover
from tasks.schemas import Document, Quarantined
from tasks.settings import Settings

from .conftest import SAMPLE


def load(root: Path, **overrides: object) -> tuple[dict[str, Document], dict[str, str]]:
    """Discover and extract everything under root: (documents by id, quarantine reasons by location)."""
    settings = Settings(**overrides)  # type: ignore[arg-type]
    found = discover(str(root), settings)
    docs: dict[str, Document] = {}
    skipped = {q.location: q.reason for q in found.quarantined}
    for item in found.items:
        result = extract(item, found.fs, settings, found.source)
        if isinstance(result, Quarantined):
            skipped[result.location] = result.reason
        else:
            docs[result.doc_id] = result
    return docs, skipped


def test_every_format_of_the_sample_loads_with_titles(tmp_path: Path) -> None:
    for rel in ["tutorial/venv.txt", "using/editors.md", "library/tty.html", "pdf/secrets.pdf"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / rel, tmp_path / rel)
    docs, skipped = load(tmp_path)
    assert skipped == {}
    assert set(docs) == {"tutorial/venv.txt", "using/editors.md", "library/tty.html", "pdf/secrets.pdf"}
    assert docs["tutorial/venv.txt"].title == "Virtual Environments and Packages"
    assert docs["using/editors.md"].title == "6. Editors and IDEs"
    assert docs["library/tty.html"].title.startswith("tty")
    assert "# tty" in docs["library/tty.html"].text  # HTML headings become Markdown headings
    assert "<div" not in docs["library/tty.html"].text
    assert "token_bytes" in docs["pdf/secrets.pdf"].text
    assert {d.format for d in docs.values()} == {"txt", "md", "html", "pdf"}


def test_the_bundled_sample_has_200_documents_in_four_formats() -> None:
    found = discover(str(SAMPLE), Settings())
    assert len(found.items) >= 200
    assert found.quarantined == []
    assert {i.format for i in found.items} == {"txt", "md", "html", "pdf"}


def test_include_and_exclude_patterns(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "a.md").write_text("# A\n\nalpha")
    (tmp_path / "keep" / "b.txt").write_text("beta")
    (tmp_path / "drafts").mkdir()
    (tmp_path / "drafts" / "c.md").write_text("# C\n\ngamma")
    (tmp_path / "top.md").write_text("# Top\n\ntop level")
    docs, _ = load(tmp_path, include=["**/*.md"], exclude=["drafts/**"])
    assert set(docs) == {"keep/a.md", "top.md"}


def test_beir_corpus_records_become_documents_with_their_ids(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = [
        json.dumps({"_id": "d1", "title": "Alpha", "text": "first text", "metadata": {"url": "u1"}}),
        "{not json",
        json.dumps({"_id": "d2", "text": "second text"}),
        json.dumps({"title": "no id", "text": "x"}),
        json.dumps({"_id": "d3", "text": ""}),
        json.dumps({"_id": "d1", "text": "duplicate id"}),
    ]
    corpus.write_text("\n".join(lines) + "\n")
    docs, skipped = load(corpus)
    assert set(docs) == {"d1", "d2"}
    assert docs["d1"].title == "Alpha" and docs["d1"].metadata == {"url": "u1"}
    assert docs["d1"].text == "Alpha: first text"  # the title leads the text, as BEIR's baselines embed it
    reasons = {loc.rsplit(":", 1)[1]: reason for loc, reason in skipped.items()}
    assert reasons["2"].startswith("malformed JSON")
    assert reasons["4"] == "missing or empty '_id'"
    assert reasons["5"].startswith("empty")
    assert reasons["6"].startswith("duplicate doc_id 'd1'")


def test_bad_inputs_are_quarantined_with_reasons_and_the_rest_loads(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Good\n\nfine content")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR")
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "blank.html").write_text("<html><body><script>x()</script>   </body></html>")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage")
    (tmp_path / "truncated.pdf").write_bytes((SAMPLE / "pdf" / "secrets.pdf").read_bytes()[:3000])
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt("secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    (tmp_path / "encrypted.pdf").write_bytes(buffer.getvalue())
    with open(tmp_path / "huge.txt", "wb") as handle:  # a sparse 2 GB file: never read
        handle.truncate(2 * 1024**3)
    os.mkfifo(tmp_path / "pipe.md")
    (tmp_path / "dangling.md").symlink_to(tmp_path / "missing.md")
    (tmp_path / "outside.txt").symlink_to("/etc/hostname")

    docs, skipped = load(tmp_path)
    assert set(docs) == {"good.md"}
    reasons = {Path(loc).name: reason for loc, reason in skipped.items()}
    assert reasons["latin1.txt"].startswith("invalid UTF-8 at byte 3")
    assert reasons["binary.txt"].startswith("binary content")
    assert reasons["empty.md"].startswith("empty")
    assert reasons["blank.html"].startswith("empty")
    assert reasons["broken.pdf"].startswith(("malformed PDF", "empty"))
    assert reasons["truncated.pdf"].startswith(("malformed PDF", "empty"))
    assert reasons["encrypted.pdf"] == "encrypted PDF: no password available"
    assert reasons["huge.txt"] == f"oversized: {2 * 1024**3} bytes > max_file_bytes {50 * 1024 * 1024}"
    assert reasons["pipe.md"].startswith("not a regular file")
    assert reasons["dangling.md"].startswith("symbolic link")
    assert reasons["outside.txt"].startswith("symbolic link")


def test_extracted_text_above_the_limit_is_quarantined(tmp_path: Path) -> None:
    (tmp_path / "long.txt").write_text("word " * 5000)
    docs, skipped = load(tmp_path, max_doc_chars=10_000)
    assert docs == {}
    assert next(iter(skipped.values())).startswith("oversized: 24999 characters")


def test_a_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BadSourceError, match="does not exist"):
        discover(str(tmp_path / "nope"), Settings())


def test_an_fsspec_url_is_a_source(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nvia a URL")
    docs, _ = load(Path(f"file://{tmp_path}"))
    assert docs["a.md"].text.endswith("via a URL")


def test_memory_filesystem_url(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/docs/a.md", b"# Remote\n\nfrom object storage")
    fs.pipe("/bucket/docs/sub/b.txt", b"plain text")
    settings = Settings()
    found = discover("memory://bucket/docs", settings)
    assert sorted(i.doc_id for i in found.items) == ["a.md", "sub/b.txt"]
    doc = extract(found.items[0], found.fs, settings, found.source)
    assert isinstance(doc, Document) and doc.title == "Remote"
    assert found.source == "memory://bucket/docs"
