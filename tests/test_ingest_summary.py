"""The ingest flow's bookkeeping, as plain functions: partitions that repeat record ids, what the commit changes, the
documents the source holds and the run's summary, computed from hand-built partition results."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from tasks.ingest.partition_build import Built, duplicate_records, runs_locally
from tasks.ingest.partitions import PartitionResult, SourcePlan
from tasks.ingest.run_commit import NewVersion, RunChanges, run_changes
from tasks.ingest.run_plan import IngestRun, RunPlan
from tasks.ingest.source_identity import ResolvedSource
from tasks.ingest.sources import discover
from tasks.ingest.steps import Listing, TableState
from tasks.ingest.summary import ingest_summary, per_worker, prepared_on, source_documents
from tasks.schemas import Quarantined
from tasks.settings import Settings
from tasks.store.fragments import WriteResult
from tasks.store.lineage import SourceEntry


def result(index: int, **fields: object) -> PartitionResult:
    """A built partition: empty lists and zero counts unless given."""
    values: dict[str, object] = {
        "fragments": [],
        "new": [],
        "changed": [],
        "refreshed": [],
        "unchanged": [],
        "seen": [],
        "quarantined": [],
        "skipped": [],
        "rows": 0,
        "kept": 0,
        "embedded": 0,
        "reused": 0,
        "bytes_read": 0,
        "prepared_on": "cpu-1",
        "written_on": "gpu-1",
        "model_loads": 0,
    }
    return PartitionResult(index=index, **{**values, **fields})  # type: ignore[arg-type]


def stored(*rows: tuple[str, str]) -> pa.Table:
    """What the table holds per document: (doc_id, source name)."""
    return pa.table(
        {
            "doc_id": pa.array([d for d, _ in rows], pa.string()),
            "doc_hash": pa.array(["h"] * len(rows), pa.string()),
            "source": pa.array([s for _, s in rows], pa.string()),
            "source_meta": pa.array(["m"] * len(rows), pa.string()),
            "chunks": pa.array([1] * len(rows), pa.int64()),
        }
    )


def run_plan(
    listed: list[str], documents: pa.Table, unchanged: int = 0, quarantined: list[Quarantined] | None = None
) -> RunPlan:
    """A plan of source `docs` (at /data/docs) that listed `listed`, against a table holding `documents`."""
    entry = SourceEntry("docs", "/data/docs")
    plan = SourcePlan([], [], unchanged, pa.array(listed, pa.string()), files_unread=unchanged)
    listing = Listing("/data/docs", [], quarantined or [])
    state = TableState(documents, 3, None)
    return RunPlan(state, {"docs": entry}, False, "fp", {}, ResolvedSource(entry), listing, plan)


def test_a_record_id_is_repeated_only_in_the_later_partitions() -> None:
    results = [result(2, seen=["a", "d"]), result(0, seen=["a", "b"]), result(1, seen=["b", "c", "a"])]

    assert duplicate_records(results) == {1: {"a", "b"}, 2: {"a"}}
    assert duplicate_records([result(0, seen=["a"]), result(1, seen=["b"])]) == {}


def test_work_stays_in_the_flow_process_only_when_small_and_no_cluster_is_configured() -> None:
    settings = Settings(embed_local_max_chunks=100, dask_address="")

    assert runs_locally(100, settings)
    assert not runs_locally(101, settings)
    assert not runs_locally(1, settings.model_copy(update={"dask_address": "tcp://scheduler:8786"}))


def test_workers_are_credited_with_what_they_embedded_and_prepared() -> None:
    results = [
        result(0, embedded=5, model_loads=1, prepared_on="a", written_on="x"),
        result(1, embedded=7, model_loads=2, prepared_on="b", written_on="x"),
        result(2, embedded=3, model_loads=1, prepared_on="a", written_on="y"),
    ]

    assert per_worker(results) == {"x": {"chunks": 12, "model_loads": 2}, "y": {"chunks": 3, "model_loads": 1}}
    assert prepared_on(results) == {"a": 2, "b": 1}


def test_the_commit_replaces_written_documents_and_deletes_only_this_sources_vanished_ones() -> None:
    documents = stored(("a.md", "docs"), ("gone.md", "docs"), ("bad.md", "docs"), ("other.md", "notes"))
    listing_skip = Quarantined("/data/docs/link.md", "symbolic link: not followed", "link.md")
    planned = run_plan(["a.md", "bad.md", "new.md"], documents, quarantined=[listing_skip])
    bad = Quarantined("/data/docs/bad.md", "unreadable: permission denied", "bad.md")
    built = Built(
        [
            result(0, changed=["a.md"], fragments=["f0"], kept=4, quarantined=[bad], skipped=["bad.md"]),
            result(1, new=["new.md"], fragments=["f1", "f2"], kept=1),
        ],
        TableState(documents, 3, None),
    )

    synced = run_changes(planned, built, sync_deletes=True)
    kept = run_changes(planned, built, sync_deletes=False)

    assert synced.staged == ["f0", "f1", "f2"]
    assert synced.deleted.to_pylist() == ["gone.md"]  # not other.md: another source's; not bad.md: skipped
    assert synced.remove.to_pylist() == ["a.md", "new.md", "gone.md"]
    assert synced.kept == 5
    assert synced.quarantined == [listing_skip, bad]
    assert synced.skipped == {"link.md", "bad.md"}
    assert kept.deleted.to_pylist() == [] and kept.remove.to_pylist() == ["a.md", "new.md"]


def test_the_sources_documents_keep_unextracted_ones_and_drop_unreadable_and_repeated_inputs() -> None:
    planned = run_plan(["a.md", "empty.pdf", "locked.md"], stored())  # JSONL corpora are not listed: read
    built = Built(
        [
            result(0, new=["a.md"], skipped=["empty.pdf", "locked.md"], unextracted=["empty.pdf"]),
            result(1, seen=["q1", "q2", "q3"], skipped=["q2", "q9"], unextracted=["q3"]),
        ],
        planned.state,
    )

    documents = source_documents(planned, built, {"empty.pdf", "locked.md", "q2", "q9", "q3"})

    assert documents == ["a.md", "empty.pdf", "q1", "q3"]


def test_the_summary_counts_what_the_partitions_read_and_the_commit_wrote() -> None:
    planned = run_plan(["a.md", "b.md", "c.md", "d.md", "e.md"], stored(("gone.md", "docs")), unchanged=2)
    skipped = Quarantined("/data/docs/corpus.jsonl:7", "not JSON", "", count=3)
    built = Built(
        [
            result(0, new=["a.md"], changed=["b.md"], bytes_read=100, embedded=4, reused=2, written_on="w1"),
            result(1, refreshed=["c.md"], unchanged=["e.md"], bytes_read=50, quarantined=[skipped], written_on="w2"),
        ],
        planned.state,
        on_cluster=True,
        orphans=2,
    )
    changes = RunChanges(["f"], pa.array(["a.md"]), pa.array(["gone.md"]), 1, [skipped])
    written = WriteResult(version=9, inserted=6, updated=1, deleted=3, attempts=1, data_version=8)
    run = IngestRun(Settings(table="chunks", device="cpu", embed_backend="torch"), "run-1")
    run.clock.seconds["list and plan"] = 0.5

    summary = ingest_summary(run, planned, built, changes, written, NewVersion(10, "candidate-run-1", 4, {}))

    assert summary.model_dump(
        include={"docs_seen", "docs_new", "docs_changed", "docs_unchanged", "docs_refreshed"}
    ) == {
        "docs_seen": 2 + 4 + 3,  # unread files, documents read, bad lines
        "docs_new": 1,
        "docs_changed": 1,
        "docs_unchanged": 2 + 1,
        "docs_refreshed": 1,
    }
    assert (summary.docs_deleted, summary.docs_quarantined, summary.files_unread) == (1, 3, 2)
    assert (summary.bytes_read, summary.partitions, summary.orphans_removed) == (150, 2, 2)
    assert (summary.chunks_written, summary.chunks_embedded, summary.chunks_reused, summary.chunks_deleted) == (
        7,
        4,
        2,
        3,
    )
    assert (summary.table_version, summary.data_version, summary.candidate_tag, summary.production_version) == (
        10,
        8,
        "candidate-run-1",
        4,
    )
    assert summary.quarantined == [{"location": "/data/docs/corpus.jsonl:7", "reason": "not JSON"}]
    assert summary.embed_workers == {"w1": {"chunks": 4, "model_loads": 0}, "w2": {"chunks": 0, "model_loads": 0}}
    assert summary.embed_backend == "torch" and summary.stage_seconds == {"list and plan": 0.5}
    assert (summary.source, summary.source_name, summary.source_event) == (
        "/data/docs",
        "docs",
        "source 'docs' at /data/docs",
    )
    assert "source_documents" not in summary.model_dump() and "source_documents" not in summary.model_dump_json()


def test_a_run_that_wrote_nothing_reports_no_version_and_no_backend() -> None:
    planned = run_plan(["a.md"], stored(("a.md", "docs")), unchanged=1)
    run = IngestRun(Settings(table="chunks"), "run-2")
    changes = RunChanges([], pa.array([], pa.string()), pa.array([], pa.string()), 0, [])

    summary = ingest_summary(run, planned, Built([], planned.state), changes, None, NewVersion())

    assert (summary.docs_seen, summary.docs_unchanged, summary.chunks_written, summary.chunks_deleted) == (1, 1, 0, 0)
    assert (summary.table_version, summary.data_version, summary.candidate_tag, summary.embed_backend) == (
        None,
        None,
        None,
        "",
    )
    assert summary.source_documents == ["a.md"]


@pytest.mark.usefixtures("prefect_server")
def test_the_sources_documents_are_what_listing_and_reading_the_source_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a corpus with a page, a PDF with no text, a repeated record id and a malformed line, the ingest's count
    of the source's documents is `discover`'s, which reads every file again."""
    from flows.ingest import ingest

    corpus = tmp_path / "corpus"
    (corpus / "docs").mkdir(parents=True)
    (corpus / "docs" / "page.md").write_text("# A page\n\nSome words about a page, enough to be a chunk of text.\n")
    (corpus / "docs" / "blank.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    records = [
        '{"_id": "r1", "title": "One", "text": "The first record has a little text."}',
        '{"_id": "r2", "title": "Two", "text": "The second record has a little text too."}',
        '{"_id": "r1", "title": "Again", "text": "A record with the id of the first."}',
        "not json",
    ]
    (corpus / "corpus.jsonl").write_text("\n".join(records) + "\n")
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(tmp_path / "db"))
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")  # in the flow process: no cluster to start
    settings = Settings()

    summary = ingest(source=str(corpus))

    found = discover(str(corpus), settings)
    skipped = {q.doc_id for q in found.quarantined}
    assert summary.source_documents == sorted(i.doc_id for i in found.items if i.doc_id not in skipped)
    assert summary.source_documents == ["docs/blank.pdf", "docs/page.md", "r2"]  # r1 twice: neither counts
    assert summary.docs_quarantined >= 3  # the repeated id, the malformed line, the PDF without text
