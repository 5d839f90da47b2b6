"""`ragops gate` for CI: run the gate flow, wait, and read its decision; the exit code and the line CI shows.

Two places to run it. A deployment (`--deployment pipeline/sample` with PREFECT_API_URL) runs on a worker, from the
worker's checkout: it judges what is deployed. In-process (`--in-process`, or no Prefect API) runs the flow in this
process, from this checkout: in a pull request's CI job it judges the pull request's own corpus, code and policy.
A deployment's decision is read from the flow run's persisted result, never from a CLI exit code:
`prefect deployment run` can exit 0 for a run that later failed.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from tasks.errors import RagopsError

PROMOTED, BLOCKED, NO_DECISION = 0, 1, 2
EXIT_CODES = {"promoted": PROMOTED, "passed": PROMOTED, "unchanged": PROMOTED, "blocked": BLOCKED}
IN_PROCESS_FLOWS = ("pipeline", "promote", "evaluate")


class GateInfrastructureError(RagopsError):
    """The gate could not run to a decision: unknown deployment, API unreachable, run failed or crashed, timeout."""


@dataclass
class GateOutcome:
    """What CI needs: the exit code, the decision record and where the run can be seen."""

    exit_code: int
    result: dict[str, Any]
    run_url: str | None


def drop_empty_prefect_variables(environ: MutableMapping[str, str]) -> list[str]:
    """Remove the PREFECT_* variables set to "" (CI turns an unset secret into ""); returns their names.

    Prefect takes PREFECT_API_URL="" as a value, not as "no API": its event worker then fails and the run's events
    are lost. Call this before Prefect is imported."""
    empty = sorted(name for name, value in environ.items() if name.startswith("PREFECT_") and value == "")
    for name in empty:
        del environ[name]
    return empty


def outcome_of(result: dict[str, Any]) -> str:
    """promoted, passed (a gate-only or evaluate run the gate would promote), blocked, unchanged, or no decision."""
    decision, action = result.get("decision"), result.get("action")
    if "unchanged" in (decision, action):
        return "unchanged"
    if decision == "promote":
        return {"promote": "promoted", None: "passed", "evaluated": "passed"}.get(action, "blocked")
    return "blocked" if decision == "block" else "no decision"


def exit_code_for(result: dict[str, Any]) -> int:
    """0 promoted, passed or unchanged; 1 blocked; 2 no decision."""
    return EXIT_CODES.get(outcome_of(result), NO_DECISION)


def decision_line(result: dict[str, Any]) -> str:
    """The one line a CI log and its job summary show."""
    outcome, table = outcome_of(result), result.get("table")
    version, production = result.get("candidate_version"), result.get("production_version")
    against = f"production: version {production}" if production is not None else "no production yet"
    if outcome == "unchanged":
        return f"nothing changed: version {version} of table {table} is already production"
    if outcome == "promoted":
        before = f"version {production}" if production is not None else "none"
        return f"promoted: version {version} of table {table} is production now (before: {before})"
    if outcome == "passed":
        return f"passed: the gate would promote version {version} of table {table} ({against}; gate only: not moved)"
    if outcome == "blocked":
        reasons = result.get("reasons") or []
        return f"blocked: version {version} of table {table} ({against}): {reasons[0] if reasons else 'see report'}"
    return f"no decision: the gate returned {result.get('decision')!r} for table {table}"


def step_summary(line: str, result: dict[str, Any] | None = None) -> str:
    """The decision as Markdown for a CI job's summary page (GitHub: $GITHUB_STEP_SUMMARY)."""
    from tasks import markdown

    outcome = outcome_of(result) if result is not None else "no decision"
    parts = [f"### ragops gate: {outcome}", markdown.text(line)]
    if result is not None and outcome != "unchanged":
        parts += ["\n".join(f"- {markdown.text(reason)}" for reason in result.get("reasons") or [])]
        parts += [f"Report: {markdown.code(result['report_html'])}"] if result.get("report_html") else []
    return "\n\n".join(part for part in parts if part) + "\n\n"


def unknown_deployment_message(deployment: str, existing: list[str], api: str) -> str:
    """What to say when `deployment` is not on the Prefect API: the ones that are, and how to create them."""
    there = f"deployments there: {', '.join(existing)}" if existing else "it has no deployments"
    return (
        f"deployment {deployment!r} does not exist on the Prefect API at {api}; {there}. Create them with "
        "`prefect --no-prompt deploy --all` from the repository root, or run the flow here with --in-process"
    )


def deployment_names() -> list[str]:
    """Every deployment on the Prefect API, as flow/deployment."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flows = {flow.id: flow.name for flow in client.read_flows()}
        return sorted(f"{flows.get(d.flow_id, d.flow_id)}/{d.name}" for d in client.read_deployments())


def api_configured() -> bool:
    """True when PREFECT_API_URL points at a Prefect server ("" is none)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def in_process_flow(deployment: str) -> Any:
    """The flow a deployment name (flow/deployment, or the flow alone) runs, to call in this process."""
    flow_name = deployment.split("/", 1)[0]
    if flow_name not in IN_PROCESS_FLOWS:
        raise GateInfrastructureError(
            f"flow {flow_name!r} of {deployment!r} cannot gate in-process; use one of: {', '.join(IN_PROCESS_FLOWS)}"
        )
    from flows import evaluate, promote

    return {"pipeline": promote.pipeline, "promote": promote.promote, "evaluate": evaluate.evaluate}[flow_name]


def run_gate(deployment: str, parameters: dict[str, Any], timeout_s: float, in_process: bool = False) -> GateOutcome:
    """Run the gate and read its decision: in this process when asked or with no Prefect API, else the deployment."""
    if in_process or not api_configured():
        from tasks.provenance import flow_run_link

        result = in_process_flow(deployment)(**parameters)
        run_url = flow_run_link(result.get("pipeline_run_id") or result.get("run_id"))
        return GateOutcome(exit_code_for(result), result, run_url)
    return run_deployment_gate(deployment, parameters, timeout_s)


def run_deployment_gate(deployment: str, parameters: dict[str, Any], timeout_s: float) -> GateOutcome:
    """Trigger the deployment on the Prefect API, wait for its final state and read the persisted decision."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    try:
        flow_run: Any = run_deployment(name=deployment, parameters=parameters, timeout=timeout_s)
    except ObjectNotFound as exc:
        raise GateInfrastructureError(
            unknown_deployment_message(deployment, deployment_names(), str(PREFECT_API_URL.value()))
        ) from exc
    except Exception as exc:  # the API's many failure types all mean: no decision
        raise GateInfrastructureError(f"could not run deployment {deployment!r}: {type(exc).__name__}: {exc}") from exc
    ui = PREFECT_UI_URL.value()
    url = f"{ui}/runs/flow-run/{flow_run.id}" if ui else str(flow_run.id)
    state = flow_run.state
    if state is None or not state.is_final():
        raise GateInfrastructureError(f"flow run {url} did not finish within {timeout_s:.0f} s")
    if not state.is_completed():
        raise GateInfrastructureError(f"flow run {url} ended {state.type.value}: {state.message or ''}".strip())
    try:
        result = state.result()
    except Exception as exc:
        raise GateInfrastructureError(
            f"flow run {url} completed but its result could not be read ({exc}); "
            "workers and CI need a shared result storage (PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK)"
        ) from exc
    if not isinstance(result, dict) or "decision" not in result:
        raise GateInfrastructureError(f"flow run {url} returned no gate decision")
    return GateOutcome(exit_code_for(result), result, url)
