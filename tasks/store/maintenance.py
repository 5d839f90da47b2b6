"""Keep the chunk table small and fast: compaction, index upkeep, retention, and Lance's cleanup of old versions.

Each step is a plain function (the `maintain` flow runs them as tasks; the benchmark calls them directly):
- `measure`: bytes on disk, and per version its tags, size, unique bytes and fragments;
- `compact`: Lance's `compact_files` on the latest version, then the FTS and ANN indexes brought up to date, under
  the table's commit lock (an ingest commits before or after, never in between);
- `follow_production`: production moves to the compacted version only when it was the version compacted and the
  rows are identical (checked by digest), logged as a `maintain` entry, not a promotion;
- `apply_retention`: delete the candidate tags retention drops and remove exactly the versions it lists, with
  Lance's `cleanup_old_versions(versions=…)`, under the promotion lock (no tag moves meanwhile).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tasks.errors import RagopsError
from tasks.settings import Settings
from tasks.store import fragments, lancedb_store
from tasks.store.lance_reads import dataset_uri, open_dataset
from tasks.store.locks import table_lock
from tasks.store.production import production_history, promotion_lock
from tasks.store.retention import RetentionPlan, RetentionPolicy, age_in_days, plan_retention

log = logging.getLogger(__name__)


@dataclass
class VersionInfo:
    """One version as `ragops versions` shows it."""

    version: int
    timestamp: datetime
    tags: list[str]
    bytes: int  # every file the version references
    unique_bytes: int  # files no other version references: what removing it alone frees
    fragments: int | None
    rows: int | None


@dataclass
class Storage:
    """The table's files: what the disk holds and what each version references."""

    bytes: int
    files: int
    fragments: int  # of the latest version
    versions: list[VersionInfo]

    def reclaimable(self, removed: list[int], paths: dict[int, set[str]], sizes: dict[str, int]) -> int:
        """Bytes freed by removing these versions (files only they reference)."""
        gone = set(removed)
        keep: set[str] = set()
        drop: set[str] = set()
        for version, files in paths.items():
            (drop if version in gone else keep).update(files)
        return sum(sizes.get(path, 0) for path in drop - keep)


@dataclass
class Measured:
    """`Storage` plus the per-version file sets it was computed from (to price a removal without doing it)."""

    storage: Storage
    paths: dict[int, set[str]]
    sizes: dict[str, int]

    def reclaimable(self, removed: list[int]) -> int:
        return self.storage.reclaimable(removed, self.paths, self.sizes)


@dataclass
class CompactionResult:
    """What compaction did (or, in a dry run, would do)."""

    fragments_before: int
    fragments_after: int
    rewritten: int  # fragments rewritten
    version_before: int
    version: int | None  # the version compaction and index upkeep made; None when nothing was done
    index_actions: list[str] = field(default_factory=list)


@dataclass
class RetentionResult:
    """What retention did: tags deleted, versions removed and the bytes Lance's cleanup freed."""

    deleted_tags: list[str]
    removed_versions: list[int]
    bytes_removed: int


def open_table_dataset(settings: Settings) -> Any:
    """The chunk table's latest version as a Lance dataset; a clear error when there is none."""
    dataset = open_dataset(settings, settings.table)
    if dataset is None:
        raise RagopsError(f"no table {settings.table!r} at {settings.lancedb_uri}: nothing to maintain")
    return dataset


def measure(dataset: Any) -> Measured:
    """Bytes on disk (every file under the dataset) and, per version, its tags, size, unique bytes and fragments."""
    present = dataset.all_files().read_all()
    sizes = dict(zip(present.column("path").to_pylist(), present.column("size_bytes").to_pylist(), strict=True))
    tracked = dataset.tracked_files().read_all()
    paths: dict[int, set[str]] = defaultdict(set)
    for version, path in zip(tracked.column("version").to_pylist(), tracked.column("path").to_pylist(), strict=True):
        paths[int(version)].add(path)
    owners: dict[str, int] = defaultdict(int)
    for files in paths.values():
        for path in files:
            owners[path] += 1
    tags: dict[int, list[str]] = defaultdict(list)
    for tag, info in dataset.tags.list().items():
        tags[int(info["version"])].append(tag)
    infos = []
    for v in dataset.versions():
        number = int(v["version"])
        meta = v.get("metadata") or {}
        files = paths.get(number, set())
        infos.append(
            VersionInfo(
                version=number,
                timestamp=v["timestamp"],
                tags=sorted(tags.get(number, [])),
                bytes=sum(sizes.get(p, 0) for p in files),
                unique_bytes=sum(sizes.get(p, 0) for p in files if owners[p] == 1),
                fragments=int(meta["total_fragments"]) if "total_fragments" in meta else None,
                rows=int(meta["total_rows"]) if "total_rows" in meta else None,
            )
        )
    storage = Storage(sum(sizes.values()), len(sizes), len(dataset.get_fragments()), infos)
    return Measured(storage, dict(paths), sizes)


