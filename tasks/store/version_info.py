"""What a version of a table holds and where it came from, read with Lance alone: its sources with their counts,
its lineage, and the documents each source gained, changed and lost between two versions."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tasks.errors import VersionNotFoundError
from tasks.settings import Settings
from tasks.store import fragments, lineage
from tasks.store.interface import PRODUCTION_TAG
from tasks.store.lance_reads import open_dataset


def dataset_at(settings: Settings, table: str, version: int | str | None = None) -> Any:
    """The table's Lance dataset at a version number or tag (latest when None); VersionNotFoundError if absent."""
    dataset = open_dataset(settings, table)
    if dataset is None:
        raise VersionNotFoundError(f"no table {table!r} at {settings.lancedb_uri}: run `ragops ingest` first")
    if version is None or version == "latest":
        return dataset
    try:
        ref = int(version) if isinstance(version, int) or str(version).isdigit() else str(version)
        return dataset.checkout_version(ref)
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise VersionNotFoundError(f"table {table!r} has no version or tag {version!r}") from exc


def recorded_model(dataset: Any) -> tuple[dict[str, Any] | None, str | None]:
    """What a version (a dataset checked out at it) was embedded with: the model entry its lineage records (None for
    a version from before entries were recorded) and the model id its rows hold (None when it has no rows)."""
    found = lineage.version_lineage(dataset, int(dataset.version)).get("lineage") or {}
    entry = (found.get("settings") or {}).get("embedding")
    if dataset.count_rows() == 0:
        return entry, None
    rows = dataset.to_table(columns=["embedding_model"], limit=1)
    return entry, str(rows.column("embedding_model")[0].as_py())


def production_version(dataset: Any) -> int | None:
    """The version `production` points at, or None."""
    info = dataset.tags.list().get(PRODUCTION_TAG)
    return int(info["version"]) if info else None


def sources_at(dataset: Any) -> tuple[dict[str, lineage.SourceEntry], pa.Table]:
    """A version's source registry (derived from its rows for a table from before the registry) and its documents
    (one row per document: doc_id, doc_hash, source, source_meta, chunks)."""
    documents = fragments.stored_documents(dataset)
    sources = lineage.read_sources(lineage.table_metadata(dataset))
    return (sources or lineage.legacy_sources(documents, "")), documents


def sources_report(dataset: Any) -> list[dict[str, Any]]:
    """Each source of a version with its location, id prefix, documents and chunks."""
    sources, documents = sources_at(dataset)
    counts = lineage.source_counts(documents, sources)
    rows = []
    for name, entry in sources.items():
        rows.append(
            {
                "name": name,
                "location": entry.location,
                "prefix": entry.prefix,
                "documents": counts.get(name, {}).get("documents", 0),
                "chunks": counts.get(name, {}).get("chunks", 0),
                "added_at": entry.added_at,
                "moved_from": list(entry.moved_from),
                "pipeline": entry.pipeline,
            }
        )
    unregistered = sorted(set(counts) - set(sources))
    rows += [{"name": n, "location": "(not in the registry)", "prefix": "", **counts[n]} for n in unregistered]
    return rows


def changes_between(before: Any | None, after: Any) -> dict[str, dict[str, int]]:
    """Per source name: documents added, changed and deleted from dataset version `before` (None: empty) to
    `after`, and the documents `after` holds."""
    after_sources, after_docs = sources_at(after)
    if before is None:
        return lineage.source_changes(None, after_docs, after_sources)
    before_sources, before_docs = sources_at(before)
    return lineage.source_changes(before_docs, after_docs, {**before_sources, **after_sources})


def changes_since_production(
    settings: Settings, table: str, version: int
) -> tuple[int | None, dict[str, dict[str, int]]]:
    """The production version (None before the first promotion) and, per source, the documents added, changed and
    deleted from it (an empty table when None) to `version`."""
    latest = dataset_at(settings, table)
    production = production_version(latest)
    before = latest.checkout_version(production) if production is not None else None
    return production, changes_between(before, latest.checkout_version(version))


def comparison(settings: Settings, table: str, candidate: int, production: int | None) -> dict[str, Any]:
    """What a reviewer reads before any metric: per source the documents added, changed and deleted from
    `production` (None: an empty table) to `candidate` (`source_changes`), and both versions' `lineage`."""
    latest = dataset_at(settings, table)
    before = latest.checkout_version(production) if production is not None else None
    return {
        "source_changes": changes_between(before, latest.checkout_version(candidate)),
        "lineage": {
            "candidate": describe_version(latest, candidate),
            "production": describe_version(latest, production) if production is not None else None,
        },
    }


def describe_version(dataset: Any, version: int) -> dict[str, Any]:
    """`lineage.version_lineage` of a version, with the tags that point at it."""
    at = dataset.checkout_version(version) if int(dataset.version) != version else dataset
    info = lineage.version_lineage(at, version)
    info["tags"] = sorted(tag for tag, t in dataset.tags.list().items() if int(t["version"]) == version)
    return info


def id_prefix_for(settings: Settings, version: int, location: str) -> str:
    """The document-id prefix of the source at `location` in a version's registry ("" when it is not there)."""
    sources = lineage.read_sources(lineage.table_metadata(dataset_at(settings, settings.table, version)))
    return next((e.prefix for e in sources.values() if e.location == location), "")
