"""The review step: when the policy asks (`review: always | inconclusive | never`), a person approves or rejects.

`review_reason` says whether a decision waits for a reviewer; `after_review` turns the gate's decision and the
review into what is done and logged. A BLOCK is approved into a promotion only when the policy allows overrides
(`review_override: true`), and then it is logged as an override; a borderline candidate (blocked by nothing but an
inconclusive interval of a gated metric) is the reviewer's to decide under `review: inconclusive`. A review not
given within `review_timeout_s` rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prefect.input import RunInput
from pydantic import Field


class Review(RunInput):
    """The form a reviewer fills in the Prefect UI (or `ragops review`)."""

    decision: Literal["approve", "reject"] = Field(description="Approve: move production to the candidate.")
    note: str = Field(min_length=1, description="Why: kept in the promotion log and the report history.")
    reviewer: str = Field(min_length=1, description="Who decides (the name that goes into the log).")


@dataclass(frozen=True)
class ReviewPolicy:
    """The policy's review settings, as the evaluation hands them on."""

    when: str = "inconclusive"
    timeout_s: int = 86400
    override: bool = False

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> ReviewPolicy:
        return cls(**(summary.get("review_policy") or {}))


def borderline(summary: dict[str, Any]) -> bool:
    """Blocked by nothing but inconclusive intervals: every reason is one the gate marked borderline."""
    reasons, marked = summary.get("reasons") or [], set(summary.get("borderline") or [])
    return summary.get("decision") == "block" and bool(reasons) and all(r in marked for r in reasons)


def review_reason(summary: dict[str, Any], policy: ReviewPolicy) -> str | None:
    """Why this decision waits for a reviewer, or None when it does not."""
    decision = summary.get("decision")
    if policy.when == "never" or decision not in ("promote", "block"):
        return None
    if borderline(summary):
        return "borderline: blocked only by an inconclusive interval, so a person decides"
    if policy.when != "always":
        return None
    if decision == "promote":
        return "the policy reviews every promotion (review: always)"
    if policy.override:
        return "blocked; the policy lets a reviewer override the gate (review_override: true)"
    return None


@dataclass(frozen=True)
class Outcome:
    """What happens after the review, and what the log keeps of it."""

    action: Literal["promote", "block"]
    reasons: list[str]
    review: dict[str, Any]


def after_review(
    summary: dict[str, Any], policy: ReviewPolicy, review: Review | None, why: str, waited_s: float
) -> Outcome:
    """The action once the reviewer answered (`review`) or the review timed out (None)."""
    reasons = list(summary.get("reasons") or [])
    record: dict[str, Any] = {"asked_because": why, "waited_s": round(waited_s, 1)}
    if review is None:
        record |= {"decision": "timeout", "reviewer": None, "note": None, "kind": "timed out"}
        note = f"review: no answer within {policy.timeout_s} s (review_timeout_s), rejected"
        return Outcome("block", [*reasons, note], record)
    record |= {"decision": review.decision, "reviewer": review.reviewer, "note": review.note}
    if review.decision == "reject":
        record["kind"] = "rejected"
        return Outcome("block", [*reasons, f"review: rejected by {review.reviewer}: {review.note}"], record)
    if summary.get("decision") == "promote":
        return Outcome("promote", reasons, record | {"kind": "approved"})
    if borderline(summary):
        return Outcome("promote", [], record | {"kind": "approved borderline", "gate_reasons": reasons})
    if policy.override:
        return Outcome("promote", [], record | {"kind": "override", "gate_reasons": reasons})
    note = f"review: approval by {review.reviewer} cannot override a block (review_override: false)"
    return Outcome("block", [*reasons, note], record | {"kind": "approval refused"})


def review_description(summary: dict[str, Any], why: str, report_link: str | None) -> str:
    """The Markdown shown above the form: the candidate, the gate's verdict and reasons, the report."""
    from tasks import markdown

    production = summary.get("production_version")
    lines = [
        f"## Review {markdown.text(summary.get('table'))} version {summary.get('candidate_version')}",
        "",
        f"Gate: **{markdown.text(str(summary.get('decision')).upper())}** ({markdown.text(why)}); "
        + (f"production is version {production}." if production is not None else "no production yet."),
        "",
    ]
    lines += [f"- {markdown.text(reason)}" for reason in summary.get("reasons") or []]
    if report_link:
        lines += ["", f"[Open the evaluation report]({report_link})"]
    return "\n".join(lines)
