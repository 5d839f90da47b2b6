"""The LanceDB implementation of the storage seam (tasks/store/interface.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.errors import VersionNotFoundError
from tasks.settings import Settings
from tasks.store import lancedb_store
from tasks.store.interface import SearchMode, TableVersion
from tasks.store.search_params import AnnQuery
from tasks.store.sql import in_list, sql_string, sql_timestamp

_BATCH = 500  # ids per IN (...) filter


def apply_ann(query: Any, ann: AnnQuery | None) -> Any:
    """A LanceDB vector (or hybrid) query builder with `ann`'s parameters set (unchanged when None)."""
    if ann is None:
        return query
    if ann.exact:
        return query.bypass_vector_index()
    query = query.nprobes(ann.nprobes)
    if ann.refine_factor:
        query = query.refine_factor(ann.refine_factor)
    if ann.ef:
        query = query.ef(ann.ef)
    return query


class LanceTableVersion:
    """A LanceDB table checked out at one version."""

    def __init__(self, table: Any, name: str) -> None:
        self._table = table
        self.name = name
        self.version = int(table.version)

    def count(self) -> int:
        return int(self._table.count_rows())

    def schema(self) -> pa.Schema:
        return self._table.schema  # type: ignore[no-any-return]

    def rows(
        self,
        columns: list[str] | None = None,
        *,
        doc_ids: Iterable[str] | None = None,
        chunk_ids: Iterable[str] | None = None,
    ) -> pa.Table:
        dataset = self._table.to_lance()
        if doc_ids is None and chunk_ids is None:
            return dataset.to_table(columns=columns)  # type: ignore[no-any-return]
        column, wanted = ("doc_id", doc_ids) if doc_ids is not None else ("chunk_id", chunk_ids)
        ids = sorted(set(wanted or []))
        parts = [
            dataset.to_table(columns=columns, filter=in_list(column, ids[i : i + _BATCH]))
            for i in range(0, len(ids), _BATCH)
        ]
        if not parts:
            return dataset.to_table(columns=columns, limit=0)  # type: ignore[no-any-return]
        return pa.concat_tables(parts)

    def take(self, indices: list[int], columns: list[str]) -> pa.Table:
        return self._table.to_lance().take(indices, columns=columns)  # type: ignore[no-any-return]

    def doc_ids(self) -> set[str]:
        return lancedb_store.doc_ids(self._table)

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
        from lancedb.rerankers import LinearCombinationReranker, RRFReranker

        table = self._table
        if mode == "fulltext":
            query = table.search(text, query_type="fts")
            return query.select([*columns, "_score"]).limit(k).to_list()  # type: ignore[no-any-return]
        if mode == "vector":
            query = table.search(vector, vector_column_name="vector").distance_type("cosine")
            return apply_ann(query, ann).select([*columns, "_distance"]).limit(k).to_list()  # type: ignore[no-any-return]
        hybrid = table.search(query_type="hybrid", vector_column_name="vector").vector(vector).text(text)
        reranker = RRFReranker() if fusion_weight is None else LinearCombinationReranker(weight=fusion_weight)
        query = apply_ann(hybrid.distance_type("cosine"), ann).rerank(reranker)
        return query.select(columns).limit(k).to_list()  # type: ignore[no-any-return]

    def same_rows(self, other: TableVersion) -> bool:
        if not isinstance(other, LanceTableVersion):
            raise TypeError(f"compare versions of one store, not {type(other).__name__}")
        return lancedb_store.same_rows(self._table, other._table)

    def metadata(self) -> dict[str, str]:
        from tasks.store.lineage import table_metadata

        return table_metadata(self._table.to_lance())

    @property
    def handle(self) -> Any:
        """The LanceDB table (for code inside tasks/store/ only)."""
        return self._table


