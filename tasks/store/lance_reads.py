"""Reads of a table with Lance alone, for commands that must answer fast: `ragops versions`, a no-change ingest.

LanceDB keeps a table as the Lance dataset `<uri>/<name>.lance`; Lance imports in a third of LanceDB's time (most of
LanceDB's import is its REST namespace client, which a local or object-store table never uses).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tasks.settings import Settings
from tasks.store.sql import sql_string


def dataset_uri(settings: Settings, table: str) -> str:
    """Where LanceDB keeps `table`'s dataset."""
    root = settings.lancedb_uri.removeprefix("file://").rstrip("/")
    return f"{root}/{table}.lance"


def open_dataset(settings: Settings, table: str) -> Any:
    """The table's latest version as a Lance dataset; None when the table does not exist."""
    import lance

    try:
        return lance.dataset(dataset_uri(settings, table), storage_options=settings.object_store_options())
    except (ValueError, FileNotFoundError, OSError):
        return None


def table_versions(settings: Settings, table: str) -> list[dict[str, Any]] | None:
    """Versions (oldest first) with their timestamps and tags; None when the table does not exist."""
    dataset = open_dataset(settings, table)
    return None if dataset is None else dataset_versions(dataset)


def dataset_versions(dataset: Any) -> list[dict[str, Any]]:
    """A Lance dataset's versions (oldest first) with their timestamps and the tags pointing at each."""
    tags: dict[int, list[str]] = {}
    for tag, info in dataset.tags.list().items():
        tags.setdefault(int(info["version"]), []).append(tag)
    return [
        {"version": v["version"], "timestamp": utc(v["timestamp"]), "tags": sorted(tags.get(v["version"], []))}
        for v in dataset.versions()
    ]


def utc(timestamp: datetime) -> datetime:
    """A Lance version timestamp as an aware UTC datetime (Lance gives naive local time: `fromtimestamp`)."""
    return timestamp.astimezone(UTC)


def log_records(settings: Settings, log_table: str, table: str) -> list[dict[str, Any]]:
    """The promotion log's records for one chunk table, oldest first, read with Lance alone ([] without a log)."""
    dataset = open_dataset(settings, log_table)
    if dataset is None:
        return []
    return sorted(dataset.to_table(filter=f"table = {sql_string(table)}").to_pylist(), key=lambda r: r["at"])
