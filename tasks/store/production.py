"""Where `production` points, read and changed under the table's promotion lock (the serving and evaluation
layers both read it; only evaluations/promotion.py changes it)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tasks.settings import Settings
from tasks.store import lancedb_store
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


def production_state(db: Any, settings: Settings) -> ProductionState:
    """The current production version and mode (None before the first promotion)."""
    with promotion_lock(settings, exclusive=False):  # not between a tag move and its log record
        table = db.open_table(settings.table)
        version = lancedb_store.tagged_version(table, lancedb_store.PRODUCTION_TAG)
        records = lancedb_store.promotion_records(db, settings.promotions_table, settings.table)
    return ProductionState(version, mode_of(records, version))


def mode_of(records: list[dict[str, Any]], version: int | None) -> str | None:
    """The retrieval mode `version` was last made production with (None when it never was)."""
    return next((r["mode"] for r in reversed(records) if r["action"] in MOVES and r["version"] == version), None)


def move_production(
    db: Any,
    settings: Settings,
    table: Any,
    *,
    action: str,
    to: int,
    previous: int,
    run_id: str,
    trigger: str,
    reason: str,
    mode: str | None,
) -> None:
    """Point `production` at `to` and log the move (a rollback or a maintenance move: no gate decision of its own).
    The caller holds the promotion lock."""
    lancedb_store.tag_version(table, lancedb_store.PRODUCTION_TAG, to)
    lancedb_store.append_promotion_record(
        db,
        settings.promotions_table,
        {
            "table": settings.table,
            "action": action,
            "version": to,
            "previous_version": previous,
            "mode": mode,
            "run_id": run_id,
            "trigger": trigger,
            "reasons": json.dumps([reason]),
            "metrics": "{}",
            "policy_hash": "",
            "report": "",
            "golden_hash": "",
            "details": "{}",
        },
    )


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
