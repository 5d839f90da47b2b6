"""Gate, metric and input-validation specification (plain functions)."""

from __future__ import annotations

import math
from pathlib import Path

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


def test_paired_bootstrap_interval_contains_the_true_shift() -> None:
    production = {f"q{i}": 0.5 for i in range(60)}
    better = {q: v + 0.1 for q, v in production.items()}
    mean, low, high, n = paired_bootstrap(better, production, 2000, 0.95, 0)
    assert n == 60 and mean == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    noisy = {q: v + (0.3 if i % 2 else -0.3) for i, (q, v) in enumerate(production.items())}
    _, low, high, _ = paired_bootstrap(noisy, production, 2000, 0.95, 0)
    assert low < 0 < high


def test_gate_blocks_a_significant_regression_and_passes_noise_free_equality() -> None:
    policy, _ = load_policy(REPO / "evaluations/policies/default.yaml")
    per_q = {f"q{i}": 0.8 for i in range(40)}
    worse = {q: 0.6 for q in per_q}
    means = {
        "chunk_ndcg@10": 0.8,
        "doc_ndcg@10": 0.9,
        "chunk_recall@10": 0.9,
        "doc_hit_rate@10": 1.0,
        "semantic_similarity": 0.6,
        "rouge_score": 0.2,
        "id_based_context_recall": 0.9,
    }
    same = decide(policy, means, {"chunk_ndcg@10": per_q}, means, {"chunk_ndcg@10": per_q}, [])
    assert same["decision"] == "promote", same["reasons"]
    blocked = decide(
        policy, {**means, "chunk_ndcg@10": 0.6}, {"chunk_ndcg@10": worse}, means, {"chunk_ndcg@10": per_q}, []
    )
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
