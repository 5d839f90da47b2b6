"""Evaluation reports: a JSON summary for CI, markdown for the Prefect UI, a self-contained HTML file for people."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import zip_longest
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evaluations import lineage_report
from evaluations.gate import Policy, paired_differences
from evaluations.golden import GoldenSet
from evaluations.ragas_metrics import LLM_METRICS, NO_LLM
from evaluations.scoring import ABSTENTION, QuestionResult, VersionScores
from tasks import markdown as md
from tasks.store.production import MOVES

PLOTTED = ["chunk_ndcg@10", "chunk_recall@10", "doc_ndcg@10", "semantic_similarity", "rouge_score"]
TOP_CHUNKS = 3


def metric_rows(
    candidate: VersionScores, production: VersionScores | None, comparisons: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per metric: candidate, production, the paired delta, the bootstrap interval where compared, coverage.

    The delta is the mean over the questions production scored of (candidate − production), a question the
    candidate did not score counting as 0: each version's mean over its own questions would not be comparable.
    """
    rows = []
    for name in sorted(candidate.means):
        cand = candidate.means[name]
        prod = production.means.get(name) if production else None
        comp = comparisons.get(name, {})
        scored, asked = candidate.coverage.get(name, [None, None])
        delta = comp.get("delta")
        if delta is None and production is not None and cand is not None and prod is not None:
            diffs = paired_differences(candidate.per_question(name), production.per_question(name))
            delta = round(sum(diffs.values()) / len(diffs), 6) if diffs else None
        rows.append(
            {
                "metric": name,
                "candidate": cand,
                "production": prod,
                "delta": delta,
                "ci_low": comp.get("ci_low"),
                "ci_high": comp.get("ci_high"),
                "verdict": comp.get("verdict"),
                "scored": scored,
                "asked": asked,
                "missing": candidate.missing.get(name),
            }
        )
    return rows


def needs_llm(row: dict[str, Any]) -> bool:
    """True for an LLM-judged metric left missing only because no LLM endpoint is configured."""
    return row["metric"] in LLM_METRICS and row["candidate"] is None and (row["missing"] or "").startswith(NO_LLM)


def question_diff(
    candidate: VersionScores, production: VersionScores | None, metric: str, tolerance: float
) -> list[dict[str, Any]]:
    """Questions whose `metric` (abstention for unanswerable ones) moved by more than `tolerance`, worst first.

    Each holds the question, both scores, both answers and both versions' top chunks, for a side-by-side view.
    """
    if production is None:
        return []
    before = {q.id: q for q in production.questions}
    changes = []
    for after in candidate.questions:
        prior = before.get(after.id)
        name = ABSTENTION if after.kind == "unanswerable" else metric
        if prior is None:
            continue
        new, old = after.scores.get(name), prior.scores.get(name)
        if new is None or old is None or abs(new - old) <= tolerance:
            continue
        changes.append(
            {
                "id": after.id,
                "kind": after.kind,
                "question": after.question,
                "metric": name,
                "delta": round(new - old, 6),
                "change": "improved" if new > old else "regressed",
                "candidate": _side(after, name, candidate.version),
                "production": _side(prior, name, production.version),
            }
        )
    return sorted(changes, key=lambda c: c["delta"])


def _side(result: QuestionResult, metric: str, version: int) -> dict[str, Any]:
    return {
        "version": version,
        "mode": result.mode,
        "score": result.scores.get(metric),
        "answer": result.answer,
        "top": [
            {"doc_id": h["doc_id"], "chunk_id": h["chunk_id"], "text": h["text"][:500]}
            for h in result.retrieved[:TOP_CHUNKS]
        ],
    }


@dataclass
class EvaluationInputs:
    """What judges a candidate: the golden set (with what a report must say about it) and the gate policy."""

    golden: GoldenSet
    notes: list[str]  # about the golden set: drafts allowed, edited since written, written for another table
    policy: Policy
    policy_hash: str
    floors: dict[str, float]  # the golden set's own metric floors


@dataclass
class Scores:
    """Both sides scored on the same questions and modes: the candidate, and production (None before the first
    promotion) with every A/A run of it; production's row count, and why the candidate holds production's data (None
    when it differs)."""

    candidate: VersionScores
    production: VersionScores | None = None
    runs: list[VersionScores] = field(default_factory=list)
    production_rows: int | None = None
    unchanged: str | None = None


