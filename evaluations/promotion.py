"""Move the `production` tag and keep the append-only promotion log consistent with it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tasks import lancedb_store
from tasks.errors import RagopsError
from tasks.settings import Settings


class NothingToRollBackError(RagopsError):
    """There is no earlier promoted version to go back to."""


@dataclass(frozen=True)
class ProductionState:
    """What production is now: the tagged version and the retrieval mode it was promoted with."""

    version: int | None
    mode: str | None


def production_state(db: Any, settings: Settings) -> ProductionState:
    """The current production version and mode (None before the first promotion)."""
    table = db.open_table(settings.table)
    version = lancedb_store.tagged_version(table, lancedb_store.PRODUCTION_TAG)
    mode = None
    for record in reversed(lancedb_store.promotion_records(db, settings.promotions_table, settings.table)):
        if record["action"] in ("promote", "rollback") and record["version"] == version:
            mode = record["mode"]
            break
    return ProductionState(version, mode)


def production_history(records: list[dict[str, Any]]) -> list[int]:
    """Versions that were production, oldest first, replaying promotions (push) and rollbacks (pop)."""
    stack: list[int] = []
    for record in records:
        if record["action"] == "promote":
            stack.append(int(record["version"]))
        elif record["action"] == "rollback" and stack:
            stack.pop()
    return stack


def record_decision(
    db: Any,
    settings: Settings,
    *,
    version: int,
    mode: str,
    decision: dict[str, Any],
    metrics: dict[str, Any],
    policy_hash: str,
    run_id: str,
    trigger: str,
    report: str,
) -> str:
    """Promote (move the tag, then log) or log the block; returns the action taken."""
    table = db.open_table(settings.table)
    previous = lancedb_store.tagged_version(table, lancedb_store.PRODUCTION_TAG)
    action = "promote" if decision["decision"] == "promote" else "block"
    if action == "promote":
        lancedb_store.tag_version(table, lancedb_store.PRODUCTION_TAG, version)
    lancedb_store.append_promotion_record(
        db,
        settings.promotions_table,
        {
            "table": settings.table,
            "action": action,
            "version": version,
            "previous_version": previous,
            "mode": mode,
            "run_id": run_id,
            "trigger": trigger,
            "reasons": json.dumps(decision["reasons"]),
            "metrics": json.dumps(metrics),
            "policy_hash": policy_hash,
            "report": report,
        },
    )
    return action


def rollback(db: Any, settings: Settings, run_id: str, trigger: str) -> tuple[int, int]:
    """Move production back to the previously promoted version; returns (from, to)."""
    table = db.open_table(settings.table)
    current = lancedb_store.tagged_version(table, lancedb_store.PRODUCTION_TAG)
    records = lancedb_store.promotion_records(db, settings.promotions_table, settings.table)
    history = production_history(records)
    if current is None or len(history) < 2:
        raise NothingToRollBackError(f"table {settings.table!r} has no earlier promoted version to roll back to")
    target = history[-2]
    mode = next((r["mode"] for r in reversed(records) if r["version"] == target and r["action"] != "block"), None)
    lancedb_store.tag_version(table, lancedb_store.PRODUCTION_TAG, target)
    lancedb_store.append_promotion_record(
        db,
        settings.promotions_table,
        {
            "table": settings.table,
            "action": "rollback",
            "version": target,
            "previous_version": current,
            "mode": mode,
            "run_id": run_id,
            "trigger": trigger,
            "reasons": json.dumps([f"rolled back from version {current}"]),
            "metrics": "{}",
            "policy_hash": "",
            "report": "",
        },
    )
    return current, target
