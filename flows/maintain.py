"""Maintain flow: compaction, index upkeep, retention and cleanup of the chunk table (weekly in prefect.yaml), and
the query log's retention (its expired rows deleted and rewritten out of every file).

Production follows a compaction only to a version with identical rows (logged as `maintain`, not a promotion);
retention never removes production, the rollback depth or a young candidate (tasks/store/retention.py).
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from tasks.progress import report_progress
from tasks.run_names import namer
from tasks.serve.result_check import differing_queries
from tasks.settings import Settings
from tasks.store import maintenance_steps as steps
from tasks.store.maintenance import CompactionResult, Measured, RetentionResult
from tasks.store.maintenance_report import build_report
from tasks.store.retention import RetentionPlan

STAGES = 6


def follow_compaction(
    settings: Settings, compaction: CompactionResult, run_id: str, dry_run: bool
) -> tuple[int | None, str]:
    """Move production to the compacted version when its rows and probe results are identical: the version it left
    (None when it did not move) and what happened."""
    if compaction.version is None or dry_run:
        return None, "unchanged (dry run)" if dry_run else "unchanged (nothing compacted)"
    follow = steps.follow_production(
        settings, compaction.version, run_id, partial(differing_queries, settings=settings)
    )
    return follow.left, follow.note


def retention(
    settings: Settings, before: Measured, left: int | None, dry_run: bool
) -> tuple[RetentionPlan, RetentionResult]:
    """Which tags and versions go (with their reasons), and what went: in a dry run, what would."""
    if not dry_run:
        return steps.apply_retention(settings, left)
    decided = steps.plan_retention(settings)
    return decided, RetentionResult(
        [t.tag for t in decided.deleted_tags], decided.removed, before.reclaimable(decided.removed)
    )


@flow(name="maintain", flow_run_name=namer("maintain"), persist_result=True, result_serializer="json")
def maintain(table: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Compact the table, bring its indexes up to date, delete expired candidate tags, remove unkept versions and
    delete the served queries older than the query log's retention. `dry_run=True` changes nothing and reports what
    would be done."""
    settings = Settings().model_copy(update={"table": table} if table else {})
    run_id, started = str(flow_run.id or uuid.uuid4()), time.perf_counter()
    report_progress("maintain", 0, STAGES)
    before = steps.measure(settings)
    report_progress("maintain", 1, STAGES)
    compaction = steps.compact(settings, dry_run)
    report_progress("maintain", 2, STAGES)
    left, note = follow_compaction(settings, compaction, run_id, dry_run)
    report_progress("maintain", 3, STAGES)
    decided, result = retention(settings, before, left, dry_run)
    report_progress("maintain", 4, STAGES)
    after = before if dry_run else steps.measure(settings)
    report_progress("maintain", 5, STAGES)
    expiry = steps.expire_query_log(settings, dry_run)
    report = build_report(
        table=settings.table,
        dry_run=dry_run,
        run_id=run_id,
        before=before,
        after=after,
        compaction=compaction,
        decided=decided,
        result=result,
        production_moved=[left, compaction.version] if left is not None and compaction.version else None,
        production_note=note,
        query_log=expiry,
        seconds=time.perf_counter() - started,
    )
    steps.publish(report)
    report_progress("maintain", STAGES, STAGES)
    return report.model_dump(mode="json")
