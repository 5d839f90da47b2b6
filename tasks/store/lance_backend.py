"""The LanceDB implementation of the storage seam (tasks/store/interface.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import VersionNotFoundError
from tasks.settings import Settings
from tasks.store import lancedb_store
from tasks.store.interface import SearchMode, TableVersion

_BATCH = 500  # ids per IN (...) filter


class LanceTableVersion:
    """A LanceDB table checked out at one version."""

    def __init__(self, table: Any, name: str) -> None:
        self._table = table
        self.name = name
        self.version = int(table.version)

    def count(self) -> int:
        return int(self._table.count_rows())

    def rows(
        self,
        columns: list[str] | None = None,
        *,
        doc_ids: Iterable[str] | None = None,
        chunk_ids: Iterable[str] | None = None,
    ) -> pa.Table:
        dataset = self._table.to_lance()
        if doc_ids is None and chunk_ids is None:
            return dataset.to_table(columns=columns)
        column, wanted = ("doc_id", doc_ids) if doc_ids is not None else ("chunk_id", chunk_ids)
        ids = sorted(set(wanted or []))
        parts = [
            dataset.to_table(columns=columns, filter=lancedb_store.in_list(column, ids[i : i + _BATCH]))
            for i in range(0, len(ids), _BATCH)
        ]
        if not parts:
            return dataset.to_table(columns=columns, limit=0)
        return pa.concat_tables(parts)

    def take(self, indices: list[int], columns: list[str]) -> pa.Table:
        return self._table.to_lance().take(indices, columns=columns)

    def doc_ids(self) -> set[str]:
        column = self._table.to_lance().to_table(columns=["doc_id"]).column("doc_id")
        return set(pc.unique(column).to_pylist())

    def search(
        self,
        *,
        mode: SearchMode,
        k: int,
        columns: list[str],
        text: str | None = None,
        vector: np.ndarray | None = None,
        fusion_weight: float | None = None,
        ann: Any = None,
    ) -> list[dict[str, Any]]:
        from lancedb.rerankers import LinearCombinationReranker, RRFReranker

        table = self._table
        apply = ann.apply if ann is not None else (lambda query: query)
        if mode == "fulltext":
            return table.search(text, query_type="fts").select([*columns, "_score"]).limit(k).to_list()  # type: ignore[no-any-return]
        if mode == "vector":
            query = table.search(vector, vector_column_name="vector").distance_type("cosine")
            return apply(query).select([*columns, "_distance"]).limit(k).to_list()  # type: ignore[no-any-return]
        hybrid = table.search(query_type="hybrid", vector_column_name="vector").vector(vector).text(text)
        reranker = RRFReranker() if fusion_weight is None else LinearCombinationReranker(weight=fusion_weight)
        return apply(hybrid.distance_type("cosine")).rerank(reranker).select(columns).limit(k).to_list()  # type: ignore[no-any-return]

    def same_rows(self, other: TableVersion) -> bool:
        return lancedb_store.same_rows(self._table, other._table)  # type: ignore[attr-defined]

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

    def require(self, hint: str = "run `ragops ingest` first") -> None:
        if not self.exists():
            raise VersionNotFoundError(f"no table {self.table!r} at {self.location}: {hint}")

    def at(self, version: int | str | None = None) -> LanceTableVersion:
        self.require()
        return LanceTableVersion(lancedb_store.open_table(self.db, self.table, version), self.table)

    def latest_version(self) -> int:
        self.require()
        return int(self.db.open_table(self.table).version)

    def versions(self) -> list[dict[str, Any]]:
        self.require()
        return lancedb_store.list_versions(self.db.open_table(self.table))

    def tagged(self, tag: str) -> int | None:
        self.require()
        return lancedb_store.tagged_version(self.db.open_table(self.table), tag)

    def tag(self, tag: str, version: int) -> None:
        lancedb_store.tag_version(self.db.open_table(self.table), tag, version)

    def log_records(self, log_table: str) -> list[dict[str, Any]]:
        return lancedb_store.promotion_records(self.db, log_table, self.table)

    def append_log(self, log_table: str, record: dict[str, Any]) -> None:
        lancedb_store.append_promotion_record(self.db, log_table, record)

    def table_exists(self, name: str) -> bool:
        return lancedb_store.table_exists(self.db, name)

    def side_rows(self, name: str, where: dict[str, str] | None = None) -> pa.Table | None:
        if not self.table_exists(name):
            return None
        condition = " AND ".join(f"{column} = {lancedb_store.sql_string(v)}" for column, v in (where or {}).items())
        return self.db.open_table(name).to_lance().to_table(filter=condition or None)

    def append_rows(self, name: str, data: pa.Table) -> None:
        if self.table_exists(name):
            self.db.open_table(name).add(data)
        else:
            self.db.create_table(name, data, exist_ok=True)
