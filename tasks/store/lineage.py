"""What a table holds and where each version came from, kept in the table itself.

Two keys of the Lance table metadata, which every later version carries (index builds, compaction, cleanup), so a
version checked out by number or tag answers for itself:
- `ragops.sources`: the source registry. Per source: its name, current location, document-id prefix, the pipeline
  settings it was ingested with, when it was added and the locations it moved from.
- `ragops.lineage`: the run that wrote the data the version holds (run id and link, trigger, each source's location
  and listing digest, pipeline settings, ragops version and code revision, the data version it committed).

Both are written by the run's commit, under the table's commit lock, right after its data (`fragments.commit_staged`);
the data commit also carries the lineage in its transaction properties, so a crash between the two leaves the
lineage readable from the commit itself. Plain functions on a version's metadata and per-document table: no LanceDB,
no Prefect (tasks/store/version_info.py reads them).
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SOURCES_KEY = "ragops.sources"
LINEAGE_KEY = "ragops.lineage"
RUN_KEY = "ragops.run_id"
ID_SEPARATOR = "::"  # a second source's document ids: `<name>::<path relative to its root>`
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class SourceEntry:
    """One source of a table."""

    name: str
    location: str  # canonical path or URL of its root, as last ingested
    prefix: str = ""  # "" for the table's first source; "<name>::" for the others
    pipeline: dict[str, Any] = field(default_factory=dict)  # model, chunking, extractor it was ingested with
    added_at: str = ""
    moved_from: tuple[str, ...] = ()  # earlier locations, oldest first
    row_sources: tuple[str, ...] = ()  # `source` values older rows carry (a table from before the registry)
    listing_digest: str = ""  # of its listing when last ingested (sources.listing_digest)
    # JSONL corpus → its `source_meta` key (size and mtime or ETag, and the pipeline) when it was last read whole
    # without a bad line: an equal key on the next run skips the file unread (tasks/ingest/partitions.py)
    record_files: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def scope(self) -> list[str]:
        """The `source` column values of this source's rows."""
        return [self.name, *self.row_sources]

    def to_json(self) -> dict[str, Any]:
        """As stored in the registry."""
        data = asdict(self)
        data["moved_from"], data["row_sources"] = list(self.moved_from), list(self.row_sources)
        if not self.record_files:
            del data["record_files"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceEntry:
        """From the registry (unknown keys of a newer ragops ignored)."""
        return cls(
            name=str(data["name"]),
            location=str(data["location"]),
            prefix=str(data.get("prefix", "")),
            pipeline=dict(data.get("pipeline") or {}),
            added_at=str(data.get("added_at", "")),
            moved_from=tuple(data.get("moved_from") or ()),
            row_sources=tuple(data.get("row_sources") or ()),
            listing_digest=str(data.get("listing_digest", "")),
            record_files={str(k): str(v) for k, v in (data.get("record_files") or {}).items()},
        )


@dataclass(frozen=True)
class SourceChange:
    """What a run changes in the registry and lineage, applied inside the commit lock to the latest registry."""

    lineage: dict[str, Any]
    put: SourceEntry | None = None  # add or update this source
    remove: str | None = None  # drop this source
    seed: tuple[SourceEntry, ...] = ()  # the registry to start from when the table records none (an older table)
    registry_only: bool = False  # only the registry changes (no data): the version's lineage stays as it is


def table_metadata(dataset: Any) -> dict[str, str]:
    """A Lance dataset version's table metadata ({} for a table from before ragops kept any)."""
    try:
        meta = dataset.metadata
        return dict(meta() if callable(meta) else meta or {})
    except (AttributeError, OSError, ValueError):
        return {}


def read_sources(metadata: dict[str, str]) -> dict[str, SourceEntry]:
    """The registry in a version's table metadata, by name ({} when none is recorded)."""
    raw = metadata.get(SOURCES_KEY)
    if not raw:
        return {}
    entries = json.loads(raw).get("sources", [])
    return {e["name"]: SourceEntry.from_json(e) for e in entries}


def read_lineage(metadata: dict[str, str]) -> dict[str, Any] | None:
    """The lineage in a version's table metadata, or None."""
    raw = metadata.get(LINEAGE_KEY)
    return json.loads(raw) if raw else None


def apply_change(metadata: dict[str, str], change: SourceChange, data_version: int) -> dict[str, str | None]:
    """The metadata updates that record `change` on top of the latest registry, for the commit at `data_version`."""
    sources = read_sources(metadata) or {e.name: e for e in change.seed}
    if change.put is not None:
        sources[change.put.name] = change.put
    if change.remove is not None:
        sources.pop(change.remove, None)
    ordered = sorted(sources.values(), key=_first_then_name)
    registry = {"schema": 1, "sources": [e.to_json() for e in ordered]}
    if change.registry_only and change.remove is None:
        return {SOURCES_KEY: json.dumps(registry, sort_keys=True)}
    held = [{"name": e.name, "location": e.location, "listing_digest": e.listing_digest} for e in ordered]
    lineage = {**change.lineage, "data_version": data_version, "sources": held}
    return {SOURCES_KEY: json.dumps(registry, sort_keys=True), LINEAGE_KEY: json.dumps(lineage, sort_keys=True)}


def _first_then_name(entry: SourceEntry) -> tuple[bool, str]:
    return (entry.prefix != "", entry.name)


def legacy_sources(documents: pa.Table, now: str) -> dict[str, SourceEntry]:
    """The registry of a table written before ragops kept one: one source per distinct `source` value of its rows
    (their locations), named after the location's last segment; ids stay as they are (unprefixed)."""
    if documents.num_rows == 0:
        return {}
    counts = documents.group_by("source").aggregate([("doc_id", "count")]).to_pylist()
    found: dict[str, SourceEntry] = {}
    for row in sorted(counts, key=lambda r: (-r["doc_id_count"], r["source"])):
        location = row["source"]
        name = derive_name(location, set(found))
        found[name] = SourceEntry(name, location, "", {}, now, (), (location,))
    return found


def derive_name(location: str, taken: set[str]) -> str:
    """A source name from its location's last segment (`datasets/python-docs` → `python-docs`), made unique."""
    path = location.split("://", 1)[-1].rstrip("/")
    base = posixpath.basename(path) or path
    base = posixpath.splitext(base)[0] if "." in base and not base.startswith(".") else base
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:56].rstrip("-._") or "source"  # starts alnum
    unique, n = name, 2
    while unique in taken:
        unique, n = f"{name}-{n}", n + 1
    return unique


