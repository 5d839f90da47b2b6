"""Evaluate flow: score a candidate version against production and decide, without moving any tag."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from evaluations.evaluation_tasks import (
    check_data_quality,
    check_golden_coverage,
    compare_with_production,
    describe_versions,
    prepare_comparison,
    publish_evaluation,
    score_table_version,
)
from evaluations.gate import check_against_table, golden_floors, load_policy
from evaluations.golden import golden_notes, read_golden_set
from evaluations.judgement import judge
from evaluations.report import evaluation_summary
from tasks.errors import VersionNotFoundError
from tasks.settings import Settings
from tasks.store import fragments, lancedb_store
from tasks.store.production import production_state


def resolve_version(settings: Settings, version: str | int | None) -> int:
    """A version number from a number, a tag, or None (the table's latest version)."""
    db = lancedb_store.connect(settings)
    if not lancedb_store.table_exists(db, settings.table):
        raise VersionNotFoundError(f"no table {settings.table!r} at {settings.lancedb_uri}: run `ragops ingest` first")
    return int(lancedb_store.open_table(db, settings.table, version).version)


def document_count(settings: Settings, version: int) -> int:
    """How many documents a version of the table holds."""
    return len(
        lancedb_store.doc_ids(lancedb_store.open_table(lancedb_store.connect(settings), settings.table, version))
    )


@contextmanager
def reading(settings: Settings, run_id: str, versions: list[int]) -> Iterator[None]:
    """Name the versions this evaluation reads in a heartbeat, so that maintenance keeps them (and the candidate's
    tag) until it ends, however old the candidate is."""
    with fragments.heartbeat(
        settings, settings.table, f"evaluate-{run_id}", versions=versions, reader="evaluation", clear_on_exit=True
    ):
        yield


@flow(name="evaluate", persist_result=True, result_serializer="json")
def evaluate(
    version: str | None = None,
    table: str | None = None,
    golden_set: str | None = None,
    policy: str | None = None,
    source: str | None = None,
    repeat: int | None = None,
    allow_drafts: bool = False,
) -> dict[str, Any]:
    """Score `version` (default: latest) and production on the golden set, check data quality, decide.

    `repeat` N ≥ 2 (default: the policy's calibration.repeats) scores production N times: the spread of its
    metrics between identical runs is the noise floor under which no gate tolerance may lie. A golden set with
    unreviewed generated drafts is refused unless `allow_drafts`; one that cites too few of the candidate's
    documents (written for another corpus) is refused before any scoring.
    """
    overrides = {"table": table, "golden_set": golden_set, "policy": policy}
    settings = Settings().model_copy(update={k: v for k, v in overrides.items() if v})
    golden = read_golden_set(settings.golden_set)  # bad inputs fail before any work
    gate_policy, policy_hash = load_policy(settings.policy)
    floors = golden_floors(golden.header)
    notes = golden_notes(golden, settings.table, allow_drafts)
    if golden.documents_only:
        gate_policy, dropped = gate_policy.document_level(settings.eval_k)
        notes.append(
            f"BEIR judgements: scored at document level (IR metrics only), primary {gate_policy.primary_metric}"
            + (f"; not gated without passages or answers: {', '.join(dropped)}" if dropped else "")
        )
    candidate_version = resolve_version(settings, version)
    check_against_table(gate_policy, settings.policy, document_count(settings, candidate_version), candidate_version)
    prod = production_state(lancedb_store.connect(settings), settings)
    run_id = str(flow_run.id or uuid.uuid4())
    compared = [candidate_version, *([prod.version] if prod.version not in (None, candidate_version) else [])]
    primary, modes = gate_policy.primary_metric, gate_policy.modes
    repeats = gate_policy.calibration.repeats if repeat is None else repeat
    with reading(settings, run_id, compared):
        coverage = check_golden_coverage(settings, golden, candidate_version)
        prepared = prepare_comparison(settings, golden.questions, compared)
        questions, units, documents_only = prepared.questions, prepared.ideal_units, golden.documents_only

        candidate = score_table_version(settings, candidate_version, questions, modes, primary, documents_only, units)
        production, production_rows, unchanged, runs = None, None, None, []
        if prod.version is not None:  # the same mode sweep and the same golden set: neither side gains from the choice
            for _ in range(max(1, repeats)):
                runs.append(
                    score_table_version(settings, prod.version, questions, modes, primary, documents_only, units)
                )
            production = runs[0]
            production_rows, unchanged = compare_with_production(settings, candidate_version, prod.version)
        elif repeats >= 2:
            get_run_logger().warning("no production yet: the A/A calibration (repeat %d) has nothing to score", repeats)
        quality = check_data_quality(settings, candidate_version, gate_policy, source, production_rows)
        described = describe_versions(settings, candidate_version, prod.version)
    decision = judge(
        gate_policy,
        candidate,
        production,
        runs=runs,
        quality_failures=[f"{q['expectation']} on {q['column']}: {q['observed']}" for q in quality if not q["success"]],
        unchanged=unchanged,
        golden_floors=floors,
        preparation=prepared,
    )
    summary = evaluation_summary(
        run_id=run_id,
        settings=settings,
        policy=gate_policy,
        policy_hash=policy_hash,
        golden_hash=golden.sha256,
        production_mode=prod.mode,
        candidate=candidate,
        production=production,
        decision=decision,
        quality=quality,
        calibration={"repeats": len(runs), "floors": decision["floors"], "runs": [r.means for r in runs]}
        if len(runs) >= 2
        else {},
    )
    summary["source_changes"] = described["source_changes"]
    summary["lineage"] = described["lineage"]
    summary["stale_questions"] = decision["stale"]
    summary["floors_source"] = decision["floors_source"]
    summary["notes"] = [*notes, *summary["notes"]]
    summary["golden"] = {
        "path": golden.path,
        "layout": golden.layout,
        "version": golden.version,
        "sha256": golden.sha256,
        "drafts": len(golden.drafts),
        "corpus": golden.header.get("corpus"),
        **coverage,
    }
    return publish_evaluation(settings, summary, candidate, production, quality, primary)
