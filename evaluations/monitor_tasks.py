"""Prefect tasks of the monitor flow: the baseline, the served traffic, the faithfulness sample, history, report."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from evaluations import monitor_report
from evaluations.golden import golden_set_hash, load_golden_set
from evaluations.monitoring import Baseline, Recent
from tasks import events
from tasks.embed import embedding
from tasks.errors import RagopsError, SettingsError, VersionNotFoundError
from tasks.schemas import MONITOR_SCHEMA
from tasks.serve import query_log, retrieval
from tasks.serve.answering import redact_secrets
from tasks.serve.query_model import version_entry, version_spec
from tasks.settings import Settings
from tasks.store import maintenance
from tasks.store.backends import open_store

ALERT_EVENT = events.MONITOR_ALERT


def _baseline_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Versions never change, so the baseline of (store, table, version, mode, golden set, model) is reusable."""
    settings: Settings = parameters["settings"]
    try:  # the items' hash: a JSONL set or a BEIR folder
        golden_hash = golden_set_hash(settings.golden_set)
    except RagopsError:
        golden_hash = "missing"
    parts = [open_store(settings).location, settings.table, str(parameters["version"]), parameters["mode"], golden_hash]
    parts += [version_entry(settings, parameters["version"]).model_id, settings.embed_backend]
    return "monitor-baseline-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@task(
    name="production-baseline",
    cache_key_fn=_baseline_key,
    cache_expiration=timedelta(days=7),
    persist_result=True,
    result_serializer="pickle",  # numpy arrays; the flow's own result is JSON
)
def production_baseline(settings: Settings, version: int, mode: str) -> Baseline:
    """The golden questions asked of the production version in its mode: their embeddings and similarities."""
    questions = [q.question for q in load_golden_set(settings.golden_set)]
    spec = version_spec(settings, version)  # the model production was embedded with
    vectors = embedding.embed_texts(questions, spec, role="query")
    table = open_store(settings).at(version)
    ann = retrieval.AnnQuery.from_settings(settings)
    base, weight = retrieval.split_mode(mode)
    top1, best = [], []
    for question, vector in zip(questions, vectors, strict=True):
        hits = retrieval.search(
            table, question, spec, base, settings.eval_k, weight, ann, query_vector=vector, similarity=True
        )
        sims = [h.similarity for h in hits if h.similarity is not None]
        top1.append(sims[0] if sims else np.nan)
        best.append(max(sims) if sims else np.nan)
    get_run_logger().info("baseline: %d golden questions on version %d (%s)", len(questions), version, mode)
    return Baseline(vectors, np.asarray(top1, np.float32), np.asarray(best, np.float32))


@task(name="served-traffic", cache_policy=NO_CACHE)
def served_traffic(
    settings: Settings, since: datetime, until: datetime, model_id: str | None = None
) -> pa.Table | None:
    """The window's successfully served queries from the query log (None when nothing is logged yet); with
    `model_id`, only those served by versions embedded with that model (vectors of two models are not comparable:
    after a model switch, the queries served before it are left out)."""
    rows = query_log.recent_queries(open_store(settings), settings, since, until)
    if rows is not None:
        rows = rows.filter(pa.compute.equal(rows.column("status"), 200))
    if rows is not None and model_id is not None and rows.num_rows:
        versions = sorted(set(rows.column("version").to_pylist()))
        other = [v for v in versions if served_model(settings, v) not in (None, model_id)]
        if other:
            rows = rows.filter(pa.compute.invert(pa.compute.is_in(rows.column("version"), pa.array(other))))
            get_run_logger().info(
                "left out the queries served by versions %s: embedded with another model than %s", other, model_id
            )
    get_run_logger().info("%d queries served since %s", 0 if rows is None else rows.num_rows, since.isoformat())
    return rows


def served_model(settings: Settings, version: int) -> str | None:
    """The model id a served version was embedded with; None when the version is gone (removed by maintenance)."""
    try:
        return version_entry(settings, version).model_id
    except (VersionNotFoundError, SettingsError):
        return None


