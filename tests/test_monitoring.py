"""Monitoring specification: drift and no-good-answer checks on real embeddings, and the monitor flow on served
traffic (real Prefect, real LanceDB, queries served through the real query service)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from evaluations import monitor_report, monitoring
from evaluations.golden import load_golden_set
from evaluations.monitoring import Baseline, Recent
from tasks.embed import embedding
from tasks.errors import MonitorAlertError
from tasks.serve.query_service import create_app
from tasks.settings import Settings

from .conftest import copy_small_corpus
from .fake_llm import FakeLLM
from .test_query_service import promote
from .traffic import OFF_TOPIC, ON_TOPIC


@pytest.fixture(scope="module")
def spec() -> embedding.EmbedSpec:
    return embedding.embed_spec(Settings(_env_file=None))  # type: ignore[call-arg]


def embed(texts: list[str], spec: embedding.EmbedSpec) -> np.ndarray:
    return embedding.embed_texts(texts, spec, role="query")


def settings_with(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# --- the checks, as plain functions -------------------------------------------------------------------------------


def test_random_halves_of_one_question_set_do_not_drift(spec: embedding.EmbedSpec) -> None:
    # given the golden questions split at random into two halves
    vectors = embed([q.question for q in load_golden_set(Settings().golden_set)], spec)
    order = np.random.default_rng(7).permutation(len(vectors))
    half = len(vectors) // 2
    # when their centroids are compared
    distance, p_value = monitoring.query_drift(vectors[order[:half]], vectors[order[half:]])
    # then the distance is under the default threshold and not significant
    assert distance < Settings().monitor_max_query_drift
    assert p_value > 0.01


def test_off_topic_questions_drift_from_the_golden_set(spec: embedding.EmbedSpec) -> None:
    golden = embed([q.question for q in load_golden_set(Settings().golden_set)], spec)
    distance, p_value = monitoring.query_drift(golden, embed(OFF_TOPIC, spec))
    on_topic, _ = monitoring.query_drift(golden, embed(ON_TOPIC, spec))
    assert distance > Settings().monitor_max_query_drift > on_topic
    assert p_value < 0.01


def test_score_drift_is_the_ks_distance_and_low_similarity_counts_below_the_threshold() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0.6, 0.05, 200)
    assert monitoring.score_drift(reference, rng.normal(0.6, 0.05, 200))[0] < 0.2
    shifted, p_value = monitoring.score_drift(reference, rng.normal(0.3, 0.05, 200))
    assert shifted > 0.9 and p_value < 1e-10
    assert monitoring.low_similarity_rate(np.array([0.1, 0.29, 0.3, 0.8]), 0.3) == 0.5
    assert monitoring.hallucination_rate([1.0, 0.4, 0.5, 0.0]) == 0.5


def make_recent(n: int, similarity: float, faithfulness: list[float] | None = None) -> Recent:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    sims = np.full(n, similarity, np.float32)
    return Recent(vectors, sims, sims, faithfulness, "no generated answers" if faithfulness is None else "")


def make_baseline(n: int = 40) -> Baseline:
    rng = np.random.default_rng(2)
    return Baseline(rng.normal(size=(n, 8)).astype(np.float32), rng.uniform(0.4, 0.8, n), rng.uniform(0.4, 0.8, n))


def test_too_few_served_queries_leave_the_drift_checks_missing_with_the_reason() -> None:
    checks = monitoring.run_checks(make_baseline(), make_recent(5, 0.0), settings_with(monitor_min_queries=20))
    by_name = {c.name: c for c in checks}
    for name in (monitoring.QUERY_DRIFT, monitoring.SCORE_DRIFT, monitoring.LOW_SIMILARITY):
        assert by_name[name].value is None and not by_name[name].breached
        assert "only 5 queries" in by_name[name].detail
    assert by_name[monitoring.HALLUCINATION].value is None
    assert by_name[monitoring.HALLUCINATION].detail == "no generated answers"
    assert monitoring.breaches(checks) == []


def test_a_low_similarity_and_a_hallucination_rate_past_their_thresholds_are_breaches() -> None:
    settings = settings_with(monitor_min_queries=10)
    checks = monitoring.run_checks(make_baseline(), make_recent(30, 0.1, [1.0, 0.2, 0.1]), settings)
    by_name = {c.name: c for c in checks}
    assert by_name[monitoring.LOW_SIMILARITY].value == 1.0 and by_name[monitoring.LOW_SIMILARITY].breached
    assert by_name[monitoring.HALLUCINATION].value == pytest.approx(2 / 3)
    assert by_name[monitoring.HALLUCINATION].breached
    lines = monitoring.breaches(checks)
    assert any(line.startswith("low_similarity_rate = 1.000 > 0.25") for line in lines)


def test_the_report_embeds_png_plots_of_the_trend_and_the_similarities() -> None:
    baseline, recent = make_baseline(), make_recent(30, 0.5)
    checks = [c.as_dict() for c in monitoring.run_checks(baseline, recent, settings_with(monitor_min_queries=10))]
    now = datetime.now(UTC)
    history = [{"at": now - timedelta(hours=2 - i), "checks": json.dumps(checks), "breached": False} for i in range(3)]
    images = {
        "Trend": monitor_report.trend_plot(history),
        "Top-1 similarity": monitor_report.similarity_plot(baseline, recent, 0.3),
    }
    summary = {
        "table": "chunks",
        "version": 3,
        "queries": 30,
        "window_hours": 24.0,
        "mode": "hybrid",
        "baseline": baseline.source,
        "baseline_queries": 40,
        "checks": checks,
        "breaches": [],
    }
    markdown = monitor_report.monitor_markdown(summary, images)
    assert markdown.startswith("# Monitor chunks v3: OK")
    assert "| low_similarity_rate | 0.0000 | 0.25 |" in markdown
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", markdown)
    assert len(pngs) == 2
    assert all(base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n" for png in pngs)


# --- the flow, on traffic served by the query service --------------------------------------------------------------


@pytest.fixture(scope="module")
def promoted_store(tmp_path_factory: pytest.TempPathFactory, small_corpus_module: Path) -> Path:
    """The seven-document corpus ingested (in-process embedding) and its version promoted in hybrid mode."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.ingest import ingest

    uri = tmp_path_factory.mktemp("monitor") / "db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAGOPS_LANCEDB_URI", str(uri))
        with prefect_test_harness(server_startup_timeout=120):
            summary = ingest(source=str(small_corpus_module))
        promote(Settings(), summary.table_version, mode="hybrid")
    return uri


