"""What a table version records of the run that wrote it: flow, trigger, settings and code revision (the ingest and
remove-source flows; tasks/store/lineage.py adds the sources and stores it in the version's metadata)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect.runtime import flow_run

from tasks import provenance
from tasks.settings import Settings


def run_lineage(
    run_id: str,
    flow_name: str,
    settings: Settings,
    pipeline: dict[str, Any],
    trigger: str | None,
    revision: str | None,
    event: str,
) -> dict[str, Any]:
    """What a version records of the run that wrote it (tasks/store/lineage.py adds the sources and its version)."""
    return {
        "run_id": run_id,
        "flow": flow_name,
        "flow_run_url": provenance.flow_run_link(str(flow_run.id) if flow_run.id else None),
        "trigger": provenance.trigger_of_run(trigger, revision),
        "event": event,
        "table": settings.table,
        "settings": {**pipeline, "embed_backend": settings.embed_backend, "device": settings.device},
        "ragops_version": provenance.ragops_version(),
        "code_revision": provenance.code_revision(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
