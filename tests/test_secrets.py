"""Secrets specification: every secret setting — the LLM API key (from the environment or a Prefect Secret block),
the API token, each `storage_options` value — reaches the place that needs it and nothing else: no terminal line,
log record, Prefect run (state, message, parameters, log, artifact, event), report, table row, result file, HTTP
response or settings repr holds it, on success, on a failing endpoint that echoes the key, or on an invalid setting.

Each secret is a sentinel (random hex); a place leaks it when it holds the sentinel, its first or its last 16 hex
digits (pydantic, for one, shortens long values in the middle)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lancedb
import pytest

from flows.promote import pipeline
from tasks.errors import SettingsError
from tasks.serve.answering import llm_api_key, redact_secrets
from tasks.settings import Settings

from .conftest import REPO
from .fake_llm import FakeLLM, _send
from .test_llm_faults import golden_corpus

GOLDEN_IDS = ["q012", "q016", "q058"]
DISTRACTORS = ["tutorial/appetite.txt"]
VERBOSE_LOGGERS = ["openai", "httpx", "httpcore", "langchain", "ragas"]  # at DEBUG: what a debugging operator sees
RAGOPS = Path(sys.executable).with_name("ragops")  # the console script a user runs

LLM_KEY = "llm_api_key"
BLOCK_KEY = "llm_api_key_block's Secret value"
API_TOKEN = "api_token"
AWS_SECRET = "storage_options.aws_secret_access_key"
AZURE_KEY = "storage_options.azure_storage_account_key"


def sentinels() -> dict[str, str]:
    """One fresh random secret per secret setting."""
    return {
        name: f"sentinel-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"
        for name in [LLM_KEY, BLOCK_KEY, API_TOKEN, AWS_SECRET, AZURE_KEY]
    }


def exposes(text: str, secret: str) -> bool:
    """True when `text` holds the secret, or its first or last 16 random digits."""
    digits = secret.removeprefix("sentinel-")
    return any(part in text for part in (secret, digits[:16], digits[-16:]))


def leaks(places: dict[str, str], secrets: dict[str, str]) -> list[tuple[str, str]]:
    """(place, secret name) for every secret a place exposes."""
    return [
        (place, name) for place, text in places.items() for name, secret in secrets.items() if exposes(text, secret)
    ]


def secret_env(secrets: dict[str, str]) -> dict[str, str]:
    """The secret settings in the environment, as a user sets them (the block's value lives in Prefect)."""
    options = {"aws_secret_access_key": secrets[AWS_SECRET], "azure_storage_account_key": secrets[AZURE_KEY]}
    return {
        "RAGOPS_LLM_API_KEY": secrets[LLM_KEY],
        "RAGOPS_API_TOKEN": secrets[API_TOKEN],
        "RAGOPS_STORAGE_OPTIONS": json.dumps(options),
    }


def lenient_policy(path: Path) -> Path:
    """The default policy in one mode, requiring only retrieval metrics: a failing endpoint does not block it."""
    text = (REPO / "evaluations/policies/default.yaml").read_text()
    required = "required: [chunk_ndcg@10, doc_ndcg@10, semantic_similarity, rouge_score, id_based_context_recall]"
    modes = "modes: [vector, fulltext, hybrid, hybrid@0.7]"
    assert required in text and modes in text
    path.write_text(text.replace(required, "required: [chunk_ndcg@10]").replace(modes, "modes: [hybrid]"))
    return path


class EchoingLLM(FakeLLM):
    """An endpoint that accepts any of `keys` and, when it fails a request, puts the key it was sent in the error
    (as some proxies do): every `fail_every`-th request fails, and every request while `fail_all`."""

    def __init__(self, keys: set[str], fail_every: int) -> None:
        super().__init__()
        self.keys, self.every, self.fail_all = keys, fail_every, False

    def _reply(self, handler: Any, body: dict[str, Any], prompt: str, kind: str, number: int) -> int:
        sent = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        if sent not in self.keys:
            return _send(handler, 401, {"error": {"message": "Incorrect API key provided.", "type": "auth"}})
        if self.fail_all or number % self.every == 0:
            return _send(handler, 500, {"error": {"message": f"upstream refused key {sent}", "type": "server_error"}})
        return super()._reply(handler, body, prompt, kind, number)


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


def prefect_records(flow_run_ids: list[Any] | None = None) -> dict[str, str]:
    """Logs, artifacts, flow runs (parameters, every state and its message), task runs and events as the Prefect API
    returns them, as text; only those of `flow_run_ids` when given."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs are sent in the background
    runs = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)) if flow_run_ids else None
    logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)) if flow_run_ids else None
    found: dict[str, list[str]] = {
        "Prefect logs": [],
        "Prefect artifacts": [],
        "Prefect runs": [],
        "Prefect events": [],
    }
    with get_client(sync_client=True) as client:
        readers: list[tuple[str, Any]] = [
            ("Prefect logs", lambda **page: client.read_logs(log_filter=logs, **page)),
            ("Prefect artifacts", lambda **page: client.read_artifacts(flow_run_filter=runs, **page)),
            ("Prefect runs", lambda **page: client.read_flow_runs(flow_run_filter=runs, **page)),
            ("Prefect runs", lambda **page: client.read_task_runs(flow_run_filter=runs, **page)),
        ]
        flow_runs = []
        for place, read in readers:
            offset = 0
            while batch := read(limit=200, offset=offset):
                found[place] += [item.model_dump_json() for item in batch]
                flow_runs += [item.id for item in batch if place == "Prefect runs" and hasattr(item, "parameters")]
                offset += len(batch)
        for flow_run_id in flow_runs:  # the message of every state a run went through, not only the last
            found["Prefect runs"] += [state.model_dump_json() for state in client.read_flow_run_states(flow_run_id)]
        page: Any = client.read_events(limit=50)
        while page is not None:
            found["Prefect events"] += [event.model_dump_json() for event in page.events]
            page = client.read_events_page(page.next_page) if page.next_page else None
    return {place: "\n".join(items) for place, items in found.items()}


def lancedb_tables(uri: str) -> dict[str, str]:
    """Every column of every version of every table, as text, with the tags: one text per table."""
    db = lancedb.connect(uri)
    tables = {}
    for name in db.list_tables().tables:
        table = db.open_table(name)
        parts = [json.dumps(table.tags.list(), default=str)]
        for version in table.list_versions():
            table.checkout(version["version"])
            data = table.to_arrow()
            parts += [
                f"{name}@{version['version']}.{column}: {data.column(column).to_pylist()}"
                for column in data.column_names
            ]
        tables[name] = "\n".join(parts)
    return tables


def file_bytes(root: Path, since: float = 0.0) -> bytes:
    """The contents of every file under `root` (modified after `since`)."""
    files = [p for p in root.rglob("*") if p.is_file() and p.stat().st_mtime >= since] if root.exists() else []
    return b"\n".join(p.read_bytes() for p in files)


def text_of(data: bytes) -> str:
    return data.decode(errors="replace")


@pytest.mark.slow
def test_every_secret_reaches_only_its_endpoint_through_every_stage_and_channel(
    prefect_server: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    captured_logs: Collect,
) -> None:
    # given every secret setting as a sentinel: the LLM key in the environment (then in a Prefect Secret block), the
    # API token, two object-store options; and an endpoint that requires the key, fails every third request and
    # echoes the key in its error, with no retries, so the error paths run
    from fastapi.testclient import TestClient
    from prefect.blocks.system import Secret
    from prefect.settings import get_current_settings

    from flows.golden import golden
    from flows.maintain import maintain
    from flows.monitor import monitor
    from tasks.serve.query_service import create_app

    secrets = sentinels()
    # (whether anything else writes to the terminal depends on the tests before: these show the capture works)
    os.write(1, b"stdout captured\n")
    os.write(2, b"stderr captured\n")
    golden_set, corpus = golden_corpus(tmp_path, GOLDEN_IDS, DISTRACTORS)
    questions = [json.loads(line)["question"] for line in golden_set.read_text().splitlines()]
    block = f"ragops-llm-key-{uuid.uuid4().hex[:8]}"
    Secret(value=secrets[BLOCK_KEY]).save(block)
    uri, reports, drafts = tmp_path / "db", tmp_path / "reports", tmp_path / "drafts.jsonl"
    for name in ("RAGOPS_LLM_API_KEY_BLOCK", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings_env = {
        **secret_env(secrets),
        "RAGOPS_LANCEDB_URI": str(uri),
        "RAGOPS_REPORTS_DIR": str(reports),
        "RAGOPS_POLICY": str(lenient_policy(tmp_path / "policy.yaml")),
        "RAGOPS_GOLDEN_SET": str(golden_set),
        "RAGOPS_DASK_WORKERS": "1",
        "RAGOPS_LLM_MODEL": "fake-model",
        "RAGOPS_LLM_MAX_RETRIES": "0",
        "RAGOPS_QUERY_LOG_FLUSH_S": "0.2",
        "RAGOPS_MONITOR_MIN_QUERIES": "2",
    }
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    started = time.time()
    token = {"Authorization": f"Bearer {secrets[API_TOKEN]}"}
    responses: list[Any] = []

    with EchoingLLM(keys={secrets[LLM_KEY], secrets[BLOCK_KEY]}, fail_every=3) as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
        # when the whole pipeline runs with the key from the environment: ingest, evaluate, gate, promote
        summary = pipeline(source=str(corpus), golden_set=str(golden_set), trigger="test")
        assert summary["action"] == "promote", summary["reasons"]
        # and, with the key from the Secret block, the service answers questions (token required), the monitor
        # judges the answers on an endpoint that now fails every call, and a golden set is drafted
        monkeypatch.delenv("RAGOPS_LLM_API_KEY")
        monkeypatch.setenv("RAGOPS_LLM_API_KEY_BLOCK", block)
        with TestClient(create_app(Settings())) as client:
            responses.append(client.get("/version"))
            responses.append(
                client.post("/query", json={"question": questions[0]}, headers={"Authorization": "Bearer no"})
            )
            for question in questions * 2:
                responses.append(client.post("/query", json={"question": question, "generate": True}, headers=token))
            responses += [client.get(path, headers=token) for path in ("/version", "/metrics", "/openapi.json")]
        llm.fail_all = True
        outcome: Any = monitor(return_state=True).result(raise_on_failure=False)  # type: ignore[union-attr]
        monitored = getattr(outcome, "summary", outcome)
        llm.fail_all = False
        drafted = golden(n=2, out=str(drafts))
    maintained = maintain()
    # and a user lists the logged queries at the terminal, every secret in the environment
    listed = subprocess.run(
        [str(RAGOPS), "queries", "--hours", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, **secret_env(secrets)},
        timeout=300,
    )

    # then each key reached the endpoint, the failures made error strings, and the token was required
    assert {f"Bearer {secrets[LLM_KEY]}", f"Bearer {secrets[BLOCK_KEY]}"} <= {seen.authorization for seen in llm.seen}
    assert llm.count(status=401) == 0 and llm.count(status=500) > 0
    errors = [error for q in summary["per_question"] for error in q["errors"].values()]
    assert any("InternalServerError" in error for error in errors), errors
    statuses = [r.status_code for r in responses]
    assert statuses[:2] == [401, 401] and statuses[-3:] == [200, 200, 200], statuses
    assert 200 in statuses[2:-3] and 502 in statuses[2:-3], statuses  # answered, and a failed generation
    hallucination = next(c for c in monitored["checks"] if c["name"] == "hallucination_rate")
    assert "could not be judged" in hallucination["detail"], hallucination
    assert listed.returncode == 0, listed.stderr

    # and no secret is anywhere else
    out, err = capfd.readouterr()
    tables = lancedb_tables(str(uri))
    places = {
        "flow results (answers, per-question errors, missing reasons)": json.dumps(
            [summary, monitored, drafted, maintained], default=str
        ),
        "log records (root, Prefect, HTTP and LLM clients at DEBUG)": "\n".join(captured_logs.lines),
        "stdout and stderr": out + err,
        "stdout and stderr of `ragops queries`": listed.stdout + listed.stderr,
        **prefect_records(),
        "HTTP responses of the query service": "\n".join(f"{r.headers} {r.text}" for r in responses),
        "reports (HTML, JSON, markdown)": text_of(file_bytes(reports)),
        "golden-set drafts": drafts.read_text(),
        "Prefect result storage": text_of(file_bytes(get_current_settings().results.local_storage_path, started)),
        "promotion log": tables.pop("promotions"),
        "query log": tables.pop("query_log"),
        "LanceDB rows (chunks, quarantine, monitor history)": "\n".join(tables.values()),
        "LanceDB files": text_of(file_bytes(uri)),
        "settings": f"{Settings()!r} {Settings()} {Settings().model_dump_json()} {Settings().model_dump()}",
    }
    found = leaks(places, secrets)
    assert found == [], "\n".join(f"{place}: {name}" for place, name in found)
    # (and each place was really looked at)
    assert all(text.strip() for text in places.values()), [place for place, text in places.items() if not text.strip()]
    assert "pipeline: " in places["Prefect logs"] and "evaluation-chunks" in places["Prefect artifacts"]
    assert "prefect.flow-run.Completed" in places["Prefect events"]
    assert (
        "<html" in places["reports (HTML, JSON, markdown)"]
        and "# Monitor chunks" in places["reports (HTML, JSON, markdown)"]
    )
    assert questions[0] in places["query log"] and "promote" in places["promotion log"]
    assert "HTTP Request: POST" in places["log records (root, Prefect, HTTP and LLM clients at DEBUG)"]
    assert "served queries" in places["stdout and stderr of `ragops queries`"]
    print(f"secret × place matrix: {len(secrets)} × {len(places)} = {len(secrets) * len(places)} checks")


# --- an invalid setting beside the secrets --------------------------------------------------------------------------

INVALID = {  # what is wrong → (the environment beside the secrets, what the error line names)
    # pydantic's text for a rule across settings quotes every setting given: storage_options first, api_token last
    "a rule across settings": ({"RAGOPS_CHUNK_OVERLAP": "300"}, "chunk_overlap"),
    "a value of the wrong type": ({"RAGOPS_CHUNK_OVERLAP": "many"}, "RAGOPS_CHUNK_OVERLAP"),
    "a secret option of the wrong type": (
        {"RAGOPS_STORAGE_OPTIONS": '{"aws_secret_access_key": ["{aws}"]}'},
        "RAGOPS_STORAGE_OPTIONS (aws_secret_access_key)",
    ),
    "secret options that are not JSON": (
        {"RAGOPS_STORAGE_OPTIONS": '{"aws_secret_access_key": "{aws}"'},
        "storage_options",
    ),
}


@pytest.mark.parametrize("invalid", INVALID)
def test_an_invalid_setting_ends_the_command_in_one_line_naming_it_and_no_secret(invalid: str, tmp_path: Path) -> None:
    # given every secret setting as a sentinel and one invalid setting (the same command with -v: a debugging user)
    secrets = sentinels()
    extra, named = INVALID[invalid]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_")} | secret_env(secrets)
    env |= {name: value.replace("{aws}", secrets[AWS_SECRET]) for name, value in extra.items()}
    env["RAGOPS_LANCEDB_URI"] = str(tmp_path / "db")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Some text to ingest.\n")

    # when the user runs an ingest
    verbose = ["-v"] if invalid == "a value of the wrong type" else []
    done = subprocess.run(
        [str(RAGOPS), "ingest", *verbose, str(tmp_path / "docs")], capture_output=True, text=True, env=env, timeout=300
    )

    # then no secret is in its output, and it exits 2 with one `error:` line that names the setting, no traceback
    assert leaks({"stdout": done.stdout, "stderr": done.stderr}, secrets) == []
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, lines
    assert lines[-1].startswith("error: invalid setting") and named in lines[-1], lines
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in done.stderr, lines


def test_a_flow_run_failed_by_an_invalid_setting_stores_no_secret(
    prefect_server: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, captured_logs: Collect
) -> None:
    # given every secret setting as a sentinel and chunk_overlap above chunk_tokens
    from prefect.settings import get_current_settings

    from flows.evaluate import evaluate
    from flows.golden import golden
    from flows.ingest import ingest
    from flows.maintain import maintain
    from flows.monitor import monitor
    from flows.promote import promote

    secrets = sentinels()
    for name, value in {**secret_env(secrets), "RAGOPS_CHUNK_OVERLAP": "300"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(tmp_path / "db"))
    started = time.time()

    # when each flow runs in-process (as a deployment's worker runs it)
    flows: list[tuple[Any, dict[str, Any]]] = [
        (ingest, {"source": str(tmp_path)}),
        (pipeline, {"source": str(tmp_path)}),
        (evaluate, {}),
        (promote, {}),
        (monitor, {}),
        (maintain, {}),
        (golden, {"out": str(tmp_path / "golden.jsonl")}),
    ]
    states = [flow(return_state=True, **parameters) for flow, parameters in flows]

    # then each run failed with the SettingsError naming the setting, in its state message
    assert all(state.is_failed() for state in states), states
    for state in states:
        assert "SettingsError: invalid settings: chunk_overlap (300) must be smaller" in (state.message or ""), state
        with pytest.raises(SettingsError):
            state.result()
    # and neither the Prefect server (states, parameters, logs, events) nor anything else holds a secret
    records = prefect_records([state.state_details.flow_run_id for state in states])
    places = {
        **records,
        "log records": "\n".join(captured_logs.lines),
        "Prefect result storage": text_of(file_bytes(get_current_settings().results.local_storage_path, started)),
    }
    found = leaks(places, secrets)
    assert found == [], "\n".join(f"{place}: {name}" for place, name in found)
    assert records["Prefect runs"].count("must be smaller than chunk_tokens") >= len(flows)
    assert "must be smaller than chunk_tokens" in records["Prefect logs"]


def test_a_settings_error_keeps_no_reference_to_the_values_given() -> None:
    # pydantic's error holds every value given (secrets included): a SettingsError that chained it, even suppressed,
    # would hand them to whatever walks or pickles the exception (debuggers, error trackers, result storage)
    secrets = sentinels()

    with pytest.raises(SettingsError) as raised:
        Settings(llm_api_key=secrets[LLM_KEY], api_token=secrets[API_TOKEN], chunk_overlap=300)

    assert raised.value.__context__ is None and raised.value.__cause__ is None
    assert "chunk_overlap (300) must be smaller than chunk_tokens (200)" in str(raised.value)
    assert leaks({"error": f"{raised.value!r} {raised.value.args}"}, secrets) == []


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


def test_every_secret_setting_is_redacted_from_an_echoed_error(prefect_server: None) -> None:
    from prefect.blocks.system import Secret

    secrets = sentinels()
    block = f"ragops-llm-key-{uuid.uuid4().hex[:8]}"
    Secret(value=secrets[BLOCK_KEY]).save(block)
    options = {"aws_secret_access_key": secrets[AWS_SECRET], "azure_storage_account_key": secrets[AZURE_KEY]}
    llm = {"llm_base_url": "http://127.0.0.1:9/v1", "llm_model": "m"}
    from_env = Settings(llm_api_key=secrets[LLM_KEY], api_token=secrets[API_TOKEN], storage_options=options, **llm)
    from_block = Settings(llm_api_key_block=block, **llm)
    echoed = "APIError: refused " + " and ".join(secrets.values()) + " (allow_http true)"

    redacted = redact_secrets(redact_secrets(echoed, from_env), from_block)

    assert leaks({"redacted": redacted}, secrets) == []
    assert redacted == "APIError: refused " + " and ".join(["[redacted]"] * len(secrets)) + " (allow_http true)"
    # a flag among the options is no key: text holding its value is left alone
    assert redact_secrets("allow_http true", Settings(storage_options={"allow_http": "true"})) == "allow_http true"
