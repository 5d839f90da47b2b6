"""Trials of the real gate on golden-set samples: a version's scores restricted to a subset of the questions, the
true change of the primary metric on the full set, and the promotion rate of one candidate over many trials.

The gate in use sees a golden set that is a sample of the questions users ask. A trial draws a subsample of the
scored questions (without replacement), restricts both versions' scores to it as if the golden set held only those
questions (means, coverage, the mode chosen by the primary metric, every mode's per-question scores), and calls
`evaluations.judgement.judge` with a fresh bootstrap seed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from evaluations.gate import Policy
from evaluations.scoring import VersionScores, best_mode, coverage_of, mean_scores

try:
    from evaluations.judgement import Preparation, judge
except ImportError:  # the code before evaluations/judgement.py (gate_calibration.py --code DIR)
    from gate_before_shim import Preparation, judge  # type: ignore[no-redef]


def restrict(scores: VersionScores, ids: set[str], primary: str) -> VersionScores:
    """`scores` as if the golden set held only the questions `ids`: the mode re-chosen on them by `primary`.

    Every mode's IR scores are kept per question (`mode_scores`), so the IR metrics of a re-chosen mode are exact.
    Answers were made in the full set's mode only: when the subset chooses another mode, its answer metrics are those
    of the full set's mode (the IR metrics, which the primary metric is, are not affected).
    """
    every_mode = getattr(scores, "mode_scores", {})  # the code before e9cd10b's successor kept none
    mode_scores = {
        mode: {name: {q: v for q, v in per_q.items() if q in ids} for name, per_q in metrics.items()}
        for mode, metrics in every_mode.items()
    }
    sweep: dict[str, dict[str, float | None]] = {
        mode: {
            name: (round(float(np.mean(list(per_q.values()))), 6) if per_q else None) for name, per_q in metrics.items()
        }
        for mode, metrics in mode_scores.items()
    }
    mode = best_mode(sweep, list(sweep), primary) if sweep else scores.mode
    chosen = []
    for result in scores.questions:
        if result.id not in ids:
            continue
        if mode != scores.mode and result.kind != "unanswerable":
            ir = {name: per_q.get(result.id) for name, per_q in mode_scores[mode].items()}
            result = replace(result, scores={**result.scores, **ir}, mode=mode)
        chosen.append(result)
    names = sorted({m for r in chosen for m in r.scores} | set(scores.missing))
    means = mean_scores(chosen, names)
    missing = {m: why for m, why in scores.missing.items() if why != "no question could be scored"}
    missing.update({m: "no question could be scored" for m, v in means.items() if v is None and m not in missing})
    restricted = replace(scores, mode=mode, questions=chosen, means=means, missing=missing)
    restricted.coverage = coverage_of(chosen, names)
    if every_mode:
        restricted.sweep, restricted.mode_scores = sweep, mode_scores
    return restricted


def true_delta(candidate: VersionScores, production: VersionScores, primary: str) -> float:
    """The paired change of `primary` on the full golden set, each version in its own chosen mode."""
    cand, prod = candidate.per_question(primary), production.per_question(primary)
    diffs = [cand.get(q, 0.0) - value for q, value in prod.items()]  # unscored on the candidate: a failure
    return float(np.mean(diffs)) if diffs else math.nan


@dataclass
class TrialOutcome:
    """How often the gate promoted one candidate over the trials, and why it blocked."""

    trials: int
    promoted: int
    reasons: Counter[str] = field(default_factory=Counter)
    example_block: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.promoted / self.trials if self.trials else math.nan


def reason_kind(reason: str) -> str:
    """A reason without its figures, to count reasons of one kind together."""
    head = reason.split(":")[0] if reason.startswith(("data quality", "nothing to promote", "stale")) else reason
    words = [w for w in head.replace("(", " ").replace(")", " ").split() if not any(ch.isdigit() for ch in w)]
    return " ".join(words[:8])


def run_trials(
    policy: Policy,
    candidate: VersionScores,
    production: VersionScores,
    preparation: Preparation,
    *,
    trials: int,
    share: float,
    seed: int,
    reselect: bool = True,
    quality_failures: list[str] | None = None,
    unchanged: str | None = None,
    golden_floors: dict[str, float] | None = None,
    tick: Callable[[], None] | None = None,
) -> TrialOutcome:
    """Judge `candidate` against `production` on `trials` subsamples of `share` of the scored questions.

    Trial t uses a subsample drawn by seed (`seed`, t) and the policy's bootstrap with seed t. Stale questions
    (left out of scoring) count towards the stale share in the proportion the subsample draws them.
    """
    rng = np.random.default_rng(seed)
    scored = [q.id for q in preparation.questions]
    stale = sorted(preparation.stale)
    outcome = TrialOutcome(trials, 0)
    for t in range(trials):
        everyone = scored + stale
        size = max(2, round(share * len(everyone)))
        picked = set(rng.choice(len(everyone), size=size, replace=False).tolist())
        ids = {everyone[i] for i in picked if i < len(scored)}
        stale_ids = {everyone[i] for i in picked if i >= len(scored)}
        prep = Preparation(
            [q for q in preparation.questions if q.id in ids],
            {q: preparation.stale[q] for q in stale_ids},
            {q: u for q, u in preparation.ideal_units.items() if q in ids},
            len(ids) + len(stale_ids),
        )
        cand, prod = restrict(candidate, ids, policy.primary_metric), restrict(production, ids, policy.primary_metric)
        trial_policy = policy.model_copy(update={"bootstrap": policy.bootstrap.model_copy(update={"seed": t})})
        decision = judge(
            trial_policy,
            cand,
            prod,
            runs=[prod],
            quality_failures=quality_failures,
            unchanged=unchanged,
            golden_floors=golden_floors,
            preparation=prep,
            reselect=reselect,
        )
        if decision["decision"] == "promote":
            outcome.promoted += 1
        else:
            outcome.reasons.update({reason_kind(r) for r in decision["reasons"]})
            if not outcome.example_block:
                outcome.example_block = list(decision["reasons"])
        if tick:
            tick()
    return outcome
