"""Table maintenance (`ragops maintain`): retention keeps exactly what it promises across promotions and rollbacks,
a dry run changes nothing, compaction leaves search results identical and production follows it only to identical
rows, and maintenance runs beside an ingest, promotions and a serving query service without harm.

Real LanceDB, real embeddings, real ingest and maintain flows on a real Prefect API."""

from __future__ import annotations

import bisect
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from evaluations import promotion
from flows.ingest import ingest
from flows.maintain import maintain
from tasks.embed import embedding
from tasks.errors import StoreConflictError, VersionRemovedError
from tasks.serve import query_log
from tasks.serve.query_service import create_app
from tasks.serve.retrieval import search
from tasks.settings import Settings
from tasks.store import lancedb_store, maintenance
from tasks.store.backends import open_store
from tasks.store.lance_reads import open_dataset
from tasks.store.maintenance_report import MaintenanceReport
from tasks.store.production import production_history, production_state

from .conftest import REPO
from .processes import spawn, stop
from .test_faults_ingest import (
    assert_no_duplicates,
    clean_ingest,
    cli_env,
    copy_docs,
    error_line,
    ids_by_doc,
    open_chunks,
    ragops_command,
    rows_at,
    tags,
    use_store,
)
from .test_faults_promotion import promote as promote_over
from .test_query_log import DIM, entry, files_holding

DOCS = [
    "tutorial/appetite.txt",
    "tutorial/whatnow.txt",
    "tutorial/venv.txt",
    "tutorial/errors.txt",
    "tutorial/modules.txt",
    "faq/general.md",
    "faq/library.md",
]
QUESTIONS = [
    "How do I create a virtual environment?",
    "What happens when an exception is not handled?",
    "How do I import a module from a package?",
    "Why is Python a good language for scripting?",
    "Where can I find more Python documentation?",
    "Is there a GUI toolkit for Python?",
]


def settings_now() -> Settings:
    return Settings()


def night(corpus: Path, n: int) -> int:
    """One nightly change: a paragraph appended to one document, ingested as a new candidate; its version."""
    doc = corpus / DOCS[n % len(DOCS)]
    doc.write_text(doc.read_text() + f"\n\nNight {n}: a paragraph the nightly export added about release {n}.\n")
    summary = ingest(str(corpus))
    assert summary.table_version is not None
    return summary.table_version


def promote(version: int, mode: str = "hybrid") -> None:
    settings = settings_now()
    current = production_state(open_store(settings), settings).version
    assert promote_over(settings, version, current, mode=mode) == "promote"


def log_records() -> list[dict[str, Any]]:
    settings = settings_now()
    return open_store(settings).log_records(settings.promotions_table)


def version_numbers(uri: Path) -> list[int]:
    return [int(v["version"]) for v in open_chunks(uri).list_versions()]


