"""The storage seam: what evaluation, serving, maintenance, the flows and the CLI may ask of the chunk store.

Nothing above `tasks/store/` opens LanceDB or Lance: it calls `open_store(settings)` (tasks/store/backends.py) and
the two interfaces below. A second backend implements `Store` and `TableVersion` and `open_store` returns it for its
URIs (docs/ARCHITECTURE.md, "A new storage backend"); `tasks/store/lance_backend.py` is the LanceDB implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa

from tasks.store.search_params import AnnQuery

SearchMode = Literal["vector", "fulltext", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("vector", "fulltext", "hybrid")
PRODUCTION_TAG = "production"
CANDIDATE_PREFIX = "candidate-"


class TableVersion(Protocol):
    """One version of the chunk table, fixed: every read sees the same rows."""

    name: str
    version: int

    def count(self) -> int:
        """Chunks in this version."""

    def schema(self) -> pa.Schema:
        """The version's Arrow schema (its columns and their types)."""

    def rows(
        self,
        columns: list[str] | None = None,
        *,
        doc_ids: Iterable[str] | None = None,
        chunk_ids: Iterable[str] | None = None,
    ) -> pa.Table:
        """Rows (all, or those of these documents or chunks), with these columns."""

    def take(self, indices: list[int], columns: list[str]) -> pa.Table:
        """Rows at these positions."""

    def doc_ids(self) -> set[str]:
        """Every document id this version holds."""

    def search(
        self,
        *,
        mode: SearchMode,
        k: int,
        columns: list[str],
        text: str | None = None,
        vector: np.ndarray | None = None,
        fusion_weight: float | None = None,
        ann: AnnQuery | None = None,
    ) -> list[dict[str, Any]]:
        """Top-k rows with these columns and a score column: `_distance` (vector, cosine), `_score` (full text) or
        `_relevance_score` (hybrid: reciprocal rank fusion, or linear with `fusion_weight`). `ann` tunes the vector
        index's search (vector and hybrid); None leaves the backend's defaults."""

    def same_rows(self, other: TableVersion) -> bool:
        """True when both versions hold the same chunks with the same vectors (row order aside)."""

    def metadata(self) -> dict[str, str]:
        """The version's table metadata (source registry, lineage)."""


class Store(Protocol):
    """The chunk table of one deployment (settings.table at settings.lancedb_uri) and its side tables."""

    table: str
    location: str

    def exists(self) -> bool:
        """True when the chunk table exists."""

    def table_uri(self) -> str:
        """The chunk table's URI, `<backend>://<location>/<table>` (the Prefect asset an ingest materializes)."""

    def require(self, hint: str = "run `ragops ingest` first") -> None:
        """VersionNotFoundError("no table T at URI: hint") when the chunk table does not exist."""

    def at(self, version: int | str | None = None) -> TableVersion:
        """The table at a version number or tag (latest when None or "latest"); VersionNotFoundError if absent."""

    def latest_version(self) -> int:
        """The newest version number."""

    def versions(self) -> list[dict[str, Any]]:
        """Versions, oldest first: {"version", "timestamp" (aware UTC), "tags"}."""

    def tagged(self, tag: str) -> int | None:
        """The version a tag points at, or None."""

    def tag(self, tag: str, version: int) -> None:
        """Point `tag` at `version`, creating or moving it."""

    def log_records(self, log_table: str) -> list[dict[str, Any]]:
        """A side table's records for this chunk table, oldest first by `at` ([] when it does not exist)."""

    def append_log(self, log_table: str, record: dict[str, Any]) -> None:
        """Append one record to the promotion log."""

    def side_rows(
        self,
        name: str,
        where: dict[str, str] | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pa.Table | None:
        """Rows of a side table (monitoring, query log) equal to `where`'s values, with `at` in [since, until) when
        given; None when the table does not exist."""

    def append_rows(self, name: str, data: pa.Table) -> None:
        """Append rows to a side table, creating it with their schema (and its metadata) when absent."""

    def create_rows(self, name: str, data: pa.Table) -> bool:
        """Create a side table holding `data`, with its schema and schema metadata; False, writing nothing, when it
        exists already (a concurrent writer made it first)."""

    def side_metadata(self, name: str) -> dict[str, str]:
        """A side table's schema metadata (the query log keeps its salt there)."""

    def set_side_metadata(self, name: str, values: dict[str, str]) -> dict[str, str]:
        """Add `values` to a side table's schema metadata; returns the metadata as read back afterwards."""

    def table_exists(self, name: str) -> bool:
        """True when a side table exists."""

    def create_chunk_table(self, dim: int, model: str, switch: bool = False) -> None:
        """Create the chunk table empty (with its full-text index) on first use, or bring an older one up to date;
        StoreSchemaError when it holds vectors of another dimension, or of another model unless `switch` (the run
        re-embeds every row)."""

    def maintain_indexes(self) -> tuple[list[str], int | None]:
        """Bring the chunk table's indexes up to date as it grows: what was done, and the version the last action
        made (None when nothing was)."""


__all__ = [
    "CANDIDATE_PREFIX",
    "PRODUCTION_TAG",
    "SEARCH_MODES",
    "AnnQuery",
    "SearchMode",
    "Store",
    "TableVersion",
]
