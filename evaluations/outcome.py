"""What a run decided, said where people look first: the run's final state (its name and message in the run list)
and a run-level artifact naming table, version, verdict and the first reason.

A blocked candidate ends `Completed` (the run did its work) under the state name `Blocked`, so the run list shows it
is not a promotion; the message leads with the verdict.
"""

from __future__ import annotations

from typing import Any

from prefect.states import Completed

from tasks import markdown

STATE_NAMES = {
    "promote": "Promoted",
    "block": "Blocked",
    "unchanged": "Nothing changed",
    "superseded": "Superseded",
    "evaluated": "Evaluated",
}


def artifact_key(table: str) -> str:
    """A Prefect artifact key for `table` (lowercase letters, digits and dashes)."""
    return "".join(ch if ch.isalnum() else "-" for ch in table.lower())


def verdict_of(summary: dict[str, Any]) -> str:
    """The action taken (promote, block, unchanged, superseded), else the gate's decision."""
    action = summary.get("action")
    return str(action if action in STATE_NAMES and action != "evaluated" else summary.get("decision"))


def decision_line(summary: dict[str, Any]) -> str:
    """One line: `pg v12: BLOCK against production v11: <first reason>`."""
    verdict = verdict_of(summary)
    table, version, production = (
        summary.get("table"),
        summary.get("candidate_version"),
        summary.get("production_version"),
    )
    if verdict == "unchanged":
        return f"{table}: nothing changed, version {version} is production"
    if verdict == "superseded":
        return f"{table} v{version}: superseded by v{summary.get('superseded_by')}, which is evaluated instead"
    against = f"production v{production}" if production is not None else "no production yet"
    reasons = summary.get("reasons") or []
    review = summary.get("review") or {}
    why = f"{review.get('kind')} by {review.get('reviewer')}" if review.get("reviewer") else ""
    why = why or (reasons[0] if reasons else "every check passed")
    gate_only = " (gate only: nothing moved)" if summary.get("action") == "evaluated" else ""
    return f"{table} v{version}: {verdict.upper()} against {against}{gate_only}: {why}"


def final_state(summary: dict[str, Any]) -> Any:
    """The run's final state: Completed, named for the verdict, with the decision line as its message. A flow that
    returns it gives its caller (and its persisted result) `summary` itself, hence `Any` for the flows' signatures."""
    moved_nothing = summary.get("action") in (None, "evaluated")  # an evaluation alone, or a gate-only pipeline
    name = "Would promote" if moved_nothing and summary.get("decision") == "promote" else None
    return Completed(data=summary, name=name or STATE_NAMES.get(verdict_of(summary), "Completed"),
                     message=decision_line(summary))  # fmt: skip


def decision_markdown(summary: dict[str, Any]) -> str:
    """The run-level artifact: table, version, verdict, reasons, the report."""
    lines = [f"# {markdown.text(decision_line(summary))}", ""]
    lines += [f"- {markdown.text(reason)}" for reason in summary.get("reasons") or []]
    review = summary.get("review") or {}
    if review:
        lines += ["", f"Review: {markdown.text(review.get('kind'))}, by {markdown.text(review.get('reviewer'))}: "
                  f"{markdown.text(review.get('note'))}"]  # fmt: skip
    if summary.get("report_url"):
        lines += ["", f"[Open the evaluation report]({summary['report_url']})"]
    elif summary.get("report_html"):
        lines += ["", f"Report: {markdown.code(summary['report_html'])}"]
    return "\n".join(lines) + "\n"


def publish_decision(summary: dict[str, Any], keyed: bool = True) -> None:
    """The run-level artifact; `keyed`: also under the key `decision-<table>`, whose timeline lists the table's
    decisions (one entry per decision: a pipeline leaves the key to the promote run it started)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        key=f"decision-{artifact_key(str(summary.get('table')))}" if keyed else None,
        markdown=decision_markdown(summary),
        description=decision_line(summary)[:250],
    )
