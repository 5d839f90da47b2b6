"""Search any version of the chunk table by vector, full text or both (reciprocal rank fusion)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.embed.embedding import EmbedSpec, embed_texts
from tasks.store.interface import SEARCH_MODES, SearchMode, TableVersion
from tasks.store.search_params import AnnQuery

__all__ = ["RESULT_COLUMNS", "SEARCH_MODES", "AnnQuery", "SearchHit", "SearchMode", "search", "split_mode"]
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
    similarity: float | None = None  # cosine similarity of query and chunk, when asked for (any mode)


def split_mode(mode: str) -> tuple[SearchMode, float | None]:
    """A mode as the gate records it ('vector', 'hybrid', or 'hybrid@0.7' for a linear fusion) → (mode, weight)."""
    base, _, weight = mode.partition("@")
    if base not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
    return base, float(weight) if weight else None  # type: ignore[return-value]


def search(
    table: TableVersion,
    query: str,
    spec: EmbedSpec,
    mode: SearchMode = "vector",
    k: int = 10,
    fusion_weight: float | None = None,
    ann: AnnQuery | None = None,
    query_vector: np.ndarray | None = None,
    similarity: bool = False,
) -> list[SearchHit]:
    """Top-k chunks for `query` from one version of the table.

    Hybrid fuses vector and full-text results by reciprocal rank, or, with `fusion_weight` w, by the linear
    combination w * vector + (1 - w) * full-text of normalized scores. `query_vector` spares embedding the query
    again; `similarity` adds each hit's cosine similarity to the query, comparable across modes (for monitoring).
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
    if not query.strip():
        raise ValueError("empty query")
    columns = [*RESULT_COLUMNS, "vector"] if similarity else RESULT_COLUMNS
    vector = None
    if mode != "fulltext" or similarity:
        vector = query_vector if query_vector is not None else embed_texts([query], spec, role="query")[0]
    if mode == "fulltext":
        rows = table.search(mode="fulltext", k=k, columns=columns, text=query)
        return _hits(rows, "_score", lambda s: s, vector)
    found = table.search(
        mode=mode, k=k, columns=columns, text=query, vector=vector, fusion_weight=fusion_weight, ann=ann or AnnQuery()
    )
    if mode == "vector":
        return _hits(found, "_distance", lambda d: 1.0 - d, vector if similarity else None)
    return _hits(found, "_relevance_score", lambda s: s, vector if similarity else None)


def _hits(
    rows: list[dict[str, Any]], score_column: str, to_score: Any, query_vector: np.ndarray | None = None
) -> list[SearchHit]:
    return [
        SearchHit(
            chunk_id=row["chunk_id"],
            doc_id=row["doc_id"],
            title=row.get("title") or "",
            section=row.get("section") or "",
            text=row["text"],
            score=float(to_score(row[score_column])),
            rank=i + 1,
            similarity=None if query_vector is None else _cosine(query_vector, row["vector"]),
        )
        for i, row in enumerate(rows)
    ]


def _cosine(a: np.ndarray, b: Any) -> float:
    b = np.asarray(b, dtype=np.float32)
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
