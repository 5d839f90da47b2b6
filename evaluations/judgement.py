"""The gate's judgement of a candidate as plain functions: which questions and metrics apply, the shared ideal
ranking, the A/A noise floor, and the decision. The evaluate flow and the calibration benchmark both call these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evaluations.gate import Policy, applicable, apply_coverage, decide, noise_floor, with_floors
from evaluations.golden import GoldenQuestion, version_texts
from evaluations.scoring import VersionScores, reference_chunks, stale_passages
from tasks.store.interface import TableVersion


@dataclass
class Preparation:
    """What both versions say about the golden set before scoring: stale questions and the shared ideal units."""

    questions: list[GoldenQuestion]  # the questions to score (stale ones left out)
    stale: dict[str, list[str]] = field(default_factory=dict)  # question id → stale passages (either version)
    ideal_units: dict[str, list[frozenset[str]]] = field(default_factory=dict)
    asked: int = 0  # questions in the golden set


def prepare(questions: list[GoldenQuestion], tables: list[TableVersion]) -> Preparation:
    """Leave out questions whose passages are stale in a compared version, and pool the versions' evidence chunks.

    A passage is stale only in a document whose content differs between the compared versions (its `doc_hash`):
    the source was edited, and the passage is no longer verbatim in it. A document with the same content whose
    chunks lost the passage is the version's own regression and is scored as such; a lone version (first
    promotion, or the candidate is production) has nothing to compare and no stale question. The ideal DCG of a
    question is the best ranking of either version's chunks: candidate and production share one normaliser.
    """
    cited = sorted({ev.doc_id for q in questions for ev in q.evidence})
    hashes = [document_hashes(table, cited) for table in tables]
    edited = sorted(d for d in cited if len({h[d] for h in hashes if d in h}) > 1)
    stale: dict[str, list[str]] = {}
    for table in tables if edited else []:
        for qid, passages in stale_passages(questions, version_texts(table, edited)).items():
            stale.setdefault(qid, []).extend(f"version {table.version}: {p}" for p in passages)
    kept = [q for q in questions if q.id not in stale]
    units: dict[str, list[frozenset[str]]] = {}
    for table in tables:
        for qid, refs in reference_chunks(table, [q for q in kept if q.answerable]).items():
            units.setdefault(qid, []).extend(r.passages for r in refs)
    return Preparation(kept, stale, units, len(questions))


def document_hashes(table: TableVersion, doc_ids: list[str]) -> dict[str, str]:
    """doc_id → the content hash of the document as a table version holds it (for the documents given)."""
    if not doc_ids:
        return {}
    data = table.rows(["doc_id", "doc_hash"], doc_ids=doc_ids)
    return dict(zip(data.column("doc_id").to_pylist(), data.column("doc_hash").to_pylist(), strict=True))


def per_question(scores: VersionScores) -> dict[str, dict[str, float]]:
    """metric → question id → score, for every metric the version has."""
    return {m: scores.per_question(m) for m in scores.means}


def judge(
    policy: Policy,
    candidate: VersionScores,
    production: VersionScores | None,
    *,
    runs: list[VersionScores] | None = None,
    quality_failures: list[str] | None = None,
    unchanged: str | None = None,
    golden_floors: dict[str, float] | None = None,
    preparation: Preparation | None = None,
    reselect: bool = True,
) -> dict[str, Any]:
    """The gate's decision on `candidate` against `production` (None: first promotion), with every note.

    `runs` are A/A repeats of production (runs[0] is `production`); `reselect` bootstraps the mode choice too.
    The versions' means are restricted to metrics scored on `min_coverage` of their questions (in place).
    """
    runs = runs or ([production] if production else [])
    policy, notes = applicable(policy, candidate.coverage, candidate.missing)
    policy, floors_source = with_floors(policy, golden_floors or {})
    for scores in {id(s): s for s in (candidate, *runs)}.values():
        scores.means, scores.missing = apply_coverage(
            scores.means, scores.coverage, scores.missing, policy.min_coverage
        )
    floors = noise_floor([per_question(r) for r in runs])  # {} under two runs
    decision = decide(
        policy,
        candidate.means,
        per_question(candidate),
        production.means if production else None,
        per_question(production) if production else None,
        quality_failures or [],
        floors=floors,
        unchanged=unchanged,
        candidate_modes=candidate.mode_scores if reselect else None,
        production_modes=production.mode_scores if reselect and production else None,
    )
    decision["notes"] = [*notes, floors_source, *decision["notes"]]
    for mode, error in candidate.failed_modes.items():
        if production is not None and mode not in production.failed_modes:
            decision["reasons"].append(
                f"retrieval mode {mode} fails on the candidate and works on production ({error}): the candidate "
                "lost a capability production has"
            )
            decision["decision"] = "block"
        else:
            decision["notes"].append(f"retrieval mode {mode} failed on the candidate, judged without it: {error}")
    decision["floors"] = floors
    decision["floors_source"] = floors_source
    decision["stale"] = dict(preparation.stale) if preparation else {}
    if preparation and preparation.stale:
        share = len(preparation.stale) / max(1, preparation.asked)
        finding = (
            f"stale golden set: {len(preparation.stale)} of {preparation.asked} questions cite passages no longer "
            f"verbatim in their document (first: {next(iter(preparation.stale))}); they were left out of the "
            "comparison: update them (`ragops golden check`)"
        )
        if share > policy.max_stale_share:
            decision["reasons"].append(f"{finding}; more than max_stale_share {policy.max_stale_share:.0%}")
            decision["decision"] = "block"
        else:
            decision["notes"].append(finding)
    return decision