def recent_arrays(rows: pa.Table | None, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query embeddings, top-1 and best similarities of logged rows (NaN where no chunk was found)."""
    if rows is None or rows.num_rows == 0:
        return np.zeros((0, dim), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32)
    vectors = rows.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)

    def floats(name: str) -> np.ndarray:
        return np.asarray([np.nan if v is None else v for v in rows.column(name).to_pylist()], np.float32)

    return vectors, floats("top1_similarity"), floats("best_similarity")


@task(name="judge-faithfulness", cache_policy=NO_CACHE)
def judge_faithfulness(settings: Settings, rows: pa.Table | None) -> tuple[list[float] | None, str]:
    """ragas faithfulness of a random sample of generated answers; (None, reason) when it cannot be judged."""
    if not settings.llm_configured:
        return None, "no LLM endpoint configured (set RAGOPS_LLM_BASE_URL and RAGOPS_LLM_MODEL)"
    if settings.monitor_faithfulness_sample == 0:
        return None, "RAGOPS_MONITOR_FAITHFULNESS_SAMPLE is 0"
    logged = rows.to_pylist() if rows is not None else []
    answered = [r for r in logged if r["answer"] and query_log.question_kept(r["question"])]
    if not answered and settings.query_log_questions != "raw":
        return None, f"the query log keeps no answers (RAGOPS_QUERY_LOG_QUESTIONS={settings.query_log_questions})"
    if not answered:
        return None, "no generated answers in the window (POST /query with generate=true)"
    from ragas import SingleTurnSample

    from evaluations.ragas_metrics import faithfulness_scores, ragas_llm

    sample = random.Random(0).sample(answered, min(settings.monitor_faithfulness_sample, len(answered)))
    texts = query_log.retrieved_texts(open_store(settings), sample)
    samples = [
        SingleTurnSample(
            user_input=r["question"],
            response=r["answer"],
            retrieved_contexts=[texts[(r["version"], i)] for i in r["retrieved_ids"] if (r["version"], i) in texts],
        )
        for r in sample
    ]
    scores, errors = faithfulness_scores(
        samples, ragas_llm(settings), settings.llm_concurrency, settings.llm_timeout_s * 2
    )
    if not scores:
        return None, redact_secrets(
            f"faithfulness could not be judged: {errors[0] if errors else 'no score'}", settings
        )
    get_run_logger().info("faithfulness judged on %d of %d answered queries", len(scores), len(answered))
    return scores, ""


@task(name="record-monitor-run", cache_policy=NO_CACHE)
def record_monitor_run(settings: Settings, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Append this run to the monitor history; return the table's last 60 runs, oldest first."""
    store = open_store(settings)
    record = {
        "run_id": summary["run_id"],
        "at": datetime.now(UTC),
        "table": settings.table,
        "version": summary["version"],
        "window_hours": summary["window_hours"],
        "queries": summary["queries"],
        "checks": json.dumps(summary["checks"]),
        "breached": bool(summary["breaches"]),
    }
    store.append_rows(settings.monitor_table, pa.Table.from_pylist([record], schema=MONITOR_SCHEMA))
    history = store.side_rows(settings.monitor_table, {"table": store.table})
    rows = history.to_pylist() if history is not None else []
    return sorted(rows, key=lambda r: r["at"])[-60:]


@task(name="publish-monitor", cache_policy=NO_CACHE)
def publish_monitor(
    settings: Settings, summary: dict[str, Any], history: list[dict[str, Any]], baseline: Baseline, recent: Recent
) -> str:
    """The markdown report with trend and distribution plots: a Prefect artifact, and a file under reports_dir."""
    images = {
        "Trend": monitor_report.trend_plot(history),
        "Top-1 similarity": monitor_report.similarity_plot(baseline, recent, settings.monitor_low_similarity),
    }
    markdown = monitor_report.monitor_markdown(summary, images)
    key = "".join(ch if ch.isalnum() else "-" for ch in settings.table.lower())
    create_markdown_artifact(key=f"monitor-{key}", markdown=markdown, description="served-query drift and quality")
    folder = Path(settings.reports_dir) / "monitor"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{settings.table}-latest.md"
    path.write_text(markdown)
    (folder / f"{settings.table}-latest.json").write_text(json.dumps(summary, indent=2, default=str))
    return str(path)


@task(name="raise-alert", cache_policy=NO_CACHE)
def raise_alert(settings: Settings, summary: dict[str, Any]) -> None:
    """A Prefect event an automation can match (notify, or run the evaluation deployment)."""
    events.emit(
        ALERT_EVENT,
        settings,
        {
            "version": summary["version"],
            "breaches": summary["breaches"],
            "queries": summary["queries"],
            "window_hours": summary["window_hours"],
        },
    )
    get_run_logger().warning("thresholds crossed on %s: %s", settings.table, "; ".join(summary["breaches"]))


@task(name="compact-query-log", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def compact_query_log(settings: Settings) -> None:
    """Apply the log's retention, so that no file keeps an expired query, and fold the server's many small appends
    into larger files (retried: a running server's appends can conflict)."""
    if not settings.query_log_table:
        return
    expiry = maintenance.expire_query_log(settings)
    if expiry.deleted:
        get_run_logger().info("query log: %s", expiry.note)
