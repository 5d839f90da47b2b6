"""`ragops gate` (CI runs the gate and reads its exit code) and `ragops rollback` (production back one step)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli import output
from flows.cli.decisions import show_decision
from flows.cli.flow_runs import quiet_prefect
from flows.cli.options import JsonOpt, TableOpt, UriOpt, VerboseOpt, VersionOpt, settings_for

commands = typer.Typer()


@commands.command()
def gate(
    deployment: Annotated[
        str, typer.Option(help="flow/deployment to run (promote/gate, pipeline/sample, ...); in-process: its flow.")
    ] = "promote/gate",
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="Run the flow here, from this checkout (a pull request's own revision), even with PREFECT_API_URL "
            "set (its runs then report there); without it, a worker runs the deployment from its own checkout.",
        ),
    ] = False,
    gate_only: Annotated[
        bool, typer.Option("--gate-only", help="Ingest and decide, but move no tag (a pull request's check).")
    ] = False,
    version: VersionOpt = None,
    source: Annotated[str | None, typer.Option(help="Source parameter (pipeline: what to ingest).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a deployment's run to finish.")] = 3600,
    revision: Annotated[
        str | None,
        typer.Option(help="Revision CI was given (default: RAGOPS_REVISION, GITHUB_SHA, CI_COMMIT_SHA, ...)."),
    ] = None,
    json_out: JsonOpt = None,
    summary: Annotated[
        str | None,
        typer.Option("--summary", help="Append the decision as Markdown to this file (GitHub: $GITHUB_STEP_SUMMARY)."),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """For CI: run the gate, read its decision; exit 0 promoted, passed or nothing changed, 1 blocked, 2 no decision."""
    from flows.ci_gate import NO_DECISION, api_configured, drop_empty_prefect_variables, run_gate

    drop_empty_prefect_variables(os.environ)  # an unset CI secret arrives as "": no API, not an API at ""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if gate_only and deployment.split("/", 1)[0] != "pipeline":
        output.fail(f"--gate-only needs a pipeline deployment (pipeline/...), not {deployment!r}: use evaluate/...")
    try:
        settings_for()  # a bad setting ends here, in one line, before any work
        parameters = gate_parameters(deployment, version, source, revision, gate_only)
        if in_process or not api_configured():
            quiet_prefect(verbose)
        outcome = run_gate(deployment, parameters, timeout, in_process)
    except Exception as exc:  # whatever stopped it, CI gets no decision: exit 2, one line, the JSON saying so
        from tasks.errors import RagopsError

        if verbose and not isinstance(exc, RagopsError):
            raise
        no_decision(str(exc) if isinstance(exc, RagopsError) else output.explain(exc), json_out, summary)
        raise typer.Exit(NO_DECISION) from exc
    show_gate_decision(outcome.result, outcome.run_url, json_out, summary)
    raise typer.Exit(outcome.exit_code)


def gate_parameters(
    deployment: str, version: str | None, source: str | None, revision: str | None, gate_only: bool = False
) -> dict[str, Any]:
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
    if gate_only:
        parameters["gate_only"] = True
    return parameters


def show_gate_decision(result: dict[str, Any], run_url: str | None, json_out: Path | None, summary: str | None) -> None:
    """The decision (verdict, reasons, metrics; one line when nothing changed), its JSON and the closing line."""
    from flows.ci_gate import decision_line, outcome_of, step_summary

    result = {**result, "outcome": outcome_of(result)}
    make_parent(json_out)
    if "metrics" in result:  # something was scored
        show_decision(result, json_out)
    else:
        output.write_json(json_out, result)
    line = decision_line(result)
    for text in (line, f"flow run: {run_url}" if run_url else ""):
        if text and output.to_stdout(json_out):  # stdout holds the JSON alone
            output.console.print(text, markup=False, highlight=False, soft_wrap=True)
        elif text:
            output.say(text, soft_wrap=True)  # a URL stays on one line
    append_summary(summary, step_summary(line, result))


def no_decision(message: str, json_out: Path | None, summary: str | None) -> None:
    """The gate ended without a decision: the `error:` line, and the JSON and summary saying so."""
    from flows.ci_gate import step_summary

    output.error(message)
    make_parent(json_out)
    output.write_json(json_out, {"outcome": "no decision", "error": message})
    append_summary(summary, step_summary(f"no decision: {message}"))


def make_parent(target: Path | None) -> None:
    """`--json reports/gate.json` before the reports folder exists."""
    if target is not None and not output.to_stdout(target):
        target.parent.mkdir(parents=True, exist_ok=True)


def append_summary(target: str | None, text: str) -> None:
    """Add to the CI job's summary file; nothing when none is given ("" too: GitHub's variable outside Actions)."""
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(text)


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
