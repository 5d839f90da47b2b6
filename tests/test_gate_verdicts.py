"""Wrong verdicts of issue 22, section 2, each pinned by a case whose right answer is known (plain functions)."""

from __future__ import annotations

import math
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from evaluations.gate import (
    BadPolicyError,
    Policy,
    decide,
    golden_floors,
    interval_verdict,
    noise_floor,
    paired_bootstrap,
    reselecting_bootstrap,
)
from evaluations.golden import GoldenQuestion, merge_overlapping
from evaluations.judgement import Preparation, judge, prepare
from evaluations.ragas_metrics import OFFLINE_METRICS
from evaluations.report import ci_label, metric_rows
from evaluations.scoring import (
    ABSTENTION,
    CANNOT_DECLINE,
    QuestionResult,
    VersionScores,
    coverage_of,
    retrieval_scores,
    stale_passages,
)
from tasks.serve.retrieval import SearchHit
from tasks.settings import Settings
from tasks.store.backends import open_store
from tasks.store.interface import TableVersion

PRIMARY = "chunk_ndcg@10"


def policy(**update: object) -> Policy:
    base = Policy(
        primary_metric=PRIMARY,
        gated=[PRIMARY, ABSTENTION],
        required=[PRIMARY],
        bootstrap={"samples": 2000, "confidence": 0.95, "tolerance": 0.03, "seed": 7, "min_questions": 10},
    )
    return base.model_copy(update=update)


def version(number: int, answerable: dict[str, float], unanswerable: dict[str, float | None] | None = None,
            missing: dict[str, str] | None = None) -> VersionScores:  # fmt: skip
    """A scored version: `answerable` question id → primary score; `unanswerable` id → abstention (None: unscored)."""
    results = [QuestionResult(q, "factoid", "?", [], "a", {PRIMARY: v}) for q, v in answerable.items()]
    results += [
        QuestionResult(q, "unanswerable", "?", [], "a", {ABSTENTION: v}) for q, v in (unanswerable or {}).items()
    ]
    names = [PRIMARY, ABSTENTION]
    means: dict[str, float | None] = {}
    for name in names:
        values = [v for r in results if (v := r.scores.get(name)) is not None]
        means[name] = sum(values) / len(values) if values else None
    return VersionScores(
        number, "vector", "extractive", results, means, dict(missing or {}), {}, coverage_of(results, names)
    )


def test_a_gated_metric_with_fewer_questions_than_min_questions_is_not_judged_and_does_not_block() -> None:
    # given a generated set of 60 questions, 9 of them unanswerable (15 %), and min_questions 10
    scores = {f"q{i}": 0.7 for i in range(51)}
    unanswerable = {f"u{i}": 1.0 for i in range(9)}
    production = version(1, scores, unanswerable)
    candidate = version(2, {q: 0.72 for q in scores}, unanswerable)

    decision = judge(policy(), candidate, production)

    # today's code blocked on "abstention: only 9 questions": a second version could never be promoted
    assert decision["decision"] == "promote", decision["reasons"]
    assert any(
        n.startswith("abstention not compared with production: the golden set has 9 question(s)")
        for n in decision["notes"]
    )


def test_abstention_without_an_answerer_that_can_decline_is_not_judged() -> None:
    scores = {f"q{i}": 0.7 for i in range(20)}
    no_llm = {ABSTENTION: CANNOT_DECLINE}
    production = version(1, scores, {f"u{i}": None for i in range(12)}, no_llm)
    candidate = version(2, scores | {"q0": 0.71}, {f"u{i}": None for i in range(12)}, no_llm)

    decision = judge(policy(), candidate, production)

    assert decision["decision"] == "promote", decision["reasons"]
    assert f"abstention not judged: {CANNOT_DECLINE}" in decision["notes"]


def test_a_gated_metric_constant_on_both_sides_is_flagged_as_unable_to_see_a_change() -> None:
    scores = {f"q{i}": 0.5 + i / 100 for i in range(20)}
    zeros = {f"u{i}": 0.0 for i in range(12)}

    decision = judge(policy(), version(2, scores | {"q0": 0.9}, zeros), version(1, scores, zeros))

    assert decision["comparisons"][ABSTENTION]["constant"] is True
    assert decision["comparisons"][PRIMARY]["constant"] is False
    assert (
        "abstention is the same on every question of both versions (0 and 0): this comparison cannot see a change"
        in decision["notes"]
    )


