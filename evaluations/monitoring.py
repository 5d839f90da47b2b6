"""Drift and quality checks on served queries against the promoted baseline: plain functions, no Prefect.

The baseline is by default what the gate approved: the golden-set questions, asked of the production version in its
mode. With `monitor_reference_hours` it is instead the queries served in that many hours before the window.
- Query drift: cosine distance between the centroids of recent and baseline query embeddings, with a permutation
  p-value (does the difference exceed what resampling the same questions gives?).
- Score drift: Kolmogorov–Smirnov distance between the top-1 similarities of recent and baseline queries.
- No good answer: the share of recent queries whose best chunk is less similar than a threshold.
- Hallucination: the share of sampled generated answers whose ragas faithfulness is below 0.5 (needs an LLM).
A check alerts only when its value is past its threshold and, for the drifts, the difference is significant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from tasks.settings import Settings

QUERY_DRIFT = "query_embedding_drift"
SCORE_DRIFT = "top1_score_drift"
LOW_SIMILARITY = "low_similarity_rate"
HALLUCINATION = "hallucination_rate"
CHECKS = (QUERY_DRIFT, SCORE_DRIFT, LOW_SIMILARITY, HALLUCINATION)
MAX_SAMPLE = 2000  # recent queries compared (a random sample beyond that keeps the permutation test fast)


@dataclass
class Check:
    """One monitored quantity: its value (None when it could not be computed, with the reason), and the verdict."""

    name: str
    value: float | None
    threshold: float
    breached: bool = False
    p_value: float | None = None
    baseline: float | None = None  # the same quantity on the baseline, where it has one
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class Baseline:
    """The reference queries' embeddings and top-1/best similarities, and what they are."""

    vectors: np.ndarray
    top1_similarity: np.ndarray
    best_similarity: np.ndarray
    source: str = "golden set on the production version"


@dataclass(frozen=True)
class Recent:
    """Served queries of the window: embeddings, top-1/best similarities, and sampled faithfulness scores."""

    vectors: np.ndarray
    top1_similarity: np.ndarray
    best_similarity: np.ndarray
    faithfulness: list[float] | None = None  # None: not judged (no LLM configured or nothing answered)
    faithfulness_reason: str = ""


def centroid_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity of the mean embeddings of `a` and `b`."""
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    denom = float(np.linalg.norm(ma) * np.linalg.norm(mb))
    return 1.0 - float(ma @ mb) / denom if denom > 0 else 1.0


def query_drift(
    reference: np.ndarray, recent: np.ndarray, permutations: int = 500, seed: int = 0
) -> tuple[float, float]:
    """Centroid cosine distance between the two sets and its permutation-test p-value."""
    rng = np.random.default_rng(seed)
    if len(recent) > MAX_SAMPLE:
        recent = recent[rng.choice(len(recent), MAX_SAMPLE, replace=False)]
    observed = centroid_distance(reference, recent)
    pooled = np.concatenate([reference, recent])
    n = len(reference)
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        if centroid_distance(pooled[order[:n]], pooled[order[n:]]) >= observed:
            exceed += 1
    return observed, (exceed + 1) / (permutations + 1)


def score_drift(reference: np.ndarray, recent: np.ndarray) -> tuple[float, float]:
    """Kolmogorov–Smirnov distance between the two score samples, and its p-value."""
    result = stats.ks_2samp(reference, recent)
    return float(result.statistic), float(result.pvalue)


def low_similarity_rate(similarities: np.ndarray, threshold: float) -> float:
    """Share of queries whose best chunk is less similar than `threshold`."""
    return float(np.mean(similarities < threshold)) if len(similarities) else math.nan


def hallucination_rate(faithfulness: list[float]) -> float:
    """Share of judged answers with faithfulness below 0.5."""
    return float(np.mean(np.asarray(faithfulness) < 0.5))


def run_checks(baseline: Baseline, recent: Recent, settings: Settings) -> list[Check]:
    """Every check of recent traffic against the baseline, with the thresholds from settings."""
    checks: list[Check] = []
    n = len(recent.vectors)
    too_few = n < settings.monitor_min_queries
    few_reason = f"only {n} queries served in the window (need {settings.monitor_min_queries})"

    drift = Check(QUERY_DRIFT, None, settings.monitor_max_query_drift)
    if too_few:
        drift.detail = few_reason
    else:
        drift.value, drift.p_value = query_drift(baseline.vectors, recent.vectors)
        drift.breached = drift.value > drift.threshold and drift.p_value < settings.monitor_drift_p_value
        drift.detail = f"centroid cosine distance of query embeddings, recent vs reference ({baseline.source})"
    checks.append(drift)

    scores = Check(SCORE_DRIFT, None, settings.monitor_max_score_drift)
    recent_top1 = recent.top1_similarity[~np.isnan(recent.top1_similarity)]
    if too_few:
        scores.detail = few_reason
    else:
        scores.value, scores.p_value = score_drift(baseline.top1_similarity, recent_top1)
        scores.breached = scores.value > scores.threshold and scores.p_value < settings.monitor_drift_p_value
        mean_shift = float(recent_top1.mean() - baseline.top1_similarity.mean()) if len(recent_top1) else math.nan
        scores.detail = f"KS distance of top-1 similarities; mean shift {mean_shift:+.3f}"
    checks.append(scores)

    low = Check(LOW_SIMILARITY, None, settings.monitor_max_low_similarity_rate)
    low.baseline = low_similarity_rate(baseline.best_similarity, settings.monitor_low_similarity)
    if too_few:
        low.detail = few_reason
    else:
        best = np.nan_to_num(recent.best_similarity, nan=-1.0)  # no chunk found at all: no good answer
        low.value = low_similarity_rate(best, settings.monitor_low_similarity)
        low.breached = low.value > low.threshold
        low.detail = f"queries whose best chunk has cosine similarity < {settings.monitor_low_similarity:g}"
    checks.append(low)

    hallucination = Check(HALLUCINATION, None, settings.monitor_max_hallucination_rate)
    if recent.faithfulness is None or not recent.faithfulness:
        hallucination.detail = recent.faithfulness_reason or "no generated answers were judged"
    else:
        hallucination.value = hallucination_rate(recent.faithfulness)
        hallucination.breached = hallucination.value > hallucination.threshold
        hallucination.detail = f"{len(recent.faithfulness)} sampled answers with ragas faithfulness < 0.5"
    checks.append(hallucination)
    return checks


def breaches(checks: list[Check]) -> list[str]:
    """One line per breached check."""
    return [
        f"{c.name} = {c.value:.3f} > {c.threshold:g}" + (f" (p = {c.p_value:.3g})" if c.p_value is not None else "")
        for c in checks
        if c.breached and c.value is not None
    ]
