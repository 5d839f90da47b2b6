"""Who and what ran: the trigger of a flow run, its Prefect link, the ragops version and the code revision.

Recorded with every table version a run writes (tasks/store/lineage.py), so "what produced version 12?" has an
answer a reviewer can read without the Prefect database.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any

CI_REVISION_VARIABLES = ("RAGOPS_REVISION", "GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT", "CIRCLE_SHA1")


@functools.cache
def ragops_version() -> str:
    """The installed ragops distribution's version ("unknown" when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ragops")
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def code_revision() -> str | None:
    """The git commit of the checkout ragops runs from (`+dirty` with uncommitted changes); None outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def ci_revision() -> str | None:
    """The revision a CI job was given, from the usual CI variables (RAGOPS_REVISION first)."""
    return next((os.environ[v] for v in CI_REVISION_VARIABLES if os.environ.get(v)), None)


def flow_run_link(run_id: str | None) -> str | None:
    """The run's page in the Prefect UI; None without a Prefect server (a temporary one is gone when the run ends)."""
    if not run_id:
        return None
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if not PREFECT_API_URL.value():
        return None
    ui = PREFECT_UI_URL.value()
    return f"{ui}/runs/flow-run/{run_id}" if ui else None


def trigger_of_run(given: str | None, revision: str | None = None) -> dict[str, Any]:
    """What started this flow run: `given` (cli, ci, pipeline, ...) when the caller says; else, for a deployment
    run, a schedule, an automation or a manual run (UI or API); else a direct flow call. CI adds its revision."""
    kind, detail = given, None
    if kind is None:
        kind, detail = _deployment_trigger()
    if kind in (None, "flow call") and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        kind = "ci"
    trigger: dict[str, Any] = {"kind": kind or "flow call"}
    if detail:
        trigger["detail"] = detail
    revision = revision or (ci_revision() if trigger["kind"] == "ci" else None)
    if revision:
        trigger["revision"] = revision
    return trigger


def _deployment_trigger() -> tuple[str | None, str | None]:
    from prefect.runtime import deployment, flow_run

    if not deployment.id or not flow_run.id:
        return None, None
    name = f"{flow_run.flow_name}/{deployment.name}"
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run.id)
    except Exception:  # the API is the only source of this; a lineage without it still names the deployment
        return "deployment", name
    created_by = getattr(run, "created_by", None)
    if created_by is not None and str(getattr(created_by, "type", "")).upper() == "AUTOMATION":
        return "automation", f"{created_by.display_value or created_by.id} → {name}"
    if getattr(run, "auto_scheduled", False):
        return "schedule", name
    return "deployment", f"{name} (run from the UI or API)"
