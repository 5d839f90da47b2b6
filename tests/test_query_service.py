"""Query service specification: `/query` answers from the version tagged `production` (followed live, never half
switched), behind a bearer token, body and input limits, CORS, Prometheus metrics and a query log that never holds
the token."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from evaluations import promotion
from tasks.embed import embedding
from tasks.serve.answering import split_sentences
from tasks.serve.query_service import create_app, exposure_refusal
from tasks.settings import Settings
from tasks.store import fragments, maintenance, production
from tasks.store.backends import open_store

from .fake_llm import ANSWER, FakeLLM
from .test_faults_promotion import build_versions
from .test_faults_promotion import promote as promote_over

MAX_K = 20  # not the default 50, so the schema and the validation visibly use the settings
TOML_QUESTION = "Which module parses TOML documents?"
VENV_QUESTION = "How do I keep the packages of two projects apart?"
TOKEN = "sentinel-api-token-7f3a9c"
LLM_KEY = "sentinel-llm-key-4b1e2d"


@dataclass(frozen=True)
class Store:
    """A LanceDB folder holding five versions of the chunk table (none promoted yet)."""

    uri: Path
    known: dict[int, frozenset[str]]  # version -> its chunk ids

    @property
    def versions(self) -> list[int]:
        return sorted(self.known)

    def settings(self, **overrides: Any) -> Settings:
        """Service settings on this store, fast to follow the tag and flush the log."""
        values: dict[str, Any] = {
            "lancedb_uri": str(self.uri),
            "table": "chunks",
            "serve_refresh_s": 0.2,
            "query_log_flush_s": 0.2,
            "serve_max_k": MAX_K,
            "api_token": "",
            "cors_origins": [],
            "llm_base_url": "",
            "llm_model": "",
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Five versions with real embeddings, built once (this also loads the model once)."""
    uri = tmp_path_factory.mktemp("query_service") / "db"
    known = build_versions(Store(uri, {}).settings())
    return Store(uri, known)


@pytest.fixture
def store(built: Store, tmp_path: Path) -> Store:
    """A private copy of the built store, so each test may promote and log freely."""
    uri = tmp_path / "db"
    shutil.copytree(built.uri, uri)
    return Store(uri, built.known)


def promote(settings: Settings, version: int, mode: str = "vector") -> None:
    """A gate decision promoting `version` over whatever production is now."""
    current = production.production_state(open_store(settings), settings).version
    assert promote_over(settings, version, current, mode=mode) == "promote"


