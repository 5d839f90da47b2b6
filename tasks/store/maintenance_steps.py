"""The `maintain` flow's tasks: each a thin wrapper over tasks/store/maintenance.py, logging what it did."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.settings import Settings
from tasks.store import maintenance
from tasks.store.maintenance_report import MaintenanceReport, mb, report_markdown
from tasks.store.retention import RetentionPlan


@task(name="measure-table", cache_policy=NO_CACHE)
def measure(settings: Settings) -> maintenance.Measured:
    """Bytes on disk, versions and fragments."""
    measured = maintenance.measure(maintenance.open_table_dataset(settings))
    storage = measured.storage
    get_run_logger().info(
        "%s: %s on disk in %d files, %d versions, %d fragments",
        settings.table,
        mb(storage.bytes),
        storage.files,
        len(storage.versions),
        storage.fragments,
    )
    return measured


@task(name="compact-table", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)  # a concurrent index build
def compact(settings: Settings, dry_run: bool) -> maintenance.CompactionResult:
    """Merge small fragments, drop deleted rows, bring the indexes up to date."""
    result = maintenance.compact(settings, dry_run)
    verb = "would rewrite" if dry_run else "rewrote"
    get_run_logger().info(
        "compaction %s %d fragments: %d → %d%s",
        verb,
        result.rewritten,
        result.fragments_before,
        result.fragments_after,
        f", version {result.version}" if result.version else "",
    )
    for action in result.index_actions:
        get_run_logger().info(action)
    return result


@task(name="follow-production", cache_policy=NO_CACHE)
def follow_production(
    settings: Settings, compacted: int, run_id: str, probe: maintenance.Probe | None
) -> maintenance.Follow:
    """Move production to the compacted version if its rows and probe results are identical."""
    follow = maintenance.follow_production(settings, compacted, run_id, probe)
    get_run_logger().info("production %s", follow.note)
    return follow


@task(name="plan-retention", cache_policy=NO_CACHE)
def plan_retention(settings: Settings) -> RetentionPlan:
    """What retention would delete and remove now (the dry run)."""
    return maintenance.plan(settings, maintenance.open_table_dataset(settings))


@task(name="apply-retention", cache_policy=NO_CACHE)
def apply_retention(
    settings: Settings, left_production: int | None
) -> tuple[RetentionPlan, maintenance.RetentionResult]:
    """Delete dropped candidate tags; remove unkept versions with Lance's cleanup."""
    decided, result = maintenance.apply_retention(settings, left_production=left_production)
    get_run_logger().info(
        "retention: deleted %d tags, removed %d versions, %s freed",
        len(result.deleted_tags),
        len(result.removed_versions),
        mb(result.bytes_removed),
    )
    return decided, result


@task(name="expire-query-log", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)  # a server's appends
def expire_query_log(settings: Settings, dry_run: bool) -> maintenance.LogExpiry:
    """Delete served queries past `query_log_retention_days`; rewrite the log so no file keeps one."""
    expiry = maintenance.expire_query_log(settings, dry_run)
    get_run_logger().info("query log %s: %s", expiry.table or "(none)", expiry.note)
    return expiry


@task(name="publish-maintenance", cache_policy=NO_CACHE)
def publish(report: MaintenanceReport) -> None:
    """The report as a markdown artifact, and the tags with their reasons as a table artifact."""
    key = "".join(ch if ch.isalnum() else "-" for ch in report.table.lower())
    create_markdown_artifact(
        key=f"maintenance-{key}", markdown=report_markdown(report), description=f"maintenance of {report.table}"
    )
    create_table_artifact(
        key=f"maintenance-tags-{key}", table=report.tags, description="every tag, kept or deleted, and why"
    )
