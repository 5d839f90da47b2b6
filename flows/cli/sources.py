"""`ragops sources`: a table's sources with their documents and chunks; `sources remove NAME` as a new candidate."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli import output
from flows.cli.flow_runs import start_flow_command, with_progress
from flows.cli.options import JsonFlag, JsonOpt, TableOpt, UriOpt, VerboseOpt, VersionOpt, settings_for
from flows.cli.tables import dataset_at

sources_app = typer.Typer(
    help="A table's sources: list them with their documents and chunks, or remove one (as a new candidate).",
    invoke_without_command=True,
)


@sources_app.callback()
def sources(
    ctx: typer.Context,
    table: TableOpt = None,
    store_uri: UriOpt = None,
    version: VersionOpt = None,
    json_flag: JsonFlag = False,
) -> None:
    """List the table's sources (at the latest version, or --version) with documents and chunks."""
    if ctx.invoked_subcommand is not None:
        return
    from tasks.store import version_info

    settings = settings_for(table=table, store_uri=store_uri)
    at = dataset_at(settings, version)
    rows = version_info.sources_report(at)
    if json_flag:
        output.print_json({"table": settings.table, "version": int(at.version), "sources": rows})
        return
    output.print_table(sources_table(f"sources of {settings.table} version {at.version}", rows))


def sources_table(title: str, rows: list[dict[str, Any]]) -> Table:
    """One row per source: name, location, id prefix, documents, chunks, the locations it moved from."""
    counts = ("documents", "chunks")
    grid = output.new_table("name", "location", "id prefix", *counts, "moved from", title=title, right=counts)
    for r in rows:
        grid.add_row(
            escape(r["name"]),
            escape(r["location"]),
            escape(r["prefix"]),
            str(r["documents"]),
            str(r["chunks"]),
            escape(", ".join(r.get("moved_from", []))),
        )
    return grid


@sources_app.command("remove")
def sources_remove(
    name: Annotated[str, typer.Argument(help="The source to remove (`ragops sources` lists them).")],
    table: TableOpt = None,
    store_uri: UriOpt = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Remove every document of source NAME, as a new candidate version (gate it like any change)."""
    start_flow_command(verbose, table=table, store_uri=store_uri)
    from flows.sources import remove_source

    result = with_progress(remove_source, name=name, trigger="cli")
    output.show(result, json_out, lambda: output.say(removed_line(result)))


def removed_line(result: dict[str, Any]) -> str:
    """What `sources remove` did, and what to run next."""
    return (
        f"{result['table']}: source {result['source']} removed ({result['documents_removed']} documents, "
        f"{result['chunks_removed']} chunks) as version {result['version']}, tagged {result['candidate_tag']}; "
        "`ragops promote` gates it"
    )
