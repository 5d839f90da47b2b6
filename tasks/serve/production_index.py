"""The production index a server answers from: the table checked out at the version tagged `production`.

A snapshot (version, mode, checked-out table) is never changed once made. When the tag moves (promotion or
rollback), a new snapshot is opened and warmed, then swapped in by one reference assignment: a request takes the
current snapshot once and uses it throughout, so it never mixes two versions, and the version it reports is the one
whose rows it returned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tasks.settings import Settings
from tasks.store import lancedb_store
from tasks.store.production import production_state

log = logging.getLogger(__name__)
DEFAULT_MODE = "hybrid"


@dataclass(frozen=True)
class Snapshot:
    """One production version, ready to query."""

    version: int
    mode: str  # the retrieval mode it was promoted with
    table: Any  # a LanceDB table checked out at `version`
    since: datetime  # when this server started serving it


class ProductionIndex:
    """Follows the `production` tag: `current` is the snapshot to serve, or None before the first promotion."""

    def __init__(self, settings: Settings, on_switch: Callable[[Snapshot], None] | None = None) -> None:
        self.settings = settings
        self.db = lancedb_store.connect(settings)
        self.current: Snapshot | None = None
        self.problem = "not loaded yet"  # why there is no snapshot, for /health
        self.on_switch = on_switch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    def refresh(self) -> Snapshot | None:
        """Check the tag; when it moved, open the new version and swap it in. Returns the current snapshot."""
        with self._refresh_lock:
            settings = self.settings
            if not lancedb_store.table_exists(self.db, settings.table):
                self.problem = f"no table {settings.table!r} at {settings.lancedb_uri}: ingest and promote first"
                return self.current
            state = production_state(self.db, settings)  # version and mode read together, under the promotion lock
            if state.version is None:
                self.problem = f"no version of {settings.table!r} is tagged production yet: run `ragops promote`"
                return self.current
            mode = state.mode or DEFAULT_MODE  # a re-promotion may change the mode of the same version
            if self.current is not None and (self.current.version, self.current.mode) == (state.version, mode):
                return self.current
            table = lancedb_store.open_table(self.db, settings.table, state.version)
            table.count_rows()  # open its files before the first request needs them
            snapshot = Snapshot(state.version, mode, table, datetime.now(UTC))
            previous, self.current = self.current, snapshot
            log.info(
                "serving %s version %d (%s)%s",
                settings.table,
                snapshot.version,
                snapshot.mode,
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
        """Stop following the tag."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.serve_refresh_s):
            self._safe_refresh()

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # a store hiccup must not stop the server: keep serving the current snapshot
            self.problem = f"could not read the production tag: {exc}"
            log.warning("%s", self.problem)
