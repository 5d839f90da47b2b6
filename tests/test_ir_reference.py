"""Our IR metrics against a reference implementation: trec_eval (pytrec_eval) through ir_measures, as an oracle.

Document level, `ranking_metrics` must equal trec_eval's `success`, `recall`, `recip_rank` and `ndcg_cut` per query.
Passage level, `passage_metrics` must reduce to the same numbers when every chunk holds at most one passage and
every passage has its own chunk; where one chunk holds several passages (no reference applies) it is checked against
hand-computed values. `document_ranking` is checked with a fake fetch.

Reference notes (ir_measures 0.4.x):
- `RR@k` is not supported by the pytrec_eval provider: it silently ignores the cutoff (trec_eval's `recip_rank` has
  none). So RR@k is computed by pytrec_eval on the run cut at k (trec_eval's `-M k`), and cross-checked with
  ir_measures' MS MARCO provider, which does take the cutoff.
- Runs give strictly decreasing scores by rank, so trec_eval's tie-breaking never reorders them (see the tie test).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ir_measures
import pytest
from ir_measures import RR, R, Success, nDCG

from evaluations.ir_metrics import document_ranking, passage_metrics, ranking_metrics

METRICS = ("hit_rate", "recall", "mrr", "ndcg")


@dataclass(frozen=True)
class Case:
    ranked: tuple[str, ...]
    qrels: Mapping[str, int]
    k: int


# Hand-made rankings with graded qrels (grades 1, 2, 3); unjudged ids (x*) count as grade 0.
CASES = {
    "graded_several_relevant": Case(("x1", "d2", "d1", "x2", "d3"), {"d1": 3, "d2": 1, "d3": 2}, 5),
    "perfect_order": Case(("d1", "d3", "d2"), {"d1": 3, "d2": 1, "d3": 2}, 3),
    "no_relevant_retrieved": Case(("x1", "x2", "x3"), {"d1": 2, "d2": 1}, 3),
    "fewer_than_k_results": Case(("x1", "d2"), {"d1": 3, "d2": 2, "d3": 1}, 10),
    "k_below_number_relevant": Case(("d5", "d1", "d4", "d2", "d3"), {"d1": 3, "d2": 3, "d3": 2, "d4": 1, "d5": 1}, 3),
    "relevant_beyond_k": Case(("x1", "x2", "x3", "x4", "x5", "d1", "d2"), {"d1": 3, "d2": 1}, 5),
    "relevant_at_k_and_beyond": Case(("x1", "x2", "d2", "x3", "d1"), {"d1": 3, "d2": 1}, 3),
    "judged_grade_zero_retrieved": Case(("j0", "d1", "j1", "d2"), {"j0": 0, "j1": 0, "d1": 1, "d2": 3}, 4),
    "single_relevant_at_rank_one": Case(("d1", "x1", "x2"), {"d1": 1}, 1),
}


def run_of(qid: str, ranked: Sequence[str]) -> list[ir_measures.ScoredDoc]:
    """A run whose scores strictly decrease by rank: no ties, so trec_eval keeps this order."""
    return [ir_measures.ScoredDoc(qid, doc, float(len(ranked) - i)) for i, doc in enumerate(ranked)]


def qrels_of(qid: str, grades: Mapping[str, int]) -> list[ir_measures.Qrel]:
    return [ir_measures.Qrel(qid, doc, grade) for doc, grade in grades.items()]


def per_query(
    provider: ir_measures.providers.Provider,
    measures: Sequence[ir_measures.Measure],
    qrels: Sequence[ir_measures.Qrel],
    run: Sequence[ir_measures.ScoredDoc],
) -> dict[str, dict[ir_measures.Measure, float]]:
    """Per query, the value of each measure as `provider` computes it."""
    out: dict[str, dict[ir_measures.Measure, float]] = {}
    for metric in provider.iter_calc(measures, qrels, run):
        out.setdefault(metric.query_id, {})[metric.measure] = metric.value
    return out


def reference(ranked: Sequence[str], grades: Mapping[str, int], k: int, prefix: str = "doc") -> dict[str, float]:
    """trec_eval's success@k, recall@k, recip_rank (run cut at k) and ndcg_cut@k, named like ranking_metrics."""
    qid = "q"
    qrels = qrels_of(qid, grades)
    values = per_query(ir_measures.pytrec_eval, [Success @ k, R @ k, nDCG @ k], qrels, run_of(qid, ranked))[qid]
    rr = per_query(ir_measures.pytrec_eval, [RR], qrels, run_of(qid, ranked[:k]))[qid][RR]
    rr_msmarco = per_query(ir_measures.msmarco, [RR @ k], qrels, run_of(qid, ranked))[qid][RR @ k]
    assert rr == pytest.approx(rr_msmarco)  # two reference implementations of RR@k agree
    return {
        f"{prefix}_hit_rate@{k}": values[Success @ k],
        f"{prefix}_recall@{k}": values[R @ k],
        f"{prefix}_mrr@{k}": rr,
        f"{prefix}_ndcg@{k}": values[nDCG @ k],
    }