class LanceStore:
    """settings.table at settings.lancedb_uri, with the promotion log and other side tables beside it."""

    def __init__(self, settings: Settings, table: str) -> None:
        self.settings = settings
        self.table = table
        self.location = settings.lancedb_uri
        self._db: Any = None

    @property
    def db(self) -> Any:
        """The LanceDB connection (opened on first use)."""
        if self._db is None:
            self._db = lancedb_store.connect(self.settings)
        return self._db

    def exists(self) -> bool:
        return lancedb_store.table_exists(self.db, self.table)

    def table_uri(self) -> str:
        return f"lancedb://{self.location.split('://', 1)[-1].rstrip('/')}/{self.table}"

    def require(self, hint: str = "run `ragops ingest` first") -> None:
        if not self.exists():
            raise VersionNotFoundError(f"no table {self.table!r} at {self.location}: {hint}")

    def _latest(self) -> Any:
        """The chunk table at its latest version (one open: no separate existence check)."""
        try:
            return self.db.open_table(self.table)
        except ValueError:  # LanceDB's "table not found"
            self.require()
            raise

    def at(self, version: int | str | None = None) -> LanceTableVersion:
        try:
            table = lancedb_store.open_table(self.db, self.table, version)
        except ValueError:  # no such table (an absent version is a VersionNotFoundError already)
            self.require()
            raise
        return LanceTableVersion(table, self.table)

    def latest_version(self) -> int:
        return int(self._latest().version)

    def versions(self) -> list[dict[str, Any]]:
        return lancedb_store.list_versions(self._latest())

    def tagged(self, tag: str) -> int | None:
        return lancedb_store.tagged_version(self._latest(), tag)

    def tag(self, tag: str, version: int) -> None:
        lancedb_store.tag_version(self._latest(), tag, version)

    def log_records(self, log_table: str) -> list[dict[str, Any]]:
        return lancedb_store.promotion_records(self.db, log_table, self.table)

    def append_log(self, log_table: str, record: dict[str, Any]) -> None:
        lancedb_store.append_promotion_record(self.db, log_table, record)

    def table_exists(self, name: str) -> bool:
        return lancedb_store.table_exists(self.db, name)

    def side_rows(
        self,
        name: str,
        where: dict[str, str] | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pa.Table | None:
        if not self.table_exists(name):
            return None
        conditions = [f"{column} = {sql_string(value)}" for column, value in (where or {}).items()]
        conditions += [f"at >= {sql_timestamp(since)}"] if since is not None else []
        conditions += [f"at < {sql_timestamp(until)}"] if until is not None else []
        return self.db.open_table(name).to_lance().to_table(filter=" AND ".join(conditions) or None)  # type: ignore[no-any-return]

    def append_rows(self, name: str, data: pa.Table) -> None:
        if self.table_exists(name) or not self.create_rows(name, data):
            self.db.open_table(name).add(data)

    def create_rows(self, name: str, data: pa.Table) -> bool:
        try:
            self.db.create_table(name, data, schema=data.schema)
        except ValueError as exc:
            if "already exists" not in str(exc):
                raise
            return False
        return True

    def side_metadata(self, name: str) -> dict[str, str]:
        metadata = self.db.open_table(name).schema.metadata or {}
        return {key.decode(): value.decode() for key, value in metadata.items()}

    def set_side_metadata(self, name: str, values: dict[str, str]) -> dict[str, str]:
        dataset = self.db.open_table(name).to_lance()
        dataset.update_schema_metadata(values)
        metadata = dataset.checkout_version(dataset.latest_version).schema.metadata or {}  # a racing writer's wins
        return {key.decode(): value.decode() for key, value in metadata.items()}

    def create_chunk_table(self, dim: int, model: str, switch: bool = False) -> None:
        lancedb_store.ensure_chunk_table(self.db, self.table, dim, model, switch)

    def maintain_indexes(self) -> tuple[list[str], int | None]:
        return lancedb_store.maintain_indexes(self._latest(), self.settings)
