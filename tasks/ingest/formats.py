"""Turn a discovered item into plain text with Markdown-style headings, one function per format.

Every failure becomes a `Quarantined` record with the reason; nothing here raises on bad input.
"""

from __future__ import annotations

import io
import posixpath
import re
import unicodedata
from typing import Any

from bs4 import BeautifulSoup
from bs4.element import CData, NavigableString, Tag

from tasks.ingest.chunking import markdown_heading
from tasks.ingest.sources import SourceItem, read_bytes
from tasks.schemas import Document, Quarantined
from tasks.settings import Settings
from tasks.store.lineage import ID_SEPARATOR

# Part of every document's stored hash (tasks/ingest_tasks.pipeline_fingerprint): bump it when extracted text changes,
# so tables re-chunk what they hold. 2: HTML <pre> blocks are fenced code, whitespace kept (tasks/formats.fenced_code).
EXTRACTOR_VERSION = "2"
_HEADING = re.compile(r"^h([1-6])$")
# Trailing spaces of a line; the lookbehind starts each match at the start of a run, so a long run of spaces
# costs linear time instead of quadratic backtracking.
_TRAILING_SPACE = re.compile(r"(?<![ \t])[ \t]+\n")
_TITLE_WINDOW = 10_000
_TITLE_END = ".!?:;…"  # a BEIR title ending with one of these is followed by a space only
MAX_HTML_DEPTH = 512  # elements inside elements; real pages stay under 50 (the bundled docs: 23)
_DROP_TAGS = ["script", "style", "noscript", "nav", "header", "footer", "form", "svg", "iframe", "template"]
_DROP_SELECTORS = ["a.headerlink", "div.sphinxsidebar", "div.related", "div.footer", "[role=navigation]"]
_BLOCK_TAGS = ["p", "li", "dt", "dd", "tr", "blockquote", "table", "section", "div", "ul", "ol", "dl"]


class ExtractionError(Exception):
    """Raised inside this module when a document cannot be turned into text."""


class _Code(NavigableString):
    """A fenced <pre> block standing in for the element: its whitespace is not collapsed like the prose around it."""


def extract(
    item: SourceItem, fs: Any, settings: Settings, source: str, data: bytes | None = None
) -> Document | Quarantined:
    """Extract a document's text (from `data` when the file was read already), or say why it was skipped."""
    try:
        if item.format == "beir":
            assert item.record is not None
            title = str(item.record.get("title") or "")
            text = str(item.record["text"])
            if isinstance(item.record.get("title"), str):
                text = titled_text(title, text)
        else:
            if data is None:
                data = read_bytes(fs, _path_of(fs, item.location))
            if item.format == "pdf":  # the one format whose text can be far larger than its file
                title, text = extract_pdf(data, settings.max_doc_chars)
            else:
                title, text = _EXTRACTORS[item.format](data)
            if not title:
                title = posixpath.splitext(posixpath.basename(item.doc_id.split(ID_SEPARATOR)[-1]))[0]
    except OSError as exc:
        return Quarantined(item.location, f"unreadable: {exc}", item.doc_id)
    except ExtractionError as exc:
        return Quarantined(item.location, str(exc), item.doc_id)
    text = normalize_text(text)
    if not has_visible_text(text):
        return Quarantined(item.location, "empty: no visible text after extraction", item.doc_id)
    if len(text) > settings.max_doc_chars:
        return Quarantined(
            item.location, f"oversized: {len(text)} characters > max_doc_chars {settings.max_doc_chars}", item.doc_id
        )
    return Document(
        doc_id=item.doc_id,
        text=text,
        title=normalize_text(title).strip()[:500],
        source=source,
        location=item.location,
        format=item.format,
        metadata=item.metadata,
    )


