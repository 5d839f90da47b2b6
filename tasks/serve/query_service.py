"""The query service behind `ragops serve`: a FastAPI app answering from the version tagged `production`.

Routes: POST /query, GET /health, GET /version, GET /metrics (Prometheus), and the OpenAPI schema at /docs.
A bearer token (RAGOPS_API_TOKEN) guards every route but /health; CORS is off unless RAGOPS_CORS_ORIGINS lists
origins. Every answered query is logged to the query-log table for monitoring.

Only the retrieval mode production was promoted in is served: the gate judged each version in that one mode, so a
request for another is refused (422) unless RAGOPS_SERVE_ANY_MODE is set, and then its answer says `gated: false`.

With several worker processes (`ragops serve --workers N`) the metrics use prometheus_client's multiprocess mode, so
every scrape reports the totals over all workers, whichever worker answers it.

An invalid request is a 422 whose errors carry only `loc`, `msg` and `type`: the input is never echoed (FastAPI's own
handler echoes it, and fails with a 500 on input JSON cannot carry: an infinite number, NaN, a lone surrogate).
"""

# No `from __future__ import annotations`: FastAPI reads the request model from the endpoint's real annotations.

import hmac
import ipaddress
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasks.embed import embedding
from tasks.errors import RagopsError
from tasks.serve import retrieval
from tasks.serve.answering import make_answerer
from tasks.serve.production_index import ProductionIndex, RefreshFailure, Snapshot
from tasks.serve.query_log import LoggedQuery, QueryLogWriter
from tasks.settings import Settings

log = logging.getLogger(__name__)
OPEN_PATHS = ("/health",)  # reachable without the bearer token
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's switch to multiprocess mode
# The request counter's method label takes only these values (and "other"): each distinct label is a series kept
# forever, so a client inventing methods must not grow /metrics.
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})


class UngatedModeError(RagopsError):
    """A query asked for a retrieval mode the gate did not judge production in (refused unless serve_any_mode)."""


class Hit(BaseModel):
    """One retrieved chunk."""

    rank: int
    chunk_id: str
    doc_id: str
    title: str
    section: str
    text: str
    score: float = Field(description="The mode's score: cosine similarity, BM25, or fused relevance (higher wins).")
    similarity: float | None = Field(None, description="Cosine similarity of question and chunk, in any mode.")


class QueryResponse(BaseModel):
    """What a query returns; `version` is the table version every chunk came from."""

    query_id: str
    table: str
    version: int
    mode: str
    gated: bool = Field(
        True, description="False when `mode` is not the one the gate judged this version in (RAGOPS_SERVE_ANY_MODE)."
    )
    chunks: list[Hit]
    answer: str | None = None
    answerer: str | None = None
    latency_ms: float


def request_model(settings: Settings) -> type[BaseModel]:
    """The /query body, with this server's limits (they appear in the OpenAPI schema)."""

    class QueryRequest(BaseModel):
        """A question to retrieve chunks for, and optionally answer."""

        model_config = ConfigDict(extra="forbid")

        question: str = Field(min_length=1, max_length=settings.serve_max_question_chars)
        k: int = Field(5, ge=1, le=settings.serve_max_k, description="How many chunks to return.")
        mode: str | None = Field(
            None,
            description="vector, fulltext, hybrid or hybrid@<weight>. Default: the mode production was promoted in, "
            "the only one served unless RAGOPS_SERVE_ANY_MODE is set (others are a 422).",
        )
        generate: bool = Field(False, description="Also answer the question from the chunks (as evaluation does).")

        @field_validator("question")
        @classmethod
        def _not_blank(cls, value: str) -> str:
            if not value.strip():
                raise ValueError("question is empty")
            return value

        @field_validator("mode")
        @classmethod
        def _known_mode(cls, value: str | None) -> str | None:
            if value is not None:
                parse_mode(value)
            return value

    return QueryRequest


