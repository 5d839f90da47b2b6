"""Prefect tasks of the evaluate and promote flows, wrapping the plain functions in `evaluations/`."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from evaluations import promotion, quality_checks, report
from evaluations.gate import Policy
from evaluations.golden import GoldenQuestion, GoldenSet, check_coverage
from evaluations.judgement import Preparation, prepare
from evaluations.outcome import artifact_key, decision_line
from evaluations.ragas_metrics import ragas_llm, score_answers
from evaluations.scoring import (
    QuestionResult,
    ReferenceChunk,
    RememberedAnswers,
    Retrieval,
    VersionScores,
    answer_retrieval,
    retrieve_modes,
)
from tasks.embed import embedding
from tasks.ingest.sources import canonical_location, discover
from tasks.progress import report_progress
from tasks.report_links import report_url
from tasks.serve.answering import Answerer, llm_api_key, make_answerer
from tasks.serve.query_model import version_spec
from tasks.serve.retrieval import AnnQuery
from tasks.settings import Settings
from tasks.store import version_info
from tasks.store.backends import open_store


def score_table(
    settings: Settings,
    version: int,
    questions: list[GoldenQuestion],
    modes: list[str],
    primary: str,
    documents_only: bool = False,
    ideal_units: dict[str, list[frozenset[str]]] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> VersionScores:
    """Retrieve, answer and score every golden question on one table version (retrieval only: `documents_only`)."""
    retrieval = retrieve_table(settings, version, questions, modes, primary, documents_only, ideal_units, progress)
    return answer_table(settings, retrieval, progress)


def retrieve_table(
    settings: Settings,
    version: int,
    questions: list[GoldenQuestion],
    modes: list[str],
    primary: str,
    documents_only: bool = False,
    ideal_units: dict[str, list[frozenset[str]]] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Retrieval:
    """Every golden question retrieved and IR-scored in every mode on one table version, the judged mode chosen."""
    table = open_store(settings).at(version)
    spec = version_spec(settings, version)  # questions are embedded with the model this version was made with
    ann = AnnQuery.from_settings(settings)
    return retrieve_modes(
        table,
        version,
        questions,
        spec,
        modes,
        settings.eval_k,
        primary,
        progress,
        ann,
        documents_only=documents_only,
        ideal_units=ideal_units,
    )


def evaluation_answerer(settings: Settings) -> Answerer:
    """The configured answerer; the offline extractive one remembers its answers (`RememberedAnswers`), so that a
    question retrieving the same chunks in both versions or in another run is answered once."""
    answerer = make_answerer(settings)
    return answerer if settings.llm_configured else RememberedAnswers(answerer)


def answer_table(
    settings: Settings,
    retrieval: Retrieval,
    progress: Callable[[str, int, int], None] | None = None,
    answerer: Answerer | None = None,
) -> VersionScores:
    """A version's retrieval answered (by `answerer`, default: the configured one) and its answers scored (the ragas
    metrics, LLM-judged ones when configured)."""
    judge = embedding.embed_spec(settings)  # the answer-similarity judge: one model for every version compared
    answerer = answerer or make_answerer(settings)
    llm = ragas_llm(settings) if settings.llm_configured else None
    by_id = {q.id: q for q in retrieval.questions}

    def answer_metrics(results: list[QuestionResult], references: dict[str, list[ReferenceChunk]]) -> dict[str, str]:
        return score_answers(
            results, references, by_id, judge, llm, settings.llm_concurrency, settings.llm_timeout_s * 2
        )

    scores = answer_retrieval(
        retrieval,
        answerer,
        answer_metrics,
        progress,
        answer_concurrency=settings.llm_concurrency if settings.llm_configured else 1,
        llm_answers=settings.llm_configured,
    )
    redact_key(scores, llm_api_key(settings) if settings.llm_configured else "")
    return scores


@task(name="score-version", cache_policy=NO_CACHE)
def score_table_version(
    settings: Settings,
    version: int,
    questions: list[GoldenQuestion],
    modes: list[str],
    primary: str,
    documents_only: bool = False,
    ideal_units: dict[str, list[frozenset[str]]] | None = None,
    answerer: Answerer | None = None,
    runs: int = 1,
) -> list[VersionScores]:
    """Score one table version on the golden set `runs` times: its mode sweep retrieved and IR-scored once, then
    answered (by `answerer`, default: the configured one) and judged in the judged mode each time (answers and LLM
    judgements are what vary between runs). Without an LLM nothing after retrieval varies either (the extractive
    answer, the offline metrics): a later run is a copy of the first."""
    retrieval = retrieve_table(
        settings, version, questions, modes, primary, documents_only, ideal_units, report_progress
    )
    scored: list[VersionScores] = []
    for _ in range(runs):
        again = bool(scored) and not settings.llm_configured
        scored.append(deepcopy(scored[0]) if again else answer_table(settings, retrieval, report_progress, answerer))
        primary_mean = scored[-1].means.get(primary)
        get_run_logger().info("version %d: mode %s, %s = %s", version, retrieval.mode, primary, primary_mean)
    return scored


@task(name="prepare-comparison", cache_policy=NO_CACHE)
def prepare_comparison(settings: Settings, questions: list[GoldenQuestion], versions: list[int]) -> Preparation:
    """Questions whose passages are stale in a compared version are left out; the versions' evidence is pooled."""
    store = open_store(settings)
    preparation = prepare(questions, [store.at(v) for v in versions])
    if preparation.stale:
        get_run_logger().warning(
            "%d golden question(s) cite passages no longer verbatim in version(s) %s: left out of the comparison",
            len(preparation.stale),
            versions,
        )
    return preparation


