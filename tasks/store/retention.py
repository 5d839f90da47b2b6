"""Which tags and versions of the chunk table maintenance keeps, and why: plain functions, no I/O.

Kept, each with its reason:
- the version tagged `production`, and the versions of the last `retain_promotions` promotions beneath it (the
  rollback depth: `ragops rollback` can go back that many times);
- `candidate-*` tags younger than `retain_candidate_days`;
- every tag named in `retain_tags`, and every tag that is not a `candidate-*` or `rollback-v*` tag (ragops deletes
  only its own);
- the latest version, untagged versions younger than `retain_untagged_hours`, the versions running ingests and
  evaluations read (their heartbeats name them, tasks/store/fragments.py; the candidate tag of a version an
  evaluation reads stays with it), and the version production left during this maintenance (servers may still be
  reading it).
Every other `candidate-*` tag is deleted, and every version nothing keeps is removed with Lance's cleanup. A rollback
target with no tag left gets a `rollback-v<N>` tag, so that no other cleanup (LanceDB's `optimize()` removes
untagged versions older than 7 days) can remove what the rollback depth promises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tasks.settings import Settings
from tasks.store.interface import CANDIDATE_PREFIX, PRODUCTION_TAG

ROLLBACK_PREFIX = "rollback-v"  # maintenance's own tag on a rollback target that has no other tag


@dataclass(frozen=True)
class RetentionPolicy:
    """The retention settings, in one place."""

    promotions: int = 5
    candidate_days: float = 7.0
    keep_tags: tuple[str, ...] = ()
    untagged_hours: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            promotions=settings.retain_promotions,
            candidate_days=settings.retain_candidate_days,
            keep_tags=tuple(settings.retain_tags),
            untagged_hours=settings.retain_untagged_hours,
        )


@dataclass(frozen=True)
class TagVerdict:
    """One tag: the version it points at, whether it stays, and why."""

    tag: str
    version: int
    keep: bool
    reason: str


@dataclass
class RetentionPlan:
    """What maintenance keeps and removes."""

    tags: list[TagVerdict]
    kept: dict[int, list[str]]  # version → why it stays
    removed: list[int]  # versions Lance's cleanup removes
    rollback_targets: list[int] = field(default_factory=list)  # newest first
    created: list[TagVerdict] = field(default_factory=list)  # tags to create: untagged rollback targets

    @property
    def deleted_tags(self) -> list[TagVerdict]:
        return [t for t in self.tags if not t.keep]


def age_in_days(now: datetime) -> Callable[[datetime], float]:
    """How old a version's timestamp is at `now`, in days (a naive timestamp is local time, as Lance gives it)."""

    def age(timestamp: datetime) -> float:
        return (now - timestamp.astimezone(UTC)).total_seconds() / 86400

    return age