def parse_mode(mode: str) -> tuple[retrieval.SearchMode, float | None]:
    """A requested mode → (mode, fusion weight), or ValueError for one the gate's policy could not name."""
    unknown = f"unknown mode {mode!r}: use vector, fulltext, hybrid or hybrid@<weight> (0 ≤ weight ≤ 1)"
    try:
        base, weight = retrieval.split_mode(mode)
    except ValueError:  # an unknown base mode, or a weight that is no number
        raise ValueError(unknown) from None
    if weight is not None and (base != "hybrid" or not 0.0 <= weight <= 1.0):
        raise ValueError(unknown)
    return base, weight


def served_mode(requested: str | None, snapshot: Snapshot, any_mode: bool) -> tuple[str, bool]:
    """The mode to answer in and whether the gate judged it; UngatedModeError for another unless `any_mode`."""
    if requested is None or parse_mode(requested) == retrieval.split_mode(snapshot.mode):
        return snapshot.mode, True
    if not any_mode:
        raise UngatedModeError(
            f"mode {requested!r} was not judged by the gate: production version {snapshot.version} was promoted in "
            f"mode {snapshot.mode!r}; omit `mode` or set RAGOPS_SERVE_ANY_MODE=true to allow ungated modes"
        )
    return requested, False


class ServiceMetrics:
    """The Prometheus metrics of one app (its own registry, so two apps in a process never share counts).

    In multiprocess mode (`multiprocess_dir`, one app per worker process) every worker writes its values to files in
    that directory and `/metrics` merges the files of all workers: counters and histograms are summed, and each gauge
    is merged as its `multiprocess_mode` says (ignored in a single process).
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ragops_requests", "HTTP requests served.", ["route", "method", "status"], registry=self.registry
        )
        self.errors = Counter(
            "ragops_request_errors",
            "Requests answered with a 4xx or 5xx status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ragops_request_duration_seconds",
            "Request latency.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.served_version = Gauge(  # the version the live workers picked up last (they all follow one tag)
            "ragops_served_version",
            "Table version being served.",
            ["table"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.switches = Counter("ragops_version_switches", "Production versions picked up.", registry=self.registry)
        self.similarity = Histogram(
            "ragops_top1_similarity",
            "Cosine similarity of the rank-1 chunk.",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=self.registry,
        )
        self.log_dropped = Gauge(  # a running total per worker: summed, exited workers' losses included
            "ragops_query_log_dropped",
            "Logged queries lost because the store refused writes.",
            registry=self.registry,
            multiprocess_mode="sum",
        )

    def exposition(self) -> bytes:
        """The Prometheus text: this process's registry, or in multiprocess mode the merged files of all workers."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged)

    def process_exited(self) -> None:
        """Drop this worker's live gauges from the merged view (its counters and histograms still count)."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)


class GuardMiddleware:
    """Pure ASGI: counts and times every request, checks the bearer token, refuses oversized bodies."""

    def __init__(self, app: ASGIApp, token: str, max_body: int, metrics: ServiceMetrics) -> None:
        self.app, self.token, self.max_body, self.metrics = app, token.encode(), max_body, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, counting_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or (
                scope["path"]
                if scope["path"] in ("/query", "/health", "/version", "/metrics", "/docs", "/openapi.json")
                else "other"
            )
            code = str(status["code"])
            self.metrics.requests.labels(route, method_label(scope["method"]), code).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            if status["code"] >= 400:
                self.metrics.errors.labels(route, code).inc()

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            await _send_json(send, 401, {"detail": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")])
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _send_json(send, 413, {"detail": f"request body over {self.max_body} bytes"})
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # FastAPI turns other errors while reading the body into a 400
                    raise HTTPException(413, detail=f"request body over {self.max_body} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:  # raised by limited_receive outside a route's body parsing
            if started or exc.status_code != 413:
                raise
            await _send_json(send, 413, {"detail": exc.detail})

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
        return False


def method_label(method: str) -> str:
    """The request counter's label for an HTTP method: one of METHODS, or "other"."""
    return method if method in METHODS else "other"


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's errors as loc, msg and type only: the input (and the ctx that may quote it) stays out."""
    return [
        {
            "loc": [part if isinstance(part, int) else _printable(str(part)) for part in error.get("loc", ())],
            "msg": _printable(str(error.get("msg", ""))),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


def _printable(text: str) -> str:
    """Text that encodes as UTF-8 (a lone surrogate from the request becomes an escape)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """The 422 of an invalid request, without its input."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": validation_errors(errors)}, status_code=422)