def disk_files(uri: Path) -> dict[str, tuple[int, int]]:
    """Every file of the store with its size and mtime: what a dry run must leave exactly as it was."""
    return {
        str(p.relative_to(uri)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(uri.rglob("*")) if p.is_file()
    }


def log_queries(uri: Path) -> Path:
    """A query log with three questions served 40 days ago (each its own append) and two today; its folder."""
    store = open_store(settings_now())
    now = datetime.now(UTC)
    for i in range(3):
        old = replace(entry(i, now - timedelta(days=40)), question=f"question {i} from Ornithopter-4471's account")
        query_log.append(store, "query_log", [old], DIM)
    query_log.append(store, "query_log", [entry(3, now), entry(4, now)], DIM)
    folder = uri / "query_log.lance"
    assert files_holding(folder, "Ornithopter-4471")  # as written, the text is in the files
    return folder


@pytest.fixture
def store(prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A corpus of seven real documents ingested once; (corpus, store folder). Flows run in this process."""
    uri = use_store(monkeypatch, tmp_path / "lancedb")
    corpus = copy_docs(tmp_path / "corpus", DOCS)
    assert ingest(str(corpus)).table_version is not None
    return corpus, uri


# --- retention ---------------------------------------------------------------------------------------------------


def test_retention_keeps_exactly_production_the_rollback_depth_young_candidates_and_named_tags(
    store: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, uri = store
    # given: the first ingest (night 0) and 7 nightly runs; nights 1-6 promoted, then one rollback (6 → 5);
    # simulated ages: night n is 7 - n days old. A user tag on night 0 and RAGOPS_RETAIN_TAGS naming night 1's tag.
    started = [datetime.now(UTC)]
    versions = [version_numbers(uri)[-1]]
    for n in range(1, 8):
        started.append(datetime.now(UTC))
        versions.append(night(corpus, n))
        if n <= 6:
            promote(versions[n])
    settings = settings_now()
    promotion.rollback(open_store(settings), settings, run_id="test", trigger="test")
    candidate = {n: t for t, v in tags(uri).items() for n, ver in enumerate(versions) if v == ver and t != "production"}
    table = open_chunks(uri)
    lancedb_store.tag_version(table, "release-2026", versions[0])
    before = set(version_numbers(uri))

    def age(timestamp: datetime) -> float:  # the night a version was made in → days
        stamp = timestamp.astimezone(UTC)
        return 7 - (bisect.bisect_right(started, stamp) - 1)

    monkeypatch.setenv("RAGOPS_RETAIN_PROMOTIONS", "2")
    monkeypatch.setenv("RAGOPS_RETAIN_CANDIDATE_DAYS", "2.5")
    monkeypatch.setenv("RAGOPS_RETAIN_TAGS", json.dumps([candidate[1]]))
    monkeypatch.setenv("RAGOPS_RETAIN_UNTAGGED_HOURS", "0")

    # when: retention runs
    decided, result = maintenance.apply_retention(settings_now(), age=age)

    # then: production (night 5), rollback targets nights 4 and 3, candidates younger than 2.5 days (5, 6, 7), the
    # named tag (night 1) and the user's own tag (night 0) stay; nights 0 and 2 lose their candidate tags; night 2's
    # version and every untagged version go
    assert tags(uri) == {
        "production": versions[5],
        "release-2026": versions[0],
        **{candidate[n]: versions[n] for n in (1, 3, 4, 5, 6, 7)},
    }
    assert sorted(result.deleted_tags) == sorted([candidate[0], candidate[2]])
    kept = {versions[n] for n in (0, 1, 3, 4, 5, 6, 7)}
    assert set(version_numbers(uri)) == kept
    assert set(result.removed_versions) == before - kept
    assert decided.rollback_targets == [versions[4], versions[3]]
    assert result.bytes_removed > 0
    reasons = {t.tag: t.reason for t in decided.tags}
    assert reasons[candidate[3]].startswith("rollback target 2 (rollback depth RAGOPS_RETAIN_PROMOTIONS=2)")
    assert "RAGOPS_RETAIN_CANDIDATE_DAYS=2.5" in reasons[candidate[0]]
    assert reasons[candidate[1]] == "named in RAGOPS_RETAIN_TAGS"

    # and: rollback goes back exactly the promised depth, each target whole and searchable; one step further fails
    # with a message naming the setting, and production stays where it was
    store = open_store(settings_now())
    spec = embedding.embed_spec(settings_now())
    for target in (4, 3):
        _, to = promotion.rollback(store, settings_now(), run_id="test", trigger="test")
        assert to == versions[target]
        assert search(store.at("production"), QUESTIONS[0], spec, mode="hybrid")
    with pytest.raises(VersionRemovedError, match=r"RAGOPS_RETAIN_PROMOTIONS.*rollback depth"):
        promotion.rollback(store, settings_now(), run_id="test", trigger="test")
    assert tags(uri)["production"] == versions[3]


def test_a_dry_run_changes_nothing_and_predicts_what_the_real_run_removes_expired_queries_included(
    store: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, uri = store
    # given: five promoted nightly runs, retention of 1 promotion and no candidate age, and a query log with expired
    # questions (30 days kept)
    for n in range(1, 6):
        promote(night(corpus, n))
    log_folder = log_queries(uri)
    monkeypatch.setenv("RAGOPS_QUERY_LOG_RETENTION_DAYS", "30")
    monkeypatch.setenv("RAGOPS_RETAIN_PROMOTIONS", "1")
    monkeypatch.setenv("RAGOPS_RETAIN_CANDIDATE_DAYS", "0")
    monkeypatch.setenv("RAGOPS_RETAIN_UNTAGGED_HOURS", "0")
    files, versions, tagged, log = disk_files(uri), version_numbers(uri), tags(uri), log_records()

    # when: a dry run
    dry = maintain(dry_run=True)

    # then: not a byte, version, tag or log record changed, and it says what it would do
    assert disk_files(uri) == files
    assert (version_numbers(uri), tags(uri), log_records()) == (versions, tagged, log)
    assert dry["dry_run"] and dry["compacted_version"] is None and dry["production_moved"] is None
    would_delete = {t["tag"] for t in dry["tags"] if t["action"] == "would delete"}
    assert len(would_delete) == 4  # nights 0-3: not production (5), not the one rollback target (4)
    assert dry["versions_removed"] and dry["bytes_reclaimed"] > 0
    assert dry["query_log"]["deleted"] == 3
    assert dry["fragments_after"] <= dry["fragments_before"]  # Lance's plan, before index segments are merged
    assert any("segments of text_idx" in action for action in dry["index_actions"])

    # when: the real run
    real = maintain()

    # then: it deleted exactly the tags the dry run named, removed every version it named, compacted as it said
    assert {t["tag"] for t in real["tags"] if t["action"] == "deleted"} == would_delete
    assert set(dry["versions_removed"]) <= set(real["versions_removed"])
    assert real["fragments_before"] == dry["fragments_before"]
    assert real["fragments_after"] < real["fragments_before"]  # the dry run's figure is Lance's one-pass plan
    assert real["bytes_reclaimed"] > 0 and real["versions_after"] < real["versions_before"]
    assert real["bytes_after"] == maintenance.measure(open_dataset(settings_now(), "chunks")).storage.bytes
    # and the expired questions are deleted, their text in no file under the log's table; today's remain
    expiry = real["query_log"]
    assert expiry["deleted"] == 3 and expiry["bytes_after"] < expiry["bytes_before"]
    assert files_holding(log_folder, "Ornithopter-4471") == [] and files_holding(log_folder, "question 3")
    rows = lancedb_store.connect(settings_now()).open_table("query_log").to_arrow()
    assert sorted(rows.column("query_id").to_pylist()) == ["q3", "q4"]
    assert "deleted 3 logged queries" in dict(MaintenanceReport.model_validate(real).rows())["query log"]


# --- compaction ----------------------------------------------------------------------------------------------------


def fragment_count(version: int) -> int:
    """Fragments of one version of the chunk table."""
    return len(open_dataset(settings_now(), "chunks").checkout_version(version).get_fragments())


def results(table: Any, spec: Any, mode: str) -> list[list[tuple[str, float]]]:
    """Top-8 (chunk id, score) per question."""
    return [[(h.chunk_id, round(h.score, 5)) for h in search(table, q, spec, mode=mode, k=8)] for q in QUESTIONS]


def test_compaction_leaves_search_results_identical_and_production_follows_it_as_a_maintain_entry(
    store: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, uri = store
    # given: an ANN index (built early for this small table), then 6 nightly runs, each adding a fragment and
    # deleting rows; the last one promoted, so production is the latest version, with unindexed rows
    monkeypatch.setenv("RAGOPS_ANN_INDEX_MIN_ROWS", "64")
    for n in range(1, 7):
        version = night(corpus, n)
    promote(version)
    store = open_store(settings_now())
    spec = embedding.embed_spec(settings_now())
    approved = store.at(version)
    assert any(idx.index_type != "FTS" for idx in open_chunks(uri).list_indices())
    before = {mode: results(approved, spec, mode) for mode in ("vector", "fulltext", "hybrid")}
    fragments_before = fragment_count(version)

    # when: maintenance compacts
    report = maintain()

    # then: fewer fragments; production moved to the compacted version, logged as maintenance, not a promotion
    assert report["fragments_after"] < fragments_before == report["fragments_before"]
    moved_to = report["compacted_version"]
    assert report["production_moved"] == [version, moved_to]
    assert tags(uri)["production"] == moved_to
    last = log_records()[-1]
    assert (last["action"], last["version"], last["previous_version"]) == ("maintain", moved_to, version)
    assert production_history(log_records())[-1] == moved_to
    assert production_state(store, settings_now()).mode == "hybrid"  # the mode it was promoted with
    # and every search mode returns the same chunks with the same scores as the version the gate approved
    compacted = store.at("production")
    assert fragment_count(moved_to) == report["fragments_after"]
    for mode, expected in before.items():
        assert results(compacted, spec, mode) == expected, mode
    assert approved.same_rows(compacted)


def test_production_stays_when_a_newer_candidate_was_compacted(store: tuple[Path, Path]) -> None:
    corpus, uri = store
    # given: production on night 1, and an unpromoted candidate (night 2) as the latest version
    first = night(corpus, 1)
    promote(first)
    night(corpus, 2)

    # when: maintenance compacts the latest version, whose rows differ from production's
    report = maintain()

    # then: production stays, and no maintenance entry is logged
    assert report["compacted_version"] is not None and report["production_moved"] is None
    assert tags(uri)["production"] == first
    assert [r["action"] for r in log_records()] == ["promote"]


# --- concurrency ---------------------------------------------------------------------------------------------------


def test_maintenance_beside_an_ingest_and_promotions_loses_nothing_and_keeps_the_log_in_step(
    store: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, uri = store
    # given: production, and retention as tight as it goes (nothing kept but what must be)
    for n in range(1, 3):
        promote(night(corpus, n))
    for name, value in (("PROMOTIONS", "0"), ("CANDIDATE_DAYS", "0"), ("UNTAGGED_HOURS", "0")):
        monkeypatch.setenv(f"RAGOPS_RETAIN_{name}", value)
    copy_docs(corpus, ["tutorial/classes.txt", "tutorial/stdlib.txt", "faq/design.md"])  # ~100 new chunks
    for rel in DOCS[:3]:
        (corpus / rel).write_text((corpus / rel).read_text() + "\n\nChanged while maintenance ran.\n")
    env = cli_env(tmp_path, uri)
    env.update({k: v for k, v in os.environ.items() if k.startswith("RAGOPS_RETAIN_")})
    reference = tmp_path / "reference-corpus"
    shutil.copytree(corpus, reference)

    # when: an ingest runs in another process while this one maintains the table again and again and a thread
    # promotes the latest version over and over
    log = tmp_path / "ingest.log"
    proc = spawn(ragops_command("ingest", str(corpus), "-v"), log, env, cwd=REPO)
    stop_promoting = threading.Event()
    done: Counter[str] = Counter()
    errors: list[BaseException] = []

    def promoter() -> None:
        while not stop_promoting.is_set():
            try:
                settings = settings_now()
                store = open_store(settings)
                current = production_state(store, settings).version
                latest = store.latest_version()
                if latest != current:
                    done[promote_over(settings, latest, current, run_id="racer", mode="hybrid")] += 1
            except StoreConflictError:
                done["conflict"] += 1
            except BaseException as exc:
                errors.append(exc)
            time.sleep(0.05)

    racer = threading.Thread(target=promoter)
    racer.start()
    maintained = 0
    try:
        while proc.poll() is None or maintained < 2:
            maintain()
            maintained += 1
        proc.wait(timeout=300)
    finally:
        stop_promoting.set()
        racer.join(timeout=60)
        stop([proc])

    # then: everything succeeded; the latest version holds every document's chunks exactly once (as a clean ingest
    # of the final corpus would); every tag opens; the promotion log replays to the production tag
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert not errors, errors
    assert maintained >= 2 and done["promote"] >= 1, (maintained, done)
    latest = rows_at(uri)
    assert_no_duplicates(latest)
    assert ids_by_doc(latest) == clean_ingest(reference, tmp_path / "reference", monkeypatch)
    for tag in tags(uri):
        assert rows_at(uri, tag)
    assert production_history(log_records())[-1] == tags(uri)["production"]


# --- serving -------------------------------------------------------------------------------------------------------


def test_the_query_service_answers_every_query_while_maintenance_compacts_and_moves_production(
    store: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, _ = store
    monkeypatch.setenv("RAGOPS_SERVE_REFRESH_S", "0.2")
    monkeypatch.setenv("RAGOPS_QUERY_LOG_TABLE", "")
    for name, value in (("PROMOTIONS", "0"), ("CANDIDATE_DAYS", "0"), ("UNTAGGED_HOURS", "0")):
        monkeypatch.setenv(f"RAGOPS_RETAIN_{name}", value)
    promote(night(corpus, 1))
    statuses: Counter[int] = Counter()
    served: set[int] = set()
    stop_asking = threading.Event()

    with TestClient(create_app(settings_now())) as client:

        def ask() -> None:
            i = 0
            while not stop_asking.is_set():
                response = client.post("/query", json={"question": QUESTIONS[i % len(QUESTIONS)], "k": 5})
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    served.add(int(response.json()["version"]))
                i += 1

        asker = threading.Thread(target=ask)
        asker.start()
        try:
            # when: three rounds of a nightly run, its promotion and a maintenance that compacts and moves production
            moved, notes = [], []
            for n in range(2, 5):
                promote(night(corpus, n))
                report = maintain()
                moved.append(report["production_moved"])
                notes.append(report["production_note"])
                time.sleep(1.0)  # the service follows the tag
        finally:
            stop_asking.set()
            asker.join(timeout=60)

    # then: every query was answered, including from the compacted versions production moved to
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 20
    assert any(m is not None for m in moved), notes
    assert {m[1] for m in moved if m} & served, (moved, served)


# --- the command line ------------------------------------------------------------------------------------------------


def test_the_cli_lists_versions_with_retention_dry_runs_maintains_and_refuses_a_rollback_past_retention(
    store: tuple[Path, Path], tmp_path: Path
) -> None:
    corpus, uri = store
    # given: three promoted nightly runs, and a rollback depth of 1 with no candidate age
    nights = [night(corpus, n) for n in range(1, 4)]
    for version in nights:
        promote(version)
    env = cli_env(tmp_path, uri)
    env.update(RAGOPS_RETAIN_PROMOTIONS="1", RAGOPS_RETAIN_CANDIDATE_DAYS="0", RAGOPS_RETAIN_UNTAGGED_HOURS="0")

    def ragops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(ragops_command(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=300)

    # when/then: `versions` shows each version's tags, why retention keeps it, its size and fragments
    listed = ragops("versions")
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 5}
    assert "production" in rows[str(nights[2])] and "rollback 1" in rows[str(nights[1])]
    assert "removed next" in rows[str(nights[0])]
    assert "would remove" in listed.stdout and " MB on disk" in listed.stdout

    # a dry run prints what it would do and changes nothing
    before = disk_files(uri)
    dry = ragops("maintain", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "dry run: nothing changed" in dry.stdout and "would delete" in dry.stdout
    assert disk_files(uri) == before

    # the real run deletes those tags, removes versions, reclaims bytes and says where production went
    out = tmp_path / "maintain.json"
    real = ragops("maintain", "--json", str(out))
    assert real.returncode == 0, real.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["versions_removed"] and report["bytes_reclaimed"] > 0
    assert "deleted" in real.stdout and "bytes reclaimed" in real.stdout
    assert set(version_numbers(uri)).isdisjoint(report["versions_removed"])

    # rollback reaches the one kept promotion; one step further fails naming the retention setting
    first = ragops("rollback")
    assert first.returncode == 0, first.stderr[-3000:]
    assert tags(uri)["production"] == nights[1]
    second = ragops("rollback")
    assert second.returncode == 2
    assert "RAGOPS_RETAIN_PROMOTIONS" in error_line(second.stderr)
    assert tags(uri)["production"] == nights[1]
