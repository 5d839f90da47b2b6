"""The IR-metric cases mutation testing found unpinned (benchmarks/mutation.py; survivors in mutation_notes.md).

Expected values are hand-computed and written out, or trec_eval's (pytrec_eval through ir_measures); nothing here
calls a helper of the module under test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import ir_measures
import pytest
from ir_measures import RR, R, Success, nDCG

from evaluations.ir_metrics import document_ranking, ndcg, passage_metrics, ranking_metrics, recall


def trec_eval(ranked: Sequence[str], grades: dict[str, int], k: int) -> dict[str, float]:
    """trec_eval's success@k, recall@k, recip_rank (run cut at k) and ndcg_cut@k for one query."""
    qrels = [ir_measures.Qrel("q", doc, grade) for doc, grade in grades.items()]
    run = [ir_measures.ScoredDoc("q", doc, float(len(ranked) - i)) for i, doc in enumerate(ranked)]
    values = {m.measure: m.value for m in ir_measures.pytrec_eval.iter_calc([Success @ k, R @ k, nDCG @ k], qrels, run)}
    rr = next(iter(ir_measures.pytrec_eval.iter_calc([RR], qrels, run[:k]))).value
    return {
        f"doc_hit_rate@{k}": values[Success @ k],
        f"doc_recall@{k}": values[R @ k],
        f"doc_mrr@{k}": rr,
        f"doc_ndcg@{k}": values[nDCG @ k],
    }


# --- documents: judged non-relevant documents, no relevant document ---------------------------------------------


def test_a_judged_non_relevant_document_not_retrieved_does_not_lower_recall() -> None:
    # given d1 (grade 1) and j0, judged and found not relevant (grade 0)
    grades = {"d1": 1, "j0": 0}
    # when only d1 is retrieved
    ours = ranking_metrics(["d1", "x1"], grades, 3, "doc")
    # then every metric is perfect: j0 is not one of the items to find (trec_eval counts only grades > 0)
    assert ours == {"doc_hit_rate@3": 1.0, "doc_recall@3": 1.0, "doc_mrr@3": 1.0, "doc_ndcg@3": 1.0}
    assert ours == pytest.approx(trec_eval(["d1", "x1"], grades, 3))


def test_recall_counts_only_graded_documents_among_several() -> None:
    # given three relevant documents and two judged non-relevant ones; two relevant ones are retrieved
    grades = {"d1": 2, "d2": 1, "d3": 3, "j1": 0, "j2": 0}
    # then recall is 2/3, as trec_eval has it
    assert recall(["d2", "j1", "d3"], grades, 3) == pytest.approx(2 / 3)
    assert trec_eval(["d2", "j1", "d3"], grades, 3)["doc_recall@3"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("grades", [{}, {"j0": 0}, {"j0": 0, "j1": 0}], ids=["no_judgement", "one_zero", "two_zero"])
def test_without_a_relevant_document_recall_and_ndcg_are_undefined(grades: dict[str, int]) -> None:
    # given a query with no document graded above 0, when a ranking is scored
    ours = ranking_metrics(["j0", "x1"], grades, 3, "doc")
    # then hit rate and MRR are 0 and recall and nDCG are NaN (no division by an ideal DCG of 0)
    assert ours["doc_hit_rate@3"] == 0.0
    assert ours["doc_mrr@3"] == 0.0
    assert math.isnan(ours["doc_recall@3"])
    assert math.isnan(ours["doc_ndcg@3"])
    assert math.isnan(ndcg([], grades, 3))


# --- passages ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["chunk", "doc"])
def test_passage_metrics_without_a_relevant_passage_are_all_nan_under_their_own_names(prefix: str) -> None:
    # given passages graded 0 only
    grades = {"p0": 0, "p1": 0}
    # when chunks holding them are scored at k = 4
    ours = passage_metrics([frozenset({"p0"}), frozenset({"p1"})], grades, 4, [frozenset({"p0"})], prefix=prefix)
    # then the four metrics are there, each NaN, under the same names as when a passage is relevant
    assert sorted(ours) == sorted(f"{prefix}_{m}@4" for m in ("hit_rate", "recall", "mrr", "ndcg"))
    assert all(math.isnan(v) for v in ours.values())


def test_a_passage_no_chunk_holds_counts_in_the_ideal_when_it_sorts_first() -> None:
    # given passages a and b (grade 1 each); no chunk holds a, whose id sorts first
    grades = {"a": 1, "b": 1}
    units = [frozenset({"b"}), frozenset({"other"})]
    # when the chunk holding b is retrieved first
    ours = passage_metrics([frozenset({"b"}), frozenset({"other"})], grades, 2, units)
    # then a is a unit of its own in the ideal: DCG = 1, ideal = 1 + 1/log2(3) = 1.6309…; nDCG = 0.6131…
    assert ours["chunk_ndcg@2"] == pytest.approx(0.6131471927654584)
    assert ours["chunk_recall@2"] == 0.5


def test_a_perfect_ranking_scores_exactly_one_despite_float_rounding() -> None:
    # given six passages of grade 2, each in its own chunk: summed in rank order, this DCG rounds one ulp above the
    # ideal's sum (1.0000000000000002 before the clamp)
    grades = {f"p{i}": 2 for i in range(6)}
    units = [frozenset({p}) for p in grades]
    # when they are retrieved in any order (all grades tie), then nDCG is exactly 1.0, never above
    ours = passage_metrics(units, grades, 6, units)
    assert ours["chunk_ndcg@6"] == 1.0
    assert ours == {"chunk_hit_rate@6": 1.0, "chunk_recall@6": 1.0, "chunk_mrr@6": 1.0, "chunk_ndcg@6": 1.0}


# --- document_ranking: when it stops fetching -------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    doc_id: str


class RecordingFetch:
    """The top `limit` chunks of a fixed list, recording every limit asked."""

    def __init__(self, doc_ids: Sequence[str]) -> None:
        self.hits = [Hit(d) for d in doc_ids]
        self.limits: list[int] = []

    def __call__(self, limit: int) -> list[Hit]:
        self.limits.append(limit)
        return self.hits[:limit]


def test_a_full_fetch_holding_exactly_k_documents_is_not_topped_up() -> None:
    # given a version of 30 chunks whose first 15 hold exactly 3 documents
    fetch = RecordingFetch(["A", "B", "C"] + ["C"] * 12 + ["D"] * 15)
    # when 3 documents are asked, then the first fetch (15 chunks, all it asked) is enough
    assert document_ranking(fetch, 3) == ["A", "B", "C"]
    assert fetch.limits == [15]


def test_the_top_up_stops_when_the_limit_reaches_exactly_ten_thousand() -> None:
    # given a version whose chunks all belong to one document
    fetch = RecordingFetch(["A"] * 12_000)
    # when 2 documents are asked starting at 2 500 chunks
    docs = document_ranking(fetch, 2, first=2_500)
    # then it asks 10 000 next and stops there: 10 000 is the bound, included
    assert docs == ["A"]
    assert fetch.limits == [2_500, 10_000]