class BodyParsingRoute(APIRoute):
    """A route whose body that is no decodable JSON is a 422 like any malformed body.

    FastAPI answers a body it fails to decode for reasons other than JSON syntax with a 400: bytes that are not UTF-8,
    an integer past Python's 4300-digit limit, nesting deeper than the recursion limit.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_or_422(request: Request) -> Response:
            try:
                return await handler(request)
            except StarletteHTTPException as exc:  # FastAPI raises Starlette's, `from` the decoding error
                cause = exc.__cause__
                if exc.status_code != 400 or cause is None or isinstance(cause, StarletteHTTPException):
                    raise
                # (a UnicodeDecodeError's text quotes the body; the others' texts name only the limit)
                reason = "the body is not UTF-8" if isinstance(cause, UnicodeDecodeError) else str(cause)[:200]
                error = {"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {reason}"}
                raise RequestValidationError([error]) from None

        return parse_or_422


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_app(settings: Settings) -> FastAPI:
    """The query service for these settings (the server's one settings object)."""
    metrics = ServiceMetrics(os.environ.get(MULTIPROC_ENV) or None)
    ann = retrieval.AnnQuery.from_settings(settings)
    QueryRequest = request_model(settings)

    def on_switch(snapshot: Snapshot) -> None:
        metrics.served_version.labels(settings.table).set(snapshot.version)
        metrics.switches.inc()

    index = ProductionIndex(settings, on_switch)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        index.start()  # loads production's model (each version is queried with the model it was embedded with)
        served = index.current.spec if index.current and index.current.spec else None
        state["dim"] = embedding.embedding_dim(served or embedding.embed_spec(settings))
        writer = None
        if settings.query_log_table:
            writer = QueryLogWriter.from_settings(index.store, settings, state["dim"])
        state["log"] = writer
        try:
            yield
        finally:
            index.stop()
            if writer:
                writer.close()
            metrics.process_exited()

    app = FastAPI(
        title="ragops query service",
        version="1",
        description=f"Retrieval (and optional answers) from the `production` version of table `{settings.table}`.",
        lifespan=lifespan,
    )
    app.router.route_class = BodyParsingRoute  # the routes below: an undecodable body is a 422 too
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_middleware(
        GuardMiddleware,
        token=settings.api_token.get_secret_value(),
        max_body=settings.serve_max_body_bytes,
        metrics=metrics,
    )
    if settings.cors_origins:  # added last, so it runs first: browsers send preflights without the token
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )

    def serving() -> Snapshot:
        snapshot = index.current
        if snapshot is None:
            raise HTTPException(503, detail=f"no production version to serve: {index.problem}")
        return snapshot

    @app.post("/query", response_model=QueryResponse)
    def query(request: QueryRequest) -> QueryResponse:  # type: ignore[valid-type]
        """Retrieve the top-k chunks of the production version; with `generate`, answer from them."""
        body: Any = request
        snapshot = serving()  # taken once: every row below comes from this version
        started = time.perf_counter()
        try:
            mode, gated = served_mode(body.mode, snapshot, settings.serve_any_mode)
        except UngatedModeError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        spec = snapshot.spec or embedding.embed_spec(settings)
        vector = embedding.embed_texts([body.question], spec, role="query")[0]
        base, weight = retrieval.split_mode(mode)  # production's mode may be a weighted fusion: 'hybrid@0.7'
        hits = retrieval.search(
            snapshot.table, body.question, spec, base, body.k, weight, ann, query_vector=vector, similarity=True
        )
        answer, answerer, status, detail = None, None, 200, ""
        if body.generate:
            generator = state.get("answerer") or state.setdefault("answerer", make_answerer(settings))
            answerer = generator.name
            try:
                answer = generator.answer(body.question, [h.text for h in hits])
            except Exception as exc:  # the LLM endpoint failed: say so, never echo its key
                status = 502
                detail = _redact(f"answer generation failed: {type(exc).__name__}: {exc}", settings)
        latency_ms = (time.perf_counter() - started) * 1000
        response = QueryResponse(
            query_id=uuid.uuid4().hex,
            table=settings.table,
            version=snapshot.version,
            mode=mode,
            gated=gated,
            chunks=[Hit(**h.__dict__) for h in hits],
            answer=answer,
            answerer=answerer,
            latency_ms=round(latency_ms, 3),
        )
        writer = state.get("log")
        _log_query(writer, response, body.question, body.k, vector, hits, status)
        if writer:  # kept current here too: with several workers a scrape reaches only one of them
            metrics.log_dropped.set(writer.dropped)
        if hits and hits[0].similarity is not None:
            metrics.similarity.observe(hits[0].similarity)
        if status != 200:
            raise HTTPException(status, detail=detail)
        return response

    @app.get("/health")
    def health() -> JSONResponse:
        """200 while a production version is served, 503 (with the reason) otherwise. Needs no token.

        `degraded` (still 200: the server answers, so a load balancer keeps routing to it) when the last refreshes
        could not read where `production` points: the version served may no longer be production.
        """
        snapshot, failure = index.current, index.refresh_failure
        if snapshot is None:
            return JSONResponse({"status": "unavailable", "table": settings.table, "reason": index.problem}, 503)
        body = {"status": "ok", "table": settings.table, "version": snapshot.version}
        if failure is not None:
            body |= {"status": "degraded", "mode": snapshot.mode, "refresh": refresh_report(failure)}
        return JSONResponse(body)

    @app.get("/version")
    def version() -> dict[str, Any]:
        """The version being served, its retrieval mode and since when."""
        snapshot = serving()
        return {
            "table": settings.table,
            "version": snapshot.version,
            "mode": snapshot.mode,
            "serving_since": snapshot.since.isoformat(),
            "embedding_model": snapshot.spec.model_name if snapshot.spec else None,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        """Request counts, latency histogram, errors and the served version, in Prometheus text format."""
        writer = state.get("log")
        metrics.log_dropped.set(writer.dropped if writer else 0)
        return PlainTextResponse(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.state.index = index
    app.state.query_log = state
    return app


def exposure_refusal(host: str, token_set: bool, insecure: bool) -> str | None:
    """Why `ragops serve` must not listen on `host` (a non-loopback address without a token), or None when it may."""
    if token_set or insecure or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} without authentication: anyone who reaches it can query the table. Set "
        "RAGOPS_API_TOKEN, listen on 127.0.0.1, or pass --insecure to serve without a token all the same"
    )


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (`localhost`, 127.0.0.0/8, ::1); a name or 0.0.0.0 is not."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def refresh_report(failure: RefreshFailure) -> dict[str, Any]:
    """A failing refresh as /health shows it."""
    return {
        "error": failure.error,
        "failing_since": failure.since.isoformat(),
        "consecutive_failures": failure.consecutive,
    }


