"""Evaluation reports: a JSON summary for CI, markdown for the Prefect UI, a self-contained HTML file for people."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evaluations.scoring import VersionScores

PLOTTED = ["chunk_ndcg@10", "chunk_recall@10", "doc_ndcg@10", "semantic_similarity", "rouge_score"]


def metric_rows(
    candidate: VersionScores, production: VersionScores | None, comparisons: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per metric: candidate, production, delta and the bootstrap interval where gated."""
    rows = []
    for name in sorted(candidate.means):
        cand = candidate.means[name]
        prod = production.means.get(name) if production else None
        comp = comparisons.get(name, {})
        rows.append(
            {
                "metric": name,
                "candidate": cand,
                "production": prod,
                "delta": (cand - prod) if cand is not None and prod is not None else None,
                "ci_low": comp.get("ci_low"),
                "ci_high": comp.get("ci_high"),
                "missing": candidate.missing.get(name),
            }
        )
    return rows


def fmt(value: Any, signed: bool = False) -> str:
    """Numbers to 4 places, missing as 'missing'."""
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return str(value)


def summary_markdown(summary: dict[str, Any]) -> str:
    """The Prefect artifact: decision, reasons, metric table with deltas and intervals."""
    lines = [
        f"# {summary['decision'].upper()}: `{summary['table']}` version {summary['candidate_version']}",
        "",
        f"production: {summary['production_version'] if summary['production_version'] is not None else 'none yet'}"
        f" · mode: **{summary['mode']}** · answers: {summary['answerer']} · report: `{summary['report_html']}`",
        "",
    ]
    lines += [f"- {html.escape(r)}" for r in summary["reasons"]] or ["- every check passed"]
    lines += ["", "| metric | candidate | production | Δ | 95% CI of Δ |", "|---|---|---|---|---|"]
    for row in summary["metrics"]:
        ci = f"[{fmt(row['ci_low'], True)}, {fmt(row['ci_high'], True)}]" if row["ci_low"] is not None else ""
        values = [row["metric"], fmt(row["candidate"]), fmt(row["production"]), fmt(row["delta"], True), ci]
        lines.append("| " + " | ".join(values) + " |")
    if summary["missing"]:
        lines += ["", "Missing metrics:"] + [f"- {k}: {v}" for k, v in summary["missing"].items()]
    return "\n".join(lines) + "\n"


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


def history_plot(history: list[dict[str, Any]], metric: str) -> str | None:
    """The metric across promoted versions, oldest first."""
    points = [(r["version"], json.loads(r["metrics"] or "{}").get(metric)) for r in history if r["action"] == "promote"]
    points = [(v, m) for v, m in points if m is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 2.8))
    ax.plot([f"v{v}" for v, _ in points], [m for _, m in points], marker="o")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{metric} of promoted versions", fontsize=9)
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
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "img{max-width:100%}th{background:#f4f4f4}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}"
        ".chunk{font-family:monospace;font-size:12px;white-space:pre-wrap;background:#f8f8f8;padding:4px}"
        "</style></head><body>",
        f"<h1 style='color:{color}'>{esc(summary['decision'].upper())}: {esc(summary['table'])} "
        f"version {summary['candidate_version']}</h1>",
        f"<p>Production: {esc(str(summary['production_version']))} · chosen mode: <b>{esc(candidate.mode)}</b> · "
        f"answers: {esc(candidate.answerer)} · questions: {len(candidate.questions)} · policy "
        f"<code>{esc(summary['policy_hash'][:12])}</code> · run <code>{esc(summary['run_id'])}</code></p>",
        "<h2>Reasons</h2><ul>",
        *(f"<li>{esc(r)}</li>" for r in summary["reasons"] or ["every check passed"]),
        "</ul><h2>Metrics</h2><table><tr><th>metric</th><th>candidate</th><th>production</th><th>Δ</th>"
        "<th>95% CI of Δ</th><th>note</th></tr>",
    ]
    for row in summary["metrics"]:
        ci = f"[{fmt(row['ci_low'], True)}, {fmt(row['ci_high'], True)}]" if row["ci_low"] is not None else ""
        parts.append(
            f"<tr><td>{esc(row['metric'])}</td><td>{fmt(row['candidate'])}</td><td>{fmt(row['production'])}</td>"
            f"<td>{fmt(row['delta'], True)}</td><td>{ci}</td><td>{esc(row['missing'] or '')}</td></tr>"
        )
    parts.append("</table><h2>Distributions</h2>")
    parts.append(f"<img alt='distributions' src='{distribution_plot(candidate, production)}'>")
    parts.append(f"<h2>Retrieval modes</h2><img alt='modes' src='{sweep_plot(candidate, primary)}'>")
    history_png = history_plot(history, primary)
    if history_png:
        parts.append(f"<h2>History</h2><img alt='history' src='{history_png}'>")
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
