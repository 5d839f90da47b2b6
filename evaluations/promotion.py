"""The gate's decisions on production: promote a candidate (or log its block) and roll back.

Each reads the state and records its action (tasks/store/production.py moves the tag and appends the log record)
while holding `promotion_lock`, so two of them never interleave and the log replays to the tag.
"""

from __future__ import annotations

from typing import Any

from tasks.errors import RagopsError, StoreConflictError, VersionRemovedError
from tasks.settings import Settings
from tasks.store.interface import PRODUCTION_TAG, Store
from tasks.store.production import mode_of, production_history, promotion_lock, record_action, same_data_as


class NothingToRollBackError(RagopsError):
    """There is no earlier promoted version to go back to."""


def record_decision(
    store: Store,
    settings: Settings,
    *,
    version: int,
    production_version: int | None,
    mode: str,
    decision: dict[str, Any],
    metrics: dict[str, Any],
    policy_hash: str,
    run_id: str,
    trigger: str,
    report: str,
    golden_hash: str = "",
    details: dict[str, Any] | None = None,
) -> str:
    """Promote (move the tag, then log) or log the block; returns the action taken.

    `production_version` is the production the decision was made against: if production has moved since (another
    promotion or a rollback), the comparison is stale and the promotion is refused with StoreConflictError.
    """
    action = "promote" if decision["decision"] == "promote" else "block"
    with promotion_lock(settings):
        previous = store.tagged(PRODUCTION_TAG)
        if action == "promote" and previous != production_version:
            # a maintenance move keeps the rows the candidate was compared with
            records = store.log_records(settings.promotions_table)
            if previous not in same_data_as(records, production_version):
                raise StoreConflictError(
                    f"production of {settings.table!r} moved from version {production_version} to {previous} while "
                    f"version {version} was evaluated; run promote again to compare it with the new production"
                )
        record_action(
            store,
            settings,
            action=action,
            version=version,
            previous=previous,
            mode=mode,
            run_id=run_id,
            trigger=trigger,
            reasons=decision["reasons"],
            metrics=metrics,
            policy_hash=policy_hash,
            report=report,
            golden_hash=golden_hash,
            details=details,
        )
    return action


def unchanged_result(settings: Settings, written: int | None) -> dict[str, Any] | None:
    """The pipeline's result when nothing waits to be judged: its ingest wrote no version (`written` None) and no
    candidate is newer than production, or only one the gate has already blocked (judging it again changes nothing);
    or it wrote a version holding production's very rows (the source went back to what production holds, as when
    a pull request's candidate came in between). None when there is something to judge."""
    from evaluations.supersede import newer_candidate
    from tasks.store.backends import open_store

    store = open_store(settings)
    production = store.tagged(PRODUCTION_TAG) if store.exists() else None
    if production is None:
        return None
    if written is not None:  # a version with production's rows (after another branch's candidate) changes nothing
        if store.at(written).same_rows(store.at(production)):
            return unchanged(settings, production, f"nothing changed: version {written} holds production's rows")
        return None
    reason = f"nothing changed: the source holds what version {production} (production) holds"
    newest = newer_candidate(store, production)
    if newest is not None:
        blocked = {int(r["version"]) for r in store.log_records(settings.promotions_table) if r["action"] == "block"}
        if newest in blocked:
            reason = f"nothing changed since version {newest} was blocked; production is version {production}"
        elif store.at(newest).same_rows(store.at(production)):
            reason = f"nothing changed: the newest candidate, version {newest}, holds production's rows"
        else:
            return None
    return unchanged(settings, production, reason)


def unchanged(settings: Settings, production: int, reason: str) -> dict[str, Any]:
    """A result that judged nothing: production stays, for `reason`."""
    return {
        "table": settings.table,
        "candidate_version": production,
        "production_version": production,
        "decision": "unchanged",
        "action": "unchanged",
        "reasons": [reason],
    }


def rollback(store: Store, settings: Settings, run_id: str, trigger: str) -> tuple[int, int]:
    """Move production back to the previously promoted version; returns (from, to)."""
    with promotion_lock(settings):
        current = store.tagged(PRODUCTION_TAG)
        records = store.log_records(settings.promotions_table)
        history = production_history(records)
        if current is None or len(history) < 2:
            raise NothingToRollBackError(f"table {settings.table!r} has no earlier promoted version to roll back to")
        target = history[-2]
        if target not in {int(v["version"]) for v in store.versions()}:
            raise VersionRemovedError(
                f"cannot roll {settings.table!r} back to version {target}: `ragops maintain` removed it. Retention "
                f"keeps production and the versions of the last {settings.retain_promotions} promotions beneath it "
                "(RAGOPS_RETAIN_PROMOTIONS, the rollback depth); raise it to keep deeper rollbacks, or promote a "
                "version that still exists (`ragops versions`)"
            )
        record_action(
            store,
            settings,
            action="rollback",
            version=target,
            previous=current,
            run_id=run_id,
            trigger=trigger,
            reasons=[f"rolled back from version {current}"],
            mode=mode_of(records, target),
        )
    return current, target