def test_the_delta_is_paired_and_a_question_the_candidate_did_not_score_is_a_failure() -> None:
    # production scores 20 questions; the candidate fails to score the 2 hardest ones and is equal elsewhere
    production = {f"q{i}": 0.9 if i < 18 else 0.1 for i in range(20)}
    candidate = {q: v for q, v in production.items() if v > 0.5}

    mean, _, high, n = paired_bootstrap(candidate, production, 500, 0.95, 0)

    # unpaired means: 0.9 − 0.82 = +0.08, a "better" candidate; paired with failures as 0: −0.1 × 2/20 = −0.01
    assert n == 20
    assert mean == pytest.approx(-0.01)
    assert high <= 0 < 0.08


def test_decide_reports_the_paired_delta_not_the_difference_of_unpaired_means() -> None:
    production = {f"q{i}": 0.9 if i < 18 else 0.1 for i in range(20)}
    candidate = {q: v for q, v in production.items() if v > 0.5}
    p = policy(gated=[PRIMARY])

    decision = decide(p, {PRIMARY: 0.9}, {PRIMARY: candidate}, {PRIMARY: 0.82}, {PRIMARY: production}, [])

    assert decision["comparisons"][PRIMARY]["delta"] == pytest.approx(-0.01)


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [
        (0.01, 0.05, "better"),
        (-0.06, -0.01, "worse"),  # wholly below 0 (today: "equivalent" while above -tolerance... or not)
        (-0.05, 0.02, "inconclusive"),  # crosses -tolerance: today "equivalent"
        (-0.02, 0.02, "equivalent"),
        (-0.01, 0.06, "not worse"),
    ],
)
def test_interval_verdicts_say_what_the_interval_says(low: float, high: float, verdict: str) -> None:
    assert interval_verdict(low, high, 0.03) == verdict


def test_a_primary_interval_crossing_minus_tolerance_is_inconclusive_and_blocks() -> None:
    rng = np.random.default_rng(3)
    production = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.2, 1.0, 30))}
    candidate = {q: v + (0.35 if i % 2 else -0.39) for i, (q, v) in enumerate(production.items())}
    p = policy(gated=[PRIMARY])
    means = {PRIMARY: float(np.mean(list(candidate.values())))}

    decision = decide(p, means, {PRIMARY: candidate}, {PRIMARY: 0.6}, {PRIMARY: production}, [])

    comparison = decision["comparisons"][PRIMARY]
    assert comparison["ci_low"] < -0.03 < 0 < comparison["ci_high"]
    assert decision["verdict"] == "inconclusive" and decision["decision"] == "block"


def test_the_noise_floor_is_measured_on_questions_every_run_scored() -> None:
    # run 2 failed to score the two hardest questions: its own mean is higher, but the judge did not disagree
    questions = {f"q{i}": (0.9 if i < 18 else 0.1) for i in range(20)}
    runs = [{PRIMARY: questions}, {PRIMARY: {q: v for q, v in questions.items() if v > 0.5}}]

    assert noise_floor(runs) == {PRIMARY: 0.0}  # unpaired means would say 0.08


def test_a_noise_floor_above_the_cap_blocks_instead_of_widening_every_tolerance() -> None:
    production = {f"q{i}": 0.6 for i in range(20)}
    p = policy(gated=[PRIMARY])

    capped = decide(p, {PRIMARY: 0.6}, {PRIMARY: production}, {PRIMARY: 0.6}, {PRIMARY: production}, [],
                    floors={PRIMARY: 0.2})  # fmt: skip
    widened = decide(p, {PRIMARY: 0.6}, {PRIMARY: production}, {PRIMARY: 0.6}, {PRIMARY: production}, [],
                     floors={PRIMARY: 0.04})  # fmt: skip

    assert capped["decision"] == "block"
    assert any("exceeds calibration.max_widening 0.05" in r for r in capped["reasons"])
    assert widened["decision"] == "promote", widened["reasons"]


def modes_of(**by_mode: list[float]) -> dict[str, dict[str, dict[str, float]]]:
    return {m: {PRIMARY: {f"q{i}": v for i, v in enumerate(values)}} for m, values in by_mode.items()}