def rollback(settings: Settings) -> None:
    promotion.rollback(open_store(settings), settings, run_id="test", trigger="test")


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy (the service follows the tag every serve_refresh_s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def served_version(client: TestClient, headers: dict[str, str] | None = None) -> int:
    response = client.get("/version", headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def metric_samples(client: TestClient, headers: dict[str, str] | None = None) -> list[Any]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def sample_value(samples: list[Any], name: str, **labels: str) -> float | None:
    values = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(values) <= 1, (name, labels, values)
    return values[0] if values else None


def query_log_rows(settings: Settings) -> list[dict[str, Any]]:
    rows = open_store(settings).side_rows(settings.query_log_table)
    return [] if rows is None else rows.to_pylist()


@pytest.fixture
def serving(store: Store) -> Iterator[tuple[Store, Settings, TestClient]]:
    """A running service with version 2 of 5 (venv and toml documents) promoted in vector mode."""
    settings = store.settings()
    promote(settings, store.versions[1], mode="vector")
    with TestClient(create_app(settings)) as client:
        yield store, settings, client


# --- answering from production ---------------------------------------------------------------------------------


def test_default_query_answers_from_the_production_version_in_the_mode_it_was_promoted_with(serving) -> None:
    # given production = version 2, promoted in vector mode (not the service's fallback, hybrid)
    store, _, client = serving
    production = store.versions[1]

    # when a query names no mode
    response = client.post("/query", json={"question": TOML_QUESTION, "k": 3})

    # then it comes from that version, in vector mode, ranked 1..k, with the TOML document first
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == production
    assert body["mode"] == "vector"
    assert body["table"] == "chunks"
    assert [hit["rank"] for hit in body["chunks"]] == [1, 2, 3]
    assert {hit["chunk_id"] for hit in body["chunks"]} <= store.known[production]
    assert body["chunks"][0]["doc_id"] == "toml.md"
    assert body["answer"] is None and body["answerer"] is None


def test_a_version_promoted_with_a_weighted_fusion_is_served_in_that_mode(store: Store) -> None:
    # given production promoted in the mode sweep's linear fusion 'hybrid@0.7' (what the gate may choose)
    settings = store.settings()
    promote(settings, store.versions[1], mode="hybrid@0.7")
    with TestClient(create_app(settings)) as client:
        # when a query names no mode
        response = client.post("/query", json={"question": TOML_QUESTION, "k": 3})
    # then it is answered in that mode, with the TOML document first
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == "hybrid@0.7"
    assert response.json()["chunks"][0]["doc_id"] == "toml.md"


@pytest.mark.parametrize("mode", ["vector", "fulltext", "hybrid", "hybrid@0.7"])
def test_each_mode_finds_the_matching_document_first_with_cosine_similarities(store: Store, mode: str) -> None:
    # given production = version 2, promoted in vector mode, on a service that also serves ungated modes
    settings = store.settings(serve_any_mode=True)
    production = store.versions[1]
    promote(settings, production, mode="vector")

    # when asked in each mode
    with TestClient(create_app(settings)) as client:
        response = client.post("/query", json={"question": TOML_QUESTION, "k": 2, "mode": mode})

    # then the mode is honoured (and marked gated only for vector), the hits are ranked 1..n from production and
    # carry a cosine similarity
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == mode
    assert body["gated"] is (mode == "vector")
    assert body["version"] == production
    hits = body["chunks"]
    assert hits and [hit["rank"] for hit in hits] == list(range(1, len(hits) + 1)) and len(hits) <= 2
    assert {hit["chunk_id"] for hit in hits} <= store.known[production]
    assert hits[0]["doc_id"] == "toml.md"
    for hit in hits:
        assert isinstance(hit["similarity"], float) and -1.0 <= hit["similarity"] <= 1.0
    assert hits[0]["similarity"] > 0.5  # the TOML chunk is close to the TOML question in any mode


def test_a_question_about_another_document_puts_that_document_first(serving) -> None:
    store, _, client = serving
    response = client.post("/query", json={"question": VENV_QUESTION, "k": MAX_K})
    assert response.status_code == 200, response.text
    hits = response.json()["chunks"]
    assert hits[0]["doc_id"] == "venv.md"
    # k above the table's size returns the whole production version, once each
    assert sorted(hit["chunk_id"] for hit in hits) == sorted(store.known[store.versions[1]])


# --- only the mode the gate judged is served -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fulltext", "hybrid", "hybrid@0.7"])
def test_a_mode_the_gate_did_not_judge_is_a_422_naming_both_modes_and_the_setting(serving, mode: str) -> None:
    # given production = version 2, promoted (judged by the gate) in vector mode, and serve_any_mode off by default
    store, settings, client = serving
    assert settings.serve_any_mode is False

    # when a query asks for another mode
    response = client.post("/query", json={"question": TOML_QUESTION, "k": 2, "mode": mode})

    # then it is refused, saying which mode was asked, which one production was promoted in, and how to allow it
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"mode {mode!r} was not judged by the gate" in detail
    assert f"production version {store.versions[1]} was promoted in mode 'vector'" in detail
    assert "RAGOPS_SERVE_ANY_MODE=true" in detail


@pytest.mark.parametrize("asked", [None, "hybrid@0.7", "hybrid@0.70"], ids=["omitted", "explicit", "same-weight"])
def test_the_promoted_mode_omitted_or_asked_for_is_answered_as_gated(store: Store, asked: str | None) -> None:
    # given production promoted in the weighted fusion 'hybrid@0.7'
    settings = store.settings()
    promote(settings, store.versions[1], mode="hybrid@0.7")
    body: dict[str, Any] = {"question": TOML_QUESTION, "k": 3} | ({"mode": asked} if asked else {})

    with TestClient(create_app(settings)) as client:
        # when a query omits the mode or names that same mode
        response = client.post("/query", json=body)
        # (while plain 'hybrid', reciprocal-rank fusion, is another mode the gate did not judge)
        rrf = client.post("/query", json={"question": TOML_QUESTION, "mode": "hybrid"})

    # then it is answered in the promoted mode, marked gated
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == "hybrid@0.7"
    assert response.json()["gated"] is True
    assert response.json()["chunks"][0]["doc_id"] == "toml.md"
    assert rrf.status_code == 422 and "'hybrid@0.7'" in rrf.json()["detail"]


def test_with_serve_any_mode_an_ungated_mode_is_answered_and_marked_ungated(store: Store) -> None:
    # given production promoted in vector mode, and a service allowed to serve any mode
    settings = store.settings(serve_any_mode=True)
    promote(settings, store.versions[1], mode="vector")

    with TestClient(create_app(settings)) as client:
        # when one query asks for fulltext and another names no mode
        ungated = client.post("/query", json={"question": TOML_QUESTION, "k": 2, "mode": "fulltext"})
        default = client.post("/query", json={"question": TOML_QUESTION, "k": 2})

    # then both are answered; only the fulltext one says its mode was not gated
    assert ungated.status_code == 200, ungated.text
    assert ungated.json()["mode"] == "fulltext" and ungated.json()["gated"] is False
    assert ungated.json()["chunks"][0]["doc_id"] == "toml.md"
    assert default.status_code == 200, default.text
    assert default.json()["mode"] == "vector" and default.json()["gated"] is True


def test_serve_any_mode_is_off_by_default_and_read_from_ragops_serve_any_mode(monkeypatch) -> None:
    monkeypatch.delenv("RAGOPS_SERVE_ANY_MODE", raising=False)
    assert Settings(_env_file=None).serve_any_mode is False  # type: ignore[call-arg]
    monkeypatch.setenv("RAGOPS_SERVE_ANY_MODE", "true")
    assert Settings(_env_file=None).serve_any_mode is True  # type: ignore[call-arg]


# --- validation and body limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"question": "   "}, "question"),
        ({"question": ""}, "question"),
        ({"question": "what is toml?", "k": 0}, "k"),
        ({"question": "what is toml?", "k": MAX_K + 1}, "k"),
        ({"question": "what is toml?", "mode": "semantic"}, "mode"),
        ({"question": "what is toml?", "mode": "vector@0.5"}, "mode"),
        ({"question": "what is toml?", "mode": "hybrid@1.5"}, "mode"),
        ({"question": "what is toml?", "mode": "hybrid@heavy"}, "mode"),
        ({"question": "what is toml?", "colour": "red"}, "colour"),
        ({"question": "x" * 2001}, "question"),
        ({"k": 3}, "question"),
    ],
    ids=[
        "blank",
        "empty",
        "k-zero",
        "k-over-max",
        "unknown-mode",
        "weight-without-fusion",
        "weight-over-one",
        "weight-not-a-number",
        "extra-field",
        "too-long",
        "missing-question",
    ],
)
def test_an_invalid_query_is_a_422_naming_the_field(serving, body: dict[str, Any], field: str) -> None:
    # given the default question limit of 2000 characters and k ≤ MAX_K
    _, settings, client = serving
    assert settings.serve_max_question_chars == 2000

    # when the body breaks one rule
    response = client.post("/query", json=body)

    # then the 422 names that field
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_a_question_at_the_length_limit_is_accepted(serving) -> None:
    _, settings, client = serving
    question = ("toml " * settings.serve_max_question_chars)[: settings.serve_max_question_chars]
    response = client.post("/query", json={"question": question, "k": 1})
    assert response.status_code == 200, response.text


