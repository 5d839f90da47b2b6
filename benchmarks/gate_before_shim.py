"""The judgement API of evaluations/judgement.py for the code before it existed (commit e9cd10b, run from a git
worktree by `gate_calibration.py --code DIR`): the old evaluate flow's steps, unchanged, behind the new names.

Old path: `score_table_version.fn`'s body (one `score_version` call; each version normalised by its own ideal DCG,
no stale questions left out), then `apply_coverage` and `decide` as the old flow called them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evaluations.evaluation_tasks import redact_key
from evaluations.gate import Policy, apply_coverage, decide, noise_floor
from evaluations.golden import GoldenQuestion
from evaluations.ragas_metrics import ragas_llm, score_answers
from evaluations.scoring import QuestionResult, ReferenceChunk, VersionScores, score_version
from tasks.embed import embedding
from tasks.serve.answering import llm_api_key, make_answerer
from tasks.serve.retrieval import AnnQuery
from tasks.settings import Settings
from tasks.store import lancedb_store


@dataclass
class Preparation:
    """The new API's preparation; the old flow scored every question with each version's own ideal."""

    questions: list[GoldenQuestion]
    stale: dict[str, list[str]] = field(default_factory=dict)
    ideal_units: dict[str, list[frozenset[str]]] = field(default_factory=dict)
    asked: int = 0


def golden_floors(header: dict[str, Any]) -> dict[str, float]:
    """Floors lived in the policy's minimums then, not in the golden set's header."""
    return {}


def prepare(questions: list[GoldenQuestion], tables: list[Any]) -> Preparation:
    """Nothing was left out before: every question, no shared ideal."""
    return Preparation(list(questions), {}, {}, len(questions))


def score_table(
    settings: Settings,
    version: int,
    questions: list[GoldenQuestion],
    modes: list[str],
    primary: str,
    documents_only: bool = False,
    ideal_units: dict[str, list[frozenset[str]]] | None = None,
    progress: Any = None,
) -> VersionScores:
    """The body of the old `score_table_version` task (ideal_units did not exist: ignored)."""
    table = lancedb_store.open_table(lancedb_store.connect(settings), settings.table, version)
    spec = embedding.embed_spec(settings)
    answerer = make_answerer(settings)
    llm = ragas_llm(settings) if settings.llm_configured else None
    by_id = {q.id: q for q in questions}

    def answer_metrics(results: list[QuestionResult], references: dict[str, list[ReferenceChunk]]) -> dict[str, str]:
        return score_answers(
            results, references, by_id, spec, llm, settings.llm_concurrency, settings.llm_timeout_s * 2
        )

    scores = score_version(
        table,
        version,
        questions,
        spec,
        modes,
        settings.eval_k,
        primary,
        answerer,
        answer_metrics,
        progress,
        answer_concurrency=settings.llm_concurrency if settings.llm_configured else 1,
        ann=AnnQuery.from_settings(settings),
        no_answer_similarity=settings.monitor_low_similarity,
        llm_answers=settings.llm_configured,
        documents_only=documents_only,
    )
    redact_key(scores, llm_api_key(settings) if settings.llm_configured else "")
    return scores


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
    """The old flow's apply_coverage + decide (no floors from the golden set, no mode re-selection, no stale check)."""
    runs = runs or ([production] if production else [])
    for scores in {id(s): s for s in (candidate, *runs)}.values():
        scores.means, scores.missing = apply_coverage(
            scores.means, scores.coverage, scores.missing, policy.min_coverage
        )
    floors = noise_floor([r.means for r in runs]) if len(runs) >= 2 else {}
    names = sorted(candidate.means)
    return decide(
        policy,
        candidate.means,
        {m: candidate.per_question(m) for m in names},
        production.means if production else None,
        {m: production.per_question(m) for m in names} if production else None,
        quality_failures or [],
        floors=floors,
        unchanged=unchanged,
    )


def quality_results(
    settings: Settings, version: int, policy: Policy, expected: set[str] | None, production_rows: int | None
) -> list[Any]:
    """The old check-data-quality task's body (evaluation_tasks.quality_results did not exist yet)."""
    from evaluations import quality_checks

    table = lancedb_store.open_table(lancedb_store.connect(settings), settings.table, version)
    spec = embedding.embed_spec(settings)
    limits = quality_checks.QualityLimits(
        max_duplicate_text_rate=policy.quality.max_duplicate_text_rate,
        max_empty_documents=policy.quality.max_empty_documents,
        row_count_band=policy.quality.row_count_band,
    )
    dim = table.schema.field("vector").type.list_size
    return quality_checks.run_quality_checks(
        table, dim, embedding.max_content_tokens(spec), limits, expected, production_rows
    )
