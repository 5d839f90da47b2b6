"""What a maintenance run did (or, dry, would do): the summary `ragops maintain` prints and the flow publishes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tasks import markdown as md
from tasks.store.maintenance import CompactionResult, LogExpiry, Measured, RetentionResult
from tasks.store.retention import RetentionPlan


class MaintenanceReport(BaseModel):
    """Tags deleted and kept with their reasons, versions removed, bytes and fragments before and after."""

    table: str
    dry_run: bool
    run_id: str
    tags: list[dict[str, Any]]  # tag, version, action (kept / deleted / would delete), reason
    versions_before: int
    versions_after: int
    versions_removed: list[int]
    bytes_before: int
    bytes_after: int
    bytes_reclaimed: int
    fragments_before: int
    fragments_after: int
    fragments_rewritten: int
    compacted_version: int | None
    indexed_version: int | None
    index_actions: list[str]
    production_moved: list[int] | None  # [from, to] when production followed the compaction
    production_note: str  # why production moved or stayed
    kept_versions: dict[int, list[str]]
    query_log: LogExpiry | None = None  # the served-query log's retention
    seconds: float

    def rows(self) -> list[tuple[str, str]]:
        """The summary as label/value pairs."""
        verb = "would " if self.dry_run else ""
        return [
            ("tags deleted", f"{verb}{len([t for t in self.tags if 'delete' in t['action']])}"),
            ("tags kept", str(len([t for t in self.tags if t["action"] == "kept"]))),
            ("tags created", f"{verb}{len([t for t in self.tags if 'create' in t['action']])}"),
            ("versions", f"{self.versions_before} → {self.versions_after} ({verb}remove {len(self.versions_removed)})"),
            ("bytes on disk", f"{mb(self.bytes_before)} → {mb(self.bytes_after)}"),
            ("bytes reclaimed", f"{verb}{mb(self.bytes_reclaimed)}"),
            (
                "fragments",
                f"{self.fragments_before} → {self.fragments_after} ({verb}rewrite {self.fragments_rewritten})",
            ),
            ("compacted version", "none" if self.compacted_version is None else str(self.compacted_version)),
            ("indexes", "; ".join(self.index_actions) or "up to date"),
            ("production", self.production_note),
            ("query log", self.query_log_line()),
            ("seconds", f"{self.seconds:.1f}"),
        ]

    def query_log_line(self) -> str:
        """The query log's retention in one line."""
        log = self.query_log
        if log is None or not log.bytes_before:
            return log.note if log else "not checked"
        return f"{log.table}: {log.note}; {mb(log.bytes_before)} → {mb(log.bytes_after)}"


def mb(n: int) -> str:
    """Bytes as MB with two decimals."""
    return f"{n / 1e6:.2f} MB"


def build_report(
    *,
    table: str,
    dry_run: bool,
    run_id: str,
    before: Measured,
    after: Measured,
    compaction: CompactionResult,
    decided: RetentionPlan,
    result: RetentionResult,
    production_moved: list[int] | None,
    production_note: str,
    seconds: float,
    query_log: LogExpiry | None = None,
) -> MaintenanceReport:
    """The report of one run. In a dry run, `after` is `before` less the files the removed versions alone hold."""
    deleted = "would delete" if dry_run else "deleted"
    tags = [
        {"tag": t.tag, "version": t.version, "action": "kept" if t.keep else deleted, "reason": t.reason}
        for t in decided.tags
    ] + [
        {"tag": t.tag, "version": t.version, "action": "would create" if dry_run else "created", "reason": t.reason}
        for t in decided.created
    ]
    bytes_after = before.storage.bytes - result.bytes_removed if dry_run else after.storage.bytes
    return MaintenanceReport(
        table=table,
        dry_run=dry_run,
        run_id=run_id,
        tags=tags,
        versions_before=len(before.storage.versions),
        versions_after=len(before.storage.versions) - len(result.removed_versions)
        if dry_run
        else len(after.storage.versions),
        versions_removed=result.removed_versions,
        bytes_before=before.storage.bytes,
        bytes_after=bytes_after,
        bytes_reclaimed=result.bytes_removed,
        fragments_before=compaction.fragments_before,
        fragments_after=compaction.fragments_after,
        fragments_rewritten=compaction.rewritten,
        compacted_version=compaction.version,
        indexed_version=compaction.indexed_version,
        index_actions=compaction.index_actions,
        production_moved=production_moved,
        production_note=production_note,
        kept_versions=decided.kept,
        query_log=query_log,
        seconds=seconds,
    )


def report_markdown(report: MaintenanceReport) -> str:
    """The Prefect artifact: the summary, then every tag with its reason, then the versions removed (names, reasons
    and notes through tasks/markdown.py)."""
    title = "Maintenance (dry run: nothing changed)" if report.dry_run else "Maintenance"
    lines = [f"# {title}: {md.code(report.table)}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {md.cell(value)} |" for name, value in report.rows()]
    lines += ["", "## Tags", "", "| tag | version | action | reason |", "|---|---:|---|---|"]
    lines += [
        f"| {md.code(t['tag'], in_table=True)} | {t['version']} | {md.cell(t['action'])} | {md.cell(t['reason'])} |"
        for t in report.tags
    ]
    removed = ", ".join(str(v) for v in report.versions_removed) or "none"
    lines += ["", f"**Versions {'to remove' if report.dry_run else 'removed'}:** {removed}", ""]
    if report.index_actions:
        lines += ["**Indexes:** " + md.text("; ".join(report.index_actions)), ""]
    return "\n".join(lines)
