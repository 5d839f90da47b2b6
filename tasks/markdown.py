"""Untrusted text (file names, questions, answers, reasons, table names) made safe for a Markdown artifact or report.

The Prefect UI renders artifacts as Markdown with inline HTML: a file named `<img src=x onerror=…>` or a chunk holding
`[x](javascript:…)` must show as text, never as an element, an image or a link.
"""

from __future__ import annotations

import html
import re

# The characters that start inline markup mid-line: emphasis and strikethrough, code spans, links and images (`[`),
# table cells (`|`) and the escape itself. `&`, `<` and `>` become entities first (html.escape): no raw HTML, no
# autolink. Block markup (`#`, `-`, `1.`) needs a line start, which `text` never gives (it joins lines).
_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")


def text(value: object, limit: int | None = None) -> str:
    """`value` as inline Markdown text: on one line, cut at `limit` characters, with no markup or HTML left."""
    one_line = " ".join(str(value).split())
    if limit is not None and len(one_line) > limit:
        one_line = one_line[:limit] + "…"
    return _MARKDOWN.sub(r"\\\1", html.escape(one_line, quote=True))


def cell(value: object, limit: int | None = None) -> str:
    """`value` for one Markdown table cell (same as `text`: `|` is escaped there too)."""
    return text(value, limit)
