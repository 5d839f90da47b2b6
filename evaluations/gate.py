"""The one place that knows the gate policy: absolute minimums, allowed regression, and a paired bootstrap."""

from __future__ import annotations

import hashlib
import math
import statistics
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evaluations.ragas_metrics import LLM_METRICS, OFFLINE_METRICS
from evaluations.scoring import ABSTENTION, ANSWER_RATE, CANNOT_DECLINE
from tasks.errors import RagopsError
from tasks.settings import Settings, where_relative

BUNDLED_POLICY = Settings.model_fields["policy"].default  # the shipped policy (package data)
IR_METRICS = [f"{lvl}_{m}" for lvl in ("doc", "chunk") for m in ("hit_rate", "recall", "mrr", "ndcg")]


class BadPolicyError(RagopsError):
    """A policy file is missing, malformed or names unknown metrics."""


def known_metric(name: str) -> bool:
    """True for the metric names the evaluation produces (IR metrics with any @k)."""
    base, _, k = name.partition("@")
    return name in (*OFFLINE_METRICS, *LLM_METRICS, ABSTENTION, ANSWER_RATE) or (base in IR_METRICS and k.isdigit())


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
    max_widening: float = Field(
        0.05, ge=0, description="An A/A noise floor above this blocks: the judge is too noisy to gate."
    )


class QualityPolicy(BaseModel):
    """Data-quality limits for the Great Expectations suite."""

    model_config = ConfigDict(extra="forbid")
    max_duplicate_text_rate: float = Field(0.05, ge=0, le=1)
    max_empty_documents: int = Field(
        0, ge=0, description="At most the table's document count (checked before scoring: `check_against_table`)."
    )
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
    max_stale_share: float = Field(
        0.1, ge=0, le=1, description="More golden questions citing passages no longer verbatim in a version: block."
    )
    review: Literal["always", "inconclusive", "never"] = Field(
        "inconclusive",
        description="When the promote flow waits for a person's approval: every decision, only a borderline "
        "candidate (blocked by nothing but an inconclusive interval), or never.",
    )
    review_timeout_s: int = Field(86400, ge=1, description="A review not given within this many seconds rejects.")
    review_override: bool = Field(
        False, description="A reviewer may approve a candidate the gate blocked (logged as an override)."
    )

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


def check_against_table(policy: Policy, path: str | Path, documents: int, version: int) -> None:
    """Refuse a policy whose limits cannot apply to the table version it is to judge, before any scoring.

    A `quality.max_empty_documents` above the version's document count is refused rather than clamped: such a
    limit allows every document to be empty, which no one means; it is a policy written for a larger corpus."""
    limit = policy.quality.max_empty_documents
    if limit > documents:
        raise BadPolicyError(
            f"{path}: field 'quality.max_empty_documents' is {limit}, more than the {documents} document(s) of "
            f"version {version}: set it to at most {documents} (0 allows no empty document)"
        )


def policy_file(path: str | Path) -> Path | Traversable:
    """The policy file `path` names; Settings.policy's default, where no such file is (ragops run outside its own
    checkout), is the policy shipped in the package."""
    if Path(path).is_file():
        return Path(path)
    if str(path) == BUNDLED_POLICY:
        return resources.files("evaluations").joinpath("policies", "default.yaml")
    raise BadPolicyError(
        f"policy file {path} does not exist{where_relative(path)}: give --policy FILE or set RAGOPS_POLICY, "
        "or leave both unset for the bundled default policy"
    )


def load_policy(path: str | Path) -> tuple[Policy, str]:
    """The policy and the SHA-256 of its file (recorded with every decision)."""
    raw = policy_file(path).read_bytes()
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


def paired_differences(candidate: dict[str, float], production: dict[str, float]) -> dict[str, float]:
    """question id → candidate − production, over the questions production scored.

    A question production scored and the candidate did not counts as 0 on the candidate (a failure): a candidate
    cannot raise its mean by failing to score its hardest questions.
    """
    return {q: candidate.get(q, 0.0) - value for q, value in sorted(production.items())}


