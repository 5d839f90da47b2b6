"""Evaluate flow: score a candidate version against production and decide, without moving any tag."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel, PrivateAttr

from evaluations import review
from evaluations.evaluation_tasks import (
    check_data_quality,
    check_golden_coverage,
    compare_with_production,
    describe_versions,
    evaluation_answerer,
    prepare_comparison,
    publish_evaluation,
    score_table_version,
)
from evaluations.gate import check_against_table, golden_floors, load_policy
from evaluations.golden import GoldenSet, golden_notes, read_golden_set
from evaluations.judgement import Preparation, judge
from evaluations.outcome import final_state
from evaluations.report import EvaluationInputs, Scores, evaluation_summary, quality_failures
from evaluations.supersede import evaluation_turn, newer_candidate
from tasks import events, table_config
from tasks.ingest.summary import IngestResult
from tasks.run_names import namer, rename_run, run_name
from tasks.settings import Settings
from tasks.store import fragments
from tasks.store.backends import open_store
from tasks.store.production import production_state


class GoldenRef(BaseModel):
    """A golden set read and validated once per run and handed from flow to flow. A flow run's parameters record its
    path and hash; the set itself travels in-process, read again only when its files changed since (or when the
    reference came without it, over the API)."""

    path: str
    sha256: str
    _golden: GoldenSet | None = PrivateAttr(default=None)
    _stamp: list[tuple[str, int, int]] = PrivateAttr(default_factory=list)

    @classmethod
    def read(cls, path: str) -> GoldenRef:
        """Read and validate the set at `path` (BadGoldenSetError when it is unusable)."""
        stamp = files_stamp(path)  # before reading: a change during the read is seen as one
        golden = read_golden_set(path)
        ref = cls(path=path, sha256=golden.sha256)
        ref._golden, ref._stamp = golden, stamp
        return ref

    def load(self) -> GoldenSet:
        """The set as read, or as it is now when its files changed."""
        if self._golden is None or files_stamp(self.path) != self._stamp:
            return read_golden_set(self.path)
        return self._golden


def files_stamp(path: str) -> list[tuple[str, int, int]]:
    """Name, size and modification time of the file at `path`, or of every file under the folder (a BEIR set)."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root] if root.exists() else []
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def load_inputs(settings: Settings, allow_drafts: bool, golden: GoldenRef | None = None) -> EvaluationInputs:
    """The golden set (`golden` when it is the configured set, else read here) and the gate policy; a set of BEIR
    document judgements is scored at document level. Bad inputs fail here, before any work."""
    if golden is not None and golden.path == settings.golden_set:
        golden_set = golden.load()
    else:
        golden_set = read_golden_set(settings.golden_set)
    policy, policy_hash = load_policy(settings.policy)
    floors = golden_floors(golden_set.header)
    notes = golden_notes(golden_set, settings.table, allow_drafts)
    if golden_set.documents_only:
        policy, dropped = policy.document_level(settings.eval_k)
        notes.append(
            f"BEIR judgements: scored at document level (IR metrics only), primary {policy.primary_metric}"
            + (f"; not gated without passages or answers: {', '.join(dropped)}" if dropped else "")
        )
    return EvaluationInputs(golden_set, notes, policy, policy_hash, floors)


def resolve_version(settings: Settings, version: str | int | None) -> int:
    """A version number from a number, a tag, or None (the table's latest version)."""
    return open_store(settings).at(version).version


def document_count(settings: Settings, version: int) -> int:
    """How many documents a version of the table holds."""
    return len(open_store(settings).at(version).doc_ids())


@dataclass
class Versions:
    """The versions an evaluation compares, and the run that compares them."""

    run_id: str
    candidate: int
    production: int | None
    production_mode: str | None  # the mode production serves

    @property
    def compared(self) -> list[int]:
        """The candidate, then production when it is another version."""
        return [self.candidate, *([self.production] if self.production not in (None, self.candidate) else [])]


def resolve_versions(settings: Settings, version: str | None, inputs: EvaluationInputs) -> Versions:
    """The candidate (checked against the policy's expectations of a table) and production."""
    candidate = resolve_version(settings, version)
    check_against_table(inputs.policy, settings.policy, document_count(settings, candidate), candidate)
    prod = production_state(open_store(settings), settings)
    return Versions(str(flow_run.id or uuid.uuid4()), candidate, prod.version, prod.mode)


@contextmanager
def reading(settings: Settings, run_id: str, versions: list[int]) -> Iterator[None]:
    """Name the versions this evaluation reads in a heartbeat, so that maintenance keeps them (and the candidate's
    tag) until it ends, however old the candidate is."""
    with fragments.heartbeat(
        settings, settings.table, f"evaluate-{run_id}", versions=versions, reader="evaluation", clear_on_exit=True
    ):
        yield