def test_the_mode_is_chosen_again_inside_every_resample() -> None:
    # candidate: four modes of equal true quality (0.5) with independent noise; production: one mode at 0.5
    rng = np.random.default_rng(11)
    n = 40
    candidate = modes_of(**{m: list(np.clip(rng.normal(0.5, 0.25, n), 0, 1)) for m in ("a", "b", "c", "d")})
    production = modes_of(a=[0.5] * n, b=[0.2] * n, c=[0.2] * n, d=[0.2] * n)
    best = max("abcd", key=lambda m: float(np.mean(list(candidate[m][PRIMARY].values()))))

    fixed = paired_bootstrap(candidate[best][PRIMARY], production["a"][PRIMARY], 2000, 0.95, 7)
    reselected = reselecting_bootstrap(PRIMARY, PRIMARY, candidate, production, 2000, 0.95, 7)

    assert reselected[0] == pytest.approx(fixed[0])  # the same point estimate: the modes chosen on all questions
    assert reselected[3] == fixed[3] == n
    # the selection is inside the interval: its lower end moves down (today's code used the fixed-mode interval)
    assert reselected[1] < fixed[1] - 0.005


def test_decide_uses_the_reselecting_bootstrap_when_it_has_every_modes_scores() -> None:
    rng = np.random.default_rng(5)
    n = 30
    candidate = modes_of(a=list(rng.uniform(0, 1, n)), b=list(rng.uniform(0, 1, n)))
    production = modes_of(a=list(rng.uniform(0, 1, n)), b=list(rng.uniform(0, 1, n)))
    p = policy(gated=[PRIMARY], modes=["vector", "fulltext"])
    cand_best = candidate["a"][PRIMARY]
    prod_best = production["a"][PRIMARY]

    with_modes = decide(p, {PRIMARY: 0.5}, {PRIMARY: cand_best}, {PRIMARY: 0.5}, {PRIMARY: prod_best}, [],
                        candidate_modes=candidate, production_modes=production)  # fmt: skip

    expected = reselecting_bootstrap(PRIMARY, PRIMARY, candidate, production, 2000, 0.95, 7)
    assert with_modes["comparisons"][PRIMARY]["reselected"] is True
    assert with_modes["comparisons"][PRIMARY]["ci_low"] == pytest.approx(expected[1])


def test_floors_come_from_the_golden_sets_header_and_the_report_says_so() -> None:
    scores = {f"q{i}": 0.09 for i in range(11)}  # a hard corpus: nDCG 0.09 is its real level
    first = version(1, scores)

    without = judge(policy(), first, None)
    with_floor = judge(policy(), version(1, scores), None, golden_floors={PRIMARY: 0.5})

    assert without["decision"] == "promote", without["reasons"]
    assert "floors: none (neither the golden set's header nor the policy sets a minimum)" in without["notes"]
    assert with_floor["decision"] == "block"
    assert f"{PRIMARY} = 0.0900 is below the minimum 0.5" in with_floor["reasons"]
    assert with_floor["floors_source"] == f"floors: the golden set's header ({PRIMARY} 0.5)"


@pytest.mark.parametrize(
    "header",
    [{"floors": {"chunk_ndgc@10": 0.5}}, {"floors": {PRIMARY: 1.5}}, {"floors": {PRIMARY: "high"}}, {"floors": [1]}],
)
def test_a_golden_header_with_bad_floors_is_refused(header: dict[str, object]) -> None:
    with pytest.raises(BadPolicyError, match="floor"):
        golden_floors(header)


def test_the_shipped_policy_sets_no_floor_and_the_bundled_set_carries_its_own() -> None:
    from evaluations.gate import load_policy
    from evaluations.golden import read_golden_set

    from .conftest import REPO

    shipped, _ = load_policy(REPO / "evaluations/policies/default.yaml")
    bundled = read_golden_set(REPO / "datasets/golden/python-docs.jsonl")

    assert shipped.minimums == {}
    assert golden_floors(bundled.header) == {"doc_hit_rate@10": 0.6, "chunk_recall@10": 0.4, "semantic_similarity": 0.4}
    assert not bundled.edited


def test_rows_that_repeat_another_row_or_are_constant_by_construction_are_gone() -> None:
    assert "non_llm_context_recall" not in OFFLINE_METRICS  # chunk_recall@10 to the digit
    assert "id_based_context_precision" not in OFFLINE_METRICS  # about 1/k by construction


def test_the_interval_header_states_the_policys_confidence() -> None:
    assert ci_label({"confidence": 0.9}) == "90% CI of Δ"


