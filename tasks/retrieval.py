"""Search any version of the chunk table by vector, full text or both (reciprocal rank fusion)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lancedb.rerankers import LinearCombinationReranker, RRFReranker

from tasks.embedding import EmbedSpec, embed_texts
from tasks.settings import Settings

SearchMode = Literal["vector", "fulltext", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("vector", "fulltext", "hybrid")
RESULT_COLUMNS = ["chunk_id", "doc_id", "title", "section", "text"]


@dataclass(frozen=True)
class SearchHit:
    """One retrieved chunk; higher score is better within a mode."""

    chunk_id: str
    doc_id: str
    title: str
    section: str
    text: str
    score: float
    rank: int


@dataclass(frozen=True)
class AnnQuery:
    """How hard a vector query searches the ANN index (ignored while the table has none)."""

    nprobes: int = 40  # defaults as in Settings: recall@10 ≥ 0.95 at 100k chunks (benchmarks/query_latency.py)
    refine_factor: int | None = 5
    ef: int | None = None
    exact: bool = False  # bypass the index: exact search, for recall checks

    @classmethod
    def from_settings(cls, settings: Settings) -> AnnQuery:
        """The tuned values from settings."""
        return cls(settings.ann_nprobes, settings.ann_refine_factor or None, settings.ann_ef or None)

    def apply(self, query: Any) -> Any:
        """The query builder with these parameters set."""
        if self.exact:
            return query.bypass_vector_index()
        query = query.nprobes(self.nprobes)
        if self.refine_factor:
            query = query.refine_factor(self.refine_factor)
        if self.ef:
            query = query.ef(self.ef)
        return query


def search(
    table: Any,
    query: str,
    spec: EmbedSpec,
    mode: SearchMode = "vector",
    k: int = 10,
    fusion_weight: float | None = None,
    ann: AnnQuery | None = None,
) -> list[SearchHit]:
    """Top-k chunks for `query` from the table (at whatever version it is checked out).

    Hybrid fuses vector and full-text results by reciprocal rank, or, with `fusion_weight` w, by the linear
    combination w * vector + (1 - w) * full-text of normalized scores.
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
    if not query.strip():
        raise ValueError("empty query")
    if mode == "fulltext":
        rows = table.search(query, query_type="fts").select([*RESULT_COLUMNS, "_score"]).limit(k).to_list()
        return _hits(rows, "_score", lambda s: s)
    vector = embed_texts([query], spec)[0]
    ann = ann or AnnQuery()
    if mode == "vector":
        vector_query = table.search(vector, vector_column_name="vector").distance_type("cosine")
        rows = ann.apply(vector_query).select([*RESULT_COLUMNS, "_distance"]).limit(k).to_list()
        return _hits(rows, "_distance", lambda d: 1.0 - d)
    hybrid = table.search(query_type="hybrid", vector_column_name="vector").vector(vector).text(query)
    rows = (
        ann.apply(hybrid.distance_type("cosine"))
        .rerank(RRFReranker() if fusion_weight is None else LinearCombinationReranker(weight=fusion_weight))
        .select(RESULT_COLUMNS)
        .limit(k)
        .to_list()
    )
    return _hits(rows, "_relevance_score", lambda s: s)


def _hits(rows: list[dict[str, Any]], score_column: str, to_score: Any) -> list[SearchHit]:
    return [
        SearchHit(
            chunk_id=row["chunk_id"],
            doc_id=row["doc_id"],
            title=row.get("title") or "",
            section=row.get("section") or "",
            text=row["text"],
            score=float(to_score(row[score_column])),
            rank=i + 1,
        )
        for i, row in enumerate(rows)
    ]