def score_versions(
    settings: Settings, inputs: EvaluationInputs, prepared: Preparation, versions: Versions, repeat: int | None
) -> Scores:
    """Score the candidate, then production `repeat` times (default: policy calibration.repeats), in one mode sweep on
    the same questions so neither side gains from the choice; production's run-to-run spread is the noise floor no
    gate tolerance may lie under. A version is retrieved once (deterministic), then answered and judged per run."""
    policy, documents_only = inputs.policy, inputs.golden.documents_only
    answerer = evaluation_answerer(settings)
    sweep = (prepared.questions, policy.modes, policy.primary_metric, documents_only, prepared.ideal_units, answerer)
    repeats = max(1, policy.calibration.repeats if repeat is None else repeat)
    if versions.production is None:
        if repeats >= 2:
            get_run_logger().warning("no production yet: the A/A calibration (repeat %d) has nothing to score", repeats)
        return Scores(score_table_version(settings, versions.candidate, *sweep)[0])
    same = versions.production == versions.candidate  # one version, one retrieval: answered for both sides
    candidate, *runs = score_table_version(settings, versions.candidate, *sweep, runs=1 + repeats if same else 1)
    runs = runs if same else score_table_version(settings, versions.production, *sweep, runs=repeats)
    rows, unchanged = compare_with_production(settings, versions.candidate, versions.production)
    return Scores(candidate, runs[0], runs, rows, unchanged)


def judge_scores(
    inputs: EvaluationInputs, scores: Scores, quality: list[dict[str, Any]], prepared: Preparation
) -> dict[str, Any]:
    """The gate's decision on the scores, the failed data-quality expectations and the golden set's floors."""
    return judge(
        inputs.policy,
        scores.candidate,
        scores.production,
        runs=scores.runs,
        quality_failures=quality_failures(quality),
        unchanged=scores.unchanged,
        golden_floors=inputs.floors,
        preparation=prepared,
    )


def evaluation_settings(table: str | None, golden_set: str | None, policy: str | None) -> Settings:
    """The settings with the run's overrides; with no golden set given, the one recorded for the table (a Prefect
    Variable, `ragops ingest --golden-set`) before the configured one."""
    settings = Settings().model_copy(update={k: v for k, v in {"table": table, "policy": policy}.items() if v})
    chosen = golden_set or table_config.configured_golden_set(settings.table)
    return settings.model_copy(update={"golden_set": chosen}) if chosen else settings


def superseded(settings: Settings, candidate: int, newer: int) -> dict[str, Any]:
    """The result of an evaluation whose version is no longer the table's newest candidate."""
    get_run_logger().info("%s v%d: superseded by candidate v%d, evaluated instead", settings.table, candidate, newer)
    return {"table": settings.table, "candidate_version": candidate, "decision": "superseded",
            "action": "superseded", "superseded_by": newer, "reasons": []}  # fmt: skip


def run_evaluation(
    settings: Settings, inputs: EvaluationInputs, versions: Versions, source: str | None, repeat: int | None,
    ingested: IngestResult | None,
) -> dict[str, Any]:  # fmt: skip
    """Coverage, scoring of both versions, data quality and lineage, while maintenance keeps the versions; the
    decision, its reports and artifacts, and its event."""
    documents = ingested.source_documents if ingested is not None and source else None
    with reading(settings, versions.run_id, versions.compared):
        coverage = check_golden_coverage(settings, inputs.golden, versions.candidate)
        prepared = prepare_comparison(settings, inputs.golden.questions, versions.compared)
        scores = score_versions(settings, inputs, prepared, versions, repeat)
        quality = check_data_quality(
            settings, versions.candidate, inputs.policy, source, scores.production_rows, documents
        )
        described = describe_versions(settings, versions.candidate, versions.production)
    decision = judge_scores(inputs, scores, quality, prepared)
    summary = evaluation_summary(
        versions.run_id, settings, inputs, scores, decision, quality, coverage, described, versions.production_mode
    )
    summary = publish_evaluation(
        settings, summary, scores.candidate, scores.production, quality, inputs.policy.primary_metric
    )
    why = review.review_reason(summary, review.ReviewPolicy.from_summary(summary))
    events.gate_decided(settings, summary, "review" if why else summary["decision"], summary.get("report_url"))
    return summary


@flow(
    name="evaluate",
    flow_run_name=namer("evaluate", with_version=True),
    persist_result=True,
    result_serializer="json",
)
def evaluate(
    version: str | None = None,
    table: str | None = None,
    golden_set: str | None = None,
    policy: str | None = None,
    source: str | None = None,
    repeat: int | None = None,
    allow_drafts: bool = False,
    golden: GoldenRef | None = None,
    ingested: IngestResult | None = None,
    newest_only: bool = False,
) -> dict[str, Any]:
    """Score `version` (default: latest) and production on the golden set, check data quality, decide.

    `repeat` N ≥ 2: score production N times (the A/A noise floor). Unreviewed drafts are refused unless
    `allow_drafts`. `golden` and `ingested`: the set and the ingest of `source` a pipeline has read already.
    `newest_only` (the `on-ingest` trigger): wait for the table's evaluation slot, and end Superseded when a newer
    candidate exists by then."""
    settings = evaluation_settings(table, golden_set, policy)
    with evaluation_turn(settings, newest_only):
        inputs = load_inputs(settings, allow_drafts, golden)  # bad inputs fail before any work
        versions = resolve_versions(settings, version, inputs)
        rename_run(run_name("evaluate", settings.table, versions.candidate))
        newer = newer_candidate(open_store(settings), versions.candidate) if newest_only else None
        if newer is not None:
            return final_state(superseded(settings, versions.candidate, newer))
        summary = run_evaluation(settings, inputs, versions, source, repeat, ingested)
    return final_state(summary)