def test_report_rows_carry_the_paired_delta() -> None:
    production = version(1, {f"q{i}": 0.9 if i < 18 else 0.1 for i in range(20)})
    candidate = version(2, {f"q{i}": 0.9 for i in range(18)})

    (row,) = [r for r in metric_rows(candidate, production, {}) if r["metric"] == PRIMARY]

    assert row["delta"] == pytest.approx(-0.01)


PASSAGE = "The cache is flushed when the interpreter exits normally."


def hit(doc_id: str, text: str, rank: int) -> SearchHit:
    return SearchHit(f"{doc_id}#{rank}", doc_id, "", "", text, 1.0 / rank, rank)


def test_candidate_and_production_are_normalised_by_the_same_ideal_ranking() -> None:
    # two passages; production holds them in one chunk, the candidate in two. Both retrieve p0 alone at rank 1.
    question = GoldenQuestion(
        id="q", question="What happens at exit?", kind="multi_sentence", reference_answer="flushed, released",
        evidence=[{"doc_id": "a", "passage": PASSAGE}, {"doc_id": "a", "passage": "The lock is released afterwards."}],
    )  # fmt: skip
    shared = [frozenset({"p0", "p1"}), frozenset({"p0"}), frozenset({"p1"})]
    retrieved = [hit("a", PASSAGE, 1)]

    own_units = retrieval_scores(question, retrieved, 10, [])
    pooled = retrieval_scores(question, retrieved, 10, [], ideal_units=shared)

    # ideal with the pooled units: one chunk holding both passages at rank 1 (DCG 4); p0 alone gains 2: 2/4
    assert pooled["chunk_ndcg@10"] == pytest.approx(0.5)
    assert own_units["chunk_ndcg@10"] == pytest.approx(2 / (2 + 2 / math.log2(3)))


def test_overlapping_chunks_are_merged_back_into_the_document() -> None:
    chunks = ["Alpha beta gamma delta epsilon zeta eta theta.", "epsilon zeta eta theta. Iota kappa lambda mu nu."]

    merged = merge_overlapping(chunks, probe=8)

    assert merged == "Alpha beta gamma delta epsilon zeta eta theta. Iota kappa lambda mu nu."
    assert merge_overlapping(["One two.", "Three four."]) == "One two. Three four."


def test_an_edited_cited_sentence_is_stale_and_a_missing_document_is_not() -> None:
    question = GoldenQuestion(
        id="q", question="When is the cache flushed?", kind="factoid", reference_answer="At exit.",
        evidence=[{"doc_id": "a", "passage": PASSAGE}],
    )  # fmt: skip
    edited = {"a": "Intro. The cache is flushed when the interpreter exits abnormally. Outro."}
    rewrapped = {"a": "Intro. The cache is  flushed when the\ninterpreter exits normally. Outro."}

    assert list(stale_passages([question], edited)) == ["q"]
    assert stale_passages([question], rewrapped) == {}
    assert stale_passages([question], {}) == {}  # the document is gone: a regression, not staleness


def test_stale_questions_are_a_finding_of_their_own_and_too_many_block() -> None:
    scores = {f"q{i}": 0.7 for i in range(20)}
    few = Preparation([], {"q1": ["version 2: p0 in a: '...'"]}, {}, asked=20)
    many = Preparation([], {f"q{i}": ["version 2: p0"] for i in range(3)}, {}, asked=20)

    noted = judge(policy(), version(2, scores | {"q0": 0.8}), version(1, scores), preparation=few)
    blocked = judge(policy(), version(2, scores | {"q0": 0.8}), version(1, scores), preparation=many)

    assert noted["decision"] == "promote", noted["reasons"]
    assert any(n.startswith("stale golden set: 1 of 20 questions") for n in noted["notes"])
    assert blocked["decision"] == "block"
    assert any("more than max_stale_share 10%" in r for r in blocked["reasons"])
    assert not any("fell by" in r for r in blocked["reasons"])  # staleness is not reported as a regression


def test_an_interval_within_display_precision_of_zero_is_not_called_worse_or_better() -> None:
    assert interval_verdict(-0.00004, -0.00001, 0.03) == "equivalent"
    assert interval_verdict(0.00001, 0.00004, 0.03) == "equivalent"
    assert interval_verdict(-0.0002, -0.0001, 0.03) == "worse"


