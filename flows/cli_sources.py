"""`ragops sources` (a table's sources; remove one) and `ragops versions --show N` (what produced version N).

The shared command-line helpers live in flows/cli.py, which registers this group; they are imported where used.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli_options import JsonOpt, TableOpt, UriOpt, VerboseOpt, VersionOpt


def show_version(settings: Any, ref: str, json_flag: bool) -> None:
    """`ragops versions --show N`: what produced version N, its sources, and the decisions that name it."""
    from evaluations.lineage_report import chunking_text, source_text, trigger_text
    from flows.cli import _error, out
    from tasks.errors import VersionNotFoundError
    from tasks.store import lance_reads, version_info

    try:
        at = version_info.dataset_at(settings, settings.table, ref)
    except VersionNotFoundError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    version = int(at.version)
    info = version_info.describe_version(version_info.dataset_at(settings, settings.table), version)
    info["table"] = settings.table
    info["sources"] = version_info.sources_report(at)
    records = lance_reads.log_records(settings, settings.promotions_table, settings.table)
    info["decisions"] = [
        {k: r.get(k) for k in ("at", "action", "version", "previous_version", "mode", "run_id", "trigger")}
        for r in records
        if r.get("version") == version
    ]
    if json_flag:
        out.print_json(json.dumps(info, default=str))
        return
    lineage = info["lineage"]
    out.print(f"{settings.table} version {version}: {info['operation']} ({info['operation_means']})", highlight=False)
    out.print(f"tags: {', '.join(info['tags']) or 'none'}", markup=False, highlight=False)
    if lineage is None:
        out.print("lineage: not recorded (written before ragops kept lineage)")
    else:
        own = "this version" if info["written_by_this_version"] else f"version {lineage.get('data_version')}"
        settings_used = lineage.get("settings") or {}
        for label, value in (
            ("data written by", f"{lineage.get('flow')} run {lineage.get('run_id')} at {own}, {lineage.get('at')}"),
            ("flow run", lineage.get("flow_run_url") or "no link (the run used a temporary Prefect server)"),
            ("trigger", trigger_text(lineage.get("trigger") or {})),
            ("what it did", lineage.get("event", "")),
            ("sources then", "; ".join(source_text(s) for s in lineage.get("sources", []))),
            ("embedding model", settings_used.get("embedding_model", "")),
            ("chunking", chunking_text(settings_used)),
            ("ragops", lineage.get("ragops_version", "")),
            ("code revision", lineage.get("code_revision") or "not run from a checkout"),
            ("recorded in", info["lineage_recorded_in"]),
        ):
            out.print(f"{label}: {value}", markup=False, highlight=False)
    for s in info["sources"]:
        out.print(
            f"source {s['name']}: {s['location']}, {s['documents']} documents, {s['chunks']} chunks"
            + (f", ids prefixed {s['prefix']!r}" if s["prefix"] else ""),
            markup=False,
            highlight=False,
        )
    for d in info["decisions"]:
        out.print(f"decision: {d['action']} at {d['at']} (run {d['run_id']}, {d['trigger']})", markup=False)
    if not info["decisions"]:
        out.print("decisions: none name this version")


sources_app = typer.Typer(
    help="A table's sources: list them with their documents and chunks, or remove one (as a new candidate).",
    invoke_without_command=True,
)


@sources_app.callback()
def sources(
    ctx: typer.Context,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    version: VersionOpt = None,
    json_flag: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the table's sources (at the latest version, or --version) with documents and chunks."""
    if ctx.invoked_subcommand is not None:
        return
    from flows.cli import _apply_overrides, _error, out

    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    from tasks.errors import VersionNotFoundError
    from tasks.settings import Settings
    from tasks.store import version_info

    settings = Settings()
    try:
        at = version_info.dataset_at(settings, settings.table, version)
    except VersionNotFoundError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    rows = version_info.sources_report(at)
    if json_flag:
        out.print_json(json.dumps({"table": settings.table, "version": int(at.version), "sources": rows}))
        return
    grid = Table(title=escape(f"sources of {settings.table} version {at.version}"))
    for column in ("name", "location", "id prefix", "documents", "chunks", "moved from"):
        grid.add_column(column, justify="right" if column in ("documents", "chunks") else "left", overflow="fold")
    for r in rows:
        grid.add_row(
            escape(r["name"]),
            escape(r["location"]),
            escape(r["prefix"]),
            str(r["documents"]),
            str(r["chunks"]),
            escape(", ".join(r.get("moved_from", []))),
        )
    out.print(grid)


@sources_app.command("remove")
def sources_remove(
    name: Annotated[str, typer.Argument(help="The source to remove (`ragops sources` lists them).")],
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Remove every document of source NAME, as a new candidate version (gate it like any change)."""
    from flows.cli import _apply_overrides, _quiet_prefect, _with_progress, out

    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    _quiet_prefect(verbose)
    from flows.sources import remove_source

    result = _with_progress(remove_source, name=name, trigger="cli")
    out.print(
        f"{result['table']}: source {result['source']} removed ({result['documents_removed']} documents, "
        f"{result['chunks_removed']} chunks) as version {result['version']}, tagged {result['candidate_tag']}; "
        "`ragops promote` gates it",
        markup=False,
        highlight=False,
    )
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