def exponential_ndcg(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """nDCG@k with gains 2^rel - 1 (the Burges et al. convention), for contrast."""
    dcg = sum((2 ** grades.get(d, 0) - 1) / math.log2(i + 1) for i, d in enumerate(ranked[:k], start=1))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    return dcg / sum((2**g - 1) / math.log2(i + 1) for i, g in enumerate(ideal, start=1))


# --- document level: ranking_metrics against trec_eval ---------------------------------------------------------


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_ranking_metrics_equal_trec_eval_per_query(case: Case) -> None:
    # given a ranking without ties and graded qrels
    # when our metrics and trec_eval (pytrec_eval via ir_measures) score it at k
    ours = ranking_metrics(case.ranked, case.qrels, case.k, "doc")
    expected = reference(case.ranked, case.qrels, case.k)
    # then every metric agrees
    assert ours == pytest.approx(expected)


def test_reference_rr_through_pytrec_eval_ignores_the_cutoff() -> None:
    # given the first relevant document at rank 2
    qrels, run = qrels_of("q", {"d1": 1}), run_of("q", ["x1", "d1"])
    # when RR@1 is asked of the pytrec_eval provider, then it answers recip_rank without cutoff (1/2, not 0) ...
    assert per_query(ir_measures.pytrec_eval, [RR @ 1], qrels, run)["q"][RR @ 1] == pytest.approx(0.5)
    # ... which is why `reference` cuts the run at k, as our mrr@k does
    assert ranking_metrics(["x1", "d1"], {"d1": 1}, 1, "doc")["doc_mrr@1"] == 0.0
    assert reference(["x1", "d1"], {"d1": 1}, 1)["doc_mrr@1"] == 0.0


def test_tied_scores_trec_eval_orders_by_doc_id_descending() -> None:
    # given three documents with the same score, a (grade 2) and c (grade 1) relevant
    grades = {"a": 2, "c": 1}
    qrels = qrels_of("q", grades)
    run = [ir_measures.ScoredDoc("q", doc, 1.0) for doc in ("a", "b", "c")]
    # when trec_eval scores the tied run
    values = per_query(ir_measures.pytrec_eval, [nDCG @ 1, nDCG @ 3, RR], qrels, run)["q"]
    # then it ranked them c, b, a (doc id descending): our metrics on that ranking agree ...
    ours = ranking_metrics(["c", "b", "a"], grades, 3, "doc")
    assert values[nDCG @ 1] == pytest.approx(ranking_metrics(["c", "b", "a"], grades, 1, "doc")["doc_ndcg@1"])
    assert values[nDCG @ 3] == pytest.approx(ours["doc_ndcg@3"])
    assert values[RR] == pytest.approx(ours["doc_mrr@3"])
    # ... and not on the input order a, b, c (nDCG@1 would be 1.0, not 1/2)
    assert ranking_metrics(["a", "b", "c"], grades, 1, "doc")["doc_ndcg@1"] == 1.0
    assert values[nDCG @ 1] == pytest.approx(0.5)


def test_gains_are_linear_like_trec_eval_not_exponential() -> None:
    # given a grade-1 document ranked above a grade-3 one
    ranked, grades, k = ["b", "a"], {"a": 3, "b": 1}, 2
    linear = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))  # 0.7967
    exponential = (1 + 7 / math.log2(3)) / (7 + 1 / math.log2(3))  # 0.7098
    # when our nDCG and trec_eval's nDCG score it
    ours = ranking_metrics(ranked, grades, k, "doc")["doc_ndcg@2"]
    trec = per_query(ir_measures.pytrec_eval, [nDCG @ k], qrels_of("q", grades), run_of("q", ranked))["q"][nDCG @ k]
    exponential_measure = nDCG(gains={0: 0, 1: 1, 2: 3, 3: 7}) @ k
    qrels, run = qrels_of("q", grades), run_of("q", ranked)
    trec_exponential = per_query(ir_measures.pytrec_eval, [exponential_measure], qrels, run)["q"][exponential_measure]
    # then both use linear gains (rel_i / log2(i + 1)) ...
    assert ours == pytest.approx(linear)
    assert trec == pytest.approx(linear)
    # ... and not the 2^rel - 1 convention, which gives another value here
    assert exponential_ndcg(ranked, grades, k) == pytest.approx(exponential)
    assert trec_exponential == pytest.approx(exponential)
    assert ours != pytest.approx(exponential, abs=1e-3)


