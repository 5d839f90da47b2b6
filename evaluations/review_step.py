"""The promote flow's pause for a reviewer: the form in the Prefect UI (or `ragops review`), its timeout, and what
the answer does to the decision. Without a Prefect server to wait on, nobody could answer: the gate's decision
stands, with a note saying so."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger

from evaluations.review import Review, ReviewPolicy, after_review, review_description, review_reason
from tasks.progress import report_progress
from tasks.settings import Settings


def ask_reviewer(settings: Settings, summary: dict[str, Any]) -> dict[str, Any]:
    """Pause for a review when the policy asks for one, and fold the answer into `summary` (decision, reasons,
    `review`); `summary` unchanged when no review is asked."""
    from prefect.settings import PREFECT_API_URL

    policy = ReviewPolicy.from_summary(summary)
    why = review_reason(summary, policy)
    if why is None:
        return summary
    logger = get_run_logger()
    unattended = "RAGOPS_REVIEW_WAIT is false" if not settings.review_wait else ""
    unattended = unattended or ("" if PREFECT_API_URL.value() else "no Prefect server runs to ask it on")
    if unattended:
        note = f"review asked ({why}) but {unattended}: the gate's decision stands, not reviewed"
        logger.warning(note)
        summary.setdefault("notes", []).append(note)
        return summary
    logger.info(
        "waiting up to %d s for a review of %s v%s (%s): resume this run in the Prefect UI, or `ragops review "
        "--table %s --approve|--reject --note ...`",
        policy.timeout_s, summary["table"], summary["candidate_version"], why, summary["table"],
    )  # fmt: skip
    report_progress(f"waiting for a review of {summary['table']} v{summary['candidate_version']}", 0, 1)
    started = time.monotonic()
    answer = wait_for_review(review_description(summary, why, summary.get("report_url")), policy.timeout_s)
    outcome = after_review(summary, policy, answer, why, time.monotonic() - started)
    logger.info("review: %s (%s)", outcome.review.get("kind"), outcome.action)
    return {**summary, "decision": outcome.action, "reasons": outcome.reasons, "review": outcome.review}


def wait_for_review(description: str, timeout_s: int) -> Review | None:
    """The reviewer's answer, or None when the pause timed out (the run is set running again to record it)."""
    from prefect import pause_flow_run
    from prefect.client.orchestration import get_client
    from prefect.exceptions import FlowPauseTimeout
    from prefect.runtime import flow_run
    from prefect.states import Running

    form = Review.with_initial_data(description=description)
    try:
        return pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=max(1, min(10, timeout_s // 5)))
    except FlowPauseTimeout:
        with get_client(sync_client=True) as client:  # a timed-out pause cannot resume by the rules: force it
            client.set_flow_run_state(flow_run.id, Running(message="review timed out: rejected"), force=True)
        return None