def now_iso() -> str:
    """The current UTC time, as the registry records it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def source_of_rows(documents: pa.Table, sources: dict[str, SourceEntry]) -> pa.Array:
    """Each stored document's source name (the row's `source` value mapped through the registry's scopes)."""
    names = {value: entry.name for entry in sources.values() for value in entry.scope}
    column = documents.column("source").to_pylist()
    return pa.array([names.get(v, v) for v in column], pa.string())


def source_counts(documents: pa.Table, sources: dict[str, SourceEntry]) -> dict[str, dict[str, int]]:
    """Per source name: its documents and chunks in a version (`documents`: one row per document, with `chunks`)."""
    counts = {name: {"documents": 0, "chunks": 0} for name in sources}
    if documents.num_rows:
        named = documents.append_column("name", source_of_rows(documents, sources))
        for row in named.group_by("name").aggregate([("doc_id", "count"), ("chunks", "sum")]).to_pylist():
            counts[row["name"]] = {"documents": row["doc_id_count"], "chunks": int(row["chunks_sum"] or 0)}
    return counts


def source_changes(
    before: pa.Table | None, after: pa.Table, sources: dict[str, SourceEntry]
) -> dict[str, dict[str, int]]:
    """Per source name: documents added, changed (other content or pipeline) and deleted from `before` to `after`
    (one row per document each; `before` None: an empty table). `sources`: the union of both versions' registries."""
    empty = {"added": 0, "changed": 0, "deleted": 0, "documents": 0}
    out: dict[str, dict[str, int]] = {}

    def bump(name: str, key: str, n: int = 1) -> None:
        out.setdefault(name, dict(empty))[key] += n

    after_names = source_of_rows(after, sources).to_pylist() if after.num_rows else []
    after_ids = after.column("doc_id").to_pylist()
    after_hash = dict(zip(after_ids, after.column("doc_hash").to_pylist(), strict=True))
    for name in after_names:
        bump(name, "documents")
    if before is None or before.num_rows == 0:
        for name in after_names:
            bump(name, "added")
        return out
    before_names = source_of_rows(before, sources).to_pylist()
    before_ids = before.column("doc_id").to_pylist()
    before_hash = dict(zip(before_ids, before.column("doc_hash").to_pylist(), strict=True))
    for doc_id, name in zip(after_ids, after_names, strict=True):
        if doc_id not in before_hash:
            bump(name, "added")
        elif before_hash[doc_id] != after_hash[doc_id]:
            bump(name, "changed")
    gone = pc.invert(pc.is_in(before.column("doc_id"), value_set=after.column("doc_id"))).to_pylist()
    for name, is_gone in zip(before_names, gone, strict=True):
        if is_gone:
            bump(name, "deleted")
    return out


def transaction_lineage(dataset: Any, version: int) -> tuple[str, dict[str, Any] | None]:
    """A version's own commit: its operation's name and the lineage its transaction carries (ragops ingests only)."""
    try:
        transaction = dataset.read_transaction(version)
    except (TypeError, ValueError, OSError, RuntimeError):  # Lance cannot decode every operation kind back
        return "unknown", None
    if transaction is None:
        return "unknown", None
    operation = type(transaction.operation).__name__
    properties = transaction.transaction_properties or {}
    raw = properties.get(LINEAGE_KEY)
    return operation, (json.loads(raw) if raw else None)


OPERATIONS = {
    "Overwrite": "table created",
    "Update": "rows added and deleted (an ingest commit)",
    "UpdateConfig": "table metadata (the source registry and lineage)",
    "Append": "rows appended",
    "Delete": "rows deleted",
    "CreateIndex": "index built or refreshed",
    "Rewrite": "compaction (rows rewritten, same data)",
    "Merge": "columns added",
    "Project": "columns changed",
    "BaseOperation": "index or compaction step",
    "unknown": "an operation Lance could not describe",
}


def version_lineage(dataset: Any, version: int) -> dict[str, Any]:
    """What produced `version` of a dataset (checked out at it): its own commit, the run whose data it holds, the
    sources it records."""
    metadata = table_metadata(dataset)
    lineage = read_lineage(metadata)
    operation, committed = transaction_lineage(dataset, version)
    recorded = "table metadata"
    if committed is not None and (lineage is None or committed.get("run_id") != lineage.get("run_id")):
        lineage, recorded = committed, "the commit only (the run stopped before recording it in the metadata)"
    return {
        "version": version,
        "operation": operation,
        "operation_means": OPERATIONS.get(operation, operation),
        "lineage": lineage,
        "lineage_recorded_in": recorded if lineage is not None else None,
        "written_by_this_version": bool(lineage and lineage.get("data_version") == version),
        "sources": [e.to_json() for e in read_sources(metadata).values()],
    }
