"""`ragops gate` for CI: run the gate deployment on a Prefect API (or in-process), wait, and read the decision.

The decision is read from the flow run's persisted result, never from a CLI exit code: `prefect deployment run`
can exit 0 for a run that later failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.errors import RagopsError

PROMOTED, BLOCKED, INFRASTRUCTURE = 0, 1, 2


class GateInfrastructureError(RagopsError):
    """The gate could not run to a decision: API unreachable, run failed or crashed, timeout."""


@dataclass
class GateOutcome:
    """What CI needs: the exit code, the decision record and where the run can be seen."""

    exit_code: int
    result: dict[str, Any]
    run_url: str | None


def exit_code_for(result: dict[str, Any]) -> int:
    """0 when promoted (or, for an evaluate-only run, when the gate would promote), else 1."""
    action = result.get("action", result.get("decision"))
    return PROMOTED if action == "promote" else BLOCKED


def api_configured() -> bool:
    """True when PREFECT_API_URL points at a Prefect server."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def run_gate(deployment: str, parameters: dict[str, Any], timeout_s: float) -> GateOutcome:
    """Trigger `deployment` and wait for its decision; with no Prefect API, run the flow in-process."""
    if not api_configured():
        from flows.evaluate import evaluate
        from flows.promote import pipeline, promote

        flows: dict[str, Any] = {"promote": promote, "pipeline": pipeline, "evaluate": evaluate}
        flow_name = deployment.split("/", 1)[0]
        if flow_name not in flows:
            raise GateInfrastructureError(f"unknown flow {flow_name!r} for an in-process gate")
        result = flows[flow_name](**parameters)
        return GateOutcome(exit_code_for(result), result, None)

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_UI_URL

    try:
        flow_run: Any = run_deployment(name=deployment, parameters=parameters, timeout=timeout_s)
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
