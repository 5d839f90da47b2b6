"""The `ragops` command line: ingest, evaluate, promote, serve and monitor a table; search and list versions.

One module per group of commands (pipeline, production, lookup, versions, serve, sources, server, golden); each
command parses its options, calls the flow or function that does the work, and prints the result through
`output` (tables that never cut a name, JSON with --json: docs/CLI_JSON.md). Options shared by several commands
are declared once in `options`; `tables` opens the table a command works on, or fails with the standard error.
"""

from __future__ import annotations

import typer

import flows.cli.notify  # noqa: F401 - registers `ragops server notify` on server_app
from flows.cli import lookup, pipeline, production, review, serve, versions
from flows.cli.golden import golden_app
from flows.cli.output import error
from flows.cli.server import server_app
from flows.cli.sources import sources_app

app = typer.Typer(
    help="ragops: RAG ingestion and evaluation on Prefect, Dask and LanceDB.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback's locals may hold settings, secrets included
)
for commands in (
    pipeline.commands,
    production.commands,
    review.commands,
    lookup.commands,
    serve.commands,
    versions.commands,
):
    app.add_typer(commands)  # no name: their commands are ragops' own
app.add_typer(sources_app, name="sources")
app.add_typer(server_app, name="server")
app.add_typer(golden_app, name="golden")


def main() -> None:
    """The `ragops` entry point: an invalid setting ends in one `error:` line naming it (never its value)."""
    from tasks.errors import SettingsError

    try:
        app()
    except SettingsError as exc:
        error(str(exc))
        raise SystemExit(2) from None


__all__ = ["app", "main"]