def compaction_options(settings: Settings) -> dict[str, Any]:
    """Lance compaction options from the settings."""
    return {
        "target_rows_per_fragment": settings.compact_target_rows,
        "materialize_deletions_threshold": settings.compact_deleted_fraction,
    }


def compact(settings: Settings, dry_run: bool = False) -> CompactionResult:
    """Merge small fragments and drop deleted rows, then bring the indexes up to date (rows never change).

    Runs under the table's commit lock, so an ingest's commit lands before or after it, never in between. A dry run
    only plans (Lance's `Compaction.plan`) and reports what would be rewritten.
    """
    import lance
    from lance.optimize import Compaction

    options = compaction_options(settings)
    with table_lock(settings, "commit"):
        dataset = lance.dataset(dataset_uri(settings, settings.table), storage_options=settings.storage_options or None)
        before = len(dataset.get_fragments())
        plan = Compaction.plan(dataset, options)
        rewritten = sum(len(task.fragments) for task in plan.tasks)
        if dry_run:
            return CompactionResult(
                before, before - rewritten + plan.num_tasks(), rewritten, int(dataset.version), None
            )
        made: int | None = None
        if plan.num_tasks():
            dataset.optimize.compact_files(**options)
            dataset = dataset.checkout_version(dataset.latest_version)
            made = int(dataset.version)
        table = lancedb_store.connect(settings).open_table(settings.table)
        actions, indexed = lancedb_store.maintain_indexes(table, settings, unindexed_fraction=0.0)
        made = indexed or made
        after = len(dataset.checkout_version(dataset.latest_version).get_fragments())
    return CompactionResult(before, after, rewritten, int(plan.read_version), made, actions)


def follow_production(settings: Settings, compacted: int, run_id: str) -> int | None:
    """Move `production` to the compacted version when every row is the same (chunk ids and vectors, by digest),
    logged as a `maintain` entry, not a promotion. Returns the version production left (None: it stays)."""
    db = lancedb_store.connect(settings)
    with promotion_lock(settings):
        table = db.open_table(settings.table)
        production = lancedb_store.tagged_version(table, lancedb_store.PRODUCTION_TAG)
        if production is None or production == compacted:
            return None
        before = lancedb_store.open_table(db, settings.table, production)
        after = lancedb_store.open_table(db, settings.table, compacted)
        if not lancedb_store.same_rows(before, after):
            log.info(
                "compacted version %d does not hold production's (%d) rows: production stays", compacted, production
            )
            return None
        records = lancedb_store.promotion_records(db, settings.promotions_table, settings.table)
        mode = next(
            (r["mode"] for r in reversed(records) if r["version"] == production and r["action"] != "block"), None
        )
        lancedb_store.tag_version(table, lancedb_store.PRODUCTION_TAG, compacted)
        lancedb_store.append_promotion_record(
            db,
            settings.promotions_table,
            {
                "table": settings.table,
                "action": "maintain",
                "version": compacted,
                "previous_version": production,
                "mode": mode,
                "run_id": run_id,
                "trigger": "maintain",
                "reasons": json.dumps(
                    [f"compacted: version {compacted} holds the same rows as version {production} (checked)"]
                ),
                "metrics": "{}",
                "policy_hash": "",
                "report": "",
                "golden_hash": "",
                "details": "{}",
            },
        )
    return production


def plan(
    settings: Settings,
    dataset: Any,
    now: datetime | None = None,
    left_production: int | None = None,
    age: Any = None,
) -> RetentionPlan:
    """The retention plan for the table as it is now."""
    from tasks.store.lance_reads import dataset_versions

    db = lancedb_store.connect(settings)
    records = lancedb_store.promotion_records(db, settings.promotions_table, settings.table)
    return plan_retention(
        dataset_versions(dataset),
        production_history(records),
        RetentionPolicy.from_settings(settings),
        age or age_in_days(now or datetime.now(UTC)),
        live=fragments.live_runs(settings, settings.table),
        left_production=left_production,
    )


def apply_retention(
    settings: Settings, now: datetime | None = None, left_production: int | None = None, age: Any = None
) -> tuple[RetentionPlan, RetentionResult]:
    """Delete the tags retention drops and remove the versions it lists, under the promotion lock."""
    import lance

    with promotion_lock(settings):
        dataset = lance.dataset(dataset_uri(settings, settings.table), storage_options=settings.storage_options or None)
        decided = plan(settings, dataset, now, left_production, age)
        for verdict in decided.deleted_tags:
            dataset.tags.delete(verdict.tag)
        removed_bytes = 0
        if decided.removed:
            stats = dataset.cleanup_old_versions(versions=decided.removed, error_if_tagged_old_versions=False)
            removed_bytes = int(stats.bytes_removed)
    return decided, RetentionResult([t.tag for t in decided.deleted_tags], decided.removed, removed_bytes)
