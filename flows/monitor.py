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
from evaluations.monitoring import Baseline, Check, Recent, breaches, run_checks
from tasks.embed import embedding
from tasks.errors import MonitorAlertError, VersionNotFoundError
from tasks.run_names import namer
from tasks.serve.answering import redact_secrets
from tasks.serve.query_model import version_spec
from tasks.settings import Settings
from tasks.store.backends import open_store
from tasks.store.production import ProductionState, production_state


def monitored_version(settings: Settings) -> ProductionState:
    """Production's version and mode; VersionNotFoundError when there is no table or no production yet."""
    store = open_store(settings)
    store.require("nothing to monitor")
    prod = production_state(store, settings)
    if prod.version is None:
        raise VersionNotFoundError(f"no version of {settings.table!r} is tagged production: nothing to monitor")
    return prod


def reference_baseline(settings: Settings, version: int, mode: str, since: datetime, dim: int, model: str) -> Baseline:
    """What recent traffic is compared with: the queries served in the `monitor_reference_hours` before the window
    when there are enough of them, else the golden questions asked of the production version."""
    baseline = production_baseline(settings, version, mode)
    if settings.monitor_reference_hours:
        reference_start = since - timedelta(hours=settings.monitor_reference_hours)
        reference = recent_arrays(served_traffic(settings, reference_start, since, model), dim)
        if len(reference[0]) >= settings.monitor_min_queries:
            hours = f"{settings.monitor_reference_hours:g}"
            baseline = Baseline(*reference, source=f"{len(reference[0])} queries served in the {hours} h before")
    return baseline


def recent_traffic(settings: Settings, model: str, since: datetime, until: datetime, dim: int) -> Recent:
    """The window's served queries (by versions embedded with `model`, production's), and the faithfulness of a
    sample of their answers (with an LLM judge)."""
    rows = served_traffic(settings, since, until, model)
    faithfulness, reason = judge_faithfulness(settings, rows)
    reason = redact_secrets(reason, settings)  # the judge's error: an endpoint may echo the key it was sent
    return Recent(*recent_arrays(rows, dim), faithfulness, reason)


def monitor_summary(
    settings: Settings,
    version: int,
    mode: str,
    since: datetime,
    baseline: Baseline,
    recent: Recent,
    checks: list[Check],
) -> dict[str, Any]:
    """The run's record: what was compared with what, every check, and the breached ones."""
    return {
        "run_id": str(flow_run.id or uuid.uuid4()),
        "table": settings.table,
        "version": version,
        "mode": mode,
        "window_hours": settings.monitor_window_hours,
        "since": since.isoformat(),
        "queries": len(recent.vectors),
        "baseline_queries": len(baseline.vectors),
        "baseline": baseline.source,
        "checks": [c.as_dict() for c in checks],
        "breaches": breaches(checks),
    }


@flow(name="monitor", flow_run_name=namer("monitor"), persist_result=True, result_serializer="json")
def monitor(window_hours: float | None = None, table: str | None = None) -> State:
    """Drift of served queries and top-1 scores, no-good-answer rate and (with an LLM) hallucination rate."""
    overrides = {"table": table, "monitor_window_hours": window_hours}
    settings = Settings().model_copy(update={k: v for k, v in overrides.items() if v})
    prod = monitored_version(settings)
    version, mode = prod.version, prod.mode or "hybrid"
    assert version is not None  # monitored_version refuses a table without production
    until = datetime.now(UTC)
    since = until - timedelta(hours=settings.monitor_window_hours)
    spec = version_spec(settings, version)  # production's model: its queries are compared in its vector space
    dim = embedding.embedding_dim(spec)
    baseline = reference_baseline(settings, version, mode, since, dim, spec.model_name)
    recent = recent_traffic(settings, spec.model_name, since, until, dim)
    checks = run_checks(baseline, recent, settings)
    summary = monitor_summary(settings, version, mode, since, baseline, recent, checks)
    history = record_monitor_run(settings, summary)
    summary["report"] = publish_monitor(settings, summary, history, baseline, recent)
    compact_query_log(settings)
    if summary["breaches"]:
        raise_alert(settings, summary)
        message = "thresholds crossed: " + "; ".join(summary["breaches"])
        return Failed(message=message, data=MonitorAlertError(message, summary))
    return Completed(message="all checks within thresholds", data=summary)
