"""The gate at its edges: values exactly at each limit, every message it can give, what happens to the metrics after
one that is skipped, policy errors with their lines, and the bootstrap's intervals against exact distributions.

Every expected value is worked out by hand in the comment beside it, or taken from scipy's binomial distribution.
Score values are chosen exact in binary (0.125, 0.375, 0.5) where a comparison is at a limit.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import pytest
from scipy.stats import binom

from evaluations.gate import (
    BUNDLED_POLICY,
    BadPolicyError,
    Policy,
    applicable,
    apply_coverage,
    decide,
    golden_floors,
    interval_verdict,
    load_policy,
    noise_floor,
    paired_bootstrap,
    reselecting_bootstrap,
    with_floors,
)
from evaluations.scoring import CANNOT_DECLINE

REPO = Path(__file__).resolve().parent.parent

P, A, B = "chunk_ndcg@10", "doc_recall@10", "doc_hit_rate@10"


def policy(**fields: object) -> Policy:
    """A validated policy: primary P, gated P, 2000 samples at 95 %, tolerance 0.03, min_questions 10."""
    boot = {"samples": 2000, "confidence": 0.95, "tolerance": 0.03, "seed": 3, "min_questions": 10}
    return Policy.model_validate({"primary_metric": P, "gated": [P], "bootstrap": boot, **fields})


def same(value: float, n: int = 20) -> dict[str, float]:
    return {f"q{i}": value for i in range(n)}


VARIED = {f"q{i}": (i % 4) / 4 for i in range(20)}  # 0, 0.25, 0.5, 0.75: not constant, so no "cannot see" note


def compare(p: Policy, candidate: dict[str, dict[str, float]], production: dict[str, dict[str, float]], **kw: object):  # type: ignore[no-untyped-def]
    """decide() with means taken from the per-question scores."""

    def means(scores: dict[str, dict[str, float]]) -> dict[str, float | None]:
        return {m: sum(s.values()) / len(s) if s else None for m, s in scores.items()}

    return decide(p, means(candidate), candidate, means(production), production, [], **kw)  # type: ignore[arg-type]


# policy files


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadPolicyError) as error:
        load_policy(tmp_path / "nope.yaml")
    assert str(error.value) == (
        f"policy file {tmp_path / 'nope.yaml'} does not exist: give --policy FILE or set RAGOPS_POLICY, "
        "or leave both unset for the bundled default policy"
    )


def test_a_missing_relative_policy_says_where_it_was_looked_for_and_the_default_is_bundled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not a checkout: no evaluations/policies/default.yaml here
    where = re.escape(str(tmp_path))
    with pytest.raises(BadPolicyError, match=rf"^policy file mine.yaml does not exist \(relative to [\w ]+, {where}\)"):
        load_policy("mine.yaml")
    bundled, digest = load_policy(BUNDLED_POLICY)
    assert digest == hashlib.sha256((REPO / "evaluations/policies/default.yaml").read_bytes()).hexdigest()
    assert bundled.primary_metric == "chunk_ndcg@10"


def test_a_policy_that_is_not_yaml_says_so(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("primary_metric: [unclosed\n", encoding="utf-8")
    with pytest.raises(BadPolicyError) as error:
        load_policy(path)
    assert str(error.value).startswith(f"{path}: not valid YAML: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the whole document is not a mapping: no field, no line
        ("- a\n", "field '(top level)': Input should be a valid dictionary or instance of Policy"),
        # a required field absent: no line to point at
        ("modes: [vector]\n", "field 'primary_metric': Field required"),
        # a nested field: the line of its own key (line 3), not of its parent
        ("primary_metric: chunk_ndcg@10\nbootstrap:\n  samples: ten\n",
         "field 'bootstrap.samples' (line 3): Input should be a valid integer, unable to parse string as an integer"),
        # a block value starting on the next line: the line of the key (2), not of the value (3)
        ("primary_metric: chunk_ndcg@10\nbootstrap:\n  - 1\n",
         "field 'bootstrap' (line 2): Input should be a valid dictionary or instance of Bootstrap"),
        # the first item of a list: its own line (3)
        ("primary_metric: chunk_ndcg@10\nrequired:\n  - 5\n  - chunk_ndcg@10\n",
         "field 'required.0' (line 3): Input should be a valid string"),
        # a mapping key of the wrong type: pydantic's loc ends in '[key]', which the file has no node for; the nearest
        # entry found is the key `1` on line 3
        ("primary_metric: chunk_ndcg@10\nminimums:\n  1: 0.5\n",
         "field 'minimums.1.[key]' (line 3): Input should be a valid string"),
        # a later key of the same mapping, not the first one
        ("primary_metric: chunk_ndcg@10\nmodes: [vector]\nmin_coverage: 2\n",
         "field 'min_coverage' (line 3): Input should be less than or equal to 1"),
    ],
)  # fmt: skip
def test_a_policy_error_names_the_field_and_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadPolicyError) as error:
        load_policy(path)
    assert str(error.value) == f"{path}: {message}"


# golden-set floors


def test_floors_of_exactly_zero_and_one_are_accepted() -> None:
    assert golden_floors({"floors": {A: 0, B: 1}}) == {A: 0.0, B: 1.0}


def test_floors_that_are_not_a_mapping_are_refused_with_what_they_must_be() -> None:
    with pytest.raises(BadPolicyError) as error:
        golden_floors({"floors": [0.5]})
    assert str(error.value) == "the golden set's header 'floors' must map metric names to numbers"


def test_the_report_says_where_the_floors_came_from() -> None:
    header = {A: 0.5, B: 0.25}
    both, source = with_floors(policy(minimums={A: 0.75, P: 0.125}), header)
    assert both.minimums == {A: 0.5, P: 0.125, B: 0.25}  # the header wins for A
    assert source == "floors: the golden set's header (2) and the policy's minimums"
    assert with_floors(policy(), header)[1] == f"floors: the golden set's header ({A} 0.5, {B} 0.25)"
    assert with_floors(policy(minimums={A: 0.5}), {})[1] == (
        "floors: the policy's minimums (set for another golden set, they may not fit this one)"
    )


# coverage and applicability


def test_a_metric_scored_on_exactly_min_coverage_of_its_questions_is_kept() -> None:
    means, missing = apply_coverage({A: 0.5}, {A: [9, 10]}, {}, 0.9)  # 9/10 = 0.9, not under 0.9
    assert means == {A: 0.5} and missing == {}


def test_a_metric_asked_of_exactly_min_questions_is_judged() -> None:
    p = policy(gated=[P, A], required=[A])
    kept, notes = applicable(p, {A: [10, 10]}, {})
    assert kept.gated == [P, A] and notes == []


def test_a_metric_without_coverage_counts_is_judged() -> None:
    p = policy(gated=[P, A])
    assert applicable(p, {}, {}) == (p, [])


def test_a_metric_no_version_can_score_leaves_every_list_and_one_on_too_few_questions_only_the_gated_one() -> None:
    p = policy(gated=[P, A, B], required=[P, A, B], minimums={A: 0.5, B: 0.25})
    kept, notes = applicable(p, {B: [9, 9]}, {A: CANNOT_DECLINE})
    assert (kept.gated, kept.required, kept.minimums) == ([P], [P, B], {B: 0.25})
    assert notes == [
        f"{A} not judged: {CANNOT_DECLINE}",
        f"{B} not compared with production: the golden set has 9 question(s) it applies to, fewer than "
        "bootstrap.min_questions 10",
    ]


# decide: without production


def test_a_first_promotion_is_said_and_checks_minimums() -> None:
    p = policy(minimums={A: 0.5, B: 0.5}, required=[P])
    decision = decide(p, {A: 0.5, B: None}, {}, None, None, [])
    assert decision["verdict"] == "first promotion" and decision["first_promotion"] is True
    assert decision["comparisons"] == {}
    # A at exactly its minimum passes; B has a minimum but no value; P is required
    assert decision["reasons"] == [
        f"{P} is required but was not computed",
        f"{B} has a minimum of 0.5 but was not computed",
    ]


def test_without_productions_per_question_scores_nothing_is_compared() -> None:
    decision = decide(policy(), {P: 0.5}, {P: same(0.5)}, {P: 0.5}, None, [])
    assert decision["verdict"] == "first promotion" and decision["comparisons"] == {}
    assert decision["first_promotion"] is False


# decide: one comparison in full


def test_a_comparison_reports_both_means_the_interval_and_its_verdict() -> None:
    # every question 0.125 better: each resample's mean is 0.125, so the interval is [0.125, 0.125]
    decision = compare(policy(), {P: same(0.625)}, {P: same(0.5)})
    assert decision["comparisons"] == {
        P: {
            "candidate": 0.625,
            "production": 0.5,
            "delta": 0.125,
            "ci_low": 0.125,
            "ci_high": 0.125,
            "questions": 20,
            "tolerance": 0.03,
            "gated": True,
            "reselected": False,
            "constant": True,
            "verdict": "better",
        }
    }
    assert decision["first_promotion"] is False and decision["verdict"] == "better"


def test_the_same_inputs_give_the_same_interval() -> None:
    candidate = {f"q{i}": (i % 7) / 7 for i in range(30)}
    production = {f"q{i}": (i % 5) / 5 for i in range(30)}
    first = compare(policy(), {P: candidate}, {P: production})["comparisons"][P]
    second = compare(policy(), {P: candidate}, {P: production})["comparisons"][P]
    assert (first["ci_low"], first["ci_high"]) == (second["ci_low"], second["ci_high"])
    assert first["ci_low"] < first["ci_high"]  # not a degenerate interval: the seed decides it


@pytest.mark.parametrize(
    ("candidate", "production", "constant"),
    [
        ({"q0": 0.5, "q1": 0.75}, {"q0": 0.5, "q1": 0.5}, False),  # the candidate varies
        ({"q0": 0.5, "q1": 0.5}, {"q0": 0.5, "q1": 0.75}, False),  # production varies
        ({"q0": 0.5, "q1": 0.5}, {"q0": 0.25, "q1": 0.25}, True),
    ],
)
def test_a_comparison_is_constant_only_when_both_versions_are(
    candidate: dict[str, float], production: dict[str, float], constant: bool
) -> None:
    decision = compare(policy(), {P: candidate}, {P: production})
    assert decision["comparisons"][P]["constant"] is constant


def test_a_varying_comparison_adds_no_note() -> None:
    assert compare(policy(), {P: VARIED}, {P: VARIED})["notes"] == []


def test_exactly_min_questions_paired_questions_are_enough() -> None:
    decision = compare(policy(), {P: same(0.5, 10)}, {P: same(0.5, 10)})
    assert decision["decision"] == "promote", decision["reasons"]
    assert decision["comparisons"][P]["verdict"] == "equivalent" and decision["verdict"] == "equivalent"


def test_a_comparison_on_too_few_questions_is_not_comparable_even_when_not_gated() -> None:
    p = policy(gated=[A])
    decision = compare(p, {P: same(0.5, 9), A: same(0.5)}, {P: same(0.5, 9), A: same(0.5)})
    assert decision["comparisons"][P]["verdict"] == "not comparable"
    assert decision["decision"] == "promote"  # P is not gated: only reported


# decide: limits


def test_a_change_exactly_at_every_limit_is_allowed() -> None:
    # 0.375 − 0.5 = −0.125 on every question: the absolute limit 0.125, −0.125 / 0.5 = −25 % the relative limit 25 %,
    # and the interval [−0.125, −0.125] reaches exactly −tolerance 0.125; none is exceeded
    p = policy(
        max_regression={"absolute": 0.125, "relative": 0.25},
        bootstrap={"samples": 500, "confidence": 0.95, "tolerance": 0.125, "seed": 0, "min_questions": 10},
    )
    decision = compare(p, {P: same(0.375)}, {P: same(0.5)})
    assert decision["reasons"] == [] and decision["decision"] == "promote"


def test_a_relative_fall_says_its_percentage() -> None:
    # 0.375 − 0.5 = −0.125: within 0.2 absolute, but −25 % is more than 10 % relative
    p = policy(
        max_regression={"absolute": 0.2, "relative": 0.1},
        bootstrap={"samples": 500, "confidence": 0.95, "tolerance": 0.5, "seed": 0, "min_questions": 10},
    )
    decision = compare(p, {P: same(0.375)}, {P: same(0.5)})
    assert decision["reasons"] == [f"{P} fell by 25.0% (more than 10% relative)"]


def test_a_gated_metric_the_candidate_lacks_blocks_and_the_next_metric_is_still_compared() -> None:
    p = policy(gated=[A, P])
    decision = decide(p, {A: None, P: 0.5}, {P: same(0.5)}, {A: 0.5, P: 0.5}, {A: same(0.5), P: same(0.5)}, [])
    assert decision["reasons"] == [f"{A} is gated but was not computed for the candidate"]
    assert list(decision["comparisons"]) == [P] and decision["verdict"] == "equivalent"


def test_too_few_questions_on_one_metric_do_not_stop_the_next_from_being_compared() -> None:
    p = policy(gated=[A, P])
    decision = compare(p, {A: same(0.5, 5), P: same(0.5)}, {A: same(0.5, 5), P: same(0.5)})
    assert list(decision["comparisons"]) == [A, P] and decision["verdict"] == "equivalent"


def test_a_candidate_without_per_question_scores_fails_every_question() -> None:
    # production 0.5 on 20 questions; the candidate has a mean but no per-question scores: each counts 0, Δ = −0.5
    decision = decide(policy(), {P: 0.5}, {}, {P: 0.5}, {P: same(0.5)}, [])
    assert decision["comparisons"][P]["delta"] == -0.5
    assert f"{P} fell by 0.5000 (more than 0.02 absolute)" in decision["reasons"]


def test_production_without_per_question_scores_leaves_nothing_to_pair() -> None:
    decision = decide(policy(), {P: 0.5}, {P: same(0.5)}, {P: 0.5}, {}, [])
    assert decision["comparisons"][P]["questions"] == 0
    assert decision["reasons"] == [
        f"{P}: only 0 questions scored on both versions, fewer than bootstrap.min_questions 10: the comparison is "
        "not conclusive"
    ]


def test_only_one_sides_mode_scores_do_not_reselect() -> None:
    modes = {"vector": {P: same(0.5)}}
    decision = compare(policy(), {P: same(0.5)}, {P: same(0.5)}, candidate_modes=modes)
    assert decision["comparisons"][P]["reselected"] is False and decision["comparisons"][P]["questions"] == 20


# decide: the A/A noise floor


def test_no_noise_floor_widens_nothing_and_says_nothing() -> None:
    assert compare(policy(), {P: VARIED}, {P: VARIED})["notes"] == []


def test_a_noise_floor_equal_to_the_smaller_tolerance_widens_nothing() -> None:
    # the policy's absolute limit is 0.02, the bootstrap tolerance 0.03: a floor of 0.02 is not above their minimum
    assert compare(policy(), {P: VARIED}, {P: VARIED}, floors={P: 0.02})["notes"] == []


def test_a_noise_floor_equal_to_max_widening_still_widens() -> None:
    decision = compare(policy(), {P: VARIED}, {P: VARIED}, floors={P: 0.05})  # max_widening 0.05
    assert decision["decision"] == "promote", decision["reasons"]
    assert decision["notes"] == [
        f"{P}: tolerance widened to the A/A noise floor 0.0500 (policy: 0.02 absolute, 0.03 bootstrap)"
    ]


def test_a_noise_floor_on_a_metric_production_scores_zero_does_not_divide_by_zero() -> None:
    decision = compare(policy(), {P: same(0.0)}, {P: same(0.0)}, floors={P: 0.04})
    assert decision["decision"] == "promote", decision["reasons"]


def test_a_noise_floor_over_the_cap_on_one_metric_does_not_stop_the_next() -> None:
    p = policy(gated=[A, P])
    decision = compare(p, {A: same(0.5), P: same(0.25)}, {A: same(0.5), P: same(0.5)}, floors={A: 0.2})
    assert list(decision["comparisons"]) == [P]
    assert any(r.startswith(f"{P} fell by 0.2500") for r in decision["reasons"])


def test_a_noise_floor_on_a_metric_that_is_not_gated_widens_nothing() -> None:
    p = policy(gated=[A])
    decision = compare(p, {A: VARIED, P: VARIED}, {A: VARIED, P: VARIED}, floors={P: 0.04})
    assert decision["notes"] == [] and decision["comparisons"][P]["tolerance"] == 0.03


# the noise floor itself


def test_a_metric_some_run_did_not_score_has_no_noise_floor() -> None:
    runs = [{A: same(0.5), B: same(0.5)}, {A: same(0.75)}]
    assert noise_floor(runs) == {A: 0.25}


def test_the_noise_floor_is_rounded_to_six_decimals() -> None:
    # means 0.25 and 0.2500004: a spread of 4e-7, 0.0 at six decimals
    assert noise_floor([{A: same(0.25)}, {A: same(0.2500004)}]) == {A: 0.0}


# interval verdicts at their boundaries


def test_an_interval_ending_exactly_at_minus_tolerance_is_not_worse() -> None:
    assert interval_verdict(-0.03, 0.01, 0.03) == "equivalent"


def test_an_interval_ending_exactly_at_plus_tolerance_is_equivalent() -> None:
    assert interval_verdict(-0.01, 0.03, 0.03) == "equivalent"


# the paired bootstrap against exact distributions


def test_no_paired_question_gives_no_interval_and_zero_questions() -> None:
    mean, low, high, n = paired_bootstrap({}, {}, 100, 0.95, 0)
    assert n == 0 and math.isnan(mean) and math.isnan(low) and math.isnan(high)


def test_every_question_can_be_drawn_into_a_resample() -> None:
    # two questions, only the first changed by 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the
    # 2.5 % and 97.5 % quantiles are 0 and 1
    _, low, high, _ = paired_bootstrap({"q0": 1.0, "q1": 0.0}, {"q0": 0.0, "q1": 0.0}, 2000, 0.95, 0)
    assert (low, high) == (0.0, 1.0)


def test_the_interval_ends_are_the_quantiles_of_the_resampled_means() -> None:
    # 50 changes of ±1: a resample's mean is (2K − 50)/50 with K ~ Binomial(50, 1/2); the 95 % interval's ends are
    # the 2.5 % and 97.5 % quantiles of that distribution (scipy's binom.ppf: K = 18 and 32, i.e. ∓0.28)
    production = {f"q{i}": 0.5 for i in range(50)}
    candidate = {q: 0.5 + (1 if i % 2 else -1) for i, q in enumerate(production)}
    _, low, high, _ = paired_bootstrap(candidate, production, 2000, 0.95, 0)
    assert low == pytest.approx((2 * binom.ppf(0.025, 50, 0.5) - 50) / 50)
    assert high == pytest.approx((2 * binom.ppf(0.975, 50, 0.5) - 50) / 50)


# the reselecting bootstrap


def modes_of(**by_mode: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    return dict(by_mode)


def test_reselection_without_a_shared_mode_or_metric_compares_nothing() -> None:
    candidate = {"vector": {P: same(0.5)}}
    for production in ({"fulltext": {P: same(0.5)}}, {"vector": {A: same(0.5)}}, {"vector": {}}):
        mean, low, high, n = reselecting_bootstrap(P, P, candidate, production, 200, 0.95, 0)
        assert n == 0 and math.isnan(mean) and math.isnan(low) and math.isnan(high), production


def test_reselection_pairs_the_questions_production_scored_on_both_the_metric_and_the_primary() -> None:
    # production scored the primary on 20 questions, A on 15 of them: 15 paired questions
    production = {"vector": {P: same(0.5), A: same(0.5, 15)}}
    candidate = {"vector": {P: same(0.5), A: same(0.75)}}
    assert reselecting_bootstrap(A, P, candidate, production, 200, 0.95, 0)[3] == 15


def test_reselection_counts_a_question_the_candidate_did_not_score_as_a_failure() -> None:
    # production 1.0 on 20 questions; the candidate scored 19 of them 1.0: Δ = −1/20 = −0.05
    production = {"vector": {P: same(1.0)}}
    candidate = {"vector": {P: same(1.0, 19)}}
    assert reselecting_bootstrap(P, P, candidate, production, 200, 0.95, 0)[0] == pytest.approx(-0.05)
    # a metric the candidate's mode never scored: every question 0 against production's 0.5
    production = {"vector": {P: same(0.5), A: same(0.5)}}
    candidate = {"vector": {P: same(0.5)}}
    assert reselecting_bootstrap(A, P, candidate, production, 200, 0.95, 0)[0] == pytest.approx(-0.5)


def test_a_choice_that_cannot_go_wrong_moves_nothing() -> None:
    # the candidate's mode "a" scores 1 everywhere and "b" 0: every resample picks "a", whose in-bag and
    # out-of-bag means are both 1 (optimism 0); production's modes are constant 0.5 (optimism 0). So the interval is
    # the plain one: every question +0.5, [0.5, 0.5]
    candidate = {"a": {P: same(1.0)}, "b": {P: same(0.0)}}
    production = {"a": {P: same(0.5)}, "b": {P: same(0.5)}}
    assert reselecting_bootstrap(P, P, candidate, production, 500, 0.95, 0) == pytest.approx((0.5, 0.5, 0.5, 20))


def test_two_versions_with_the_same_choice_to_make_get_the_same_correction() -> None:
    # the candidate is production with 0.125 added to every score of every mode: the same choices in every resample,
    # the same optimism on both sides, so the shift is 0 and the interval is the plain one, [0.125, 0.125]
    production = {
        "a": {P: {f"q{i}": (i % 5) / 8 for i in range(30)}},
        "b": {P: {f"q{i}": (i % 3) / 4 for i in range(30)}},
    }
    candidate = {m: {P: {q: v + 0.125 for q, v in s[P].items()}} for m, s in production.items()}
    assert reselecting_bootstrap(P, P, candidate, production, 500, 0.95, 0) == pytest.approx((0.125, 0.125, 0.125, 30))


def test_the_correction_moves_the_whole_interval_keeping_its_width() -> None:
    # four candidate modes of equal quality with noise (a winner's curse), production one clear mode: the interval is
    # moved down, and both of its ends by the same amount
    candidate = {m: {P: {f"q{i}": ((i * (3 + k)) % 11) / 10 for i in range(40)}} for k, m in enumerate("abcd")}
    production = {"a": {P: same(0.5, 40)}, "b": {P: same(0.25, 40)}, "c": {P: same(0.25, 40)}, "d": {P: same(0.25, 40)}}
    best = max("abcd", key=lambda m: sum(candidate[m][P].values()))
    _, fixed_low, fixed_high, _ = paired_bootstrap(candidate[best][P], production["a"][P], 2000, 0.95, 7)
    _, low, high, _ = reselecting_bootstrap(P, P, candidate, production, 2000, 0.95, 7)
    assert low < fixed_low
    assert high - low == pytest.approx(fixed_high - fixed_low)
