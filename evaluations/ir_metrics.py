"""Ranking metrics from graded relevance judgements: hit rate, recall, MRR and nDCG (trec_eval/BEIR definition)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def hit_rate(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """1.0 when any of the top k is relevant."""
    return 1.0 if any(relevant.get(item, 0) > 0 for item in ranked[:k]) else 0.0


def recall(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Share of the relevant items found in the top k."""
    wanted = {item for item, grade in relevant.items() if grade > 0}
    if not wanted:
        return math.nan
    return len(wanted & set(ranked[:k])) / len(wanted)


def reciprocal_rank(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant item in the top k (0 when none)."""
    for i, item in enumerate(ranked[:k], start=1):
        if relevant.get(item, 0) > 0:
            return 1.0 / i
    return 0.0


def ndcg(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gains, as trec_eval's ndcg_cut (and so BEIR) computes it.

    DCG = Σ rel_i / log2(i + 1) over the top k; the ideal ranking sorts all judged grades descending.
    """
    dcg = sum(relevant.get(item, 0) / math.log2(i + 1) for i, item in enumerate(ranked[:k], start=1))
    ideal_grades = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal_grades, start=1))
    return dcg / idcg if idcg > 0 else math.nan


def dedupe(items: Sequence[str]) -> list[str]:
    """Keep the first occurrence of each item (documents retrieved through several chunks)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def ranking_metrics(ranked: Sequence[str], relevant: Mapping[str, int], k: int, prefix: str) -> dict[str, float]:
    """All four metrics at k, named `<prefix>_<metric>@k`."""
    return {
        f"{prefix}_hit_rate@{k}": hit_rate(ranked, relevant, k),
        f"{prefix}_recall@{k}": recall(ranked, relevant, k),
        f"{prefix}_mrr@{k}": reciprocal_rank(ranked, relevant, k),
        f"{prefix}_ndcg@{k}": ndcg(ranked, relevant, k),
    }
