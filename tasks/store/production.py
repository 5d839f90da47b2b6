"""Where `production` points, read and changed under the table's promotion lock (the serving and evaluation
layers both read it; only evaluations/promotion.py changes it)."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.settings import Settings
from tasks.store import lancedb_store

_IN_PROCESS = threading.Lock()


@dataclass(frozen=True)
class ProductionState:
    """What production is now: the tagged version and the retrieval mode it was promoted with."""

    version: int | None
    mode: str | None


@contextmanager
def promotion_lock(settings: Settings, exclusive: bool = True) -> Iterator[None]:
    """Hold the table's promotion lock: exclusive to change production, shared to read tag and log together.

    On a local store this is an flock on `<uri>/<table>.promotion.lock`, which excludes other processes on the
    machine and other threads alike (each call opens the file anew). An object store has no such lock: there the
    in-process lock covers one process only, so run promotions and rollbacks one at a time (the deployments'
    `concurrency_limit: 1`, or a Prefect global concurrency limit shared by `promote`, `pipeline` and rollbacks).
    """
    if not settings.is_local_store:
        if exclusive:
            with _IN_PROCESS:
                yield
        else:
            yield
        return
    path = Path(settings.lancedb_uri.removeprefix("file://")) / f"{settings.table}.promotion.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:  # closing the file releases the lock, also when the holder dies
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def production_state(db: Any, settings: Settings) -> ProductionState:
    """The current production version and mode (None before the first promotion)."""
    with promotion_lock(settings, exclusive=False):  # not between a tag move and its log record
        table = db.open_table(settings.table)
        version = lancedb_store.tagged_version(table, lancedb_store.PRODUCTION_TAG)
        records = lancedb_store.promotion_records(db, settings.promotions_table, settings.table)
    mode = None
    for record in reversed(records):
        if record["action"] in ("promote", "rollback") and record["version"] == version:
            mode = record["mode"]
            break
    return ProductionState(version, mode)