def paired_bootstrap(
    candidate: dict[str, float], production: dict[str, float], samples: int, confidence: float, seed: int
) -> tuple[float, float, float, int]:
    """Mean of the paired differences and its percentile bootstrap interval, and how many questions were paired."""
    diffs = np.array(list(paired_differences(candidate, production).values()))
    if not len(diffs):
        return math.nan, math.nan, math.nan, 0
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(samples, len(diffs)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(diffs.mean()), float(low), float(high), len(diffs)


ModeScores = dict[str, dict[str, dict[str, float]]]  # mode → metric → question id → score
EFRON_632 = 0.632  # the share of distinct questions a bootstrap resample holds, 1 − 1/e


def reselecting_bootstrap(
    metric: str,
    primary: str,
    candidate: ModeScores,
    production: ModeScores,
    samples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float, float, int]:
    """Like `paired_bootstrap` in the modes each version was judged in, with the interval moved down by the
    optimism of choosing those modes, measured by running the choice again inside every resample.

    Each side is judged in the mode whose mean `primary` is highest (ties: the earlier mode). The best of several
    close, noisy modes scores above its true level (the winner's curse), more so for the side with more close
    modes. In each resample the mode is chosen on the resampled questions and scored both on them and on the
    questions the resample left out; the mean gap between the two is that side's optimism (zero without a choice).
    Resampled questions repeat, so that gap overstates the optimism of a choice made on all questions; Efron's .632
    weighting corrects it (Efron & Tibshirani 1997). The interval of the chosen modes' paired difference is shifted
    by 0.632 × (the candidate's optimism − production's). The point estimate is the observed difference.
    """
    modes = [m for m in candidate if m in production]
    scored = [set(production[m].get(metric, {})) & set(production[m].get(primary, {})) for m in modes]
    questions = sorted(set.intersection(*scored)) if scored else []
    if not questions:
        return math.nan, math.nan, math.nan, 0

    def matrix(side: ModeScores, name: str) -> np.ndarray:  # modes × questions, unscored as 0 (a failure)
        return np.array([[side[m].get(name, {}).get(q, 0.0) for q in questions] for m in modes])

    n = len(questions)
    rng = np.random.default_rng(seed)
    counts = np.zeros((samples, n))
    np.add.at(counts, (np.arange(samples)[:, None], rng.integers(0, n, size=(samples, n))), 1)
    left_out = counts == 0
    usable = left_out.any(axis=1)
    counts, left_out = counts[usable], left_out[usable]
    columns = np.arange(len(counts))

    def chosen_and_optimism(side: ModeScores) -> tuple[int, float]:
        primary_scores, metric_scores = matrix(side, primary), matrix(side, metric)
        chosen = int(primary_scores.mean(axis=1).argmax())  # argmax: the first of tied modes
        picked = (primary_scores @ counts.T).argmax(axis=0)  # modes × resamples → the mode each resample picks
        in_bag = (metric_scores @ counts.T / n)[picked, columns]
        out_of_bag = (metric_scores @ left_out.T / left_out.sum(axis=1))[picked, columns]
        return chosen, float((in_bag - out_of_bag).mean())

    cand_mode, cand_optimism = chosen_and_optimism(candidate)
    prod_mode, prod_optimism = chosen_and_optimism(production)
    cand_scores = dict(zip(questions, matrix(candidate, metric)[cand_mode], strict=True))
    prod_scores = dict(zip(questions, matrix(production, metric)[prod_mode], strict=True))
    point, low, high, _ = paired_bootstrap(cand_scores, prod_scores, samples, confidence, seed)
    if all(cand_scores[q] == prod_scores[q] for q in questions):
        return point, low, high, n  # the same score on every question: no choice made either side look different
    shift = EFRON_632 * (cand_optimism - prod_optimism)
    return point, low - shift, high - shift, n


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


def noise_floor(runs: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """metric → spread (max − min) of its mean over repeated A/A runs, each mean over the questions every run scored.

    `runs[i]` maps metric → question id → score. Means over each run's own scored questions would make one run that
    failed on a few hard questions look like judge noise.
    """
    floors: dict[str, float] = {}
    if len(runs) < 2:
        return floors
    for name in sorted({m for run in runs for m in run}):
        scored = [run.get(name, {}) for run in runs]
        common = sorted(set.intersection(*(set(s) for s in scored)))
        if common:
            means = [statistics.fmean(s[q] for q in common) for s in scored]
            floors[name] = round(max(means) - min(means), 6)
    return floors


def applicable(policy: Policy, coverage: dict[str, list[int]], missing: dict[str, str]) -> tuple[Policy, list[str]]:
    """The policy without what this golden set or answerer cannot judge, and a note for each metric dropped.

    A metric missing for a reason that holds for any version (the answerer cannot decline; the golden set has no
    question of its kind) is dropped from the required, floored and gated lists. A metric the golden set has fewer
    than `bootstrap.min_questions` questions for (e.g. 9 unanswerable ones for abstention) is not compared: it
    leaves the gated list only. Both are properties of the setup, never of the candidate; the primary metric stays.
    """
    everywhere: dict[str, str] = {}
    not_compared: dict[str, str] = {}
    for name in dict.fromkeys([*policy.gated, *policy.required, *policy.minimums]):
        if name == policy.primary_metric:
            continue
        reason = missing.get(name, "")
        asked = coverage.get(name, [0, None])[1]
        if reason == CANNOT_DECLINE or reason.startswith("the golden set has no"):
            everywhere[name] = reason
        elif name in policy.gated and asked is not None and asked < policy.bootstrap.min_questions:
            not_compared[name] = (
                f"the golden set has {asked} question(s) it applies to, fewer than bootstrap.min_questions "
                f"{policy.bootstrap.min_questions}"
            )
    if not everywhere and not not_compared:
        return policy, []
    restricted = policy.model_copy(
        update={
            "gated": [m for m in policy.gated if m not in everywhere and m not in not_compared],
            "required": [m for m in policy.required if m not in everywhere],
            "minimums": {m: v for m, v in policy.minimums.items() if m not in everywhere},
        }
    )
    notes = [f"{name} not judged: {reason}" for name, reason in everywhere.items()]
    notes += [f"{name} not compared with production: {reason}" for name, reason in not_compared.items()]
    return restricted, notes


def with_floors(policy: Policy, golden_floors: dict[str, float]) -> tuple[Policy, str]:
    """The policy with the golden set's floors as minimums (they win over the policy's), and which floors applied.

    A floor means something only for the golden set it was set on, so the shipped policy sets none; a golden set
    carries its own in its header (`"floors": {"doc_hit_rate@10": 0.6}`).
    """
    merged = {**policy.minimums, **golden_floors}
    if golden_floors and policy.minimums:
        source = f"floors: the golden set's header ({len(golden_floors)}) and the policy's minimums"
    elif golden_floors:
        source = f"floors: the golden set's header ({', '.join(f'{k} {v:g}' for k, v in golden_floors.items())})"
    elif policy.minimums:
        source = "floors: the policy's minimums (set for another golden set, they may not fit this one)"
    else:
        source = "floors: none (neither the golden set's header nor the policy sets a minimum)"
    return policy.model_copy(update={"minimums": merged}), source


def golden_floors(header: dict[str, Any]) -> dict[str, float]:
    """The `floors` of a golden set's header, validated: known metric names, numbers in [0, 1]."""
    raw = header.get("floors") or {}
    if not isinstance(raw, dict):
        raise BadPolicyError("the golden set's header 'floors' must map metric names to numbers")
    floors: dict[str, float] = {}
    for name, value in raw.items():
        if not known_metric(str(name)):
            raise BadPolicyError(f"the golden set's header names an unknown metric in 'floors': {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise BadPolicyError(f"the golden set's header floor {name}: {value!r} is not a number in [0, 1]")
        floors[str(name)] = float(value)
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
    candidate_modes: ModeScores | None = None,
    production_modes: ModeScores | None = None,
) -> dict[str, Any]:
    """Promote or block, with every reason and the comparison behind it.

    Deltas are paired (`paired_differences`). `floors` (metric → A/A run-to-run spread) widens a tolerance below the
    measured noise, up to `calibration.max_widening`; `unchanged` says why the candidate holds the same data as
    production. With both versions' per-mode scores (`candidate_modes`, `production_modes`), metrics scored in every
    mode are bootstrapped with the mode chosen again in each resample.
    """
    reasons: list[str] = []
    borderline: list[str] = []  # reasons that are only an inconclusive interval of a gated metric
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
        boot = policy.bootstrap
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
            absolute, tolerance, relative = (
                policy.max_regression.absolute,
                boot.tolerance,
                policy.max_regression.relative,
            )
            floor = floors.get(name, 0.0)
            if gated and floor > min(absolute, tolerance):
                if floor > policy.calibration.max_widening:
                    reasons.append(
                        f"{name}: the A/A noise floor {floor:.4f} exceeds calibration.max_widening "
                        f"{policy.calibration.max_widening:g}: the judge is too noisy to gate this metric"
                    )
                    continue
                notes.append(
                    f"{name}: tolerance widened to the A/A noise floor {floor:.4f} "
                    f"(policy: {absolute} absolute, {tolerance} bootstrap)"
                )
                absolute, tolerance = max(absolute, floor), max(tolerance, floor)
                relative = max(relative, floor / prod) if prod > 0 else relative
            cand_q, prod_q = candidate_per_question.get(name, {}), production_per_question.get(name, {})
            every_mode = [*(candidate_modes or {}).values(), *(production_modes or {}).values()]
            reselected = bool(candidate_modes and production_modes) and all(name in m for m in every_mode)
            if reselected:
                delta, low, high, n = reselecting_bootstrap(
                    name, policy.primary_metric, candidate_modes or {}, production_modes or {}, boot.samples,
                    boot.confidence, boot.seed,
                )  # fmt: skip
            else:
                delta, low, high, n = paired_bootstrap(cand_q, prod_q, boot.samples, boot.confidence, boot.seed)
            constant = len(set(cand_q.values())) <= 1 and len(set(prod_q.values())) <= 1
            comparisons[name] = {
                "candidate": cand,
                "production": prod,
                "delta": delta,
                "ci_low": low,
                "ci_high": high,
                "questions": n,
                "tolerance": tolerance,
                "gated": gated,
                "reselected": reselected,
                "constant": constant,
                "verdict": interval_verdict(low, high, tolerance) if n >= boot.min_questions else "not comparable",
            }
            if not gated:
                continue
            if constant and n:
                notes.append(
                    f"{name} is the same on every question of both versions ({cand:g} and {prod:g}): this comparison "
                    "cannot see a change"
                )
            if n < boot.min_questions:
                reasons.append(
                    f"{name}: only {n} questions scored on both versions, fewer than bootstrap.min_questions "
                    f"{boot.min_questions}: the comparison is not conclusive"
                )
                continue
            if delta < -absolute:
                reasons.append(f"{name} fell by {-delta:.4f} (more than {absolute:g} absolute)")
            elif prod > 0 and delta / prod < -relative:
                reasons.append(f"{name} fell by {-delta / prod:.1%} (more than {relative:.0%} relative)")
            if low < -tolerance:
                reasons.append(
                    f"{name}: {boot.confidence:.0%} interval of the change [{low:+.4f}, {high:+.4f}] "
                    f"reaches below -{tolerance:g}"
                )
                if interval_verdict(low, high, tolerance) == "inconclusive":
                    borderline.append(reasons[-1])  # a person may judge it (policy `review`)
        verdict = primary_verdict(comparisons.get(policy.primary_metric), policy)
        if policy.promote_if == "better" and verdict != "better":
            reasons.append(
                f"the policy promotes only a better candidate (promote_if: better), and {policy.primary_metric} is "
                f"{verdict}: the interval of its change does not lie above 0"
            )
    return {
        "decision": "block" if reasons else "promote",
        "reasons": reasons,
        "borderline": borderline,
        "notes": notes,
        "verdict": verdict,
        "comparisons": comparisons,
        "first_promotion": production_means is None,
    }


def interval_verdict(low: float, high: float, tolerance: float) -> str:
    """What a confidence interval of (candidate − production) says.

    'better': above 0. 'worse': below 0. 'equivalent': within ±tolerance. 'not worse': above −tolerance but
    reaching past +tolerance. 'inconclusive': it reaches below −tolerance without lying below 0. The ends are read
    at the report's precision (4 decimals): an interval printed as [-0.0000, -0.0000] is not called worse.
    """
    low, high = round(low, 4) + 0.0, round(high, 4) + 0.0
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    if low >= -tolerance:
        return "equivalent" if high <= tolerance else "not worse"
    return "inconclusive"


def primary_verdict(comparison: dict[str, Any] | None, policy: Policy) -> str:
    """The primary metric's interval verdict, or 'not comparable' (no comparison, too few paired questions)."""
    if not comparison or comparison["questions"] < policy.bootstrap.min_questions:
        return "not comparable"
    return interval_verdict(comparison["ci_low"], comparison["ci_high"], comparison["tolerance"])