def app_from_env() -> FastAPI:
    """App factory for `uvicorn --factory` (several worker processes): settings from the environment.

    With several workers, PROMETHEUS_MULTIPROC_DIR must name one empty directory for all of them before they start
    (`ragops serve --workers N` makes one and removes it at exit); without it each worker counts alone.
    """
    return create_app(Settings())


def _log_query(
    writer: QueryLogWriter | None,
    response: QueryResponse,
    question: str,
    k: int,
    vector: np.ndarray,
    hits: list[retrieval.SearchHit],
    status: int,
) -> None:
    if writer is None:
        return
    similarities = [h.similarity for h in hits if h.similarity is not None]
    writer.record(
        LoggedQuery(
            query_id=response.query_id,
            at=datetime.now(UTC),
            table=response.table,
            version=response.version,
            mode=response.mode,
            k=k,
            question=question,
            retrieved_ids=[h.chunk_id for h in hits],
            scores=[h.score for h in hits],
            top1_similarity=hits[0].similarity if hits else None,
            best_similarity=max(similarities) if similarities else None,
            latency_ms=response.latency_ms,
            answer=response.answer,
            status=status,
            vector=vector,
        )
    )


def _redact(text: str, settings: Settings) -> str:
    from tasks.serve.answering import redact_secrets

    return redact_secrets(text, settings)
