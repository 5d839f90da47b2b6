"""Keep the chunk table small and fast: compaction, index upkeep, retention, and Lance's cleanup of old versions.

Each step is a plain function (the `maintain` flow runs them as tasks):
- `measure`: bytes on disk, and per version its tags, size, unique bytes and fragments;
- `compact`: index segments merged, small fragments merged, deleted rows dropped, indexes folded, in up to four
  versions under the table's commit lock (an ingest commits before or after, never in between);
- `follow_production`: production moves to the merged version only when its rows are identical to production's
  (checked by digest) and probe queries rank alike, logged as a `maintain` entry, not a promotion; never to the
  versions that drop deleted rows, whose full-text scores can differ from what the gate approved;
- `apply_retention`: delete the candidate tags retention drops and remove exactly the versions it lists, with
  Lance's `cleanup_old_versions(versions=…)`, under the promotion lock (no tag moves meanwhile);
- `expire_query_log`: delete the served queries older than `query_log_retention_days` and rewrite the log's files
  so that no file under the table still holds one (the monitor applies it too).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tasks.errors import RagopsError
from tasks.settings import Settings
from tasks.store import fragments, lancedb_store
from tasks.store.backends import open_store
from tasks.store.interface import PRODUCTION_TAG, TableVersion
from tasks.store.lance_reads import dataset_versions, log_records, open_dataset, utc
from tasks.store.locks import table_lock
from tasks.store.production import mode_of, production_history, promotion_lock, record_action
from tasks.store.retention import RetentionPlan, RetentionPolicy, age_in_days, plan_retention
from tasks.store.sql import sql_timestamp


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


@dataclass
class Measured:
    """`Storage` plus the per-version file sets it was computed from (to price a removal without doing it)."""

    storage: Storage
    paths: dict[int, set[str]]
    sizes: dict[str, int]

    def reclaimable(self, removed: list[int]) -> int:
        """Bytes freed by removing these versions (files only they reference)."""
        gone = set(removed)
        keep: set[str] = set()
        drop: set[str] = set()
        for version, files in self.paths.items():
            (drop if version in gone else keep).update(files)
        return sum(self.sizes.get(path, 0) for path in drop - keep)


@dataclass
class CompactionResult:
    """What compaction did (or, in a dry run, would do)."""

    fragments_before: int
    fragments_after: int
    rewritten: int  # fragments rewritten
    version: int | None  # the version step 1 made (the one production may follow); None: nothing merged
    indexed_version: int | None = None  # the last version maintenance made (deletions dropped, indexes folded)
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
                timestamp=utc(v["timestamp"]),
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
    """Merge small fragments, drop deleted rows, then bring the indexes up to date; rows never change.

    Four versions at most, under the table's commit lock (an ingest's commit lands before or after, never between):
    0. each index merged into one segment (Lance does not merge fragments covered by different segments);
    1. small fragments without deletions merged (indexes remapped in the same commit): every search returns what it
       did, so production may follow this one;
    2. the fragments whose deleted share reached compact_deleted_fraction, and small fragments with any deletion,
       rewritten without those rows: full-text scores move, because Lance's BM25 statistics count deleted rows
       until then;
    3. unindexed rows folded into the FTS and ANN indexes.
    Production may follow version 1 (or 0, when nothing was merged); versions 2 and 3 reach production only through
    the gate, as the base of the next candidate. A dry run only plans (Lance's `Compaction.plan`) and reports what
    would be rewritten.
    """
    from lance.optimize import Compaction

    with table_lock(settings, "commit"):
        dataset = open_table_dataset(settings)
        before = len(dataset.get_fragments())
        if dry_run:
            first = Compaction.plan(dataset, step_options(dataset, settings, 1))  # type: ignore[arg-type]
            planned = {f.id for task in first.tasks for f in task.fragments}
            second = Compaction.plan(dataset, step_options(dataset, settings, 2, planned))  # type: ignore[arg-type]
            rewritten = len(planned) + sum(len(task.fragments) for task in second.tasks)
            after = before - rewritten + first.num_tasks() + second.num_tasks()
            backlog = index_backlog(_table(settings))
            return CompactionResult(before, after, rewritten, None, None, backlog)
        made: dict[int, int] = {}  # step → the version it made
        # Lance does not merge fragments covered by different index segments: one segment per index first
        steps, merged = lancedb_store.maintain_indexes(_table(settings), settings, merge_segments=True)
        if merged is not None:
            made[0] = merged
            dataset = dataset.checkout_version(dataset.latest_version)
        rewritten = 0
        for step, what in ((1, "merged, deletions kept"), (2, "deleted rows dropped")):
            chosen = step_options(dataset, settings, step)
            if Compaction.plan(dataset, chosen).num_tasks():  # type: ignore[arg-type]
                deleted = dataset.stats.dataset_stats()["num_deleted_rows"]
                metrics = dataset.optimize.compact_files(**chosen)
                dataset = dataset.checkout_version(dataset.latest_version)
                made[step] = int(dataset.version)
                rewritten += metrics.fragments_removed
                gone = deleted - dataset.stats.dataset_stats()["num_deleted_rows"]
                steps.append(
                    f"version {dataset.version}: {metrics.fragments_removed} fragments → {metrics.fragments_added} "
                    f"({what}; {gone} deleted rows dropped)"
                )
        actions, indexed = lancedb_store.maintain_indexes(_table(settings), settings, merge_segments=True)
        after = len(dataset.checkout_version(dataset.latest_version).get_fragments())
    follow = made.get(1) or made.get(0)  # same rows, deletion files kept: what production may follow
    last = indexed or made.get(2) or follow
    return CompactionResult(before, after, rewritten, follow, last, steps + actions)


def _table(settings: Settings) -> Any:
    return lancedb_store.connect(settings).open_table(settings.table)


SMALL_SHARE = 1 / 8  # a fragment under this share of the table's rows is small: rewriting it costs little


def step_options(dataset: Any, settings: Settings, step: int, exclude: set[int] | None = None) -> dict[str, Any]:
    """Lance compaction options for step 1 (merge small fragments that have no deletions, keeping every deletion
    file) or step 2 (rewrite, without their deleted rows, the fragments whose deleted share reached
    compact_deleted_fraction and the small fragments with any deletion: most deleted first, at most
    compact_max_rewrite_share of the table's rows per run).

    A merge drops the deleted rows of every fragment it rewrites, so step 1 must leave fragments with deletions
    alone. Step 2 leaves large fragments with few deletions alone: Lance would rewrite every fragment below its
    target size, which on a table smaller than one target fragment is the whole table every week, and retention
    keeps the old copy for a week (twice the storage); the cap spreads a table whose fragments all reach the
    deleted share at once over several runs."""
    fragments = dataset.get_fragments()
    shares = {f.fragment_id: deleted_share(f) for f in fragments}
    total = sum(f.metadata.physical_rows or 0 for f in fragments)
    small = min(settings.compact_target_rows, total * SMALL_SHARE)
    if step == 1:
        excluded = {i for i, share in shares.items() if share > 0}
        chosen: dict[str, Any] = {**compaction_options(settings), "materialize_deletions": False}
    else:
        candidates = sorted(
            (
                f
                for f in fragments
                if shares[f.fragment_id] >= settings.compact_deleted_fraction
                or (shares[f.fragment_id] > 0 and (f.metadata.physical_rows or 0) < small)
            ),
            key=lambda f: -shares[f.fragment_id],
        )
        budget = total * settings.compact_max_rewrite_share
        picked: set[int] = set()
        for f in candidates:  # most deleted first, within the budget (at least one)
            if picked and budget < (f.metadata.physical_rows or 0):
                break
            picked.add(f.fragment_id)
            budget -= f.metadata.physical_rows or 0
        excluded = set(shares) - picked
        chosen = compaction_options(settings)
    chosen["excluded_fragment_ids"] = sorted(excluded | (exclude or set()))
    return chosen


def deleted_share(fragment: Any) -> float:
    """The share of a fragment's rows that are deleted (from its deletion file's metadata: no read)."""
    deletion = fragment.metadata.deletion_file
    rows = fragment.metadata.physical_rows or 0
    return (deletion.num_deleted_rows or 0) / rows if deletion is not None and rows else 0.0


def index_backlog(table: Any) -> list[str]:
    """What index upkeep would do: the rows each index does not cover yet."""
    backlog = []
    for idx in table.list_indices():
        stats = table.index_stats(idx.name)
        segments = getattr(stats, "num_indices", 1) or 1
        if stats.num_unindexed_rows or segments > 1:
            backlog.append(
                f"would merge {segments} segments of {idx.name} and {stats.num_unindexed_rows} unindexed rows into one"
            )
    return backlog


Probe = Callable[[TableVersion, TableVersion, str], list[str]]  # (production, compacted, mode) → queries differing


@dataclass
class Follow:
    """Whether production followed the compaction: the version it left (None: it stayed), and why."""

    left: int | None
    note: str


def follow_production(settings: Settings, compacted: int, run_id: str, probe: Probe | None = None) -> Follow:
    """Move `production` to the compacted version when every row is the same (chunk ids and vectors, by digest) and
    `probe` finds no query answered differently; logged as a `maintain` entry, not a promotion."""
    store = open_store(settings)
    with promotion_lock(settings):
        production = store.tagged(PRODUCTION_TAG)
        if production is None:
            return Follow(None, "no production version")
        if production == compacted:
            return Follow(None, "production is the compacted version")
        before, after = store.at(production), store.at(compacted)
        if not before.same_rows(after):
            return Follow(
                None, f"stays on version {production}: the compacted version holds other rows (a newer candidate)"
            )
        records = store.log_records(settings.promotions_table)
        mode = mode_of(records, production)
        differing = probe(before, after, mode or "hybrid") if probe else []
        if differing:
            return Follow(
                None,
                f"stays on version {production}: same rows, but {len(differing)} probe queries rank differently "
                f"(first: {differing[0]})",
            )
        record_action(
            store,
            settings,
            action="maintain",
            version=compacted,
            previous=production,
            run_id=run_id,
            trigger="maintain",
            reasons=[f"compacted: version {compacted} holds the same rows as version {production} (checked)"],
            mode=mode,
        )
    return Follow(production, f"moved {production} → {compacted}: identical rows and probe results")


def plan(
    settings: Settings,
    dataset: Any,
    now: datetime | None = None,
    left_production: int | None = None,
    age: Any = None,
) -> RetentionPlan:
    """The retention plan for the table as it is now."""
    records = log_records(settings, settings.promotions_table, settings.table)
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
    with promotion_lock(settings):
        dataset = open_table_dataset(settings)
        decided = plan(settings, dataset, now, left_production, age)
        for verdict in decided.created:
            dataset.tags.create(verdict.tag, verdict.version)
        for verdict in decided.deleted_tags:
            dataset.tags.delete(verdict.tag)
        removed_bytes = 0
        if decided.removed:
            stats = dataset.cleanup_old_versions(versions=decided.removed, error_if_tagged_old_versions=False)
            removed_bytes = int(stats.bytes_removed)
    return decided, RetentionResult([t.tag for t in decided.deleted_tags], decided.removed, removed_bytes)


@dataclass
class LogExpiry:
    """What expiring a log table's old rows did (or, in a dry run, would do)."""

    table: str
    deleted: int  # rows older than the cutoff (dry run: that would be deleted)
    bytes_before: int
    bytes_after: int
    note: str  # one line for the report


def expire_query_log(settings: Settings, dry_run: bool = False, now: datetime | None = None) -> LogExpiry:
    """Apply `query_log_retention_days` to the served-query log (`expire_rows`)."""
    name, days = settings.query_log_table, settings.query_log_retention_days
    dataset = open_dataset(settings, name) if name else None
    if dataset is None:
        return LogExpiry(name, 0, 0, 0, "no query log" if not name else f"no table {name!r} yet")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days) if days else None
    return expire_rows(dataset, name, cutoff, dry_run)


