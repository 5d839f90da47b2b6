"""Untrusted text (file names, questions, answers, reasons, table names) made safe for a Markdown artifact or report.

The Prefect UI renders artifacts as Markdown with inline HTML: a file named `<img src=x onerror=…>` or a chunk holding
`[x](javascript:…)` must show as text, never as an element, an image or a link.
"""

from __future__ import annotations

import re

# The characters that start inline markup mid-line: emphasis and strikethrough, code spans, links and images (`[`),
# table cells (`|`) and the escape itself. `&`, `<` and `>` become entities first: no raw HTML, no `<…>` autolink.
# Only those three: Prefect's renderer shows a numeric entity such as `&#x27;` as it is written.
_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")
# GitHub's bare autolinks (`http://…`, `www.…`, `name@host`) need no markup at all: their `:`, `.` or `@` is escaped
# (a backslash before ASCII punctuation is a plain character in CommonMark), so they stay text.
_AUTOLINK = re.compile(r"(?i)(?:(?<=https)|(?<=http)|(?<=ftp)):(?=//)|(?<=www)\.|@")
# Block markup needs a line start, which `text` never gives mid-line (it joins lines); a value may still begin a list
# item or a line: a leading `#`, `+`, `-` or `1.`/`1)` is escaped too (`>` is already an entity).
_BLOCK_START = re.compile(r"^(?:([#+-])|(\d+)([.)]))")


def text(value: object, limit: int | None = None) -> str:
    """`value` as inline Markdown text: on one line, cut at `limit` characters, with no markup, link or HTML left
    (also where it begins a line or a list item)."""
    inline = _inline(value, limit)
    return _BLOCK_START.sub(lambda m: f"\\{m.group(1)}" if m.group(1) else f"{m.group(2)}\\{m.group(3)}", inline)


def cell(value: object, limit: int | None = None) -> str:
    """`value` for one Markdown table cell, as `text` (`|` is escaped there too); a cell holds no block markup, so a
    leading `1.` or `-` stays as it is."""
    return _inline(value, limit)


def _one_line(value: object, limit: int | None) -> str:
    one_line = " ".join(str(value).split())
    return one_line[:limit] + "…" if limit is not None and len(one_line) > limit else one_line


def _inline(value: object, limit: int | None) -> str:
    escaped = _one_line(value, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _AUTOLINK.sub(lambda m: "\\" + m.group(0), _MARKDOWN.sub(r"\\\1", escaped))


def code(value: object, limit: int | None = None, in_table: bool = False) -> str:
    """`value` as an inline code span (names, ids, paths): shown exactly as it is, never as markup or HTML.
    `in_table`: for a table cell, where a `|` must be written `\\|` even inside code (and shows as `|`)."""
    one_line = _one_line(value, limit)
    if in_table:
        one_line = one_line.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", one_line)), default=0) + 1)
    pad = " " if one_line.startswith("`") or one_line.endswith("`") else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"
