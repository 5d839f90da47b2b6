"""Ranking metrics from graded relevance judgements: hit rate, recall, MRR and nDCG (trec_eval/BEIR definition).

Two units are ranked. Documents: the distinct documents of a retrieval in the order of their best chunk
(`document_ranking`), judged by graded qrels, exactly as trec_eval's `success`, `recall`, `recip_rank` and
`ndcg_cut` compute it. Passages: the evidence passages a retrieved chunk holds (`passage_metrics`); one chunk may
hold several passages, and each passage is credited at the first rank that holds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any


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


def document_ranking(fetch: Callable[[int], Sequence[Any]], k: int, first: int | None = None) -> list[str]:
    """The first k distinct documents of a retrieval, in the order of each document's best chunk.

    `fetch(n)` returns the top n chunks (anything with a `doc_id`). Documents have several chunks, so it starts at
    5k chunks and fetches four times more while fewer than k distinct documents came back and the version may hold
    more (it returned all it was asked for): the same definition for golden sets and BEIR.
    """
    limit = first or 5 * k
    while True:
        hits = fetch(limit)
        docs = dedupe([h.doc_id for h in hits])
        if len(docs) >= k or len(hits) < limit or limit >= 10_000:
            return docs[:k]
        limit *= 4


def passage_metrics(
    covered: Sequence[frozenset[str]],
    grades: Mapping[str, int],
    k: int,
    units: Sequence[frozenset[str]] = (),
    prefix: str = "chunk",
) -> dict[str, float]:
    """Hit rate, recall, MRR and nDCG@k over evidence passages, when one retrieved unit may hold several.

    `covered[i]` holds the ids of the passages the i-th retrieved chunk holds, `grades` each passage's grade.
    A passage is credited once, at the first rank that holds it: the gain of a rank is the sum of the grades of
    the passages it adds. The ideal DCG is the best any ranking of the version's chunks could reach (`units`: the
    passage sets of every chunk that holds one; a passage no chunk holds counts as a unit of its own, so a version
    that lost it is penalised). When every chunk holds at most one passage and every passage has its own chunk,
    these are exactly trec_eval's `success`, `recall`, `recip_rank` and `ndcg_cut` over passages.
    """
    wanted = {p for p, g in grades.items() if g > 0}
    top = [frozenset(c) & wanted for c in covered[:k]]
    found: set[str] = set()
    dcg = 0.0
    first_rank = 0
    for rank, passages in enumerate(top, start=1):
        new = passages - found
        if passages and not first_rank:
            first_rank = rank
        dcg += sum(grades[p] for p in new) / math.log2(rank + 1)
        found |= new
    if not wanted:
        return {f"{prefix}_{m}@{k}": math.nan for m in ("hit_rate", "recall", "mrr", "ndcg")}
    idcg = _ideal_dcg(wanted, grades, units, k)
    return {
        f"{prefix}_hit_rate@{k}": 1.0 if first_rank else 0.0,
        f"{prefix}_recall@{k}": len(found) / len(wanted),
        f"{prefix}_mrr@{k}": 1.0 / first_rank if first_rank else 0.0,
        f"{prefix}_ndcg@{k}": min(1.0, dcg / idcg),  # exact ideal: the min only absorbs float rounding
    }


def _ideal_dcg(wanted: set[str], grades: Mapping[str, int], units: Sequence[frozenset[str]], k: int) -> float:
    """The highest DCG@k any ordering of `units` reaches (exact: dynamic programming over covered passage sets)."""
    order = sorted(wanted)
    bit = {p: 1 << i for i, p in enumerate(order)}
    masks = {sum(bit[p] for p in u if p in bit) for u in units}
    covered_somewhere = 0
    for m in masks:
        covered_somewhere |= m
    masks |= {bit[p] for p in order if not covered_somewhere & bit[p]}  # passages no chunk holds
    masks.discard(0)

    def value(mask: int) -> int:
        return sum(grades[p] for p in order if mask & bit[p])

    @cache
    def best(position: int, done: int) -> float:
        if position > k:
            return 0.0
        options = [m for m in masks if m & ~done]
        if not options:
            return 0.0
        return max(value(m & ~done) / math.log2(position + 1) + best(position + 1, done | m) for m in options)

    return best(1, 0)
