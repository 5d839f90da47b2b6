"""Monitor flow: check recent served queries and the production index against the promoted baseline.

Scheduled in prefect.yaml. It publishes a markdown artifact with trend plots, keeps a history table, and when a
threshold is crossed emits the `ragops.monitor.threshold-crossed` event and ends Failed (called directly, it raises
MonitorAlertError, which carries the summary).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from evaluations.monitor_tasks import (
    compact_query_log,
    judge_faithfulness,
    production_baseline,
    publish_monitor,
    raise_alert,
    recent_arrays,
    record_monitor_run,
    served_traffic,
)
from evaluations.monitoring import Baseline, Recent, breaches, run_checks
from tasks.embed import embedding
from tasks.errors import MonitorAlertError, VersionNotFoundError
from tasks.serve.answering import redact_secrets
from tasks.settings import Settings
from tasks.store import lancedb_store
from tasks.store.production import production_state


@flow(name="monitor", persist_result=True, result_serializer="json")
def monitor(window_hours: float | None = None, table: str | None = None) -> State:
    """Drift of served queries and top-1 scores, no-good-answer rate and (with an LLM) hallucination rate."""
    overrides = {"table": table, "monitor_window_hours": window_hours}
    settings = Settings().model_copy(update={k: v for k, v in overrides.items() if v})
    db = lancedb_store.connect(settings)
    if not lancedb_store.table_exists(db, settings.table):
        raise VersionNotFoundError(f"no table {settings.table!r} at {settings.lancedb_uri}: nothing to monitor")
    prod = production_state(db, settings)
    if prod.version is None:
        raise VersionNotFoundError(f"no version of {settings.table!r} is tagged production: nothing to monitor")
    mode = prod.mode or "hybrid"
    until = datetime.now(UTC)
    since = until - timedelta(hours=settings.monitor_window_hours)

    dim = embedding.embedding_dim(embedding.embed_spec(settings))
    baseline = production_baseline(settings, prod.version, mode)
    if settings.monitor_reference_hours:
        reference_start = since - timedelta(hours=settings.monitor_reference_hours)
        reference = recent_arrays(served_traffic(settings, reference_start, since), dim)
        if len(reference[0]) >= settings.monitor_min_queries:
            hours = f"{settings.monitor_reference_hours:g}"
            baseline = Baseline(*reference, source=f"{len(reference[0])} queries served in the {hours} h before")
    rows = served_traffic(settings, since, until)
    faithfulness, reason = judge_faithfulness(settings, rows)
    reason = redact_secrets(reason, settings)  # the judge's error: an endpoint may echo the key it was sent
    vectors, top1, best = recent_arrays(rows, dim)
    recent = Recent(vectors, top1, best, faithfulness, reason)
    checks = run_checks(baseline, recent, settings)

    summary: dict[str, Any] = {
        "run_id": str(flow_run.id or uuid.uuid4()),
        "table": settings.table,
        "version": prod.version,
        "mode": mode,
        "window_hours": settings.monitor_window_hours,
        "since": since.isoformat(),
        "queries": len(vectors),
        "baseline_queries": len(baseline.vectors),
        "baseline": baseline.source,
        "checks": [c.as_dict() for c in checks],
        "breaches": breaches(checks),
    }
    history = record_monitor_run(settings, summary)
    summary["report"] = publish_monitor(settings, summary, history, baseline, recent)
    compact_query_log(settings)
    if summary["breaches"]:
        raise_alert(settings, summary)
        message = "thresholds crossed: " + "; ".join(summary["breaches"])
        return Failed(message=message, data=MonitorAlertError(message, summary))
    return Completed(message="all checks within thresholds", data=summary)
