"""Ragops' own Prefect events: what a run changed or decided, about the table it touched.

Every event is about the resource `ragops.table.<table>`, labelled with the table and the store (its URI without
credentials or query); the payload carries the table, the version and the run. Emitted inside a flow or task run,
Prefect relates the event to that run, its flow and deployment, so the event feed links to the run. Automations
match the resource id and labels (`ragops.verdict` on a gate decision, `ragops.action` on a production move).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tasks.settings import Settings

VERSION_CREATED = "ragops.version.created"
GATE_DECIDED = "ragops.gate.decided"
PRODUCTION_MOVED = "ragops.production.moved"
MONITOR_ALERT = "ragops.monitor.threshold-crossed"

log = logging.getLogger(__name__)


def public_uri(uri: str) -> str:
    """The store URI as it may be shown: no user, password, query or fragment (a URI can carry credentials)."""
    parts = urlsplit(uri)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive letter)
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def table_resource(settings: Settings, **labels: str) -> dict[str, str]:
    """The event resource for the settings' table: id `ragops.table.<table>`, its name, the store, extra labels."""
    return {
        "prefect.resource.id": f"ragops.table.{settings.table}",
        "prefect.resource.name": settings.table,
        "ragops.table": settings.table,
        "ragops.store": public_uri(settings.lancedb_uri),
        **labels,
    }


def emit(event: str, settings: Settings, payload: dict[str, Any], **labels: str) -> bool:
    """Emit `event` about the settings' table; True when it was handed to Prefect's events worker.

    An event that cannot be sent (no API, a full queue) is logged and never fails the work it reports: the version,
    the decision or the move it describes has already happened.
    """
    from prefect.events import emit_event

    try:
        sent = emit_event(
            event=event, resource=table_resource(settings, **labels), payload={"table": settings.table, **payload}
        )
    except Exception as exc:  # reporting must not undo what it reports
        log.warning("could not emit %s for table %s: %s", event, settings.table, type(exc).__name__)
        return False
    return sent is not None


def version_created(settings: Settings, version: int, run_id: str, judged_by: str, **details: Any) -> bool:
    """An ingest wrote `version` (only then: a run that changed nothing emits nothing). `judged_by` (label
    `ragops.judged-by`): `pipeline` when the flow that ran the ingest evaluates the version itself, else `trigger`
    (the `on-ingest` deployment matches only those)."""
    payload = {"version": version, "run_id": run_id, "judged_by": judged_by, **details}
    return emit(VERSION_CREATED, settings, payload, **{"ragops.judged-by": judged_by})


def gate_decided(settings: Settings, summary: dict[str, Any], verdict: str, report_url: str | None) -> bool:
    """The gate's verdict on a candidate (`promote`, `block`, `review`), with the primary metric and its interval."""
    primary = summary.get("primary_metric")
    row: dict[str, Any] = next((r for r in summary.get("metrics", []) if r.get("metric") == primary), {})
    reasons = summary.get("reasons") or []
    payload = {
        "version": summary.get("candidate_version"),
        "production_version": summary.get("production_version"),
        "verdict": verdict,
        "primary_metric": primary,
        "value": row.get("candidate"),
        "production_value": row.get("production"),
        "ci_low": row.get("ci_low"),
        "ci_high": row.get("ci_high"),
        "interval": summary.get("verdict"),
        "reason": reasons[0] if reasons else None,
        "report_url": report_url,
        "run_id": summary.get("run_id"),
    }
    return emit(GATE_DECIDED, settings, payload, **{"ragops.verdict": verdict})


def production_moved(
    settings: Settings, action: str, version: int, previous: int | None, run_id: str, trigger: str
) -> bool:
    """`production` moved to `version` (a promotion, a rollback, or maintenance following a compaction)."""
    payload = {"action": action, "version": version, "previous_version": previous, "run_id": run_id, "trigger": trigger}
    return emit(PRODUCTION_MOVED, settings, payload, **{"ragops.action": action})
