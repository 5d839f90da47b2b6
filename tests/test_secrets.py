"""Secrets specification: the LLM API key comes only from the environment or a Prefect Secret block; it reaches
the endpoint and nothing else: no log, artifact, report, LanceDB row, error string or settings repr holds it."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import lancedb
import pytest

from flows.promote import pipeline
from tasks.errors import SettingsError
from tasks.serve.answering import llm_api_key
from tasks.settings import Settings

from .conftest import REPO
from .fake_llm import FakeLLM
from .test_llm_faults import golden_corpus

GOLDEN_IDS = ["q012", "q016", "q058"]
DISTRACTORS = ["tutorial/appetite.txt"]
VERBOSE_LOGGERS = ["openai", "httpx", "httpcore", "langchain", "ragas"]  # at DEBUG: what a debugging operator sees


class Collect(logging.Handler):
    """Keeps every record: formatted, with its traceback, and its raw attributes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(str(vars(record)))


@pytest.fixture
def captured_logs() -> Iterator[Collect]:
    """Every log record of the run: root, Prefect's own loggers, and the HTTP and LLM clients at DEBUG."""
    handler = Collect()
    loggers = [logging.getLogger(name) for name in ["", "prefect", *VERBOSE_LOGGERS]]
    levels = {logger.name: logger.level for logger in loggers}
    for logger in loggers:
        logger.addHandler(handler)
        if logger.name in VERBOSE_LOGGERS:
            logger.setLevel(logging.DEBUG)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)
        logger.setLevel(levels[logger.name])


def prefect_records() -> dict[str, str]:
    """Logs, artifacts, flow runs and task runs as the Prefect API returns them, as text."""
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs are sent in the background
    found: dict[str, list[str]] = {"Prefect logs": [], "Prefect artifacts": [], "Prefect runs": []}
    with get_client(sync_client=True) as client:
        readers = [
            ("Prefect logs", client.read_logs),
            ("Prefect artifacts", client.read_artifacts),
            ("Prefect runs", client.read_flow_runs),
            ("Prefect runs", client.read_task_runs),
        ]
        for place, read in readers:
            offset = 0
            while batch := read(limit=200, offset=offset):  # type: ignore[operator]
                found[place] += [item.model_dump_json() for item in batch]
                offset += len(batch)
    return {place: "\n".join(items) for place, items in found.items()}


def lancedb_rows(uri: str) -> str:
    """Every column of every version of every table, as text, with the tags."""
    db = lancedb.connect(uri)
    parts = []
    for name in db.list_tables().tables:
        table = db.open_table(name)
        parts.append(json.dumps(table.tags.list(), default=str))
        for version in table.list_versions():
            table.checkout(version["version"])
            data = table.to_arrow()
            parts += [
                f"{name}@{version['version']}.{column}: {data.column(column).to_pylist()}"
                for column in data.column_names
            ]
    return "\n".join(parts)


def file_bytes(root: Path, since: float = 0.0) -> bytes:
    """The contents of every file under `root` (modified after `since`)."""
    files = [p for p in root.rglob("*") if p.is_file() and p.stat().st_mtime >= since] if root.exists() else []
    return b"\n".join(p.read_bytes() for p in files)


@pytest.mark.slow
@pytest.mark.parametrize("key_from", ["environment", "secret_block"])
def test_the_api_key_reaches_the_endpoint_and_appears_nowhere_else(
    prefect_server: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    captured_logs: Collect,
    key_from: str,
) -> None:
    # given a sentinel key in the environment or in a Prefect Secret block, and an endpoint that requires it
    # and fails every third request, with no retries, so the error paths run
    from prefect.blocks.system import Secret
    from prefect.settings import get_current_settings

    sentinel = f"sk-SENTINEL-{uuid.uuid4().hex}"
    golden, corpus = golden_corpus(tmp_path, GOLDEN_IDS, DISTRACTORS)
    for name in ("RAGOPS_LLM_API_KEY", "RAGOPS_LLM_API_KEY_BLOCK", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    if key_from == "environment":
        monkeypatch.setenv("RAGOPS_LLM_API_KEY", sentinel)
    else:
        block = f"ragops-llm-key-{uuid.uuid4().hex[:8]}"
        Secret(value=sentinel).save(block)
        monkeypatch.setenv("RAGOPS_LLM_API_KEY_BLOCK", block)
    uri, reports = tmp_path / "db", tmp_path / "reports"
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(uri))
    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(reports))
    monkeypatch.setenv("RAGOPS_POLICY", str(REPO / "evaluations/policies/default.yaml"))
    monkeypatch.setenv("RAGOPS_DASK_WORKERS", "1")
    monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake-model")
    monkeypatch.setenv("RAGOPS_LLM_MAX_RETRIES", "0")
    started = time.time()

    # when the whole pipeline runs: ingest, evaluate, gate, promote
    with FakeLLM(api_key=sentinel, fail_every=3) as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
        summary = pipeline(source=str(corpus), golden_set=str(golden), trigger="test")

    # then the key reached the endpoint on every request, and failures made error strings
    assert llm.seen and {seen.authorization for seen in llm.seen} == {f"Bearer {sentinel}"}
    assert llm.count(status=401) == 0 and llm.count(status=500) > 0
    errors = [error for q in summary["per_question"] for error in q["errors"].values()]
    assert any("InternalServerError" in error for error in errors), errors

    # and it is nowhere else
    out, err = capfd.readouterr()
    places = {
        "flow result (answers, per-question errors, missing reasons)": json.dumps(summary, default=str),
        "log records": "\n".join(captured_logs.lines),
        "stdout and stderr": out + err,
        **prefect_records(),
        "reports": file_bytes(reports).decode(errors="replace"),
        "Prefect result storage": file_bytes(get_current_settings().results.local_storage_path, started).decode(
            errors="replace"
        ),
        "LanceDB rows": lancedb_rows(str(uri)),
        "LanceDB files": file_bytes(uri).decode(errors="replace"),
        "settings": f"{Settings()!r} {Settings()} {Settings().model_dump_json()}",
    }
    assert [place for place, text in places.items() if sentinel in text] == []
    # (and each place was really looked at)
    assert "pipeline: " in places["Prefect logs"] and "evaluation-chunks" in places["Prefect artifacts"]
    assert "promotions@" in places["LanceDB rows"] and "<html" in places["reports"]
    assert "HTTP Request: POST" in places["log records"]


def test_a_missing_secret_block_is_named_in_the_error(prefect_server: None) -> None:
    settings = Settings(llm_api_key_block="ragops-no-such-block")

    with pytest.raises(SettingsError, match=r"'ragops-no-such-block'.*RAGOPS_LLM_API_KEY"):
        llm_api_key(settings)


def test_a_key_echoed_by_the_endpoint_is_redacted_from_recorded_errors() -> None:
    from evaluations.evaluation_tasks import redact_key
    from evaluations.scoring import QuestionResult, VersionScores

    key = f"sk-SENTINEL-{uuid.uuid4().hex}"
    result = QuestionResult("q1", "factoid", "?", [], None, {}, {"answer": f"AuthenticationError: bad key {key}"})
    scores = VersionScores(1, "vector", "llm", [result], {}, {"faithfulness": f"APIError: {key} rejected"}, {})

    redact_key(scores, key)

    assert key not in repr(scores)
    assert result.errors["answer"] == "AuthenticationError: bad key [redacted]"
