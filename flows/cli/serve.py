"""`ragops serve` (production over HTTP), `monitor` (served queries against the baseline) and `maintain` (compact,
index, expire tags, remove unkept versions)."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.markup import escape

from flows.cli import output
from flows.cli.flow_runs import start_flow_command, with_progress
from flows.cli.options import JsonOpt, TableOpt, UriOpt, VerboseOpt, apply_overrides
from flows.cli.tables import store_for

commands = typer.Typer()


@commands.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (RAGOPS_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RAGOPS_SERVE_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (each loads the model).")] = 1,
    table: TableOpt = None,
    store_uri: UriOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Listen on a non-loopback address without RAGOPS_API_TOKEN all the same.")
    ] = False,
) -> None:
    """Serve queries from the `production` version over HTTP (POST /query, /health, /version, /metrics, /docs)."""
    apply_overrides(table=table, store_uri=store_uri, serve_host=host, serve_port=port)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import tempfile

    import uvicorn

    from tasks.serve.query_service import exposure_refusal
    from tasks.settings import Settings

    settings = Settings()
    token_set = bool(settings.api_token.get_secret_value())
    refusal = exposure_refusal(settings.serve_host, token_set, insecure)
    if refusal:
        output.fail(refusal)
    auth = "bearer token required" if token_set else "no authentication (RAGOPS_API_TOKEN)"
    output.console.print(
        f"serving [bold]{escape(settings.table)}[/bold]@production from {escape(store_for(settings).location)} on "
        f"http://{settings.serve_host}:{settings.serve_port} ({auth}; OpenAPI at /docs)"
    )
    # N workers share their metrics through one directory (prometheus_client's multiprocess mode), removed at exit
    with tempfile.TemporaryDirectory(prefix="ragops-metrics-") as metrics_dir:
        if workers > 1:
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        uvicorn.run(
            "tasks.serve.query_service:app_from_env",
            factory=True,
            host=settings.serve_host,
            port=settings.serve_port,
            workers=workers,
            log_level=log_level,
            # beyond this many connections and requests (per worker) uvicorn answers 503 at once instead of queueing
            limit_concurrency=settings.serve_limit_concurrency or None,
        )


@commands.command()
def monitor(
    window_hours: Annotated[float | None, typer.Option(help="Hours of served queries to check.")] = None,
    table: TableOpt = None,
    store_uri: UriOpt = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Check served queries against the promoted baseline (drift, no-good-answer rate); exit 1 on an alert."""
    start_flow_command(verbose, table=table, store_uri=store_uri)
    summary = monitor_summary(window_hours)
    output.show(summary, json_out, lambda: print_monitor(summary))
    if summary["breaches"]:
        raise typer.Exit(1)


def monitor_summary(window_hours: float | None) -> dict[str, Any]:
    """Run the monitor flow; its summary whether or not a check raised an alert (exit 2 on any other failure)."""
    from flows.monitor import monitor as monitor_flow
    from tasks.errors import MonitorAlertError

    with output.exit_on():
        state: Any = monitor_flow(window_hours=window_hours, return_state=True)
        outcome: Any = state.result(raise_on_failure=False)
    if isinstance(outcome, MonitorAlertError):
        return outcome.summary  # type: ignore[no-any-return]
    if isinstance(outcome, BaseException):
        output.fail(str(outcome))
    return outcome  # type: ignore[no-any-return]


def print_monitor(summary: dict[str, Any]) -> None:
    """Each check with its value, threshold, p-value and whether it alerts; where the report is."""
    title = f"monitor {summary['table']} v{summary['version']}: {summary['queries']} queries served"
    grid = output.new_table("check", "value", "threshold", "p-value", "alert", "detail", title=title)
    for check in summary["checks"]:
        value = "missing" if check["value"] is None else f"{check['value']:.4f}"
        p_value = "" if check["p_value"] is None else f"{check['p_value']:.3g}"
        alert = "[red]yes[/red]" if check["breached"] else "no"
        grid.add_row(escape(check["name"]), value, f"{check['threshold']:g}", p_value, alert, escape(check["detail"]))
    output.print_table(grid)
    output.say(f"report: {summary['report']}")


@commands.command()
def maintain(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be done; change nothing.")] = False,
    table: TableOpt = None,
    store_uri: UriOpt = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Compact the table, bring its indexes up to date, delete expired candidate tags and remove unkept versions."""
    start_flow_command(verbose, table=table, store_uri=store_uri)
    from flows.maintain import maintain as maintain_flow
    from tasks.store.maintenance_report import MaintenanceReport

    report = MaintenanceReport.model_validate(with_progress(maintain_flow, dry_run=dry_run))
    output.show(report, json_out, lambda: print_maintenance(report))


def print_maintenance(report: Any) -> None:
    """The figures of a maintenance run, every tag with what was done to it and why, the versions removed."""
    title = f"maintain {report.table}" + (" (dry run: nothing changed)" if report.dry_run else "")
    output.print_table(output.pairs_table(title, report.rows()))
    tags = output.new_table("tag", "version", "action", "reason", title="tags")
    for t in report.tags:
        color = "green" if t["action"] == "kept" else "yellow"
        tags.add_row(escape(t["tag"]), str(t["version"]), f"[{color}]{t['action']}[/{color}]", escape(t["reason"]))
    output.print_table(tags)
    removed = ", ".join(str(v) for v in report.versions_removed) or "none"
    output.say(f"versions {'to remove' if report.dry_run else 'removed'}: {removed}", soft_wrap=True)
