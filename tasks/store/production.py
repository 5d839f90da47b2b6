"""Where `production` points, read and changed under the table's promotion lock.

This is the only module that moves the `production` tag and writes the promotion log: promotion and rollback
(evaluations/promotion.py) and maintenance following a compaction (tasks/store/maintenance.py) call
`record_action`, which moves the tag and appends the log record together, so the log replays to the tag.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tasks import events
from tasks.settings import Settings
from tasks.store.interface import PRODUCTION_TAG, Store
from tasks.store.locks import table_lock

_IN_PROCESS = threading.Lock()
MOVES = ("promote", "rollback", "maintain")  # log actions that move the production tag ("block" moves nothing)


@dataclass(frozen=True)
class ProductionState:
    """What production is now: the tagged version and the retrieval mode it was promoted with."""

    version: int | None
    mode: str | None


@contextmanager
def promotion_lock(settings: Settings, exclusive: bool = True) -> Iterator[None]:
    """Hold the table's promotion lock: exclusive to change production, shared to read tag and log together.

    A local store's lock is a file lock; an object store's is a Prefect global concurrency limit, which holds across
    machines (tasks/store/locks.py). Within one process a thread lock is taken as well.
    """
    if exclusive:
        with _IN_PROCESS, table_lock(settings, "promotion"):
            yield
    else:
        with table_lock(settings, "promotion", exclusive=False):
            yield


def production_state(store: Store, settings: Settings) -> ProductionState:
    """The current production version and mode (None before the first promotion)."""
    with promotion_lock(settings, exclusive=False):  # not between a tag move and its log record
        version = store.tagged(PRODUCTION_TAG)
        records = store.log_records(settings.promotions_table)
    return ProductionState(version, mode_of(records, version))


def mode_of(records: list[dict[str, Any]], version: int | None) -> str | None:
    """The retrieval mode `version` was last made production with (None when it never was)."""
    return next((r["mode"] for r in reversed(records) if r["action"] in MOVES and r["version"] == version), None)


def record_action(
    store: Store,
    settings: Settings,
    *,
    action: str,
    version: int,
    previous: int | None,
    mode: str | None,
    run_id: str,
    trigger: str,
    reasons: list[str],
    metrics: dict[str, Any] | None = None,
    policy_hash: str = "",
    report: str = "",
    golden_hash: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """Point `production` at `version` when the action moves it (MOVES: a block moves nothing), then append the
    action's record to the promotion log: a gate decision with its metrics, or a move with no decision of its own.
    The caller holds the promotion lock."""
    if action in MOVES:
        store.tag(PRODUCTION_TAG, version)
    record = {
        "table": store.table,
        "action": action,
        "version": version,
        "previous_version": previous,
        "mode": mode,
        "run_id": run_id,
        "trigger": trigger,
        "reasons": json.dumps(reasons),
        "metrics": json.dumps(metrics or {}),
        "policy_hash": policy_hash,
        "report": report,
        "golden_hash": golden_hash,
        "details": json.dumps(details or {}, default=str),
    }
    store.append_log(settings.promotions_table, record)
    if action in MOVES:
        events.production_moved(settings, action, version, previous, run_id, trigger)


def production_history(records: list[dict[str, Any]]) -> list[int]:
    """Versions that were production, oldest first, replaying the log: a promotion pushes, a rollback pops, and a
    maintenance move (production following a compaction to a version with identical rows) replaces the top."""
    stack: list[int] = []
    for record in records:
        if record["action"] == "promote":
            stack.append(int(record["version"]))
        elif record["action"] == "rollback" and stack:
            stack.pop()
        elif record["action"] == "maintain" and stack and stack[-1] == record["previous_version"]:
            stack[-1] = int(record["version"])
    return stack


def same_data_as(records: list[dict[str, Any]], version: int | None) -> set[int | None]:
    """`version` and every version maintenance moved production to from it (identical rows, checked then)."""
    same = {version}
    for record in records:
        if record["action"] == "maintain" and record["previous_version"] in same:
            same.add(int(record["version"]))
    return same
