"""The monitor's report: trend plots over past runs, the similarity distributions, and the markdown around them."""

from __future__ import annotations

import json
from typing import Any

import matplotlib.dates as mdates
import numpy as np
from matplotlib.ticker import MaxNLocator

from evaluations.monitoring import CHECKS, Baseline, Recent
from evaluations.report import fmt, plt, png_data_uri
from tasks import markdown as md


def trend_plot(history: list[dict[str, Any]]) -> str | None:
    """Each check's value per monitor run, oldest first, with its threshold; breached runs in red."""
    if not history:
        return None
    fig, axes = plt.subplots(1, len(CHECKS), figsize=(3.4 * len(CHECKS), 2.8), squeeze=False)
    times = [row["at"] for row in history]
    for ax, name in zip(axes[0], CHECKS, strict=True):
        points = [(t, c) for t, row in zip(times, history, strict=True) for c in json.loads(row["checks"])]
        points = [(t, c) for t, c in points if c["name"] == name]
        measured = [(t, c) for t, c in points if c["value"] is not None]
        if measured:
            ax.plot([t for t, _ in measured], [c["value"] for _, c in measured], marker="o", color="#2b8cbe")
            bad = [(t, c) for t, c in measured if c["breached"]]
            ax.scatter([t for t, _ in bad], [c["value"] for _, c in bad], color="#d7301f", zorder=3, label="alert")
            threshold = measured[-1][1]["threshold"]
            ax.axhline(threshold, color="#d7301f", linestyle="--", linewidth=1, label="threshold")
            ax.set_ylim(0, 1.15 * max(threshold, *(c["value"] for _, c in measured)))
            ax.xaxis.set_major_locator(MaxNLocator(4))
            if len(measured) == 1:  # one run: a window around it, not matplotlib's default year
                at = mdates.date2num(measured[0][0])
                ax.set_xlim(at - 1 / 24, at + 1 / 24)
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=6)
        if not measured:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("monitor runs over time (red dot: alert; dashed: threshold)", fontsize=9, y=1.04)
    return png_data_uri(fig)


def similarity_plot(baseline: Baseline, recent: Recent, low_threshold: float) -> str | None:
    """Top-1 similarity of recent served queries against the golden-set baseline."""
    values = recent.top1_similarity[~np.isnan(recent.top1_similarity)]
    if not len(values):
        return None
    fig, ax = plt.subplots(figsize=(5, 2.8))
    bins = [round(-0.2 + 0.05 * i, 2) for i in range(25)]
    ax.hist(baseline.top1_similarity, bins=bins, alpha=0.6, density=True, label=f"reference: {baseline.source}")
    ax.hist(values, bins=bins, alpha=0.6, density=True, label=f"served ({len(values)} queries)")
    ax.axvline(low_threshold, color="#d7301f", linestyle="--", linewidth=1, label="no-good-answer threshold")
    ax.set_xlabel("cosine similarity of the rank-1 chunk", fontsize=8)
    ax.legend(fontsize=7)
    return png_data_uri(fig)


def monitor_markdown(summary: dict[str, Any], images: dict[str, str | None]) -> str:
    """The Prefect artifact: verdict, checks table, plots (as embedded PNGs).

    The table name, mode, reference and each check's detail (which may quote an LLM endpoint's error) go through
    tasks/markdown.py; check names, numbers and the breach lines made of them are the monitor's own."""
    verdict = "ALERT" if summary["breaches"] else "OK"
    lines = [
        f"# Monitor {md.text(summary['table'])} v{summary['version']}: {verdict}",
        "",
        f"{summary['queries']} queries served in the last {summary['window_hours']:g} h "
        f"(mode {md.text(summary['mode'])}; reference: {md.text(summary['baseline'])}, "
        f"{summary['baseline_queries']} queries).",
        "",
        "| check | value | threshold | p-value | baseline | alert | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for check in summary["checks"]:
        value = "missing" if check["value"] is None else fmt(check["value"])
        lines.append(
            f"| {check['name']} | {value} | {check['threshold']:g} | {_optional(check['p_value'])} | "
            f"{_optional(check['baseline'])} | {'**yes**' if check['breached'] else 'no'} | "
            f"{md.cell(check['detail'])} |"
        )
    if summary["breaches"]:
        lines += ["", "Thresholds crossed:"] + [f"- {b}" for b in summary["breaches"]]
    for title, uri in images.items():
        if uri:
            lines += ["", f"## {title}", "", f"![{title}]({uri})"]
    return "\n".join(lines) + "\n"


def _optional(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"
