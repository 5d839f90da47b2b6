"""Markdown artifacts show hostile text as text: a file, question, answer, reason or note holding HTML, an image or a
`javascript:` link becomes no element, no image and no link in any artifact the pipeline publishes.

Each builder's Markdown is rendered by an independent GFM renderer (markdown-it-py with raw HTML on, tables, bare
autolinks and every link target allowed, as Prefect's UI renders them); the rendered page must hold the hostile
strings as visible text and no element they could have made. tests/test_prefect_server.py checks the same in
Prefect's own UI.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from markdown_it import MarkdownIt

from evaluations import monitor_report, report
from evaluations.golden_tasks import golden_markdown
from tasks import markdown
from tasks.ingest.steps import summary_markdown as ingest_markdown
from tasks.schemas import IngestSummary
from tasks.store.maintenance import LogExpiry
from tasks.store.maintenance_report import MaintenanceReport, report_markdown

IMG = "<img src=x onerror=alert(1)>"
IMAGE = "![x](http://127.0.0.1:1/x.png)"
LINK = "[x](javascript:alert(1))"
HOSTILE = [IMG, IMAGE, LINK]
# what Markdown builds block-level from a line start, and bare autolinks
EXTRA = ["# not a heading", "1. not a list", "www.example.org", "bob@example.org", "**bold** _em_ ~~del~~ `code`"]
ALLOWED = {"h1", "h2", "p", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "strong", "em", "code", "hr"}


class Page(HTMLParser):
    """The elements, link targets, image sources and visible text of rendered HTML."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.chunks: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [value or "" for name, value in attrs if name in ("href", "src")]

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.chunks).split())


def render(source: str) -> Page:
    """HTML as a renderer that trusts every link target renders it (Prefect's UI made `javascript:` links)."""
    renderer = MarkdownIt("gfm-like", {"html": True})
    renderer.validateLink = lambda url: True  # type: ignore[method-assign]
    return Page(renderer.render(source))


def assert_shown_as_text(source: str, strings: list[str], allowed: set[str] = ALLOWED) -> Page:
    page = render(source)
    assert set(page.tags) <= allowed, f"elements made from text: {set(page.tags) - allowed}\n{source}"
    assert not [u for u in page.urls if not u.startswith("data:image/png;base64,")], page.urls
    for s in strings:
        assert s in page.text, f"{s!r} is not shown as text:\n{page.text[:2000]}"
    return page


def test_the_reference_renderer_makes_elements_of_raw_hostile_text() -> None:
    # the check below can fail: raw, each string becomes an element or a link
    page = render("\n\n".join(f"- {s}" for s in [*HOSTILE, *EXTRA]))
    assert {"img", "a"} <= set(page.tags)
    assert "javascript:alert(1)" in page.urls and "x" in page.urls and "mailto:bob@example.org" in page.urls


@pytest.mark.parametrize("value", [*HOSTILE, *EXTRA, "a | b", "&lt;b&gt; stays &amp;", 'it\'s "quoted"', "\\[x]"])
def test_text_cell_and_code_show_the_value_as_it_is(value: str) -> None:
    for line in (f"- {markdown.text(value)}", f"{markdown.text(value)}", f"x {markdown.code(value)}"):
        assert_shown_as_text(line, [value])
    table = f"| a | b |\n|---|---|\n| {markdown.cell(value)} | {markdown.code(value, in_table=True)} |\n"
    page = assert_shown_as_text(table, [value])
    assert page.tags.count("td") == 2  # the value never splits the row


def test_text_keeps_quotes_and_numbers_readable() -> None:
    # Prefect's UI shows a numeric entity as written (`&#x27;`): only &, < and > become entities
    assert markdown.text('it\'s "q" <b>') == 'it\'s "q" &lt;b&gt;'
    assert markdown.cell("0.25 MB → 0.10 MB") == "0.25 MB → 0.10 MB"
    assert markdown.text("long " * 50, limit=9) == "long long…"


def test_the_ingest_artifact_shows_a_hostile_file_name_as_text() -> None:
    summary = IngestSummary(
        run_id="r",
        source=f"/data/{IMG}",
        table="chunks",
        quarantined=[{"location": f"docs/{name}.txt", "reason": f"empty {LINK}"} for name in HOSTILE],
    )
    assert_shown_as_text(ingest_markdown(summary), [f"/data/{IMG}", *(f"docs/{n}.txt" for n in HOSTILE)])


def hit(doc_id: str, text: str) -> dict[str, Any]:
    return {"doc_id": doc_id, "text": text}


