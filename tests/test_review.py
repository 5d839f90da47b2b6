"""The review step's rules (evaluations/review.py): when a decision waits for a person, and what the answer does.

Truth is known by construction: each case is a gate decision whose reasons are, or are not, only inconclusive
intervals, under each review policy; every branch is checked both ways (mutation-tested: benchmarks/mutation.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from evaluations.gate import Policy, decide
from evaluations.review import Review, ReviewPolicy, after_review, borderline, review_description, review_reason

INTERVAL = "chunk_ndcg@10: 90% interval of the change [-0.0500, +0.0100] reaches below -0.03"
QUALITY = "data quality: 2 empty documents"


def summary(decision: str, reasons: list[str], marked: list[str] | None = None) -> dict[str, Any]:
    return {
        "table": "pg",
        "candidate_version": 7,
        "production_version": 5,
        "decision": decision,
        "reasons": reasons,
        "borderline": reasons if marked is None else marked,
        "review_policy": {"when": "inconclusive", "timeout_s": 60, "override": False},
    }


def answer(decision: str, note: str = "looked at the regressed questions", who: str = "ana") -> Review:
    return Review(decision=decision, note=note, reviewer=who)  # type: ignore[arg-type]


def test_borderline_means_every_reason_is_an_inconclusive_interval() -> None:
    assert borderline(summary("block", [INTERVAL]))
    assert not borderline(summary("block", [INTERVAL, QUALITY], marked=[INTERVAL]))  # a hard reason too
    assert not borderline(summary("block", [], marked=[]))  # a block with no reason is not borderline
    assert not borderline(summary("promote", [INTERVAL]))


@pytest.mark.parametrize(
    ("when", "case", "asked"),
    [
        ("inconclusive", summary("block", [INTERVAL]), True),
        ("inconclusive", summary("block", [QUALITY], marked=[]), False),
        ("inconclusive", summary("promote", []), False),
        ("always", summary("promote", []), True),
        ("always", summary("block", [QUALITY], marked=[]), False),  # no override: a block is not the reviewer's
        ("always", summary("block", [INTERVAL]), True),
        ("never", summary("block", [INTERVAL]), False),
        ("never", summary("promote", []), False),
        ("always", summary("unchanged", []), False),
    ],
)
def test_when_a_review_is_asked(when: str, case: dict[str, Any], asked: bool) -> None:
    assert (review_reason(case, ReviewPolicy(when=when)) is not None) is asked


def test_an_override_is_asked_for_a_block_only_when_the_policy_allows_it() -> None:
    blocked = summary("block", [QUALITY], marked=[])
    assert review_reason(blocked, ReviewPolicy(when="always", override=True)) is not None
    assert review_reason(blocked, ReviewPolicy(when="inconclusive", override=True)) is None


def test_approving_a_borderline_candidate_promotes_it_and_keeps_the_gate_reasons_in_the_record() -> None:
    done = after_review(summary("block", [INTERVAL]), ReviewPolicy(), answer("approve"), "borderline", 12.34)
    assert done.action == "promote" and done.reasons == []
    assert done.review["kind"] == "approved borderline" and done.review["gate_reasons"] == [INTERVAL]
    assert done.review["reviewer"] == "ana" and done.review["note"] and done.review["waited_s"] == 12.3


def test_rejecting_blocks_with_the_reviewers_words() -> None:
    done = after_review(summary("promote", []), ReviewPolicy(when="always"), answer("reject", "too risky"), "x", 1)
    assert done.action == "block" and done.review["kind"] == "rejected"
    assert done.reasons == ["review: rejected by ana: too risky"]


def test_a_timed_out_review_rejects() -> None:
    done = after_review(summary("block", [INTERVAL]), ReviewPolicy(timeout_s=60), None, "borderline", 60)
    assert done.action == "block" and done.review["decision"] == "timeout"
    assert done.reasons[-1].startswith("review: no answer within 60 s")


def test_an_approved_block_is_an_override_only_when_allowed() -> None:
    blocked = summary("block", [QUALITY], marked=[])
    refused = after_review(blocked, ReviewPolicy(when="always"), answer("approve"), "x", 1)
    assert refused.action == "block" and refused.review["kind"] == "approval refused"
    allowed = after_review(blocked, ReviewPolicy(when="always", override=True), answer("approve"), "x", 1)
    assert allowed.action == "promote" and allowed.review["kind"] == "override"
    assert allowed.review["gate_reasons"] == [QUALITY]


def test_approving_a_promotion_promotes() -> None:
    done = after_review(summary("promote", []), ReviewPolicy(when="always"), answer("approve"), "x", 1)
    assert done.action == "promote" and done.review["kind"] == "approved"


def test_the_form_requires_a_note_and_a_reviewer() -> None:
    with pytest.raises(ValueError):
        Review(decision="approve", note="", reviewer="ana")
    with pytest.raises(ValueError):
        Review(decision="approve", note="ok", reviewer="")
    with pytest.raises(ValueError):
        Review(decision="maybe", note="ok", reviewer="ana")  # type: ignore[arg-type]


def test_the_form_description_is_markdown_safe_and_links_the_report() -> None:
    case = summary("block", ["mode hybrid@0.7 [x](javascript:alert(1))"])
    case["table"] = "<b>pg</b>"
    text = review_description(case, "borderline", "http://127.0.0.1:4201/pg-v7.html")
    assert "<b>" not in text and "&lt;b&gt;" in text and "hybrid\\@0.7" in text
    assert "\\[x\\](javascript:" in text  # escaped: shown as text, not a link
    assert "[Open the evaluation report](http://127.0.0.1:4201/pg-v7.html)" in text


def test_the_gate_marks_an_inconclusive_interval_as_borderline_and_a_worse_one_not() -> None:
    policy = Policy(primary_metric="chunk_ndcg@10", gated=["chunk_ndcg@10"], required=[])
    production = {f"q{i}": 0.5 for i in range(40)}

    def judged(candidate: dict[str, float]) -> dict[str, Any]:
        means = {"chunk_ndcg@10": sum(candidate.values()) / len(candidate)}
        prod_means = {"chunk_ndcg@10": 0.5}
        return decide(policy, means, {"chunk_ndcg@10": candidate}, prod_means, {"chunk_ndcg@10": production}, [])

    # half the questions a little up, half a little down, a few far down: the interval straddles 0 and -tolerance
    mixed = {f"q{i}": 0.5 + (0.2 if i % 2 else -0.2) - (0.3 if i < 4 else 0.0) for i in range(40)}
    inconclusive = judged(mixed)
    assert inconclusive["decision"] == "block" and inconclusive["borderline"]
    assert all(r in inconclusive["borderline"] for r in inconclusive["reasons"] if "interval" in r)
    worse = judged({f"q{i}": 0.3 for i in range(40)})  # every question lower: worse, with a mean regression
    assert worse["decision"] == "block" and not worse["borderline"]
    same = judged(dict(production))
    assert same["decision"] == "promote" and same["borderline"] == []


def test_the_log_record_of_each_outcome_is_complete() -> None:
    timed_out = after_review(summary("block", [INTERVAL]), ReviewPolicy(timeout_s=60), None, "borderline", 60.04)
    assert timed_out.review == {
        "asked_because": "borderline",
        "waited_s": 60.0,
        "decision": "timeout",
        "reviewer": None,
        "note": None,
        "kind": "timed out",
    }
    approved = after_review(summary("promote", ["a note-worthy reason"]), ReviewPolicy("always"), answer("approve"),
                            "every promotion", 3)  # fmt: skip
    assert approved.reasons == ["a note-worthy reason"]
    assert approved.review == {
        "asked_because": "every promotion",
        "waited_s": 3,
        "decision": "approve",
        "reviewer": "ana",
        "note": "looked at the regressed questions",
        "kind": "approved",
    }
    blocked = summary("block", [QUALITY], marked=[])
    overridden = after_review(blocked, ReviewPolicy("always", override=True), answer("approve"), "x", 1)
    assert overridden.reasons == []
    refused = after_review(blocked, ReviewPolicy("always"), answer("approve"), "x", 1)
    assert refused.reasons == [QUALITY, "review: approval by ana cannot override a block (review_override: false)"]


def test_why_a_review_is_asked_is_said_in_words() -> None:
    assert review_reason(summary("block", [INTERVAL]), ReviewPolicy()) == (
        "borderline: blocked only by an inconclusive interval, so a person decides"
    )
    assert review_reason(summary("promote", []), ReviewPolicy("always")) == (
        "the policy reviews every promotion (review: always)"
    )
    assert review_reason(summary("block", [QUALITY], marked=[]), ReviewPolicy("always", override=True)) == (
        "blocked; the policy lets a reviewer override the gate (review_override: true)"
    )


def test_the_review_policy_travels_in_the_summary() -> None:
    case = summary("block", [INTERVAL])
    case["review_policy"] = {"when": "always", "timeout_s": 5, "override": True}
    assert ReviewPolicy.from_summary(case) == ReviewPolicy("always", 5, True)
    assert ReviewPolicy.from_summary({}) == ReviewPolicy("inconclusive", 86400, False)


def test_the_form_description_names_candidate_verdict_and_production_on_their_own_lines() -> None:
    text = review_description(summary("block", [INTERVAL]), "borderline", "http://h/r.html")
    assert text.split("\n") == [
        "## Review pg version 7",
        "",
        "Gate: **BLOCK** (borderline); production is version 5.",
        "",
        "- chunk\\_ndcg\\@10: 90% interval of the change \\[-0.0500, +0.0100\\] reaches below -0.03",
        "",
        "[Open the evaluation report](http://h/r.html)",
    ]
    first = review_description(summary("promote", []) | {"production_version": None}, "always", None)
    assert first.split("\n")[2] == "Gate: **PROMOTE** (always); no production yet." and "](" not in first