@pytest.fixture(scope="module")
def small_corpus_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_small_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def monitored(promoted_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None) -> Path:
    """A private copy of the promoted store, with the monitor's settings in the environment."""
    uri = tmp_path / "db"
    shutil.copytree(promoted_store, uri)
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(uri))
    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("RAGOPS_MONITOR_MIN_QUERIES", "10")
    return uri


def serve(questions: list[str], generate: bool = False, **overrides: Any) -> None:
    """Ask the query service (in-process) these questions; its log is written when it stops."""
    settings = Settings().model_copy(update={"query_log_flush_s": 0.2, **overrides})
    with TestClient(create_app(settings)) as client:
        for question in questions:
            response = client.post("/query", json={"question": question, "generate": generate})
            assert response.status_code == 200, response.text


def backdate(uri: Path, hours: float) -> None:
    """Move every logged query `hours` into the past (traffic served earlier)."""
    at = (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S")
    lancedb.connect(str(uri)).open_table("query_log").update(values_sql={"at": f"TIMESTAMP '{at}'"})


def run_monitor(**parameters: Any) -> dict[str, Any]:
    from flows.monitor import monitor

    return monitor(**parameters)  # type: ignore[return-value]


def monitor_summary() -> dict[str, Any]:
    """The summary of a monitor run, whether it alerted (golden-set reference vs this small corpus) or not."""
    from flows.monitor import monitor

    outcome: Any = monitor(return_state=True).result(raise_on_failure=False)  # type: ignore[union-attr]
    return outcome.summary if isinstance(outcome, MonitorAlertError) else outcome


def test_without_served_queries_the_monitor_completes_with_the_checks_missing(monitored: Path) -> None:
    summary = run_monitor()
    assert summary["queries"] == 0 and summary["breaches"] == []
    assert all(c["value"] is None for c in summary["checks"])
    assert "only 0 queries served" in summary["checks"][0]["detail"]
    assert Path(summary["report"]).read_text().startswith("# Monitor chunks")


def test_the_baseline_of_a_production_version_is_computed_once_then_read_from_prefects_cache(monitored: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.monitor import monitor

    states = [monitor(return_state=True) for _ in range(2)]
    names = []
    with get_client(sync_client=True) as client:
        for state in states:
            flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            runs = client.read_task_runs(flow_run_filter=flow_run)
            names += [r.state_name for r in runs if r.name.startswith("production-baseline")]
    assert names == ["Completed", "Cached"]


def test_on_topic_traffic_passes_and_off_topic_traffic_fails_the_run_with_a_trend_from_hashed_questions(
    monitored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a query log that keeps questions only hashed (the drift checks read the query vectors)
    monkeypatch.setenv("RAGOPS_QUERY_LOG_QUESTIONS", "hashed")
    # and half of the on-topic questions served two days ago (the reference) and the other half today
    serve(ON_TOPIC[::2])
    backdate(monitored, 30)
    serve(ON_TOPIC[1::2])
    monkeypatch.setenv("RAGOPS_MONITOR_REFERENCE_HOURS", "48")
    # when the monitor runs, then every check passes against the served reference
    first = run_monitor()
    assert first["breaches"] == [], first["checks"]
    assert first["queries"] == len(ON_TOPIC[1::2])
    assert first["baseline"].startswith(f"{len(ON_TOPIC[::2])} queries served in the 48 h before")
    low = next(c for c in first["checks"] if c["name"] == "low_similarity_rate")
    assert low["value"] is not None and low["value"] <= 0.25

    # given off-topic traffic today; when the monitor runs again
    serve(OFF_TOPIC)
    with pytest.raises(MonitorAlertError) as alert:
        run_monitor()
    # then it ends Failed naming the score drift and the no-good-answer rate, and the report shows both runs
    summary = alert.value.summary
    assert "thresholds crossed" in str(alert.value) and "low_similarity_rate" in str(alert.value)
    breached = {c["name"] for c in summary["checks"] if c["breached"]}
    assert {"low_similarity_rate", "top1_score_drift"} <= breached
    history = lancedb.connect(str(monitored)).open_table("monitor_runs").to_arrow().to_pylist()
    assert [row["breached"] for row in sorted(history, key=lambda r: r["at"])] == [False, True]
    report = Path(summary["report"]).read_text()
    assert report.startswith("# Monitor chunks") and ": ALERT" in report.splitlines()[0]
    assert report.count("data:image/png;base64,") == 2
    assert next(c for c in summary["checks"] if c["name"] == "query_embedding_drift")["value"] is not None
    # and not one served question is in any file of the log: each row holds its salted hash
    log_files = [p.read_bytes() for p in (monitored / "query_log.lance").rglob("*") if p.is_file()]
    assert not [q for q in ON_TOPIC + OFF_TOPIC if any(q.encode() in data for data in log_files)]
    questions = lancedb.connect(str(monitored)).open_table("query_log").to_arrow().column("question").to_pylist()
    assert len(questions) == len(ON_TOPIC) + len(OFF_TOPIC) and all(q.startswith("hmac-sha256:") for q in questions)


def test_the_failed_state_carries_the_summary_and_the_alert_event_is_emitted(
    monitored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    from flows.monitor import monitor

    # given off-topic traffic, and the events this process emits recorded (in the deployment test they reach a
    # real server and start an automation)
    serve(OFF_TOPIC)
    AssertingEventsClient.reset()
    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    # when the monitor runs
    state: Any = monitor(return_state=True)
    worker.drain()
    # then the run is Failed, its result carries the summary, and the alert event names the table and breaches
    assert state.is_failed() and state.message.startswith("thresholds crossed")
    outcome = state.result(raise_on_failure=False)
    assert isinstance(outcome, MonitorAlertError) and outcome.summary["queries"] == len(OFF_TOPIC)
    emitted = [e for client in AssertingEventsClient.all for e in client.events]
    [alert] = [e for e in emitted if e.event == "ragops.monitor.threshold-crossed"]
    assert alert.resource.id == "ragops.table.chunks"
    assert alert.payload["breaches"] == outcome.summary["breaches"]


def test_faithfulness_of_sampled_answers_is_judged_when_an_llm_is_configured(
    monitored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeLLM() as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake")
        serve(ON_TOPIC[:12], generate=True)
        monkeypatch.setenv("RAGOPS_MONITOR_FAITHFULNESS_SAMPLE", "5")
        summary = monitor_summary()
    check = next(c for c in summary["checks"] if c["name"] == "hallucination_rate")
    # the fake judge supports every statement: faithfulness 1, no hallucination, on the 5 sampled answers
    assert check["value"] == 0.0 and not check["breached"]
    assert check["detail"].startswith("5 sampled answers")


def test_an_unreachable_judge_leaves_the_hallucination_rate_missing_with_the_error(
    monitored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(ON_TOPIC[:12], generate=False)
    with FakeLLM() as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake")
        summary = monitor_summary()
    check = next(c for c in summary["checks"] if c["name"] == "hallucination_rate")
    assert check["value"] is None and "no generated answers" in check["detail"]
    with FakeLLM(fail_with=500) as broken:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", broken.base_url)
        monkeypatch.setenv("RAGOPS_LLM_MAX_RETRIES", "0")
        serve(ON_TOPIC[:3], generate=False)
        _mark_answered(monitored)
        summary = monitor_summary()
    check = next(c for c in summary["checks"] if c["name"] == "hallucination_rate")
    assert check["value"] is None and "could not be judged" in check["detail"]


def _mark_answered(uri: Path) -> None:
    """Give every logged query an answer (as if generated), so the judge is asked."""
    lancedb.connect(str(uri)).open_table("query_log").update(values={"answer": "Use python -m venv to create one."})


@pytest.fixture(autouse=True)
def _no_leftover_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("RAGOPS_LLM_BASE_URL", "RAGOPS_LLM_MODEL", "RAGOPS_MONITOR_REFERENCE_HOURS"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_with_questions_not_kept_the_hallucination_rate_says_the_log_keeps_no_answers() -> None:
    from evaluations.monitor_tasks import judge_faithfulness

    rows = pa.table({"question": ["hmac-sha256:" + "0" * 64, ""], "answer": [None, None]})
    for policy in ("hashed", "none"):
        settings = settings_with(llm_base_url="http://127.0.0.1:9/v1", llm_model="fake", query_log_questions=policy)
        scores, reason = judge_faithfulness.fn(settings, rows)
        assert scores is None and reason == f"the query log keeps no answers (RAGOPS_QUERY_LOG_QUESTIONS={policy})"
