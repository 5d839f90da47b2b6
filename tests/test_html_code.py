"""HTML <pre> blocks become fenced code: kept verbatim, and no line of code is taken for a section heading."""

from __future__ import annotations

from pathlib import Path

import lxml.html

from tasks.ingest.chunking import split_sections
from tasks.ingest.formats import extract, extract_html, normalize_text
from tasks.ingest.sources import discover
from tasks.schemas import Document
from tasks.settings import Settings

from .conftest import SAMPLE


def html_text(html: str) -> str:
    """The text ingest would chunk for this HTML page."""
    return normalize_text(extract_html(html.encode())[1])


def extracted(source: Path) -> list[Document]:
    settings = Settings()
    found = discover(str(source), settings)
    docs = [extract(item, found.fs, settings, found.source) for item in found.items if item.format == "html"]
    assert all(isinstance(d, Document) for d in docs), docs
    return [d for d in docs if isinstance(d, Document)]


def code_lines(html: bytes) -> set[str]:
    pres = lxml.html.fromstring(html).iter("pre")
    return {line.strip() for pre in pres for line in pre.text_content().split("\n") if line.strip()}


def heading_lines(text: str) -> list[str]:
    """The line that starts each section: the heading the chunker found."""
    return [s.text.split("\n")[0].strip() for s in split_sections(text) if s.path]


def test_comments_in_the_contextvars_examples_are_not_headings() -> None:
    page = SAMPLE / "library" / "contextvars.html"
    [document] = extracted(page)
    paths = [s.path for s in split_sections(document.text)]

    assert not [p for p in paths if "var.get()" in p or "After the reset call" in p]
    assert paths[:2] == ["contextvars — Context Variables", "contextvars — Context Variables > Context Variables"]
    example = (
        "token = var.set('new value')\n"
        "# code that uses 'var'; var.get() returns 'new value'.\n"
        "var.reset(token)\n"
        "\n"
        "# After the reset call the var has no value again, so\n"
        "# var.get() would raise a LookupError.\n"
        "```"
    )
    assert example in document.text  # verbatim, comments at column 0, then the closing fence


def test_no_section_of_the_sample_pages_is_headed_by_a_line_of_code() -> None:
    documents = extracted(SAMPLE)
    assert len(documents) == 165
    code_born = {}
    for document in documents:
        code = code_lines((SAMPLE / document.doc_id).read_bytes())
        if found := [line for line in heading_lines(document.text) if line in code]:
            code_born[document.doc_id] = found
    assert code_born == {}  # 18 pages, 46 headings before <pre> was fenced


def test_pre_text_is_fenced_verbatim_with_its_whitespace() -> None:
    code = "def f(x):\n\tif x:  # two spaces\n        return  [\n# comment at column 0\n            x]"
    text = html_text(f"<main><h1>Title</h1><p>Some   prose</p><pre>\n{code}\n</pre><p>after\n</p></main>")

    assert text == f"# Title\n\nSome prose\n\n```\n{code}\n```\n\nafter"
    assert [s.path for s in split_sections(text)] == ["Title"]


def test_markup_inside_pre_is_code_not_headings_or_blocks() -> None:
    html = "<main><h2>Use</h2><pre><span>x</span> = 1\n<h3>Not a heading</h3>\n<div>y</div></pre></main>"

    assert html_text(html) == "## Use\n\n```\nx = 1\nNot a heading\ny\n```"


def test_underlined_lines_in_code_are_not_rest_headings() -> None:
    text = html_text("<main><h1>cmd</h1><pre>Documented commands:\n====================\nbye  color</pre></main>")

    assert [s.path for s in split_sections(text)] == ["cmd"]


def test_code_holding_a_fence_gets_a_longer_fence() -> None:
    code = "Markdown:\n```python\nx = 1\n```\nand ```` too"
    text = html_text(f"<main><pre>{code}</pre></main>")

    assert text == f"`````\n{code}\n`````"


def test_blank_pre_adds_no_fence() -> None:
    assert html_text("<main><p>a</p><pre> \n \n</pre><p>b</p></main>") == "a\n\nb"


def test_fence_lines_inside_code_do_not_end_the_code_for_the_chunker() -> None:
    code = "Markdown:\n```\n# inside the code\n```\n~~~\n# still code"
    text = html_text(f"<main><h1>Top</h1><pre>{code}</pre><h2>Next</h2><p>x</p></main>")

    assert [s.path for s in split_sections(text)] == ["Top", "Top > Next"]
