"""The query service fuzzed from its own OpenAPI schema (schemathesis): valid and invalid requests generated for every
operation reach the real app, serving a real small table, and none is answered with a server error (5xx).

A small example count per operation keeps this quick; `st run` against `ragops serve` is the bigger campaign.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans

from tasks.serve.query_service import create_app
from tasks.settings import Settings

from .test_faults_promotion import build_versions, promote

TOKEN = "fuzz-token-5c1d"
EXAMPLES = 50  # per operation and generation mode (valid, invalid)
SENT: Counter[str] = Counter()  # generated requests per operation and status class, reported at teardown


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The schema of an app serving version 2 of a real five-version table (the token set, as when exposed)."""
    uri: Path = tmp_path_factory.mktemp("fuzz") / "db"
    values: dict[str, Any] = {
        "lancedb_uri": str(uri),
        "table": "chunks",
        "api_token": TOKEN,
        "serve_max_k": 20,
        "serve_refresh_s": 0.5,
        "query_log_flush_s": 0.5,
        "llm_base_url": "",
        "llm_model": "",
    }
    service_settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    versions = sorted(build_versions(service_settings))
    assert promote(service_settings, versions[1], None) == "promote"
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(service_settings), headers=auth())
    yield schema
    shutdown_lifespans()  # the app's production follower and query log writer stop here
    print(f"\nAPI fuzz: {sum(SENT.values())} generated requests: {dict(sorted(SENT.items()))}")


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


OPERATIONS = [("POST", "/query"), ("GET", "/health"), ("GET", "/version"), ("GET", "/metrics")]


def test_every_operation_of_the_schema_is_fuzzed(api_schema: Any) -> None:
    listed = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [
        ("POST", "/query", GenerationMode.POSITIVE),
        ("POST", "/query", GenerationMode.NEGATIVE),
        # the GET routes take no parameters: one request each, and nothing to break
        *[(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS if method == "GET"],
    ],
    ids=["query-valid", "query-invalid", "health", "version", "metrics"],
)
@given(data=st.data())
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_generated_request_is_a_server_error(
    api_schema: Any, method: str, path: str, mode: GenerationMode, data: st.DataObject
) -> None:
    # given a request generated from the schema (valid, or breaking it on purpose)
    case = data.draw(api_schema[path][method].as_strategy(mode))

    # when it is sent
    response = case.call(headers=auth())
    SENT[f"{method} {path} {response.status_code // 100}xx"] += 1

    # then it is answered, or refused with a 4xx, never failed with a 5xx
    assert response.status_code < 500, (method, path, case.body, response.status_code, response.text)
    if response.status_code == 422:  # and a refusal never echoes the input
        assert all(set(error) == {"loc", "msg", "type"} for error in response.json()["detail"]), response.text