def titled_text(title: str, text: str) -> str:
    """A BEIR record's text with its title in front, so the title is embedded and full-text indexed.

    BEIR's baselines encode `title + " " + text`. The title is joined to the text's first line by ": " (by a space
    when it ends with punctuation) rather than by a blank line: the chunker splits at paragraphs, lines and sentences
    before words, so a title on a line of its own would become a chunk of its own whenever the text's first
    paragraph filled the rest of the chunk. The text itself follows unchanged, so passages quoting it still match.
    A title the text already starts with (case and spacing aside) is not repeated; a text without visible
    characters becomes the title alone (as BEIR indexes such records by their title).
    """
    title = " ".join(title.split())
    if not has_visible_text(title):
        return text
    body = text.lstrip()
    if not has_visible_text(body):
        return title
    if _starts_with_words(body, title.split(" ")):
        return text
    return title + (" " if title[-1] in _TITLE_END else ": ") + body


def _starts_with_words(text: str, words: list[str]) -> bool:
    """True when `text` starts with these words, whatever the case and the whitespace between them, then ends a word."""
    pos = 0
    for i, word in enumerate(words):
        if i:
            start = pos
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == start:
                return False
        if text[pos : pos + len(word)].lower() != word.lower():
            return False
        pos += len(word)
    return pos == len(text) or not (text[pos].isalnum() or text[pos] == "_")