def redact_key(scores: VersionScores, key: str) -> None:
    """Remove the API key from recorded error messages (an endpoint may echo it), before anything stores them."""
    if not key:
        return
    for result in scores.questions:
        result.errors = {name: text.replace(key, "[redacted]") for name, text in result.errors.items()}
    scores.missing = {name: text.replace(key, "[redacted]") for name, text in scores.missing.items()}


@task(name="check-golden-coverage", cache_policy=NO_CACHE)
def check_golden_coverage(settings: Settings, golden: GoldenSet, version: int) -> dict[str, int]:
    """How many of the documents the golden set cites the version holds; stops the evaluation below the minimum."""
    table = open_store(settings).at(version)
    coverage = check_coverage(table, golden, settings.table, settings.golden_min_doc_coverage)
    get_run_logger().info(
        "golden set cites %d documents; %d are in version %d", coverage["cited_docs"], coverage["cited_found"], version
    )
    return coverage


@task(name="compare-with-production", cache_policy=NO_CACHE)
def compare_with_production(settings: Settings, version: int, production: int) -> tuple[int, str | None]:
    """Production's row count, and why the candidate holds the same data as production (None when it differs)."""
    store = open_store(settings)
    candidate_table, production_table = store.at(version), store.at(production)
    rows = production_table.count()
    if version == production:
        return rows, f"version {version} is production"
    if candidate_table.same_rows(production_table):
        return rows, f"version {version} holds the same chunks and vectors as production version {production}"
    return rows, None


def quality_results(
    settings: Settings, version: int, policy: Policy, expected: set[str] | None, production_rows: int | None
) -> list[quality_checks.CheckResult]:
    """The Great Expectations suite on a table version, with the policy's limits (plain: the flow and benchmarks)."""
    table = open_store(settings).at(version)
    spec = version_spec(settings, version)
    limits = quality_checks.QualityLimits(
        max_duplicate_text_rate=policy.quality.max_duplicate_text_rate,
        max_empty_documents=policy.quality.max_empty_documents,
        row_count_band=policy.quality.row_count_band,
    )
    dim = table.schema().field("vector").type.list_size
    return quality_checks.run_quality_checks(
        table, dim, embedding.max_content_tokens(spec), limits, expected, production_rows
    )


