"""How a gate decision reads in a terminal or a CI log: verdict, reasons, changes, the metric table, the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from flows.cli import output


def show_decision(result: dict[str, Any], json_out: Path | None) -> None:
    """Print the decision, and write it as JSON where `--json` says (`-`: only the JSON, on stdout)."""
    output.show(result, json_out, lambda: print_decision(result))


def print_decision(result: dict[str, Any]) -> None:
    """The verdict line, reasons and notes, changes per source, metrics, what is missing, where the report is."""
    from evaluations.lineage_report import change_lines
    from evaluations.outcome import decision_line
    from evaluations.report import needs_llm

    if result["decision"] in ("unchanged", "superseded"):  # nothing was scored
        output.say(f"[bold]{escape(decision_line(result))}[/bold]", markup=True)
        for reason in result.get("reasons", []):
            output.say(f"  - {reason}")
        return
    color = "green" if result["decision"] == "promote" else "red"
    gate_only = " (gate only: nothing moved)" if result.get("action") == "evaluated" else ""
    verdict = f", {result['primary_metric']} {result['verdict']}" if result.get("verdict") else ""
    output.say(
        f"[bold {color}]{result['decision'].upper()}[/bold {color}] {escape(result['table'])} version "
        f"{result['candidate_version']} (production: {result['production_version']}, mode {result['mode']}"
        f"{escape(verdict)}){gate_only}",
        markup=True,
    )
    for reason in result["reasons"]:
        output.say(f"  - {reason}")
    for note in result.get("notes", []):
        output.say(f"  note: {note}")
    for line in change_lines(result):
        output.say(f"  {line}")
    llm_only = [row["metric"] for row in result["metrics"] if needs_llm(row)]
    output.print_table(metric_table(result, skip=llm_only))
    if llm_only:
        output.say(f"needs an LLM endpoint (RAGOPS_LLM_BASE_URL, RAGOPS_LLM_MODEL): {', '.join(llm_only)}")
    for metric, why in result.get("missing", {}).items():
        if metric not in llm_only:
            output.say(f"missing {metric}: {why}")
    diff = result.get("question_diff") or []
    if diff:
        regressed = sum(1 for c in diff if c["change"] == "regressed")
        output.say(f"questions changed: {regressed} regressed, {len(diff) - regressed} improved (see the report)")
    review = result.get("review") or {}
    if review:
        output.say(f"review: {review.get('kind')} by {review.get('reviewer')}: {review.get('note')}")
    output.say(f"answers: {result['answerer']}")
    output.say(f"report: {result.get('report_url') or result['report_html']}")


def metric_table(result: dict[str, Any], skip: list[str]) -> Table:
    """Each metric of both versions with the paired delta, its interval and the questions scored."""
    ci_column = f"{result.get('confidence', 0.95):.0%} CI of delta"
    columns = ("metric", "candidate", "production", "delta (paired)", ci_column, "coverage")
    grid = output.new_table(*columns, right=columns[1:])
    for row in result["metrics"]:
        if row["metric"] in skip:
            continue
        values = [row["candidate"], row["production"], row["delta"]]
        cells = ["missing" if v is None else f"{v:.4f}" for v in values]
        if result["production_version"] is None:
            cells[1:] = ["–", "–"]  # nothing to compare with yet
        ci = f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" if row.get("ci_low") is not None else ""
        coverage = f"{row['scored']}/{row['asked']}" if row.get("asked") else ""
        grid.add_row(escape(row["metric"]), *cells, escape(ci), coverage)
    return grid


def print_spread(result: dict[str, Any]) -> None:
    """The A/A calibration's spread of production's scores, when `evaluate --repeat` ran one."""
    calibration = result.get("calibration") or {}
    if calibration.get("floors"):
        spread = ", ".join(f"{m} {v:.4f}" for m, v in calibration["floors"].items() if v) or "none (identical runs)"
        output.say(f"A/A spread over {calibration['repeats']} runs of production: {spread}")
