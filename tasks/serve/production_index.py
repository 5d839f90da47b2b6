"""The production index a server answers from: the table checked out at the version tagged `production`.

A snapshot (version, mode, checked-out table, and the embedding model that version was made with) is never changed
once made. When the tag moves (promotion or rollback), a new snapshot is opened and warmed (its model loaded), then
swapped in by one reference assignment: a request takes the
current snapshot once and uses it throughout, so it never mixes two versions, and the version it reports is the one
whose rows it returned.

While it serves a version, the server keeps a staging heartbeat naming it (`serve-<id>` beside the other runs'), so
`ragops maintain` keeps that version even after `production` moved on, until this server has followed the tag. A
refresh that fails leaves the current snapshot in service and is reported (`refresh_failure`) for /health.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

from tasks.embed.embedding import EmbedSpec, embed_texts
from tasks.serve.query_model import version_spec
from tasks.settings import Settings
from tasks.store import fragments
from tasks.store.backends import open_store
from tasks.store.interface import TableVersion
from tasks.store.production import production_state

log = logging.getLogger(__name__)
DEFAULT_MODE = "hybrid"
MAX_ERROR_CHARS = 500  # a refresh error is shown on /health: long store errors are cut


@dataclass(frozen=True)
class Snapshot:
    """One production version, ready to query."""

    version: int
    mode: str  # the retrieval mode it was promoted with
    table: TableVersion  # the chunk table at `version`
    since: datetime  # when this server started serving it
    spec: EmbedSpec | None = None  # how questions are embedded for it: the version's own model (query side)


@dataclass(frozen=True)
class RefreshFailure:
    """Why the last refreshes could not read where `production` points (secrets removed), since when, how often."""

    error: str
    since: datetime  # the first failure of this run of failures
    consecutive: int


class ProductionIndex:
    """Follows the `production` tag: `current` is the snapshot to serve, or None before the first promotion."""

    def __init__(self, settings: Settings, on_switch: Callable[[Snapshot], None] | None = None) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.current: Snapshot | None = None
        self.problem = "not loaded yet"  # why there is no snapshot, for /health
        self.refresh_failure: RefreshFailure | None = None  # None while the tag is read fine
        self.on_switch = on_switch
        self.run_id = f"serve-{uuid.uuid4().hex[:12]}"  # this process's heartbeat beside the ingest runs'
        self._heartbeat = ExitStack()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    def refresh(self) -> Snapshot | None:
        """Check the tag; when it moved, open the new version and swap it in. Returns the current snapshot."""
        with self._refresh_lock:
            settings = self.settings
            if not self.store.exists():
                return self._failed(f"no table {settings.table!r} at {self.store.location}: ingest and promote first")
            state = production_state(self.store, settings)  # version and mode read together, under the promotion lock
            if state.version is None:
                return self._failed(f"no version of {settings.table!r} is tagged production yet: run `ragops promote`")
            self.refresh_failure = None
            mode = state.mode or DEFAULT_MODE  # a re-promotion may change the mode of the same version
            if self.current is not None and (self.current.version, self.current.mode) == (state.version, mode):
                return self.current
            table = self.store.at(state.version)
            table.count()  # open its files before the first request needs them
            spec = version_spec(settings, state.version)
            embed_texts(["warm up"], spec, role="query")  # load its model before a request needs it
            snapshot = Snapshot(state.version, mode, table, datetime.now(UTC), spec)
            previous, self.current = self.current, snapshot
            self._beat_for(snapshot.version)
            log.info(
                "serving %s version %d (%s, embedded with %s)%s",
                settings.table,
                snapshot.version,
                snapshot.mode,
                spec.model_name,
                f", was {previous.version}" if previous else "",
            )
            if self.on_switch:
                self.on_switch(snapshot)
            return snapshot

    def start(self) -> None:
        """Load production now and keep following the tag every `serve_refresh_s` seconds."""
        self._safe_refresh()
        self._thread = threading.Thread(target=self._follow, name="production-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following the tag, and withdraw the heartbeat (nothing of the store is read any more)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._heartbeat.close()
        if self.current is not None:
            fragments.clear_staging(self.settings, self.settings.table, self.run_id)

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.serve_refresh_s):
            self._safe_refresh()

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # a store hiccup must not stop the server: keep serving the current snapshot
            with self._refresh_lock:
                self._failed(f"could not read the production tag: {type(exc).__name__}: {exc}")

    def _failed(self, problem: str) -> Snapshot | None:
        """Note a refresh that could not tell where production points; the current snapshot stays in service."""
        problem = without_secrets(problem, self.settings)[:MAX_ERROR_CHARS]
        self.problem = problem
        earlier = self.refresh_failure
        self.refresh_failure = RefreshFailure(
            problem, earlier.since if earlier else datetime.now(UTC), earlier.consecutive + 1 if earlier else 1
        )
        if self.current is not None and (earlier is None or earlier.error != problem):  # not every refresh
            log.warning("still serving version %d: %s", self.current.version, problem)
        return self.current

    def _beat_for(self, version: int) -> None:
        """Name `version` in this server's heartbeat, so maintenance keeps it while this server may read it."""
        self._heartbeat.close()  # the old beat's file stays (naming the old version) until the new one writes
        try:
            beat = fragments.heartbeat(self.settings, self.settings.table, self.run_id, version, reader="server")
            self._heartbeat.enter_context(beat)
        except OSError as exc:  # a read-only store: serve all the same, without maintenance's protection
            log.warning("could not write the serving heartbeat for version %d: %s", version, exc)


def without_secrets(text: str, settings: Settings) -> str:
    """`text` with every secret setting's value (API token, LLM key, storage options) replaced."""
    secrets = [settings.api_token, settings.llm_api_key, *settings.storage_options.values()]
    for value in (secret.get_secret_value() for secret in secrets):
        if len(value) >= 6:  # short values are flags ("true") or regions, not secrets worth mangling the text for
            text = text.replace(value, "[redacted]")
    return text