def normalize_text(text: str) -> str:
    """Unix newlines, no NULs or trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _TRAILING_SPACE.sub("\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def has_visible_text(text: str) -> bool:
    """False for text of only spaces, control and format characters (zero-width, BOM, direction marks)."""
    return any(unicodedata.category(ch)[0] not in "CZ" for ch in text)


def decode_utf8(data: bytes) -> str:
    """Strict UTF-8 (BOM allowed); binary or undecodable bytes raise ExtractionError."""
    if b"\x00" in data[:8192]:
        raise ExtractionError("binary content: NUL bytes in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from exc


def extract_markdown(data: bytes) -> tuple[str, str]:
    """Markdown: text as is; title from the first `# ` heading."""
    text = decode_utf8(data)
    for mark in re.finditer(r"^#\s", text, flags=re.MULTILINE):
        start = mark.start()
        end = text.find("\n", start, start + _TITLE_WINDOW)  # a title is cut to 500 characters anyway
        heading = markdown_heading(text[start : end if end >= 0 else start + _TITLE_WINDOW])
        if heading:
            return heading[1], text
    return "", text


def extract_plain_text(data: bytes) -> tuple[str, str]:
    """Plain text (reStructuredText included): title from an underlined first line, if any."""
    text = decode_utf8(data)
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines[:-1]):
        if line and re.fullmatch(r"([=\-~*#^\"'])\1{2,}", lines[i + 1]) and not re.fullmatch(r"[=\-~*#^\"']+", line):
            return line, text
    return "", text


def extract_html(data: bytes) -> tuple[str, str]:
    """HTML: the main content as text, headings as Markdown `#` lines, <pre> as fenced code; title: h1 or <title>."""
    if b"\x00" in data[:8192]:
        raise ExtractionError("binary content: NUL bytes in an HTML file")
    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception as exc:  # lxml raises several types on pathological input
        raise ExtractionError(f"malformed HTML: {exc}") from exc
    if soup.original_encoding not in (None, "utf-8", "ascii") and "\ufffd" in soup.get_text()[:10000]:
        raise ExtractionError(f"undecodable HTML (detected encoding {soup.original_encoding})")
    if nesting_depth(soup, MAX_HTML_DEPTH) > MAX_HTML_DEPTH:
        # BeautifulSoup's tree edits and CSS selectors take time quadratic in the depth (hours at 100,000)
        raise ExtractionError(f"malformed HTML: elements nested more than {MAX_HTML_DEPTH} deep")
    main = soup.select_one("main, [role=main], article") or soup.body or soup
    for tag in main.find_all(_DROP_TAGS):
        tag.decompose()
    for selector in _DROP_SELECTORS:
        for tag in main.select(selector):
            tag.decompose()
    h1 = main.find("h1")
    title = h1.get_text(" ", strip=True) if isinstance(h1, Tag) else ""
    if not title and soup.title and soup.title.string:
        title = soup.title.string.strip()
    for pre in main.find_all("pre"):  # before headings and blocks: whatever is inside a <pre> is code, verbatim
        code = pre.get_text().strip("\n")
        pre.replace_with(_Code(fenced_code(code)) if has_visible_text(code) else "\n")
    for heading in main.find_all(_HEADING):
        level = int(heading.name[1])
        heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    for block in main.find_all(_BLOCK_TAGS):
        block.insert_before("\n\n" if block.name != "li" else "\n")
        block.insert_after("\n")
    return title, _html_text(main)


def fenced_code(code: str) -> str:
    """`code` between fence lines, as a block of its own, so no line of it is taken for a heading.

    The fence is one backtick longer than the longest run of backticks in the code (three at least), so a code line
    starting with ``` does not close it (CommonMark).
    """
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"\n\n{fence}\n{code}\n{fence}\n\n"


def _html_text(main: Tag) -> str:
    """The text of `main`: runs of spaces in prose become one space; fenced code keeps its whitespace."""
    parts: list[str] = []
    prose: list[str] = []
    for node in main.descendants:
        if type(node) is _Code:
            parts += [re.sub(r"[ \t\u00a0]+", " ", "".join(prose)), str(node)]
            prose = []
        elif type(node) in (NavigableString, CData):  # what get_text() reads: no comments, doctypes or declarations
            prose.append(str(node))
    parts.append(re.sub(r"[ \t\u00a0]+", " ", "".join(prose)))
    return "".join(parts)


def nesting_depth(root: Tag, limit: int) -> int:
    """How deep elements nest under `root`, counted without recursion and only up to just past `limit`."""
    deepest = 0
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
        stack.extend((child, depth + 1) for child in node.contents if isinstance(child, Tag))
    return deepest


def extract_pdf(data: bytes, max_chars: int | None = None) -> tuple[str, str]:
    """PDF via pypdf, page by page: page texts separated by blank lines; encrypted or broken files raise
    ExtractionError, and so does a file whose text passes `max_chars` (a decompression bomb: a few KB of compressed
    content stream can draw millions of characters on every page), as soon as it does."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("encrypted PDF: no password available")
        pages = _pdf_page_texts(reader, max_chars)
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except ExtractionError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, RecursionError, OSError) as exc:
        raise ExtractionError(f"malformed PDF: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # pypdf raises many undocumented types on corrupt files
        raise ExtractionError(f"malformed PDF: {type(exc).__name__}: {exc}") from exc
    return str(meta_title), "\n\n".join(pages)


class _TooLong(Exception):
    """Raised from pypdf's text visitor to stop a page's extraction once the document passes its limit."""


def _pdf_page_texts(reader: Any, max_chars: int | None) -> list[str]:
    """Each page's text, stopping as soon as the characters drawn so far (before normalization) pass `max_chars`:
    the pages after it are never read, and a single huge page is cut off mid-way."""
    texts: list[str] = []
    budget = [max_chars if max_chars is not None else -1]  # characters still allowed; -1: no limit

    def visit(text: Any, *_: Any) -> None:
        if budget[0] >= 0:
            budget[0] -= len(text)
            if budget[0] < 0:
                raise _TooLong

    count = len(reader.pages)
    for number, page in enumerate(reader.pages, start=1):
        try:
            texts.append(page.extract_text(visitor_text=visit) or "")
        except _TooLong:
            raise ExtractionError(
                f"oversized: text passes max_doc_chars {max_chars} at page {number} of {count} "
                "(extraction stopped there)"
            ) from None
    return texts


_EXTRACTORS = {
    "md": extract_markdown,
    "txt": extract_plain_text,
    "html": extract_html,
    "pdf": extract_pdf,
}


def _path_of(fs: Any, location: str) -> str:
    return fs._strip_protocol(location)
