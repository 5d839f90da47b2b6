"""Gate, metric and input-validation specification (plain functions)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from evaluations.gate import BadPolicyError, decide, load_policy, paired_bootstrap
from evaluations.golden import BadGoldenSetError, load_golden_set
from evaluations.ir_metrics import hit_rate, ndcg, recall, reciprocal_rank

from .conftest import REPO


def test_ndcg_matches_a_hand_computed_graded_case() -> None:
    # qrels: d1=2, d2=1, d3=2; ranking d2, x, d1: DCG = 1/log2(2) + 2/log2(4) = 2.0
    # ideal: 2, 2, 1 -> 2/1 + 2/log2(3) + 1/2 = 3.7618595
    value = ndcg(["d2", "x", "d1"], {"d1": 2, "d2": 1, "d3": 2}, k=10)
    assert value == pytest.approx(2.0 / (2 + 2 / math.log2(3) + 0.5))
    assert ndcg(["d1", "d3", "d2"], {"d1": 2, "d2": 1, "d3": 2}, k=10) == pytest.approx(1.0)
    assert ndcg(["d2", "x", "d1"], {"d1": 2, "d2": 1, "d3": 2}, k=1) == pytest.approx(1 / 2)


def test_hit_rate_recall_and_mrr() -> None:
    relevant = {"a": 1, "b": 2}
    assert hit_rate(["x", "b"], relevant, 1) == 0.0 and hit_rate(["x", "b"], relevant, 2) == 1.0
    assert recall(["b", "x", "a"], relevant, 2) == 0.5 and recall(["b", "x", "a"], relevant, 3) == 1.0
    assert reciprocal_rank(["x", "y", "a"], relevant, 10) == pytest.approx(1 / 3)


def test_paired_bootstrap_intervals_cover_the_true_mean_change_at_their_confidence() -> None:
    # per-question changes drawn from a skewed distribution with a known mean (0.3 · 0.2 − 0.7 · 0.05 = 0.025)
    rng = np.random.default_rng(42)
    true_mean, covered, trials = 0.3 * 0.2 - 0.7 * 0.05, 0, 400
    for trial in range(trials):
        diffs = np.where(rng.random(50) < 0.3, 0.2, -0.05) + rng.normal(0, 0.05, 50)
        production = {f"q{i}": 0.5 for i in range(50)}
        candidate = {q: 0.5 + float(d) for q, d in zip(production, diffs, strict=True)}
        _, low, high, _ = paired_bootstrap(candidate, production, 1000, 0.9, trial)
        covered += low <= true_mean <= high
    # a 90 % percentile interval on 50 questions covers the mean in about 90 % of data sets (binomial sd 1.5 %)
    assert 0.85 <= covered / trials <= 0.95, covered / trials


def test_paired_bootstrap_interval_contains_the_true_shift() -> None:
    production = {f"q{i}": 0.5 for i in range(60)}
    better = {q: v + 0.1 for q, v in production.items()}
    mean, low, high, n = paired_bootstrap(better, production, 2000, 0.95, 0)
    assert n == 60 and mean == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    noisy = {q: v + (0.3 if i % 2 else -0.3) for i, (q, v) in enumerate(production.items())}
    _, low, high, _ = paired_bootstrap(noisy, production, 2000, 0.95, 0)
    assert low < 0 < high


GATED_MEANS = {
    "chunk_ndcg@10": 0.8,
    "doc_ndcg@10": 0.9,
    "chunk_recall@10": 0.9,
    "doc_hit_rate@10": 1.0,
    "semantic_similarity": 0.6,
    "rouge_score": 0.2,
    "id_based_context_recall": 0.9,
    "abstention": 0.5,
    "answer_rate": 0.9,
}


def test_gate_blocks_a_significant_regression_and_passes_noise_free_equality() -> None:
    policy, _ = load_policy(REPO / "evaluations/policies/default.yaml")
    per_q = {f"q{i}": 0.8 for i in range(40)}
    worse = {q: 0.6 for q in per_q}
    means = dict(GATED_MEANS)
    every = dict.fromkeys(policy.gated, per_q)
    same = decide(policy, means, every, means, every, [])
    assert same["decision"] == "promote", same["reasons"]
    assert same["verdict"] == "equivalent"
    blocked = decide(policy, {**means, "chunk_ndcg@10": 0.6}, {**every, "chunk_ndcg@10": worse}, means, every, [])
    assert blocked["decision"] == "block"
    assert any(r.startswith("chunk_ndcg@10 fell by 0.2000") for r in blocked["reasons"])
    assert any("interval of the change" in r for r in blocked["reasons"])
    missing = decide(policy, {**means, "semantic_similarity": None}, {}, None, None, ["vector_norm failed"])
    assert "semantic_similarity is required but was not computed" in missing["reasons"]
    assert "data quality: vector_norm failed" in missing["reasons"]


def test_policy_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("primary_metric: chunk_ndcg@10\nminimums:\n  chunk_ndgc@10: 0.5\n")
    with pytest.raises(BadPolicyError, match=r"p.yaml: .*unknown metric name\(s\) \['chunk_ndgc@10'\]"):
        load_policy(bad)
    bad.write_text("primary_metric: chunk_ndcg@10\nbootstrap:\n  samples: ten\n")
    with pytest.raises(BadPolicyError, match=r"field 'bootstrap\.samples'"):
        load_policy(bad)


def test_golden_set_errors_name_the_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    ok = '{"id": "a", "question": "What is x?", "kind": "unanswerable", "reference_answer": "unknown"}'
    path.write_text(ok + '\n{"id": "b", "question": "What is y?", "kind": "factoid", "reference_answer": "y"}\n')
    with pytest.raises(BadGoldenSetError, match=r"g.jsonl:2: field 'evidence': .*needs at least one evidence"):
        load_golden_set(path)
    path.write_text(ok + "\n" + ok + "\n")
    with pytest.raises(BadGoldenSetError, match=r"g\.jsonl:2: field 'id': 'a' already used on line 1"):
        load_golden_set(path)


def test_the_bundled_golden_set_is_valid_and_varied() -> None:
    questions = load_golden_set(REPO / "datasets/golden/python-docs.jsonl")
    kinds = {q.kind for q in questions}
    assert len(questions) >= 60 and kinds == {"factoid", "multi_sentence", "paraphrase", "unanswerable"}
    assert sum(not q.answerable for q in questions) >= 10


def test_beir_files_are_parsed_with_graded_relevance(tmp_path: Path) -> None:
    from evaluations.beir import load_qrels, load_queries

    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "zebra"}\n{"_id": "2", "text": "lion"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\td2\t2\n1\td1\t1\n2\td3\t1\n")
    assert load_queries(tmp_path / "queries.jsonl") == {"1": "zebra", "2": "lion"}
    assert load_qrels(tmp_path / "qrels.tsv") == {"1": {"d2": 2, "d1": 1}, "2": {"d3": 1}}
    (tmp_path / "bad.tsv").write_text("1\td2\n")
    with pytest.raises(BadGoldenSetError, match="expected 'query-id<TAB>corpus-id<TAB>score'"):
        load_qrels(tmp_path / "bad.tsv")


def default_policy():
    return load_policy(REPO / "evaluations/policies/default.yaml")[0]


def per_question(means: dict[str, float], n: int = 40) -> dict[str, dict[str, float]]:
    return {m: {f"q{i}": v for i in range(n)} for m, v in means.items()}


def test_a_gated_metric_that_production_lacks_blocks_instead_of_passing() -> None:
    policy = default_policy()
    production = {**GATED_MEANS, "semantic_similarity": None}  # e.g. a flaky endpoint while production was re-scored

    decision = decide(policy, GATED_MEANS, per_question(GATED_MEANS), production, per_question(GATED_MEANS), [])

    assert decision["decision"] == "block"
    assert "semantic_similarity is gated but production's score is missing" in " ".join(decision["reasons"])


def test_a_metric_scored_on_too_few_questions_is_missing_and_a_required_one_blocks() -> None:
    from evaluations.gate import apply_coverage

    policy = default_policy()
    coverage = {"rouge_score": [40, 56], "chunk_ndcg@10": [56, 56]}  # 71 % < min_coverage 0.9

    means, missing = apply_coverage(GATED_MEANS, coverage, {}, policy.min_coverage)
    decision = decide(policy, means, per_question(GATED_MEANS), None, None, [])

    assert means["rouge_score"] is None and means["chunk_ndcg@10"] == 0.8
    assert missing["rouge_score"] == "scored on 40/56 questions (71%), under min_coverage 90%"
    assert "rouge_score is required but was not computed" in decision["reasons"]


def test_too_few_paired_questions_block_with_the_reason() -> None:
    policy = default_policy()
    few = per_question(GATED_MEANS, n=6)

    decision = decide(policy, GATED_MEANS, few, GATED_MEANS, few, [])

    assert decision["decision"] == "block" and decision["verdict"] == "not comparable"
    assert any("only 6 questions scored on both versions, fewer than bootstrap.min_questions 10" in r
               for r in decision["reasons"])  # fmt: skip


def test_a_tolerance_below_the_aa_noise_floor_is_widened_and_said() -> None:
    from evaluations.gate import noise_floor

    policy = default_policy()
    questions = [f"q{i}" for i in range(20)]
    runs = [
        {"semantic_similarity": dict.fromkeys(questions, 0.60), "chunk_ndcg@10": dict.fromkeys(questions, 0.8)},
        {"semantic_similarity": dict.fromkeys(questions, 0.645), "chunk_ndcg@10": dict.fromkeys(questions, 0.8)},
    ]
    floors = noise_floor(runs)
    production = per_question(GATED_MEANS)
    candidate = {**production, "semantic_similarity": {q: 0.56 for q in production["semantic_similarity"]}}
    cand_means = {**GATED_MEANS, "semantic_similarity": 0.56}  # fell by 0.04: above 0.03, within the 0.045 floor

    strict = decide(policy, cand_means, candidate, GATED_MEANS, production, [])
    widened = decide(policy, cand_means, candidate, GATED_MEANS, production, [], floors=floors)

    assert floors == {"chunk_ndcg@10": 0.0, "semantic_similarity": pytest.approx(0.045)}
    assert strict["decision"] == "block"
    assert widened["decision"] == "promote", widened["reasons"]
    assert (
        "semantic_similarity: tolerance widened to the A/A noise floor 0.0450 (policy: 0.02 absolute, 0.03 bootstrap)"
        in widened["notes"]
    )


def test_a_candidate_holding_productions_data_has_nothing_to_promote() -> None:
    policy = default_policy()
    same = per_question(GATED_MEANS)

    decision = decide(policy, GATED_MEANS, same, GATED_MEANS, same, [], unchanged="version 5 is production")

    assert decision["decision"] == "block"
    assert decision["reasons"] == ["nothing to promote: version 5 is production"]


def test_promote_if_better_needs_an_interval_above_zero() -> None:
    policy = default_policy().model_copy(update={"promote_if": "better"})
    production = per_question(GATED_MEANS)
    better = {**production, "chunk_ndcg@10": {q: 0.9 for q in production["chunk_ndcg@10"]}}

    equal = decide(policy, GATED_MEANS, production, GATED_MEANS, production, [])
    improved = decide(policy, {**GATED_MEANS, "chunk_ndcg@10": 0.9}, better, GATED_MEANS, production, [])

    assert equal["decision"] == "block" and equal["verdict"] == "equivalent"
    assert "promote_if: better" in equal["reasons"][0]
    assert improved["decision"] == "promote" and improved["verdict"] == "better"
