"""Flow-run names that say what a run does to which table: `ingest-pg`, `evaluate-pg-v12`, `promote-pg-v12`.

A flow's `flow_run_name` is computed when the run starts, from its parameters (the table, else the configured one;
the version when one was asked for). A run that resolves its version later (the latest, a tag) renames itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def run_name(kind: str, table: str, version: int | str | None = None) -> str:
    """`kind-table`, with `-v<version>` for a number and `-<tag>` for a tag."""
    name = f"{kind}-{table}"
    if version is None or version == "":
        return name
    text = str(version)
    return f"{name}-v{text}" if text.isdigit() else f"{name}-{text}"


def table_of(parameters: dict[str, Any]) -> str:
    """The table a run's parameters name, else the configured table (an invalid setting is the run's to report:
    its name then takes RAGOPS_TABLE as written)."""
    import os

    from tasks.settings import Settings

    if parameters.get("table"):
        return str(parameters["table"])
    try:
        return Settings().table
    except Exception:  # the flow fails on it, with its message, once it runs
        return os.environ.get("RAGOPS_TABLE") or "table"


def namer(kind: str, with_version: bool = False) -> Callable[[], str]:
    """A `flow_run_name` callable for `@flow`: the run's name from its parameters as it starts."""

    def name() -> str:
        from prefect.runtime import flow_run

        parameters = dict(flow_run.parameters or {})
        return run_name(kind, table_of(parameters), parameters.get("version") if with_version else None)

    name.__name__ = f"{kind}_run_name"
    return name


def rename_run(name: str) -> None:
    """Rename the current flow run (when its version became known); a run outside Prefect's API keeps its name."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id or flow_run.name == name:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=name)
    except Exception as exc:  # a name is a label: the run goes on without it
        log.warning("could not rename flow run %s to %s: %s", flow_run.id, name, type(exc).__name__)
