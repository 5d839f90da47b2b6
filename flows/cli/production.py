"""`ragops gate` (CI runs the gate and reads its exit code) and `ragops rollback` (production back one step)."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.markup import escape

from flows.cli import output
from flows.cli.decisions import show_decision
from flows.cli.options import JsonOpt, TableOpt, UriOpt, VersionOpt, settings_for

commands = typer.Typer()


@commands.command()
def gate(
    deployment: Annotated[str, typer.Option(help="flow/deployment to run (promote/gate, pipeline/sample, ...).")] = (
        "promote/gate"
    ),
    version: VersionOpt = None,
    source: Annotated[str | None, typer.Option(help="Source parameter (pipeline: what to ingest).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the run to finish.")] = 3600,
    revision: Annotated[
        str | None,
        typer.Option(help="Revision CI was given (default: RAGOPS_REVISION, GITHUB_SHA, CI_COMMIT_SHA, ...)."),
    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """For CI: run the gate on the Prefect API (in-process without one); exit 0 promoted, 1 blocked, 2 error."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.ci_gate import INFRASTRUCTURE, GateInfrastructureError, run_gate
    from tasks.errors import RagopsError

    try:
        outcome = run_gate(deployment, gate_parameters(deployment, version, source, revision), timeout)
    except GateInfrastructureError as exc:
        output.console.print(f"[red]infrastructure error:[/red] {escape(str(exc))}")
        raise typer.Exit(INFRASTRUCTURE) from exc
    except RagopsError as exc:
        output.fail(str(exc), INFRASTRUCTURE)
    show_decision(outcome.result, json_out)
    if outcome.run_url and output.to_stdout(json_out):  # stdout holds the JSON alone
        output.console.print(f"flow run: {outcome.run_url}", markup=False, soft_wrap=True)
    elif outcome.run_url:
        output.say(f"flow run: {outcome.run_url}")
    raise typer.Exit(outcome.exit_code)


def gate_parameters(deployment: str, version: str | None, source: str | None, revision: str | None) -> dict[str, Any]:
    """The flow parameters of a gate run; a pipeline run also records the CI trigger and the revision."""
    parameters: dict[str, Any] = {}
    if version is not None:
        parameters["version"] = version
    if source is not None:
        parameters["source"] = source
    if deployment.split("/", 1)[0] == "pipeline":
        from tasks.provenance import ci_revision

        parameters["trigger"] = "ci"
        parameters["revision"] = revision or ci_revision()
    return parameters


@commands.command()
def rollback(table: TableOpt = None, store_uri: UriOpt = None) -> None:
    """Move `production` back to the previously promoted version (logged)."""
    from evaluations.promotion import rollback as rollback_production
    from flows.cli.tables import require_store

    settings = settings_for(table=table, store_uri=store_uri)
    store = require_store(settings, hint="nothing to roll back")
    with output.exit_on():
        before, after = rollback_production(store, settings, run_id=f"cli-{os.getpid()}", trigger="cli")
    output.say(f"production: version {before} → {after}")