def test_the_evaluation_artifact_shows_hostile_documents_questions_and_answers_as_text() -> None:
    side = {"version": 3, "mode": "hybrid", "score": 1.0, "answer": f"answer {IMAGE}", "top": [hit(IMG, LINK)]}
    summary = {
        "decision": "block",
        "table": "chunks",
        "candidate_version": 4,
        "production_version": 3,
        "mode": "hybrid",
        "answerer": "offline",
        "report_html": f"reports/{IMG}.html",
        "production_now": f"production is version 3: promoted ({LINK})",
        "reasons": [f"chunk_ndcg@10 fell on {IMAGE}"],
        "notes": [IMG],
        "metrics": [],
        "missing": {"faithfulness": f"judge failed: {LINK}"},
        "question_diff": [
            {
                "change": "regressed",
                "id": IMG,
                "question": f"What is {IMAGE}?",
                "metric": "chunk_ndcg@10",
                "production": side,
                "candidate": {**side, "version": 4, "score": 0.0, "answer": None, "top": [hit(LINK, IMG)]},
            }
        ],
    }
    summary["source_changes"] = {"docs": {"added": 0, "changed": 0, "deleted": 1, "documents": 2}}
    own = {"run_id": "r", "flow": "ingest", "event": f"moved to /data/{IMG}"}
    summary["lineage"] = {
        "candidate": {
            "operation": "Update",
            "operation_means": "an ingest commit",
            "tags": [],
            "lineage": {**own, "sources": [{"name": "docs", "location": f"/data/{LINK}"}]},
        },
        "production": None,
    }
    source = report.summary_markdown(summary)
    page = assert_shown_as_text(source, [f"reports/{IMG}.html", f"What is {IMAGE}?", f"answer {IMAGE}", LINK, IMG])
    assert f"judge failed: {LINK}" in page.text and f"fell on {IMAGE}" in page.text
    assert f"moved to /data/{IMG}" in page.text and f"docs at /data/{LINK}" in page.text
    assert "0 documents added, 0 changed, 1 deleted (2 held)" in page.text


def test_the_golden_set_artifact_shows_hostile_paths_and_reasons_as_text() -> None:
    summary = {
        "kept": 2,
        "requested": 5,
        "out": f"datasets/{IMG}.jsonl",
        "sha256": "ab" * 32,
        "method": f"served queries {LINK}",
        "kinds": {IMAGE: 2},
        "dropped": {f"duplicate of {IMG}": 3},
        "documents_covered": 1,
        "llm_calls": 0,
    }
    page = assert_shown_as_text(golden_markdown(IMG, summary), [f"datasets/{IMG}.jsonl", IMAGE, f"duplicate of {IMG}"])
    assert f"served queries {LINK}" in page.text


def test_the_monitor_artifact_shows_a_hostile_check_detail_as_text() -> None:
    check = {"name": "hallucination_rate", "value": None, "threshold": 0.2, "p_value": None, "baseline": None}
    summary = {
        "table": "chunks",
        "version": 3,
        "queries": 0,
        "window_hours": 24.0,
        "mode": "hybrid",
        "baseline": f"golden set {IMAGE}",
        "baseline_queries": 40,
        "checks": [{**check, "breached": False, "detail": f"faithfulness could not be judged: {IMG} {LINK}"}],
        "breaches": [],
    }
    source = monitor_report.monitor_markdown(summary, {"Trend": None})
    assert_shown_as_text(source, [f"golden set {IMAGE}", f"could not be judged: {IMG} {LINK}"])


def test_the_maintenance_artifact_shows_hostile_tags_reasons_and_notes_as_text() -> None:
    report_ = MaintenanceReport(
        table="chunks",
        dry_run=False,
        run_id="r",
        tags=[{"tag": IMG, "version": 2, "action": "deleted", "reason": f"older than {LINK}"}],
        versions_before=3,
        versions_after=2,
        versions_removed=[1],
        bytes_before=2_000_000,
        bytes_after=1_000_000,
        bytes_reclaimed=1_000_000,
        fragments_before=2,
        fragments_after=1,
        fragments_rewritten=2,
        compacted_version=None,
        indexed_version=None,
        index_actions=[f"merged {IMAGE}"],
        production_moved=None,
        production_note=f"stays: {IMG}",
        kept_versions={},
        query_log=LogExpiry("query_log", 1, 2_000_000, 1_000_000, f"deleted 1 {LINK}"),
        seconds=1.0,
    )
    source = report_markdown(report_)
    assert_shown_as_text(source, [IMG, f"older than {LINK}", f"merged {IMAGE}", f"stays: {IMG}", f"deleted 1 {LINK}"])