def test_versions_scoring_the_same_on_every_question_get_a_zero_interval_whatever_their_other_modes() -> None:
    # the chosen modes agree on every question; a mode neither side chose differs (an index rebuilt, say)
    n = 20
    same = [0.5 + (i % 5) / 10 for i in range(n)]
    candidate = modes_of(a=same, b=[0.4 + (i % 3) / 10 for i in range(n)])
    production = modes_of(a=same, b=[0.1] * n)

    assert reselecting_bootstrap(PRIMARY, PRIMARY, candidate, production, 500, 0.95, 1)[:3] == (0.0, 0.0, 0.0)


def test_a_golden_set_without_unanswerable_questions_does_not_block_on_abstention() -> None:
    # drafts from served queries are all answerable: abstention has no question to be scored on
    scores = {f"q{i}": 0.7 for i in range(20)}
    none = {ABSTENTION: "the golden set has no unanswerable question"}

    decision = judge(policy(), version(2, scores | {"q0": 0.75}, missing=none), version(1, scores, missing=none))

    assert decision["decision"] == "promote", decision["reasons"]
    assert "abstention not judged: the golden set has no unanswerable question" in decision["notes"]


def test_a_required_metric_on_a_small_golden_set_is_still_required() -> None:
    # 8 answerable questions: too few to compare, but a required metric that was not computed still blocks
    p = policy(required=[PRIMARY, "faithfulness"], gated=[PRIMARY, "faithfulness"])
    scores = {f"q{i}": 0.7 for i in range(8)}

    decision = judge(p, version(2, scores), version(1, scores))

    assert "faithfulness is required but was not computed" in decision["reasons"]


def chunk_table(path: Path, rows: list[tuple[str, int, str, str]]) -> TableVersion:
    """A real LanceDB table of (doc_id, position, text, doc_hash) rows, enough for `prepare`: its one version."""
    doc, position, text, doc_hash = zip(*rows, strict=True)
    data = pa.table({"chunk_id": [f"{d}#{p}" for d, p in zip(doc, position, strict=True)], "doc_id": list(doc),
                     "position": list(position), "text": list(text), "doc_hash": list(doc_hash)})  # fmt: skip
    lancedb.connect(path).create_table("chunks", data=data)
    return open_store(Settings(_env_file=None, lancedb_uri=str(path), table="chunks")).at()  # type: ignore[call-arg]


def test_a_passage_lost_from_an_unchanged_document_is_a_regression_and_one_edited_in_the_source_is_stale(
    tmp_path: Path,
) -> None:
    first = GoldenQuestion(id="q1", question="When is the cache flushed?", kind="factoid",
                           reference_answer="At exit.", evidence=[{"doc_id": "a", "passage": PASSAGE}])  # fmt: skip
    second = GoldenQuestion(id="q2", question="What is released?", kind="factoid", reference_answer="The lock.",
                            evidence=[{"doc_id": "b", "passage": "The lock is released afterwards."}])  # fmt: skip
    production = chunk_table(tmp_path / "p", [
        ("a", 0, "Intro.", "ha"), ("a", 1, PASSAGE, "ha"), ("b", 0, "The lock is released afterwards.", "hb"),
    ])  # fmt: skip
    # the candidate lost a's evidence chunk (same content hash: nothing was edited) and holds an edited b
    candidate = chunk_table(tmp_path / "c", [
        ("a", 0, "Intro.", "ha"), ("b", 0, "The lock is kept afterwards.", "hb2"),
    ])  # fmt: skip

    prepared = prepare([first, second], [candidate, production])

    assert [q.id for q in prepared.questions] == ["q1"]  # q1 is scored: losing its passage is a regression
    assert list(prepared.stale) == ["q2"] and prepared.stale["q2"][0].startswith("version 1: p0 in b")
    assert prepare([first, second], [candidate]).stale == {}  # one version: nothing to compare


def test_a_mode_that_fails_on_the_candidate_but_not_on_production_blocks() -> None:
    scores = {f"q{i}": 0.7 for i in range(20)}
    candidate = version(2, scores | {"q0": 0.8})
    candidate.failed_modes = {"fulltext": "ValueError: Cannot perform full text search unless an INVERTED index"}

    lost = judge(policy(), candidate, version(1, scores))
    both = version(1, scores)
    both.failed_modes = dict(candidate.failed_modes)
    neither = judge(policy(), candidate, both)

    assert lost["decision"] == "block"
    assert any(
        r.startswith("retrieval mode fulltext fails on the candidate and works on production") for r in lost["reasons"]
    )
    assert neither["decision"] == "promote", neither["reasons"]
    assert any(
        n.startswith("retrieval mode fulltext failed on the candidate, judged without it") for n in neither["notes"]
    )