# --- passage level: passage_metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_passage_metrics_reduce_to_trec_eval_with_one_passage_per_chunk(case: Case) -> None:
    # given chunks that each hold at most one passage (the ranked ids) and a version where every passage has its own
    # chunk
    covered = [frozenset({passage}) for passage in case.ranked]
    units = [frozenset({passage}) for passage in case.qrels]
    # when passage_metrics scores them
    ours = passage_metrics(covered, case.qrels, case.k, units, prefix="chunk")
    # then it equals trec_eval on the same ranking of passage ids
    assert ours == pytest.approx(reference(case.ranked, case.qrels, case.k, prefix="chunk"))


def chunk(*passages: str) -> frozenset[str]:
    return frozenset(passages)


def metrics(hit_rate: float, recall: float, mrr: float, ndcg: float, k: int) -> dict[str, float]:
    return dict(zip((f"chunk_{m}@{k}" for m in METRICS), (hit_rate, recall, mrr, ndcg), strict=True))


def test_one_chunk_holding_both_passages_at_rank_one_is_perfect() -> None:
    # given two evidence passages held together by one chunk of the version
    grades = {"p1": 2, "p2": 1}
    units = [chunk("p1", "p2")]
    # when that chunk is retrieved first
    ours = passage_metrics([chunk("p1", "p2"), chunk()], grades, 5, units)
    # then both passages are credited at rank 1: DCG = (2 + 1) / 1 = the ideal
    assert ours == pytest.approx(metrics(1.0, 1.0, 1.0, 1.0, 5))


def test_a_passage_is_credited_once_and_the_ideal_takes_the_best_chunk() -> None:
    # given a version holding p1 and p2 together and each alone
    grades = {"p1": 1, "p2": 1}
    units = [chunk("p1", "p2"), chunk("p1"), chunk("p2")]
    # when the separate chunks are retrieved at ranks 1 and 2, then p1 again
    ours = passage_metrics([chunk("p1"), chunk("p2"), chunk("p1", "p2")], grades, 5, units)
    # then DCG = 1 + 1/log2(3) (p1 not credited twice), the ideal = 2 (both at rank 1 through the shared chunk)
    assert ours == pytest.approx(metrics(1.0, 1.0, 1.0, (1 + 1 / math.log2(3)) / 2, 5))


def test_two_passages_in_separate_chunks_at_ranks_one_and_three() -> None:
    # given p1 (grade 2) and p2 (grade 1), each in its own chunk
    grades = {"p1": 2, "p2": 1}
    units = [chunk("p1"), chunk("p2"), chunk("other")]
    # when they are retrieved at ranks 1 and 3
    ours = passage_metrics([chunk("p1"), chunk("other"), chunk("p2")], grades, 5, units)
    # then DCG = 2/log2(2) + 1/log2(4) = 2.5; ideal = 2/log2(2) + 1/log2(3)
    assert ours == pytest.approx(metrics(1.0, 1.0, 1.0, 2.5 / (2 + 1 / math.log2(3)), 5))