def plan_retention(
    versions: list[dict[str, Any]],
    history: list[int],
    policy: RetentionPolicy,
    age: Callable[[datetime], float],
    live: Mapping[str, int | Sequence[int] | None] | None = None,
    left_production: int | None = None,
) -> RetentionPlan:
    """Decide every tag and version.

    versions: the table's versions, oldest first, each {"version", "timestamp", "tags"}.
    history: the production history replayed from the promotion log (oldest first; the last is production).
    age: a version timestamp → its age in days (the benchmark passes simulated days).
    live: running runs ("<reader> <run id>", or a bare ingest run id) → the version or versions each reads.
    left_production: the version production moved away from in this maintenance run.
    """
    if not versions:
        return RetentionPlan([], {}, [])
    kept: dict[int, list[str]] = {}

    def keep(version: int, reason: str) -> None:
        kept.setdefault(version, []).append(reason)

    stamps = {int(v["version"]): v["timestamp"] for v in versions}
    targets = list(reversed(history[:-1]))[: policy.promotions]  # newest first
    depth = f"rollback depth RAGOPS_RETAIN_PROMOTIONS={policy.promotions}"
    for i, version in enumerate(targets, 1):
        keep(version, f"rollback target {i} ({depth})")
    for v in versions:
        if PRODUCTION_TAG in v["tags"]:
            keep(int(v["version"]), "production")
    keep(int(versions[-1]["version"]), "latest version")
    for run, read in (live or {}).items():
        who = run if " " in run else f"ingest {run}"
        for number in [] if read is None else [read] if isinstance(read, int) else read:
            keep(int(number), f"read by the running {who}")
    if left_production is not None:
        keep(left_production, "production until this maintenance (servers may still read it)")

    verdicts: list[TagVerdict] = []
    for v in versions:
        version = int(v["version"])
        for tag in v["tags"]:
            reason = _tag_reason(tag, version, stamps[version], policy, age, kept)
            verdicts.append(TagVerdict(tag, version, reason is not None, reason or _delete_reason(tag, policy)))
            if reason is not None and reason not in kept.get(version, []):
                keep(version, f"tag {tag}: {reason}")
    tagged = {t.version for t in verdicts if t.keep}
    created = [
        TagVerdict(
            f"{ROLLBACK_PREFIX}{version}", version, True, f"rollback target {i}: tagged so no cleanup removes it"
        )
        for i, version in enumerate(targets, 1)
        if version in stamps and version not in tagged
    ]
    for v in versions:
        version = int(v["version"])
        if version not in kept and not v["tags"] and age(stamps[version]) * 24 < policy.untagged_hours:
            keep(version, f"untagged, younger than RAGOPS_RETAIN_UNTAGGED_HOURS={policy.untagged_hours:g}")
    removed = [int(v["version"]) for v in versions if int(v["version"]) not in kept]
    return RetentionPlan(verdicts, kept, removed, targets, created)


def _tag_reason(
    tag: str,
    version: int,
    timestamp: datetime,
    policy: RetentionPolicy,
    age: Callable[[datetime], float],
    kept: dict[int, list[str]],
) -> str | None:
    """Why a tag stays; None when it is deleted."""
    if tag == PRODUCTION_TAG:
        return "production"
    if tag in policy.keep_tags:
        return "named in RAGOPS_RETAIN_TAGS"
    promised = [r for r in kept.get(version, []) if r.startswith(("rollback target", "production"))]
    reading = [r for r in kept.get(version, []) if r.startswith("read by the running")]
    if tag.startswith(ROLLBACK_PREFIX):
        return promised[0] if promised else None
    if not tag.startswith(CANDIDATE_PREFIX):
        return "not a candidate-* or rollback-v* tag (maintenance deletes only its own)"
    days = age(timestamp)
    if days < policy.candidate_days:
        return f"candidate {days:.1f} days old, younger than RAGOPS_RETAIN_CANDIDATE_DAYS={policy.candidate_days:g}"
    if promised:
        return promised[0]  # its version stays anyway: the tag keeps it safe from any other cleanup
    if reading:
        return reading[0]  # a running evaluation may still promote it by its tag
    return None


def _delete_reason(tag: str, policy: RetentionPolicy) -> str:
    if tag.startswith(ROLLBACK_PREFIX):
        return f"no longer within the rollback depth RAGOPS_RETAIN_PROMOTIONS={policy.promotions}"
    return (
        f"candidate older than RAGOPS_RETAIN_CANDIDATE_DAYS={policy.candidate_days:g} and not production or one of "
        f"the last {policy.promotions} promotions"
    )


def brief(reason: str) -> str:
    """A reason in a few words, for narrow tables (`ragops versions`)."""
    if reason.startswith("tag "):
        reason = reason.split(": ", 1)[1]
    for long, short in (
        ("rollback target ", "rollback "),
        ("candidate ", "candidate "),
        ("untagged, younger", "untagged <"),
        ("read by the running ingest", "ingest running"),
        ("read by the running evaluation", "evaluation running"),
        ("read by the running server", "server running"),
        ("read by the running", "running"),
        ("production until", "left production"),
        ("named in RAGOPS_RETAIN_TAGS", "retain_tags"),
        ("not a candidate-* tag", "user tag"),
        ("latest version", "latest"),
        ("production", "production"),
    ):
        if reason.startswith(long):
            rest = reason[len(long) :].split(" (")[0].split(", younger")[0].split(" days old")[0]
            if short == "untagged <":
                return short + reason.rsplit("=", 1)[-1] + "h"
            if short == "candidate ":
                return f"candidate {rest}d"
            return short + rest if short.endswith(" ") else short
    return reason