@task(name="check-data-quality", cache_policy=NO_CACHE)
def check_data_quality(
    settings: Settings,
    version: int,
    policy: Policy,
    source: str | None,
    production_rows: int | None,
    documents: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the Great Expectations suite on the candidate version (every source document expected when given:
    `documents`, as the ingest that just read the source counted them, else listed and read here)."""
    expected = set(documents) if documents is not None else None
    if source and documents is None:
        found = discover(source, settings, version_info.id_prefix_for(settings, version, canonical_location(source)))
        skipped = {q.doc_id for q in found.quarantined}
        expected = {i.doc_id for i in found.items if i.doc_id not in skipped}
    results = quality_results(settings, version, policy, expected, production_rows)
    failed = [r for r in results if not r.success]
    get_run_logger().info("data quality: %d/%d expectations passed", len(results) - len(failed), len(results))
    return [r.as_dict() for r in results]


@task(name="describe-versions", cache_policy=NO_CACHE)
def describe_versions(settings: Settings, candidate: int, production: int | None) -> dict[str, Any]:
    """The lineage of both versions side by side, and per source the documents added, changed and deleted from
    production to the candidate (what a reviewer reads before any metric)."""
    compared = version_info.comparison(settings, settings.table, candidate, production)
    for name, counts in compared["source_changes"].items():
        get_run_logger().info(
            "%s version %d against %s, source %s: %d added, %d changed, %d deleted documents",
            settings.table,
            candidate,
            f"production version {production}" if production is not None else "an empty table",
            name,
            counts["added"],
            counts["changed"],
            counts["deleted"],
        )
    return compared


@task(name="publish-evaluation", cache_policy=NO_CACHE)
def publish_evaluation(
    settings: Settings,
    summary: dict[str, Any],
    candidate: VersionScores,
    production: VersionScores | None,
    quality: list[dict[str, Any]],
    primary: str,
) -> dict[str, Any]:
    """Write the HTML and JSON reports and the Prefect artifacts (stable keys per table)."""
    records = open_store(settings).log_records(settings.promotions_table)
    summary["production_now"] = report.production_story(records, summary["production_version"])
    history = [*report.decision_history(records, primary), report.this_decision(summary)]
    report.write_reports(settings.reports_dir, summary, candidate, production, quality, history, primary)
    summary["report_url"] = report_url(settings, summary["report_html"])
    key = artifact_key(settings.table)
    create_markdown_artifact(
        key=f"evaluation-{key}", markdown=report.summary_markdown(summary), description=decision_line(summary)[:250]
    )
    if summary["report_url"]:
        create_link_artifact(
            key=f"report-{key}",
            link=summary["report_url"],
            link_text=f"{settings.table} v{summary['candidate_version']} evaluation report",
            description=decision_line(summary)[:250],
        )
    rows = [
        {"id": q.id, "kind": q.kind, "mode": q.mode, "question": q.question, **{k: v for k, v in q.scores.items()}}
        for q in candidate.questions
    ]
    create_table_artifact(key=f"evaluation-questions-{key}", table=rows, description="per-question scores")
    get_run_logger().info("report: %s", summary["report_html"])
    return summary


@task(name="record-decision", cache_policy=NO_CACHE)
def record_decision(settings: Settings, summary: dict[str, Any], trigger: str) -> str:
    """Move `production` when the gate says promote (and production is still what it was compared with); log it."""
    metrics = {row["metric"]: row["candidate"] for row in summary["metrics"]}
    action = promotion.record_decision(
        open_store(settings),
        settings,
        version=summary["candidate_version"],
        production_version=summary["production_version"],
        mode=summary["mode"],
        decision={"decision": summary["decision"], "reasons": summary["reasons"]},
        metrics=metrics,
        policy_hash=summary["policy_hash"],
        run_id=summary["run_id"],
        trigger=trigger,
        report=summary["report_html"],
        golden_hash=summary.get("golden_set_hash", ""),
        details=report.decision_details(summary),
    )
    get_run_logger().info("%s version %d", action, summary["candidate_version"])
    return action