def test_a_passage_no_chunk_holds_still_counts_in_the_ideal() -> None:
    # given p2, which no chunk of the version holds (it was lost in chunking)
    grades = {"p1": 1, "p2": 1}
    units = [chunk("p1"), chunk("other")]
    # when the chunk holding p1 is retrieved first
    ours = passage_metrics([chunk("p1"), chunk("other")], grades, 5, units)
    # then p2 is a unit of its own in the ideal: DCG = 1, ideal = 1 + 1/log2(3); recall = 1/2
    assert ours == pytest.approx(metrics(1.0, 0.5, 1.0, 1 / (1 + 1 / math.log2(3)), 5))
    assert ours["chunk_ndcg@5"] < 1.0


def test_no_relevant_passage_retrieved_scores_zero() -> None:
    # given retrieved chunks holding only a grade-0 passage or none
    grades = {"p1": 3, "p2": 1, "p0": 0}
    units = [chunk("p1"), chunk("p2"), chunk("p0")]
    # when passage_metrics scores them, then every metric is 0
    ours = passage_metrics([chunk("p0"), chunk(), chunk("p0")], grades, 3, units)
    assert ours == metrics(0.0, 0.0, 0.0, 0.0, 3)


def test_fewer_chunks_than_k() -> None:
    # given only one retrieved chunk, holding the grade-1 passage, and k = 10
    grades = {"p1": 3, "p2": 1}
    units = [chunk("p1"), chunk("p2")]
    ours = passage_metrics([chunk("p2")], grades, 10, units)
    # then DCG = 1, ideal = 3 + 1/log2(3), recall = 1/2
    assert ours == pytest.approx(metrics(1.0, 0.5, 1.0, 1 / (3 + 1 / math.log2(3)), 10))


# --- document_ranking -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    doc_id: str


class FakeFetch:
    """Returns the top `limit` chunks of a fixed list (as a store would), recording the limits asked."""

    def __init__(self, doc_ids: Sequence[str]) -> None:
        self.hits = [Hit(d) for d in doc_ids]
        self.limits: list[int] = []

    def __call__(self, limit: int) -> list[Hit]:
        self.limits.append(limit)
        return self.hits[:limit]


def test_documents_come_in_order_of_their_best_chunk_cut_at_k() -> None:
    # given chunks of documents A, B, A, C, B, D
    fetch = FakeFetch(["A", "B", "A", "C", "B", "D"])
    # when the top 3 documents are asked
    # then each document appears once, at the rank of its best chunk, and the list stops at k
    assert document_ranking(fetch, 3) == ["A", "B", "C"]
    assert fetch.limits == [15]  # 5k chunks; the fetch returned fewer than asked, so there is no more


def test_tops_up_when_fewer_than_k_documents_and_the_fetch_was_full() -> None:
    # given a document with many chunks ahead of the others
    fetch = FakeFetch(["A"] * 10 + ["B"] * 10 + ["C"] * 5 + ["D"] * 5)
    # when 3 documents are asked: the first 15 chunks hold only A and B, and the fetch returned all 15
    docs = document_ranking(fetch, 3)
    # then it asks four times more chunks and returns the first 3 distinct documents
    assert fetch.limits == [15, 60]
    assert docs == ["A", "B", "C"]


def test_stops_when_the_fetch_returned_fewer_than_asked() -> None:
    # given a version with only 8 chunks from 2 documents
    fetch = FakeFetch(["A"] * 5 + ["B"] * 3)
    # when 3 documents are asked, then it does not ask again and returns the 2 it has
    assert document_ranking(fetch, 3) == ["A", "B"]
    assert fetch.limits == [15]


def test_first_limit_is_honoured_and_the_top_up_is_bounded() -> None:
    # given a version whose chunks all belong to one document
    fetch = FakeFetch(["A"] * 20_000)
    # when 2 documents are asked, starting at 4 chunks
    docs = document_ranking(fetch, 2, first=4)
    # then it grows the limit four-fold and stops once the limit reaches 10 000
    assert docs == ["A"]
    assert fetch.limits == [4, 16, 64, 256, 1024, 4096, 16384]
