"""The one place that knows the gate policy: absolute minimums, allowed regression, and a paired bootstrap."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evaluations.ragas_metrics import LLM_METRICS, OFFLINE_METRICS
from tasks.errors import RagopsError

IR_METRICS = [f"{lvl}_{m}" for lvl in ("doc", "chunk") for m in ("hit_rate", "recall", "mrr", "ndcg")]


class BadPolicyError(RagopsError):
    """A policy file is missing, malformed or names unknown metrics."""


def known_metric(name: str) -> bool:
    """True for the metric names the evaluation produces (IR metrics with any @k)."""
    base, _, k = name.partition("@")
    return name in OFFLINE_METRICS or name in LLM_METRICS or (base in IR_METRICS and k.isdigit())


class Bootstrap(BaseModel):
    """Paired bootstrap over per-question score differences."""

    model_config = ConfigDict(extra="forbid")
    samples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    tolerance: float = Field(0.02, ge=0)
    seed: int = 0


class Regression(BaseModel):
    """How much worse than production a gated metric may be."""

    model_config = ConfigDict(extra="forbid")
    absolute: float = Field(0.02, ge=0)
    relative: float = Field(0.05, ge=0)


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

    @field_validator("primary_metric", "minimums", "required", "gated")
    @classmethod
    def _metric_names_are_known(cls, value: str | dict[str, float] | list[str]) -> Any:
        names = [value] if isinstance(value, str) else list(value)
        unknown = sorted({n for n in names if not known_metric(n)})
        if unknown:
            raise ValueError(f"unknown metric name(s) {unknown}")
        return value

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


def decide(
    policy: Policy,
    candidate_means: dict[str, float | None],
    candidate_per_question: dict[str, dict[str, float]],
    production_means: dict[str, float | None] | None,
    production_per_question: dict[str, dict[str, float]] | None,
    quality_failures: list[str],
) -> dict[str, Any]:
    """Promote or block, with every reason and the comparison behind it."""
    reasons: list[str] = []
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
    if production_means is not None and production_per_question is not None:
        for name in policy.gated:
            cand, prod = candidate_means.get(name), production_means.get(name)
            if cand is None or prod is None:
                if cand is None:
                    reasons.append(f"{name} is gated but was not computed for the candidate")
                continue
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
            }
            if delta < -policy.max_regression.absolute:
                reasons.append(f"{name} fell by {-delta:.4f} (more than {policy.max_regression.absolute} absolute)")
            elif prod > 0 and delta / prod < -policy.max_regression.relative:
                reasons.append(
                    f"{name} fell by {-delta / prod:.1%} (more than {policy.max_regression.relative:.0%} relative)"
                )
            if n and low < -policy.bootstrap.tolerance:
                reasons.append(
                    f"{name}: {policy.bootstrap.confidence:.0%} interval of the change [{low:+.4f}, {high:+.4f}] "
                    f"reaches below -{policy.bootstrap.tolerance}"
                )
    return {
        "decision": "block" if reasons else "promote",
        "reasons": reasons,
        "comparisons": comparisons,
        "first_promotion": production_means is None,
    }