def expire_rows(dataset: Any, table: str, cutoff: datetime | None, dry_run: bool = False) -> LogExpiry:
    """Delete the rows whose `at` is before `cutoff` (None: keep every row), merge small appends, and leave no file
    that still holds a deleted row.

    A Lance delete only marks rows in a deletion file: the text stays in the data file until compaction rewrites its
    fragment (every fragment with any deletion here, not only those past `compact_deleted_fraction`), and in the files
    of older versions until they are cleaned up, so every version but the latest is removed. Writers appending
    meanwhile are safe: Lance rebases their commits, and cleanup never touches files no version references yet.
    """
    before = _disk_bytes(dataset)
    condition = None if cutoff is None else f"at < {sql_timestamp(cutoff)}"
    expired = dataset.count_rows(filter=condition) if condition else 0
    verb = "would delete" if dry_run else "deleted"
    note = (
        f"{verb} {expired} logged queries before {cutoff:%Y-%m-%d %H:%M} UTC" if cutoff else "kept all (no retention)"
    )
    if dry_run:
        return LogExpiry(table, expired, before, before, note)
    if expired:
        dataset.delete(condition)
    dataset.optimize.compact_files(materialize_deletions=True, materialize_deletions_threshold=0.0)
    dataset = dataset.checkout_version(dataset.latest_version)
    dataset.cleanup_old_versions(older_than=timedelta(0), error_if_tagged_old_versions=False)
    return LogExpiry(table, expired, before, _disk_bytes(dataset), note)


def _disk_bytes(dataset: Any) -> int:
    return int(sum(dataset.all_files().read_all().column("size_bytes").to_pylist()))
