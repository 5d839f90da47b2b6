"""The retention plan (tasks/store/retention.py) as a plain function: every version and tag decided, with the
reason a user reads in `ragops maintain` and `ragops versions`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks.store.retention import RetentionPolicy, age_in_days, brief, plan_retention

NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def version(n: int, days_old: float, *tags: str) -> dict:
    """A version record as `dataset_versions` gives it (aware UTC timestamps)."""
    stamp = NOW - timedelta(days=days_old)
    return {"version": n, "timestamp": stamp, "tags": list(tags)}


def nightly(count: int) -> list[dict]:
    """`count` nightly runs: run n made version 2n (tagged candidate-n) and an index-only version 2n+1."""
    out = []
    for n in range(1, count + 1):
        out.append(version(2 * n, count - n + 0.1, f"candidate-{n}"))
        out.append(version(2 * n + 1, count - n + 0.09))
    return out


def test_a_years_nightly_runs_keep_production_the_rollback_depth_and_a_week_of_candidates() -> None:
    versions = nightly(365)
    versions[-2]["tags"].append("production")  # the last run was promoted, as were all before it
    history = [2 * n for n in range(1, 366)]
    plan = plan_retention(versions, history, RetentionPolicy(), age_in_days(NOW))
    kept_tags = {t.tag for t in plan.tags if t.keep}
    assert kept_tags == {"production"} | {f"candidate-{n}" for n in range(359, 366)}
    assert plan.rollback_targets == [2 * n for n in range(364, 359, -1)]  # the 5 promotions beneath production
    # kept: the week of candidates (359-365: younger than 7 days), the latest (index) version; nothing else
    assert set(plan.kept) == {2 * n for n in range(359, 366)} | {731}
    assert len(plan.removed) == 2 * 365 - len(plan.kept)
    assert "candidate older than RAGOPS_RETAIN_CANDIDATE_DAYS=7" in next(t.reason for t in plan.tags if not t.keep)


def test_rollback_targets_keep_their_versions_and_tags_whatever_their_age() -> None:
    versions = nightly(30)
    versions[2 * 19]["tags"].append("production")  # run 20 is production after rollbacks from later runs
    history = [2 * n for n in (1, 5, 9, 14, 17, 20)]
    plan = plan_retention(versions, history, RetentionPolicy(promotions=3, candidate_days=0), age_in_days(NOW))
    assert plan.rollback_targets == [34, 28, 18]
    for target in (34, 28, 18):
        assert any(r.startswith("rollback target") for r in plan.kept[target])
    assert {t.tag for t in plan.tags if t.keep} == {
        "production",
        "candidate-20",
        "candidate-17",
        "candidate-14",
        "candidate-9",
    }
    assert 10 not in plan.kept  # promoted, but deeper than the rollback depth
    reasons = {t.tag: t.reason for t in plan.tags}
    assert reasons["candidate-9"] == "rollback target 3 (rollback depth RAGOPS_RETAIN_PROMOTIONS=3)"
    assert reasons["candidate-20"] == "production"


def test_user_tags_named_tags_a_running_ingest_and_the_version_production_left_are_kept() -> None:
    versions = [
        version(1, 40, "release-2026-10"),
        version(2, 30, "candidate-a"),
        version(3, 20, "candidate-b"),
        version(4, 10),
        version(5, 9),
        version(6, 8, "production"),
        version(7, 0.01),
    ]
    policy = RetentionPolicy(promotions=0, candidate_days=7, keep_tags=("candidate-b",), untagged_hours=1)
    plan = plan_retention(versions, [6], policy, age_in_days(NOW), live={"run-42": 4}, left_production=5)
    reasons = {t.tag: t.reason for t in plan.tags}
    assert reasons["release-2026-10"].startswith("not a candidate-* or rollback-v* tag")
    assert reasons["candidate-b"] == "named in RAGOPS_RETAIN_TAGS"
    assert [t.tag for t in plan.tags if not t.keep] == ["candidate-a"]
    assert plan.removed == [2]
    assert plan.kept[4] == ["read by the running ingest run-42"]
    assert plan.kept[5] == ["production until this maintenance (servers may still read it)"]
    assert plan.kept[7] == ["latest version"]  # also younger than an hour: one reason is enough


def test_untagged_versions_younger_than_the_grace_stay_and_older_ones_go() -> None:
    versions = [version(1, 1, "production"), version(2, 2 / 24), version(3, 0.5 / 24), version(4, 0)]
    plan = plan_retention(versions, [1], RetentionPolicy(untagged_hours=1), age_in_days(NOW))
    assert plan.removed == [2]
    assert plan.kept[3] == ["untagged, younger than RAGOPS_RETAIN_UNTAGGED_HOURS=1"]


def test_an_empty_table_plans_nothing_and_reasons_read_briefly() -> None:
    assert plan_retention([], [], RetentionPolicy(), age_in_days(NOW)).removed == []
    assert brief("rollback target 2 (rollback depth RAGOPS_RETAIN_PROMOTIONS=5)") == "rollback 2"
    assert brief("tag candidate-x: candidate 3.2 days old, younger than RAGOPS_RETAIN_CANDIDATE_DAYS=7") == (
        "candidate 3.2d"
    )
    assert brief("untagged, younger than RAGOPS_RETAIN_UNTAGGED_HOURS=1") == "untagged <1h"
    assert brief("read by the running ingest abc") == "ingest running"


def record(action: str, version: int, previous: int | None, minute: int, mode: str = "hybrid") -> dict:
    return {
        "action": action,
        "version": version,
        "previous_version": previous,
        "mode": mode,
        "at": datetime(2026, 11, 30, 2, minute, tzinfo=UTC),
        "trigger": "test",
    }


def test_a_maintenance_move_replaces_production_in_the_history_and_the_story_says_what_it_was() -> None:
    from evaluations.report import production_story
    from tasks.store.production import production_history, same_data_as

    log = [
        record("promote", 4, None, 1),
        record("promote", 8, 4, 2),
        record("block", 9, 8, 3),
        record("maintain", 12, 8, 4),
        record("promote", 15, 12, 5),
        record("rollback", 12, 15, 6),
        record("maintain", 18, 12, 7),
    ]
    assert production_history(log) == [4, 18]  # rollback from 18 goes to 4, not to a compacted copy
    assert same_data_as(log, 8) == {8, 12, 18}  # a promotion judged against 8 may land on 12 or 18
    assert same_data_as(log, 15) == {15}
    story = production_story(log, 18)
    assert story.startswith("production is version 18, compacted from version 12 with identical rows; ")
    assert "rolled back from version 15" in story


def test_a_naive_timestamp_is_read_as_local_time_as_lance_writes_it() -> None:
    local = (NOW - timedelta(hours=5)).astimezone().replace(tzinfo=None)  # Lance: datetime.fromtimestamp
    assert abs(age_in_days(NOW)(local) - 5 / 24) < 1e-9


def test_an_untagged_rollback_target_gets_a_rollback_tag_and_loses_it_past_the_depth() -> None:
    # production moved to compacted version 9 (untagged), then version 12 was promoted: 9 is a rollback target with
    # no tag, which LanceDB's own optimize() cleanup would remove after 7 days
    versions = [version(4, 20, "candidate-a"), version(9, 10), version(12, 1, "candidate-b", "production")]
    plan = plan_retention(versions, [4, 9, 12], RetentionPolicy(promotions=1), age_in_days(NOW))
    assert [(t.tag, t.version) for t in plan.created] == [("rollback-v9", 9)]
    assert plan.removed == [4]
    # a week later another promotion pushes 9 past the depth: its rollback tag goes, and so does the version
    versions = [version(9, 17, "rollback-v9"), version(12, 8, "candidate-b"), version(15, 1, "production")]
    plan = plan_retention(versions, [4, 9, 12, 15], RetentionPolicy(promotions=1), age_in_days(NOW))
    verdict = next(t for t in plan.tags if t.tag == "rollback-v9")
    assert not verdict.keep and "no longer within the rollback depth" in verdict.reason
    assert plan.removed == [9] and not plan.created  # 12 keeps its candidate tag as rollback target 1


def log_entry(action: str, version: int, previous: int | None = None, mode: str | None = None) -> dict[str, object]:
    return {"action": action, "version": version, "previous_version": previous, "mode": mode}


def test_the_mode_of_a_version_is_the_one_its_last_move_recorded() -> None:
    from tasks.store.production import mode_of

    log = [
        log_entry("promote", 1, None, "vector"),
        log_entry("promote", 2, 1, "hybrid"),
        log_entry("block", 3, 2, "fulltext"),  # a block moves nothing: 3 was never production
        log_entry("maintain", 4, 2, "hybrid@0.7"),
        log_entry("promote", 1, 4, "fulltext"),
        log_entry("rollback", 4, 1, "hybrid@0.7"),
    ]
    assert mode_of(log, 1) == "fulltext"  # the latest move to 1, not the first
    assert mode_of(log, 2) == "hybrid"
    assert mode_of(log, 3) is None
    assert mode_of(log, 4) == "hybrid@0.7"
    assert mode_of(log, 9) is None
    assert mode_of([], None) is None


def test_the_history_follows_maintenance_only_from_the_version_on_top() -> None:
    from tasks.store.production import production_history

    log = [
        log_entry("promote", 1),
        log_entry("promote", 2, 1),
        log_entry("promote", 3, 2),
        log_entry("maintain", 10, 3),  # production followed a compaction of 3
        log_entry("maintain", 11, 2),  # not production's: ignored
        log_entry("block", 12, 10),  # a block moves nothing
    ]
    assert production_history(log) == [1, 2, 10]
    assert production_history([*log, log_entry("rollback", 2, 10)]) == [1, 2]
    assert production_history([log_entry("rollback", 5, 6), log_entry("maintain", 7, 5)]) == []
