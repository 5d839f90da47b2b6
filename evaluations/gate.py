"""The one place that knows the gate policy: absolute minimums, allowed regression, and a paired bootstrap."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evaluations.ragas_metrics import LLM_METRICS, OFFLINE_METRICS
from evaluations.scoring import ABSTENTION
from tasks.errors import RagopsError

IR_METRICS = [f"{lvl}_{m}" for lvl in ("doc", "chunk") for m in ("hit_rate", "recall", "mrr", "ndcg")]


class BadPolicyError(RagopsError):
    """A policy file is missing, malformed or names unknown metrics."""


def known_metric(name: str) -> bool:
    """True for the metric names the evaluation produces (IR metrics with any @k)."""
    base, _, k = name.partition("@")
    return name in (*OFFLINE_METRICS, *LLM_METRICS, ABSTENTION) or (base in IR_METRICS and k.isdigit())


class Bootstrap(BaseModel):
    """Paired bootstrap over per-question score differences."""

    model_config = ConfigDict(extra="forbid")
    samples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    tolerance: float = Field(0.02, ge=0)
    seed: int = 0
    min_questions: int = Field(10, ge=2, description="Fewer paired questions: the comparison blocks.")


class Regression(BaseModel):
    """How much worse than production a gated metric may be."""

    model_config = ConfigDict(extra="forbid")
    absolute: float = Field(0.02, ge=0)
    relative: float = Field(0.05, ge=0)


class Calibration(BaseModel):
    """A/A calibration: score production against itself `repeats` times to measure the run-to-run noise."""

    model_config = ConfigDict(extra="forbid")
    repeats: int = Field(0, ge=0, le=20, description="0 = off; with an LLM judge, 3 or more.")


class QualityPolicy(BaseModel):
    """Data-quality limits for the Great Expectations suite."""

    model_config = ConfigDict(extra="forbid")
    max_duplicate_text_rate: float = Field(0.05, ge=0, le=1)
    max_empty_documents: int = Field(0, ge=0)
    row_count_band: float = Field(0.5, ge=0)


class Policy(BaseModel):
    """A gate policy (evaluations/policies/*.yaml)."""

    # NaN limits would silently pass every comparison, so non-finite numbers are refused
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    primary_metric: str
    modes: list[str] = Field(default_factory=lambda: ["vector", "fulltext", "hybrid"])
    minimums: dict[str, float] = Field(default_factory=dict)
    required: list[str] = Field(default_factory=list)
    gated: list[str] = Field(default_factory=list)
    max_regression: Regression = Field(default_factory=Regression)
    bootstrap: Bootstrap = Field(default_factory=Bootstrap)
    quality: QualityPolicy = Field(default_factory=QualityPolicy)
    min_coverage: float = Field(0.9, ge=0, le=1, description="A metric scored on fewer of its questions is missing.")
    promote_if: Literal["not_worse", "better"] = "not_worse"
    calibration: Calibration = Field(default_factory=Calibration)

    @field_validator("primary_metric", "minimums", "required", "gated")
    @classmethod
    def _metric_names_are_known(cls, value: str | dict[str, float] | list[str]) -> Any:
        names = [value] if isinstance(value, str) else list(value)
        unknown = sorted({n for n in names if not known_metric(n)})
        if unknown:
            raise ValueError(f"unknown metric name(s) {unknown}")
        return value

    def document_level(self, k: int) -> tuple[Policy, list[str]]:
        """This policy as document judgements (BEIR qrels) can meet it: doc_* metrics only; and what was dropped.

        A chunk-level primary metric becomes its document-level twin (chunk_ndcg@10 → doc_ndcg@10); any other
        primary becomes doc_ndcg@k.
        """

        def is_doc(name: str) -> bool:
            return name.startswith("doc_")

        primary = self.primary_metric
        if not is_doc(primary):
            primary = "doc_" + primary.removeprefix("chunk_") if primary.startswith("chunk_") else f"doc_ndcg@{k}"
        names = {self.primary_metric, *self.minimums, *self.required, *self.gated}
        dropped = sorted(n for n in names if not is_doc(n))
        restricted = self.model_copy(
            update={
                "primary_metric": primary,
                "minimums": {m: v for m, v in self.minimums.items() if is_doc(m)},
                "required": sorted({*(m for m in self.required if is_doc(m)), primary}),
                "gated": sorted({*(m for m in self.gated if is_doc(m)), primary}),
            }
        )
        return restricted, dropped

    @field_validator("modes")
    @classmethod
    def _modes_are_known(cls, value: list[str]) -> list[str]:
        for mode in value:
            base, _, weight = mode.partition("@")
            if base not in ("vector", "fulltext", "hybrid") or (weight and base != "hybrid"):
                raise ValueError(f"unknown retrieval mode {mode!r} (vector, fulltext, hybrid or hybrid@<weight>)")
        return value


def load_policy(path: str | Path) -> tuple[Policy, str]:
    """The policy and the SHA-256 of its file (recorded with every decision)."""
    path = Path(path)
    if not path.is_file():
        raise BadPolicyError(f"policy file {path} does not exist")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
        policy = Policy.model_validate(data)
    except yaml.YAMLError as exc:
        raise BadPolicyError(f"{path}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        line = _yaml_line(raw, first["loc"])
        where = f" (line {line})" if line else ""
        raise BadPolicyError(f"{path}: field '{field}'{where}: {first['msg']}") from exc
    return policy, hashlib.sha256(raw).hexdigest()


def _yaml_line(raw: bytes, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML entry at `loc`, or of its nearest parent in the file."""
    try:
        node = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if entry is None:
                break
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def paired_bootstrap(
    candidate: dict[str, float], production: dict[str, float], samples: int, confidence: float, seed: int
) -> tuple[float, float, float, int]:
    """Mean of (candidate − production) over shared questions and its percentile confidence interval."""
    shared = sorted(set(candidate) & set(production))
    if not shared:
        return math.nan, math.nan, math.nan, 0
    diffs = np.array([candidate[q] - production[q] for q in shared])
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(samples, len(diffs)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(diffs.mean()), float(low), float(high), len(shared)


def apply_coverage(
    means: dict[str, float | None], coverage: dict[str, list[int]], missing: dict[str, str], min_coverage: float
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Means and missing reasons with every metric scored on under `min_coverage` of its questions made missing."""
    means, missing = dict(means), dict(missing)
    for name, (scored, asked) in coverage.items():
        if asked and means.get(name) is not None and scored / asked < min_coverage:
            means[name] = None
            missing[name] = (
                f"scored on {scored}/{asked} questions ({scored / asked:.0%}), under min_coverage {min_coverage:.0%}"
            )
    return means, missing


def noise_floor(runs: list[dict[str, float | None]]) -> dict[str, float]:
    """metric → spread (max − min) of its mean over repeated A/A runs of one version; metrics missing in a run skip."""
    floors: dict[str, float] = {}
    for name in sorted({m for run in runs for m in run}):
        values = [v for run in runs if (v := run.get(name)) is not None]
        if len(values) == len(runs) >= 2:
            floors[name] = round(max(values) - min(values), 6)
    return floors


def decide(
    policy: Policy,
    candidate_means: dict[str, float | None],
    candidate_per_question: dict[str, dict[str, float]],
    production_means: dict[str, float | None] | None,
    production_per_question: dict[str, dict[str, float]] | None,
    quality_failures: list[str],
    *,
    floors: dict[str, float] | None = None,
    unchanged: str | None = None,
) -> dict[str, Any]:
    """Promote or block, with every reason and the comparison behind it.

    `floors` (metric → A/A run-to-run spread) widens a tolerance that is below the measured noise; `unchanged`
    says why the candidate holds the same data as production (nothing to promote).
    """
    reasons: list[str] = []
    notes: list[str] = []
    comparisons: dict[str, dict[str, Any]] = {}
    for name in policy.required:
        if candidate_means.get(name) is None:
            reasons.append(f"{name} is required but was not computed")
    for name, minimum in policy.minimums.items():
        value = candidate_means.get(name)
        if value is None:
            reasons.append(f"{name} has a minimum of {minimum} but was not computed")
        elif value < minimum:
            reasons.append(f"{name} = {value:.4f} is below the minimum {minimum}")
    reasons += [f"data quality: {failure}" for failure in quality_failures]
    if unchanged:
        reasons.append(f"nothing to promote: {unchanged}")
    verdict = "first promotion"
    if production_means is not None and production_per_question is not None:
        floors = floors or {}
        for name in dict.fromkeys([*policy.gated, policy.primary_metric]):
            gated = name in policy.gated
            cand, prod = candidate_means.get(name), production_means.get(name)
            if cand is None or prod is None:
                if gated and cand is None:
                    reasons.append(f"{name} is gated but was not computed for the candidate")
                elif gated:
                    reasons.append(
                        f"{name} is gated but production's score is missing, so the candidate cannot be compared"
                    )
                continue
            absolute, tolerance = policy.max_regression.absolute, policy.bootstrap.tolerance
            relative = policy.max_regression.relative
            floor = floors.get(name, 0.0)
            if gated and floor > min(absolute, tolerance):
                notes.append(
                    f"{name}: tolerance widened to the A/A noise floor {floor:.4f} "
                    f"(policy: {absolute} absolute, {tolerance} bootstrap)"
                )
                absolute, tolerance = max(absolute, floor), max(tolerance, floor)
                relative = max(relative, floor / prod) if prod > 0 else relative
            delta = cand - prod
            _, low, high, n = paired_bootstrap(
                candidate_per_question.get(name, {}),
                production_per_question.get(name, {}),
                policy.bootstrap.samples,
                policy.bootstrap.confidence,
                policy.bootstrap.seed,
            )
            comparisons[name] = {
                "candidate": cand,
                "production": prod,
                "delta": delta,
                "ci_low": low,
                "ci_high": high,
                "questions": n,
                "tolerance": tolerance,
                "gated": gated,
            }
            if not gated:
                continue
            if n < policy.bootstrap.min_questions:
                reasons.append(
                    f"{name}: only {n} questions scored on both versions, fewer than bootstrap.min_questions "
                    f"{policy.bootstrap.min_questions}: the comparison is not conclusive"
                )
                continue
            if delta < -absolute:
                reasons.append(f"{name} fell by {-delta:.4f} (more than {absolute:g} absolute)")
            elif prod > 0 and delta / prod < -relative:
                reasons.append(f"{name} fell by {-delta / prod:.1%} (more than {relative:.0%} relative)")
            if low < -tolerance:
                reasons.append(
                    f"{name}: {policy.bootstrap.confidence:.0%} interval of the change [{low:+.4f}, {high:+.4f}] "
                    f"reaches below -{tolerance:g}"
                )
        verdict = primary_verdict(comparisons.get(policy.primary_metric), policy)
        if policy.promote_if == "better" and verdict != "better":
            reasons.append(
                f"the policy promotes only a better candidate (promote_if: better), and {policy.primary_metric} is "
                f"{verdict}: the interval of its change does not lie above 0"
            )
    return {
        "decision": "block" if reasons else "promote",
        "reasons": reasons,
        "notes": notes,
        "verdict": verdict,
        "comparisons": comparisons,
        "first_promotion": production_means is None,
    }


def primary_verdict(comparison: dict[str, Any] | None, policy: Policy) -> str:
    """'better' (interval above 0), 'worse' (interval below −tolerance), 'equivalent', or 'not comparable'."""
    if not comparison or comparison["questions"] < policy.bootstrap.min_questions:
        return "not comparable"
    if comparison["ci_low"] > 0:
        return "better"
    if comparison["ci_high"] < -comparison["tolerance"]:
        return "worse"
    return "equivalent"