def test_invalid_json_is_a_422(serving) -> None:
    _, _, client = serving
    response = client.post("/query", content=b'{"question": "toml', headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.fixture(scope="module")
def validating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A service on an empty store: a body that passes validation reaches /query and gets a 503."""
    settings = Store(tmp_path_factory.mktemp("validating") / "db", {}).settings()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"question": "toml", "k": 1e400}', ["body", "k"]),
        (b'{"question": "toml", "k": NaN}', ["body", "k"]),
        (b'{"question": "toml", "k": -Infinity}', ["body", "k"]),
        (b'{"question": "toml \\ud800"}', ["body", "question"]),
        (b'{"question": "toml", "\\udc80": 1}', ["body"]),
        (b'{"question": "toml", "k": ' + b"9" * 5000 + b"}", ["body"]),
        (b'{"question": "toml \xff\xfe"}', ["body"]),
        (b"[" * 3000 + b"]" * 3000, ["body"]),
    ],
    ids=[
        "k-1e400",
        "k-nan",
        "k-minus-infinity",
        "lone-surrogate",
        "surrogate-key",
        "k-5000-digits",
        "not-utf8",
        "deep",
    ],
)
def test_a_body_json_cannot_carry_back_is_a_422_without_the_input(validating, body: bytes, loc: list[Any]) -> None:
    # given a body that is no JSON object with finite numbers and valid text (FastAPI's own handler echoes the
    # input: a 500 for the first five, and a 400 for the others)
    # when it is posted
    response = validating.post("/query", content=body, headers={"Content-Type": "application/json"})

    # then it is a 422 whose errors say where and what, and never quote the input
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert errors and all(set(error) == {"loc", "msg", "type"} for error in errors), errors
    assert errors[0]["loc"] == loc
    assert "9999" not in response.text and "toml" not in response.text


def test_a_valid_body_passes_validation_on_the_service_that_refuses_the_others(validating) -> None:
    # (the control of the test above: the same service lets a valid body through, to the empty store's 503)
    response = validating.post("/query", json={"question": "toml", "k": 3})
    assert response.status_code == 503, response.text


def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(serving) -> None:
    # given the body limit
    _, settings, client = serving
    limit = settings.serve_max_body_bytes
    padding = "x" * limit

    # when a (valid JSON) body declares more bytes than that
    response = client.post("/query", json={"question": "toml", "padding": padding})

    # then it is refused as too large, not validated
    assert response.status_code == 413, response.text
    assert str(limit) in response.json()["detail"]


def test_a_body_just_under_the_limit_is_validated_as_usual(serving) -> None:
    _, settings, client = serving
    body = b'{"question": "' + b"x" * (settings.serve_max_body_bytes - 100) + b'"}'
    response = client.post("/query", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422  # read whole: then refused for the question's length, not the body's size
    assert response.json()["detail"][0]["loc"] == ["body", "question"]


def test_a_streamed_body_under_the_limit_without_content_length_is_served(serving) -> None:
    # (the control for the test below: chunked bodies as such are fine)
    _, _, client = serving
    chunks = [b'{"question": "', b"Which module parses", b' TOML documents?", "k": 1}']
    response = client.post("/query", content=iter(chunks), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["chunks"][0]["doc_id"] == "toml.md"


def test_a_streamed_body_over_the_limit_without_content_length_is_a_413(serving) -> None:
    # given a body sent in chunks, so no Content-Length header declares its size
    _, settings, client = serving
    chunks = [b'{"question": "toml", "padding": "', b"x" * settings.serve_max_body_bytes, b'"}']

    # when it is posted
    response = client.post("/query", content=iter(chunks), headers={"Content-Type": "application/json"})

    # then it is refused as too large
    assert response.status_code == 413, response.text


# --- before any promotion ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["no table", "table never promoted"])
def test_before_any_promotion_health_and_query_are_503_until_production_is_tagged(
    store: Store, tmp_path: Path, layout: str
) -> None:
    # given a store without a chunk table, or with one no version of which is tagged production
    settings = store.settings() if layout != "no table" else store.settings(lancedb_uri=str(tmp_path / "empty"))
    with TestClient(create_app(settings)) as client:
        # when health and a query are asked for
        health = client.get("/health")
        query = client.post("/query", json={"question": TOML_QUESTION})
        version = client.get("/version")

        # then both say there is nothing to serve, and why
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        reason = health.json()["reason"]
        assert "promote" in reason
        assert ("no table" in reason) if layout == "no table" else ("production" in reason)
        assert query.status_code == 503
        assert "no production version" in query.json()["detail"]
        assert version.status_code == 503

        if layout == "table never promoted":
            # and once a version is promoted, the running service serves it without a restart
            promote(settings, store.versions[0])
            wait_for(lambda: client.get("/health").status_code == 200, "the first promotion to be served")
            response = client.post("/query", json={"question": VENV_QUESTION})
            assert response.status_code == 200
            assert response.json()["version"] == store.versions[0]


# --- authentication ---------------------------------------------------------------------------------------------

GUARDED = [("POST", "/query"), ("GET", "/version"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json")]


@pytest.fixture
def guarded(store: Store) -> Iterator[tuple[Store, Settings, TestClient]]:
    """A running service that requires the bearer token TOKEN."""
    settings = store.settings(api_token=TOKEN)
    promote(settings, store.versions[1])
    with TestClient(create_app(settings)) as client:
        yield store, settings, client


def call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    if method == "POST":
        return client.post(path, json={"question": TOML_QUESTION, "k": 2}, headers=headers)
    return client.get(path, headers=headers)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"],
    ids=["none", "wrong", "other-scheme", "empty", "prefix"],
)
def test_every_route_but_health_refuses_a_missing_or_wrong_token_with_401(guarded, authorization: str | None) -> None:
    _, _, client = guarded
    headers = {"Authorization": authorization} if authorization else None
    for method, path in GUARDED:
        response = call(client, method, path, headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in response.text


def test_the_right_token_opens_every_route_and_health_needs_none(guarded) -> None:
    _, _, client = guarded
    for method, path in GUARDED:
        response = call(client, method, path, {"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, (method, path, response.text)
    assert client.get("/health").status_code == 200


def test_the_token_is_never_written_to_the_query_log(store: Store) -> None:
    # given a guarded service
    settings = store.settings(api_token=TOKEN)
    promote(settings, store.versions[1])
    auth = {"Authorization": f"Bearer {TOKEN}"}

    # when queries are served with the token (one answered), and the service shuts down (flushing the log)
    with TestClient(create_app(settings)) as client:
        for question, generate in [(TOML_QUESTION, False), (VENV_QUESTION, True), ("tomllib write", False)]:
            response = client.post("/query", json={"question": question, "generate": generate}, headers=auth)
            assert response.status_code == 200, response.text

    # then the log holds those queries, and the token appears in none of its columns
    rows = query_log_rows(settings)
    assert len(rows) == 3
    for row in rows:
        for column, value in row.items():
            assert TOKEN not in str(value), column


# --- CORS -------------------------------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}


def test_cors_is_off_by_default(serving) -> None:
    _, _, client = serving
    preflight = client.options("/query", headers={**PREFLIGHT, "Access-Control-Request-Headers": "content-type"})
    simple = client.get("/health", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in preflight.headers
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_exactly_the_configured_origins(store: Store) -> None:
    # given CORS for one origin
    settings = store.settings(cors_origins=["https://app.example"])
    promote(settings, store.versions[1])
    with TestClient(create_app(settings)) as client:
        # when that origin and another send a preflight and a request
        preflight = client.options("/query", headers={**PREFLIGHT, "Access-Control-Request-Headers": "content-type"})
        simple = client.post("/query", json={"question": TOML_QUESTION}, headers={"Origin": "https://app.example"})
        foreign = client.get("/health", headers={"Origin": "https://evil.example"})

    # then only the configured origin is allowed
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in foreign.headers


def test_a_cors_preflight_succeeds_on_a_guarded_service(store: Store) -> None:
    # given a guarded service that allows one origin
    settings = store.settings(api_token=TOKEN, cors_origins=["https://app.example"])
    promote(settings, store.versions[1])
    with TestClient(create_app(settings)) as client:
        # when a browser sends the preflight (browsers never send credentials with it)
        preflight = client.options("/query", headers={**PREFLIGHT, "Access-Control-Request-Headers": "authorization"})

    # then the preflight allows the origin, so the real request (with the token) can follow
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"


# --- metrics ----------------------------------------------------------------------------------------------------


def test_metrics_count_requests_errors_latency_and_the_served_version(serving) -> None:
    # given a fresh service (its own registry)
    store, _, client = serving
    ok, invalid = 3, 2

    # when it answers N queries and refuses M
    for question in [TOML_QUESTION, VENV_QUESTION, "tomllib"][:ok]:
        assert client.post("/query", json={"question": question, "k": 2}).status_code == 200
    for _ in range(invalid):
        assert client.post("/query", json={"question": "  "}).status_code == 422
    samples = metric_samples(client)

    # then the counters, histogram and gauge say so, in Prometheus text format
    requests = "ragops_requests_total"
    assert sample_value(samples, requests, method="POST", route="/query", status="200") == ok
    assert sample_value(samples, requests, method="POST", route="/query", status="422") == invalid
    assert sample_value(samples, "ragops_request_errors_total", route="/query", status="422") == invalid
    assert sample_value(samples, "ragops_request_errors_total", route="/query", status="200") is None
    bucket = "ragops_request_duration_seconds_bucket"
    assert len([s for s in samples if s.name == bucket and s.labels["route"] == "/query"]) > 1
    assert sample_value(samples, "ragops_request_duration_seconds_bucket", route="/query", le="+Inf") == ok + invalid
    assert sample_value(samples, "ragops_request_duration_seconds_count", route="/query") == ok + invalid
    assert sample_value(samples, "ragops_served_version", table="chunks") == store.versions[1]
    assert sample_value(samples, "ragops_top1_similarity_count") == ok


def test_metrics_label_unknown_paths_as_other(serving) -> None:
    # (so random paths cannot grow the label set without bound)
    _, _, client = serving
    for i in range(3):
        assert client.get(f"/no-such-page-{i}").status_code == 404
    samples = metric_samples(client)
    assert sample_value(samples, "ragops_requests_total", method="GET", route="other", status="404") == 3
    assert not any("no-such-page" in str(s.labels) for s in samples)


def test_made_up_http_methods_share_one_metrics_label(validating) -> None:
    # given a client that invents a new HTTP method for every request
    made_up = [f"M{i:04d}" for i in range(300)]
    for method in made_up:
        assert validating.request(method, "/query").status_code == 405

    # when /metrics is scraped
    samples = metric_samples(validating)

    # then they are all counted under one label, so /metrics does not grow with them
    methods = {s.labels["method"] for s in samples if s.name == "ragops_requests_total"}
    assert methods <= {"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "other"}, methods
    assert sample_value(samples, "ragops_requests_total", method="other", route="/query", status="405") == 300
    assert len(validating.get("/metrics").text) < 20_000


# --- OpenAPI ----------------------------------------------------------------------------------------------------


def test_docs_serve_swagger_ui_and_the_schema_shows_this_servers_limits(serving) -> None:
    _, settings, client = serving
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text.lower()

    schema = client.get("/openapi.json").json()
    body_ref = schema["paths"]["/query"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    assert request["properties"]["k"]["maximum"] == settings.serve_max_k == MAX_K
    assert request["properties"]["k"]["minimum"] == 1
    assert request["properties"]["question"]["maxLength"] == settings.serve_max_question_chars
    assert request["required"] == ["question"]
    assert request["additionalProperties"] is False


# --- following the production tag ---------------------------------------------------------------------------------


def test_a_promotion_and_a_rollback_are_served_without_a_restart(serving) -> None:
    # given the service serving version 2 in vector mode
    store, settings, client = serving
    before, after = store.versions[1], store.versions[3]
    assert served_version(client) == before

    # when version 4 is promoted in hybrid mode while it runs
    promote(settings, after, mode="hybrid")

    # then the service switches to it, with its mode, and answers from it
    wait_for(lambda: served_version(client) == after, f"version {after} to be served")
    assert client.get("/version").json()["mode"] == "hybrid"
    response = client.post("/query", json={"question": "When are new Python releases published?", "k": 3})
    assert response.json()["version"] == after and response.json()["mode"] == "hybrid"
    assert response.json()["chunks"][0]["doc_id"] == "releases.md"  # only in the new version
    assert {h["chunk_id"] for h in response.json()["chunks"]} <= store.known[after]

    # and when production is rolled back, it goes back to version 2 and its mode
    rollback(settings)
    wait_for(lambda: served_version(client) == before, f"version {before} to be served again")
    assert client.get("/version").json()["mode"] == "vector"
    samples = metric_samples(client)
    assert sample_value(samples, "ragops_served_version", table="chunks") == before
    assert sample_value(samples, "ragops_version_switches_total") == 3


def test_re_promoting_the_served_version_in_another_mode_switches_the_mode(serving) -> None:
    # given version 2 served in vector mode
    store, settings, client = serving
    assert client.get("/version").json()["mode"] == "vector"

    # when the gate promotes the same version again, in hybrid mode
    promote(settings, store.versions[1], mode="hybrid")
    assert production.production_state(open_store(settings), settings).mode == "hybrid"

    # then the service answers in hybrid mode by default
    wait_for(lambda: client.get("/version").json()["mode"] == "hybrid", "the new mode to be served", timeout_s=3)


def test_concurrent_queries_during_promotion_flips_each_come_from_one_whole_version(serving) -> None:
    # given two versions with different chunk sets, neither containing the other, and version 2 in production
    store, settings, client = serving
    first, second = store.versions[1], store.versions[4]
    assert not store.known[first] <= store.known[second] and not store.known[second] <= store.known[first]
    flips_done = threading.Event()
    failures: list[BaseException] = []

    def flip() -> None:
        try:
            for i in range(20):
                if i % 2 == 0:
                    promote(settings, second)
                else:
                    rollback(settings)
                time.sleep(0.25)  # longer than serve_refresh_s, so the service sees most states
        except BaseException as exc:  # reported below: a silent flipper would make the test vacuous
            failures.append(exc)
        finally:
            flips_done.set()

    def ask(worker: int) -> list[dict[str, Any]]:
        answers = []
        while len(answers) < 25 or not flips_done.is_set():  # at least 25 each, and for as long as flips go on
            question = VENV_QUESTION if (worker + len(answers)) % 2 else TOML_QUESTION
            response = client.post("/query", json={"question": question, "k": 10, "mode": "vector"})
            answers.append({"status": response.status_code, **response.json()})
        return answers

    # when 8 threads query while production flips 20 times
    flipper = threading.Thread(target=flip)
    flipper.start()
    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(ask, range(8)) for a in batch]
    flipper.join()

    # then every query succeeded and returned exactly the chunks of the version it names (k exceeds both sizes)
    assert failures == []
    assert len(answers) >= 200
    assert all(a["status"] == 200 for a in answers), [a for a in answers if a["status"] != 200][:3]
    mixed = [a for a in answers if {h["chunk_id"] for h in a["chunks"]} != store.known.get(a["version"])]
    assert mixed == [], mixed[:3]
    assert {a["version"] for a in answers} == {first, second}


# --- query log --------------------------------------------------------------------------------------------------


def test_every_answered_query_is_logged_with_what_it_returned(store: Store) -> None:
    # given a service with production = version 2 (in vector mode), serving ungated modes too
    settings = store.settings(serve_any_mode=True)
    promote(settings, store.versions[1])
    dim = embedding.embedding_dim(embedding.embed_spec(settings))
    asked = [
        {"question": TOML_QUESTION, "k": 2},
        {"question": VENV_QUESTION, "k": 3, "mode": "hybrid", "generate": True},
        {"question": "tomllib cannot write", "k": 1, "mode": "fulltext"},
    ]

    # when it answers three queries, refuses one, and shuts down
    with TestClient(create_app(settings)) as client:
        answered = []
        for body in asked:
            response = client.post("/query", json=body)
            assert response.status_code == 200, response.text
            answered.append(response.json())
        assert client.post("/query", json={"question": "toml", "k": 0}).status_code == 422

    # then the log has exactly one row per answered query, saying what it returned
    rows = {row["query_id"]: row for row in query_log_rows(settings)}
    assert sorted(rows) == sorted(a["query_id"] for a in answered)
    for body, answer in zip(asked, answered, strict=True):
        row = rows[answer["query_id"]]
        assert row["question"] == body["question"]
        assert row["table"] == "chunks"
        assert row["version"] == answer["version"] == store.versions[1]
        assert row["mode"] == answer["mode"] == body.get("mode", "vector")
        assert row["k"] == body["k"]
        assert row["status"] == 200
        assert row["retrieved_ids"] == [hit["chunk_id"] for hit in answer["chunks"]]
        assert row["latency_ms"] > 0
        assert len(row["vector"]) == dim
        assert row["top1_similarity"] == pytest.approx(answer["chunks"][0]["similarity"], abs=1e-5)
        if body.get("generate"):
            assert row["answer"] == answer["answer"] and row["answer"]
        else:
            assert row["answer"] is None


# --- answers ----------------------------------------------------------------------------------------------------


def test_without_an_llm_generate_answers_extractively_from_the_returned_chunks(serving) -> None:
    _, _, client = serving
    response = client.post("/query", json={"question": VENV_QUESTION, "k": 3, "generate": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "extractive" in body["answerer"]
    assert body["answer"].strip()
    texts = [hit["text"] for hit in body["chunks"]]
    for sentence in split_sentences(body["answer"]):
        assert any(sentence in text for text in texts), sentence


def test_with_an_llm_generate_returns_its_answer(store: Store) -> None:
    settings_args = {"llm_model": "fake", "llm_api_key": LLM_KEY, "llm_max_retries": 0, "llm_timeout_s": 20}
    with FakeLLM(api_key=LLM_KEY) as llm:
        settings = store.settings(llm_base_url=llm.base_url, **settings_args)
        promote(settings, store.versions[1])
        with TestClient(create_app(settings)) as client:
            response = client.post("/query", json={"question": TOML_QUESTION, "k": 2, "generate": True})
    assert response.status_code == 200, response.text
    assert response.json()["answer"] == ANSWER
    assert response.json()["answerer"] == "LLM fake"
    assert llm.count(kind="answer", status=200) == 1
    assert TOML_QUESTION in llm.requests[0]["messages"][0]["content"]


def test_a_failing_llm_is_a_502_that_says_so_without_the_api_key(store: Store) -> None:
    # given an LLM endpoint that fails every call, and no retries
    settings_args = {"llm_model": "fake", "llm_api_key": LLM_KEY, "llm_max_retries": 0, "llm_timeout_s": 20}
    with FakeLLM(fail_with=500) as llm:
        settings = store.settings(llm_base_url=llm.base_url, **settings_args)
        promote(settings, store.versions[1])
        with TestClient(create_app(settings)) as client:
            # when a query asks for an answer, and another does not
            failed = client.post("/query", json={"question": TOML_QUESTION, "generate": True})
            plain = client.post("/query", json={"question": TOML_QUESTION})

    # then the first is a 502 that names the failure, never the key, and retrieval alone still works
    assert failed.status_code == 502, failed.text
    assert failed.json()["detail"].startswith("answer generation failed")
    assert LLM_KEY not in failed.text
    assert llm.count(kind="answer") == 1  # llm_max_retries=0: one call
    assert plain.status_code == 200


# --- health while the follower fails ---------------------------------------------------------------------------


def test_health_is_degraded_with_the_served_version_while_production_cannot_be_read(serving, tmp_path: Path) -> None:
    # given a service on version 2, healthy
    store, _, client = serving
    assert client.get("/health").json() == {"status": "ok", "table": "chunks", "version": store.versions[1]}

    # when the table's folder disappears from under it (moved away by an operator)
    table_dir, away = store.uri / "chunks.lance", tmp_path / "moved-away.lance"
    table_dir.rename(away)
    health = wait_for(lambda: degraded(client, failures=2), "a second failed refresh")

    # then /health still answers 200 (the server serves what it has) but says degraded: the version actually
    # served, what fails, since when and how often
    assert health["version"] == store.versions[1] and health["mode"] == "vector"
    assert "no table 'chunks'" in health["refresh"]["error"]
    since = datetime.fromisoformat(health["refresh"]["failing_since"])
    assert since <= datetime.now(UTC)

    # and the failures keep counting from the same start while it lasts
    later = wait_for(lambda: degraded(client, failures=health["refresh"]["consecutive_failures"] + 1), "more")
    assert later["refresh"]["failing_since"] == health["refresh"]["failing_since"]

    # and once the table is back, health is ok again
    away.rename(table_dir)
    wait_for(lambda: client.get("/health").json()["status"] == "ok", "health to recover")
    assert client.get("/health").json() == {"status": "ok", "table": "chunks", "version": store.versions[1]}


def test_health_reports_a_tag_on_a_removed_version_without_secrets(store: Store) -> None:
    # given a service on version 2, with a secret storage option set
    secret = "sentinel-storage-secret-91ab"
    settings = store.settings(storage_options={"aws_secret_access_key": secret})
    promote(settings, store.versions[1])
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json()["status"] == "ok"

        # when the production tag is pointed at a version whose manifest is gone (an unsafe manual cleanup)
        removed = store.versions[3]
        tag = store.uri / "chunks.lance" / "_refs" / "tags" / "production.json"
        record = json.loads(tag.read_text())
        (store.uri / "chunks.lance" / "_versions" / manifest_name(store.uri, removed)).unlink()
        tag.write_text(json.dumps({**record, "version": removed}))
        health = wait_for(lambda: degraded(client, failures=1), "a failed refresh")

        # then /health says degraded, still on version 2, with the store's error and no secret
        assert health["version"] == store.versions[1]
        assert health["refresh"]["error"].startswith("could not read the production tag:")
        assert secret not in json.dumps(health)
        # and queries are still answered from version 2
        answer = client.post("/query", json={"question": TOML_QUESTION, "k": 2})
        assert answer.status_code == 200 and answer.json()["version"] == store.versions[1]


def degraded(client: TestClient, failures: int) -> dict[str, Any] | None:
    """/health's body once it reports at least `failures` consecutive failed refreshes."""
    response = client.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    if body["status"] == "degraded" and body["refresh"]["consecutive_failures"] >= failures:
        return body
    return None


def manifest_name(uri: Path, version: int) -> str:
    """The file name of a version's manifest (Lance names them by version, in one of two schemes)."""
    names = [p.name for p in (uri / "chunks.lance" / "_versions").iterdir()]
    found = [n for n in names if n.split(".")[0].isdigit() and version_of_manifest(n) == version]
    assert len(found) == 1, names
    return found[0]


def version_of_manifest(name: str) -> int:
    number = int(name.split(".")[0])
    return number if number < 2**63 else 2**64 - 1 - number  # the V2 scheme counts down from u64::MAX


# --- the server's heartbeat and maintenance ----------------------------------------------------------------------


def test_maintenance_keeps_the_version_a_server_still_serves_after_production_moved(store: Store) -> None:
    # given a server on version 2 that checks the tag only once an hour (inside its refresh window all along), and
    # retention settings that keep no rollback target, no old candidate and no untagged version
    retention = {"retain_promotions": 0, "retain_candidate_days": 0, "retain_untagged_hours": 0}
    settings = store.settings(serve_refresh_s=3600, **retention)
    old, new = store.versions[1], store.versions[2]
    promote(settings, old)
    with TestClient(create_app(settings)) as client:
        run = wait_for(lambda: serving_heartbeats(settings), "the server's heartbeat")
        assert list(run.values()) == [[old]]

        # when production moves to the next version and maintenance runs
        promote(settings, new)
        decided, result = maintenance.apply_retention(settings)

        # then the version the server still serves stays, kept for that server, and it still answers from it
        assert old not in result.removed_versions
        assert any(next(iter(run)) in reason for reason in decided.kept[old]), decided.kept[old]
        answer = client.post("/query", json={"question": TOML_QUESTION, "k": 3})
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == old
        assert {hit["chunk_id"] for hit in answer.json()["chunks"]} <= store.known[old]

    # and once the server has stopped (its heartbeat withdrawn), the same maintenance removes that version
    assert serving_heartbeats(settings) == {}
    _, after = maintenance.apply_retention(settings)
    assert old in after.removed_versions


def test_the_heartbeat_follows_the_served_version(serving) -> None:
    # given a server on version 2, following the tag every 0.2 s
    store, settings, client = serving
    assert list(wait_for(lambda: serving_heartbeats(settings), "the heartbeat").values()) == [[store.versions[1]]]
    # when production moves, then the heartbeat names the new version once the server serves it
    promote(settings, store.versions[2])
    wait_for(lambda: served_version(client) == store.versions[2], "the promotion to be served")
    assert list(wait_for(lambda: serving_heartbeats(settings), "the heartbeat").values()) == [[store.versions[2]]]


def serving_heartbeats(settings: Settings) -> dict[str, list[int]]:
    """Live heartbeats of servers ("server serve-<id>") and the versions each names."""
    return {run: v for run, v in fragments.live_runs(settings, settings.table).items() if run.startswith("server ")}


# --- exposure ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]"])
def test_a_loopback_address_may_be_served_without_a_token(host: str) -> None:
    assert exposure_refusal(host, token_set=False, insecure=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "fe80::1", "api.example.com"])
def test_another_address_without_a_token_is_refused_unless_insecure(host: str) -> None:
    # given an address other machines may reach (a host name may resolve to any of them)
    # then serving it without a token is refused, naming the three ways out
    refusal = exposure_refusal(host, token_set=False, insecure=False)
    assert refusal is not None and host in refusal
    assert "RAGOPS_API_TOKEN" in refusal and "--insecure" in refusal and "127.0.0.1" in refusal
    # and with a token, or with --insecure, it is allowed
    assert exposure_refusal(host, token_set=True, insecure=False) is None
    assert exposure_refusal(host, token_set=False, insecure=True) is None