def quality_failures(quality: list[dict[str, Any]]) -> list[str]:
    """One line per failed data-quality expectation, as the gate lists it."""
    return [f"{q['expectation']} on {q['column']}: {q['observed']}" for q in quality if not q["success"]]


def evaluation_summary(
    run_id: str,
    settings: Any,
    inputs: EvaluationInputs,
    scores: Scores,
    decision: dict[str, Any],
    quality: list[dict[str, Any]],
    coverage: dict[str, int],
    described: dict[str, Any],
    production_mode: str | None = None,
) -> dict[str, Any]:
    """The decision record that CI, the reports, the artifact and the promotion log read: the decision with its
    reasons, both sides' metrics, data quality, the versions' lineage and changes, the golden set and its coverage."""
    candidate, production, runs = scores.candidate, scores.production, scores.runs
    policy, golden = inputs.policy, inputs.golden
    calibration = {"repeats": len(runs), "floors": decision["floors"], "runs": [r.means for r in runs]}
    return {
        "run_id": run_id,
        "table": settings.table,
        "candidate_version": candidate.version,
        "production_version": production.version if production else None,
        "mode": candidate.mode,
        "production_mode": production_mode,  # the mode production serves
        "production_judged_mode": production.mode if production else None,  # its best on this golden set
        "answerer": candidate.answerer,
        "decision": decision["decision"],
        "verdict": decision["verdict"],
        "reasons": decision["reasons"],
        "borderline": decision.get("borderline", []),
        "notes": [*inputs.notes, *decision["notes"]],
        "first_promotion": decision["first_promotion"],
        "policy": settings.policy,
        "policy_hash": inputs.policy_hash,
        "golden_set": settings.golden_set,
        "golden_set_hash": golden.sha256,
        "primary_metric": policy.primary_metric,
        "review_policy": {
            "when": policy.review,
            "timeout_s": policy.review_timeout_s,
            "override": policy.review_override,
        },
        "confidence": policy.bootstrap.confidence,
        "questions": len(candidate.questions),
        "metrics": metric_rows(candidate, production, decision["comparisons"]),
        "mode_sweep": candidate.sweep,
        "production_mode_sweep": production.sweep if production else None,
        "missing": candidate.missing,
        "quality": quality,
        "calibration": calibration if len(runs) >= 2 else {},
        "question_diff": question_diff(candidate, production, policy.primary_metric, policy.max_regression.absolute),
        "per_question": [
            {
                "id": q.id,
                "kind": q.kind,
                "mode": q.mode,
                "scores": q.scores,
                "answer": q.answer,
                "errors": q.errors,
                "retrieved": [h["chunk_id"] for h in q.retrieved],
            }
            for q in candidate.questions
        ],
        "source_changes": described["source_changes"],
        "lineage": described["lineage"],
        "embedding_models": lineage_report.embedding_models(described["lineage"]),
        "stale_questions": decision["stale"],
        "floors_source": decision["floors_source"],
        "golden": {
            "path": golden.path,
            "layout": golden.layout,
            "version": golden.version,
            "sha256": golden.sha256,
            "drafts": len(golden.drafts),
            "corpus": golden.header.get("corpus"),
            **coverage,
        },
    }


def decision_history(records: list[dict[str, Any]], primary: str, limit: int = 20) -> list[dict[str, Any]]:
    """The last `limit` entries of the promotion log, oldest first: decisions with their primary metric, rollbacks."""
    rows = []
    for record in records[-limit:]:
        details = json.loads(record.get("details") or "{}")
        metrics = json.loads(record.get("metrics") or "{}")
        prim = details.get("primary") or {}
        rows.append(
            {
                "at": record["at"],
                "action": record["action"],
                "version": record["version"],
                "previous_version": record.get("previous_version"),
                "mode": record.get("mode"),
                "verdict": details.get("verdict")
                or ("" if record["action"] in ("rollback", "maintain") else "not recorded"),
                "metric": details.get("primary_metric") or primary,
                "value": prim.get("candidate", metrics.get(primary)),
                "production_value": prim.get("production"),
                "ci_low": prim.get("ci_low"),
                "ci_high": prim.get("ci_high"),
                "golden_hash": (record.get("golden_hash") or "")[:12],
                "policy_hash": (record.get("policy_hash") or "")[:12],
                "trigger": record.get("trigger"),
                "reasons": json.loads(record.get("reasons") or "[]"),
                "review": details.get("review"),
            }
        )
    return rows


def primary_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The metric-table row of the policy's primary metric ({} when the evaluation has none)."""
    return next((r for r in summary["metrics"] if r["metric"] == summary.get("primary_metric")), {})


def decision_details(summary: dict[str, Any]) -> dict[str, Any]:
    """What the promotion log keeps beside the metrics: verdict, the primary metric with its interval, golden set."""
    row = primary_row(summary)
    return {
        "verdict": summary.get("verdict"),
        "primary_metric": summary.get("primary_metric"),
        "primary": {k: row.get(k) for k in ("candidate", "production", "delta", "ci_low", "ci_high")},
        "golden_set": summary.get("golden_set"),
        "golden_version": (summary.get("golden") or {}).get("version"),
        "golden_drafts": (summary.get("golden") or {}).get("drafts", 0),
        "production_version": summary.get("production_version"),
        "candidate_lineage": _lineage_pointer((summary.get("lineage") or {}).get("candidate")),
        "source_changes": summary.get("source_changes") or {},
        "review": summary.get("review"),
    }


def _lineage_pointer(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where a promotion record points for the version's lineage: `ragops versions --show N` prints it in full."""
    lineage = (info or {}).get("lineage")
    if not lineage:
        return None
    return {
        "run_id": lineage.get("run_id"),
        "data_version": lineage.get("data_version"),
        "flow_run_url": lineage.get("flow_run_url"),
        "code_revision": lineage.get("code_revision"),
    }


def this_decision(summary: dict[str, Any]) -> dict[str, Any]:
    """The evaluation being reported, as a history row (it is logged only after the report is written)."""
    row = primary_row(summary)
    return {
        "at": datetime.now(UTC),
        "action": summary["decision"],
        "version": summary["candidate_version"],
        "previous_version": summary["production_version"],
        "mode": summary["mode"],
        "verdict": summary["verdict"],
        "metric": summary["primary_metric"],
        "value": row.get("candidate"),
        "production_value": row.get("production"),
        "ci_low": row.get("ci_low"),
        "ci_high": row.get("ci_high"),
        "golden_hash": summary["golden_set_hash"][:12],
        "policy_hash": summary["policy_hash"][:12],
        "trigger": "this evaluation",
        "reasons": summary["reasons"],
    }


def production_story(records: list[dict[str, Any]], current: int | None) -> str:
    """Where production is now and how it got there, from the promotion log."""
    if current is None:
        return "no version has been promoted to production yet"
    moves = [r for r in records if r["action"] in MOVES]
    last = next((r for r in reversed(moves) if r["version"] == current), None)
    if last is None:
        return f"production is version {current} (no promotion record for it)"
    if last["action"] == "maintain":  # compacted: the rows of the version promoted or rolled back to
        earlier = production_story(records[: records.index(last)], last["previous_version"])
        return f"production is version {current}, compacted from version {last['previous_version']} " + (
            "with identical rows; " + earlier.removeprefix(f"production is version {last['previous_version']}: ")
        )
    at = last["at"].strftime("%Y-%m-%d %H:%M UTC") if hasattr(last["at"], "strftime") else str(last["at"])
    if last["action"] == "rollback":
        how = f"rolled back from version {last['previous_version']} on {at} ({last['trigger']})"
    else:
        how = f"promoted on {at} ({last['trigger']}, mode {last['mode']})"
    later = [r for r in records if r["at"] > last["at"] and r["action"] == "block"]
    tail = f"; {len(later)} candidate(s) blocked since" if later else ""
    return f"production is version {current}: {how}{tail}"


def fmt(value: Any, signed: bool = False) -> str:
    """Numbers to 4 places, missing as 'missing'."""
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return str(value)


def ci_label(summary: dict[str, Any]) -> str:
    """The interval column's header, at the confidence the policy set."""
    return f"{summary.get('confidence', 0.95):.0%} CI of Δ"


def report_reference(summary: dict[str, Any]) -> str:
    """A link to the HTML report where it is served (`reports_url`), else its path as code."""
    url = summary.get("report_url")
    if url and str(url).startswith(("http://", "https://")):
        return f"[open the HTML report]({str(url).replace(')', '%29').replace(' ', '%20')})"
    return md.code(summary["report_html"])


def summary_markdown(summary: dict[str, Any]) -> str:
    """The Prefect artifact: decision, reasons, metric table with deltas and intervals.

    Every text that comes from documents, questions, answers, the store or an error goes through tasks/markdown.py:
    it shows as text, never as markup, an image, a link or HTML (metric names are the project's own)."""
    production = summary["production_version"] if summary["production_version"] is not None else "none yet"
    lines = [
        f"# {summary['decision'].upper()}: {md.code(summary['table'])} version {summary['candidate_version']}",
        "",
        f"production: {production} · mode: **{md.text(summary['mode'])}** · answers: {md.text(summary['answerer'])}"
        f" · report: {report_reference(summary)}",
        "",
    ]
    if summary.get("production_now"):
        lines += [f"Before this decision: {md.text(summary['production_now'])}", ""]
    switch = lineage_report.model_switch_line(summary)
    if switch:
        lines += [f"**{md.text(switch)}**", ""]
    lines += [f"- {md.text(r)}" for r in summary["reasons"]] or ["- every check passed"]
    lines += [f"- note: {md.text(n)}" for n in summary.get("notes", [])]
    lines += lineage_report.markdown_sections(summary)
    lines += [
        "",
        f"| metric | candidate | production | Δ (paired) | {ci_label(summary)} | coverage |",
        "|---|---|---|---|---|---|",
    ]
    llm_only = [row["metric"] for row in summary["metrics"] if needs_llm(row)]
    for row in summary["metrics"]:
        if row["metric"] in llm_only:
            continue
        ci = f"[{fmt(row['ci_low'], True)}, {fmt(row['ci_high'], True)}]" if row["ci_low"] is not None else ""
        cov = f"{row['scored']}/{row['asked']}" if row.get("asked") else ""
        values = [row["metric"], fmt(row["candidate"]), fmt(row["production"]), fmt(row["delta"], True), ci, cov]
        lines.append("| " + " | ".join(values) + " |")
    if llm_only:
        lines += ["", f"Needs an LLM endpoint (RAGOPS_LLM_BASE_URL, RAGOPS_LLM_MODEL): {', '.join(llm_only)}"]
    other = {k: v for k, v in summary["missing"].items() if k not in llm_only}
    if other:
        lines += ["", "Missing metrics:"] + [f"- {k}: {md.text(v)}" for k, v in other.items()]
    diff = summary.get("question_diff") or []
    if diff:
        lines += ["", f"## Questions that changed ({len(diff)})"]
        for change in diff:
            prod, cand = change["production"], change["candidate"]
            lines += [
                "",
                f"**{md.text(change['change'])}: {md.text(change['id'])}** {md.text(change['question'], 200)} "
                f"({change['metric']} {fmt(prod['score'])} → {fmt(cand['score'])})",
                "",
                f"| production v{prod['version']} ({md.cell(prod['mode'])}) "
                f"| candidate v{cand['version']} ({md.cell(cand['mode'])}) |",
                "|---|---|",
                f"| answer: {md.cell(prod['answer'] or 'missing', 300)} "
                f"| answer: {md.cell(cand['answer'] or 'missing', 300)} |",
            ]
            for before, after in zip_longest(prod["top"], cand["top"]):
                lines.append(f"| {_chunk_cell(before)} | {_chunk_cell(after)} |")
    return "\n".join(lines) + "\n"


def _chunk_cell(hit: dict[str, Any] | None) -> str:
    return "" if hit is None else f"{md.code(hit['doc_id'], 80, in_table=True)} {md.cell(hit['text'], 300)}"


def png_data_uri(fig: Any) -> str:
    """The figure as an embeddable PNG data URI (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def distribution_plot(candidate: VersionScores, production: VersionScores | None) -> str:
    """Per-question score distributions, candidate beside production."""
    metrics = [m for m in PLOTTED if candidate.per_question(m)]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.2 * max(1, len(metrics)), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=False):
        data = [list(candidate.per_question(metric).values())]
        labels = [f"candidate v{candidate.version}"]
        if production and production.per_question(metric):
            data.append(list(production.per_question(metric).values()))
            labels.append(f"production v{production.version}")
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.set_ylim(-0.05, 1.05)
    return png_data_uri(fig)


def sweep_plot(candidate: VersionScores, metric: str) -> str:
    """The primary metric per retrieval mode."""
    modes = list(candidate.sweep)
    values = [candidate.sweep[m].get(metric) or 0.0 for m in modes]
    fig, ax = plt.subplots(figsize=(4.5, 2.8))
    bars = ax.bar(modes, values, color=["#2b8cbe" if m == candidate.mode else "#a6bddb" for m in modes])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{metric} by retrieval mode (chosen: {candidate.mode})", fontsize=9)
    return png_data_uri(fig)


def history_plot(history: list[dict[str, Any]]) -> str | None:
    """The primary metric of each decision with its interval, promotions and blocks apart, rollbacks marked."""
    if not history:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    xs = list(range(len(history)))
    for x, row in zip(xs, history, strict=True):
        if row["action"] == "rollback":
            ax.axvline(x, color="#8250df", linestyle="--", linewidth=1)
            ax.annotate(f"rollback → v{row['version']}", (x, 0.02), rotation=90, fontsize=7, color="#8250df")
            continue
        if row["value"] is None:
            continue
        color = "#1a7f37" if row["action"] == "promote" else "#cf222e"
        if None not in (row["ci_low"], row["ci_high"], row.get("production_value")):
            # the interval is of the change against production, drawn from production's value
            base = row["production_value"]
            ax.vlines(x, base + row["ci_low"], base + row["ci_high"], color=color, alpha=0.35, linewidth=6)
        ax.plot(x, row["value"], marker="o" if row["action"] == "promote" else "x", color=color)
    labels = [f"v{r['version']}\n{r['action']}" + ("\n(this run)" if r["trigger"] == "this evaluation" else "")
              for r in history]  # fmt: skip
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_ylim(0, 1.05)
    metric = next((r["metric"] for r in history if r.get("metric")), "")
    ax.set_title(f"{metric} per decision (o promoted, x blocked; bar: the policy's interval of the change)", fontsize=9)
    return png_data_uri(fig)


def worst_questions(candidate: VersionScores, metric: str, n: int = 8) -> list[Any]:
    """The answerable questions that scored lowest on `metric`."""
    scored = [q for q in candidate.questions if q.scores.get(metric) is not None]
    return sorted(scored, key=lambda q: q.scores[metric] or 0.0)[:n]


def render_html(
    summary: dict[str, Any],
    candidate: VersionScores,
    production: VersionScores | None,
    quality: list[dict[str, Any]],
    history: list[dict[str, Any]],
    primary: str,
) -> str:
    """A self-contained page (inline CSS and PNGs, no scripts, all document text escaped)."""
    esc = html.escape
    color = "#1a7f37" if summary["decision"] == "promote" else "#cf222e"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>ragops evaluation: {esc(summary['table'])} v{summary['candidate_version']}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
        "img{max-width:100%}th{background:#f4f4f4}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}"
        ".chunk{font-family:monospace;font-size:12px;white-space:pre-wrap;background:#f8f8f8;padding:4px;margin:2px 0}"
        ".pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}.regressed{color:#cf222e}.improved{color:#1a7f37}"
        "</style></head><body>",
        f"<h1 style='color:{color}'>{esc(summary['decision'].upper())}: {esc(summary['table'])} "
        f"version {summary['candidate_version']}</h1>",
        f"<p>Production: {esc(str(summary['production_version']))} · verdict on {esc(primary)}: "
        f"<b>{esc(str(summary.get('verdict', '')))}</b> · promoted mode: <b>{esc(candidate.mode)}</b> · "
        f"answers: {esc(candidate.answerer)} · questions: {len(candidate.questions)} · policy "
        f"<code>{esc(summary['policy_hash'][:12])}</code> · golden set "
        f"<code>{esc(str(summary.get('golden_set_hash', ''))[:12])}</code> · run <code>{esc(summary['run_id'])}</code>"
        "</p>",
    ]
    if summary.get("production_now"):
        parts.append(f"<p><b>Before this decision:</b> {esc(summary['production_now'])}</p>")
    switch = lineage_report.model_switch_line(summary)
    if switch:
        parts.append(f"<p><b>{esc(switch)}</b></p>")
    parts += [
        "<h2>Reasons</h2><ul>",
        *(f"<li>{esc(r)}</li>" for r in summary["reasons"] or ["every check passed"]),
        *(f"<li><i>note: {esc(n)}</i></li>" for n in summary.get("notes", [])),
        "</ul>",
        *lineage_report.html_sections(summary),
        *_stale_section(summary.get("stale_questions") or {}),
        "<h2>Metrics</h2><table><tr><th>metric</th><th>candidate</th><th>production</th><th>Δ (paired)</th>"
        f"<th>{esc(ci_label(summary))}</th><th>coverage</th><th>note</th></tr>",
    ]
    llm_only = [row["metric"] for row in summary["metrics"] if needs_llm(row)]
    for row in summary["metrics"]:
        if row["metric"] in llm_only:
            continue
        ci = f"[{fmt(row['ci_low'], True)}, {fmt(row['ci_high'], True)}]" if row["ci_low"] is not None else ""
        cov = f"{row['scored']}/{row['asked']}" if row.get("asked") else ""
        parts.append(
            f"<tr><td>{esc(row['metric'])}</td><td>{fmt(row['candidate'])}</td><td>{fmt(row['production'])}</td>"
            f"<td>{fmt(row['delta'], True)}</td><td>{ci}</td><td>{esc(cov)}</td>"
            f"<td>{esc(row['missing'] or '')}</td></tr>"
        )
    parts.append("</table>")
    if llm_only:
        parts.append(
            f"<p>Needs an LLM endpoint (RAGOPS_LLM_BASE_URL, RAGOPS_LLM_MODEL): {esc(', '.join(llm_only))}</p>"
        )
    if summary.get("calibration", {}).get("floors"):
        floors = summary["calibration"]["floors"]
        parts.append(
            f"<p>A/A calibration: production scored {summary['calibration']['repeats']} times; run-to-run spread "
            + esc(", ".join(f"{m} {v:.4f}" for m, v in floors.items() if v))
            + (" (every metric identical between runs)" if not any(floors.values()) else "")
            + "</p>"
        )
    parts += _diff_section(summary.get("question_diff") or [], primary)
    parts.append("<h2>Distributions</h2>")
    parts.append(f"<img alt='distributions' src='{distribution_plot(candidate, production)}'>")
    judged = (
        f"production in {production.mode} (its best; it serves {summary.get('production_mode')})" if production else ""
    )
    parts.append(
        f"<h2>Retrieval modes</h2><p>Both versions are swept over the same modes and judged in their best: candidate "
        f"in {esc(candidate.mode)}{', ' + esc(judged) if judged else ''}.</p>"
        f"<img alt='modes' src='{sweep_plot(candidate, primary)}'>"
    )
    parts += _history_section(history)
    parts.append(
        "<h2>Data quality (Great Expectations)</h2><table><tr><th>expectation</th><th>column</th>"
        "<th>result</th><th>observed</th></tr>"
    )
    for check in quality:
        mark = "pass" if check["success"] else "<b style='color:#cf222e'>FAIL</b>"
        parts.append(
            f"<tr><td>{esc(check['expectation'])}</td><td>{esc(check['column'])}</td><td>{mark}</td>"
            f"<td>{esc(check['observed'])}</td></tr>"
        )
    parts.append(f"</table><h2>Worst questions by {esc(primary)}</h2>")
    for q in worst_questions(candidate, primary):
        parts.append(
            f"<h3>{esc(q.id)} ({esc(q.kind)}): {esc(q.question)}</h3><p>{esc(primary)} = {fmt(q.scores[primary])}; "
            f"answer: <i>{esc(q.answer or 'missing: ' + q.errors.get('answer', ''))}</i></p>"
        )
        for hit in q.retrieved[:3]:
            parts.append(
                f"<div class='chunk'>{esc(hit['doc_id'])} · {esc(hit['chunk_id'])} · {hit['score']}\n"
                f"{esc(hit['text'][:600])}</div>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def _diff_section(diff: list[dict[str, Any]], primary: str) -> list[str]:
    """Regressed and improved questions, candidate and production side by side."""
    if not diff:
        return []
    esc = html.escape
    regressed = sum(1 for c in diff if c["change"] == "regressed")
    parts = [
        f"<h2>Questions that changed: {regressed} regressed, {len(diff) - regressed} improved</h2>",
        f"<p>By {esc(primary)} (abstention for unanswerable questions), beyond the policy's allowed regression.</p>",
    ]
    for change in diff:
        parts.append(
            f"<h3 class='{esc(change['change'])}'>{esc(change['change'])}: {esc(change['id'])} "
            f"({esc(change['kind'])}) {esc(change['question'])} · {esc(change['metric'])} "
            f"{fmt(change['production']['score'])} → {fmt(change['candidate']['score'])}</h3><div class='pair'>"
        )
        for label in ("production", "candidate"):
            side = change[label]
            parts.append(
                f"<div><b>{label} v{side['version']}</b> ({esc(side['mode'])}) · {fmt(side['score'])}<br>"
                f"answer: <i>{esc(side['answer'] or 'missing')}</i>"
            )
            for hit in side["top"]:
                parts.append(
                    f"<div class='chunk'>{esc(hit['doc_id'])} · {esc(hit['chunk_id'])}\n{esc(hit['text'])}</div>"
                )
            parts.append("</div>")
        parts.append("</div>")
    return parts


def _stale_section(stale: dict[str, list[str]]) -> list[str]:
    """Golden questions left out because a cited passage is no longer verbatim in a compared version."""
    if not stale:
        return []
    esc = html.escape
    items = [f"<li><b>{esc(qid)}</b>: {esc('; '.join(passages))}</li>" for qid, passages in sorted(stale.items())]
    return [
        f"<h2>Stale golden passages ({len(stale)})</h2><p>The source of these passages changed: the questions were "
        "left out of both sides, not counted as regressions. Update them (<code>ragops golden check</code>).</p>",
        "<ul>",
        *items,
        "</ul>",
    ]


def _history_section(history: list[dict[str, Any]]) -> list[str]:
    """The promotion log's recent entries as a table and a trend plot."""
    if not history:
        return ["<h2>History</h2><p>No earlier decision for this table.</p>"]
    esc = html.escape
    parts = [
        "<h2>History</h2><table><tr><th>at</th><th>action</th><th>version</th><th>verdict</th><th>metric</th>"
        "<th>value</th><th>CI of Δ</th><th>golden set</th><th>policy</th><th>trigger</th></tr>"
    ]
    for row in reversed(history):
        ci = f"[{fmt(row['ci_low'], True)}, {fmt(row['ci_high'], True)}]" if row["ci_low"] is not None else ""
        value = "" if row["action"] in ("rollback", "maintain") else fmt(row["value"])
        what = f"from v{row['previous_version']}" if row["action"] == "rollback" else esc(str(row["verdict"]))
        parts.append(
            f"<tr><td>{esc(str(row['at'])[:19])}</td><td>{esc(row['action'])}</td><td>{row['version']}</td>"
            f"<td>{what}</td><td>{esc(row['metric'])}</td><td>{value}</td><td>{ci}</td>"
            f"<td><code>{esc(row['golden_hash'])}</code></td><td><code>{esc(row['policy_hash'])}</code></td>"
            f"<td>{esc(str(row['trigger']))}</td></tr>"
        )
    parts.append("</table>")
    plot = history_plot(history)
    if plot:
        parts.append(f"<img alt='history' src='{plot}'>")
    return parts


def write_reports(
    out_dir: str | Path,
    summary: dict[str, Any],
    candidate: VersionScores,
    production: VersionScores | None,
    quality: list[dict[str, Any]],
    history: list[dict[str, Any]],
    primary: str,
) -> tuple[Path, Path]:
    """Write `<table>-v<version>-<run>.html` and `.json` (and `latest.*` copies); returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{summary['table']}-v{summary['candidate_version']}-{summary['run_id'][:8]}"
    html_path, json_path = out / f"{stem}.html", out / f"{stem}.json"
    summary["report_html"], summary["report_json"] = str(html_path), str(json_path)
    page = render_html(summary, candidate, production, quality, history, primary)
    html_path.write_text(page, encoding="utf-8")
    json_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    (out / "latest.html").write_text(page, encoding="utf-8")
    (out / "latest.json").write_text(json_path.read_text(encoding="utf-8"), encoding="utf-8")
    return html_path, json_path
