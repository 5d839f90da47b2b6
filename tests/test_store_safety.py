"""The store's writers and what maintenance keeps: object-store writes refused without a shared lock server, the
deletion files of a commit killed before it lands removed by the next run, and the versions a running reader names
in its heartbeat kept by retention. Real LanceDB tables of a few rows (no embedding model needed), a real S3 API
(moto), real processes killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
import pytest

from tasks.errors import SettingsError
from tasks.schemas import chunk_schema
from tasks.settings import Settings
from tasks.store import fragments, lancedb_store, maintenance
from tasks.store.production import promotion_lock

from .conftest import REPO
from .s3_server import S3Server, start_s3_server

DIM = 4
MODEL = "test-model"


def chunk_rows(doc_ids: list[str], per_doc: int = 3) -> pa.Table:
    """`per_doc` rows of the chunk schema for each document (vectors of DIM ones)."""
    rows = [
        {
            "chunk_id": f"{doc}#{i}",
            "doc_id": doc,
            "text": f"chunk {i} of {doc}",
            "vector": [1.0] * DIM,
            "n_tokens": 4,
            "position": i,
            "content_hash": f"{doc}-{i}",
            "doc_hash": f"hash-{doc}",
            "source": "test",
            "title": None,
            "section": None,
            "metadata": "{}",
            "embedding_model": MODEL,
            "ingested_at": datetime(2026, 1, 1, tzinfo=UTC),
            "source_meta": None,
        }
        for doc in doc_ids
        for i in range(per_doc)
    ]
    return pa.Table.from_pylist(rows, schema=chunk_schema(DIM))


def local_settings(root: Path, **updates: Any) -> Settings:
    return Settings(_env_file=None, lancedb_uri=str(root / "db"), table="chunks", **updates)  # type: ignore[call-arg]


def make_table(settings: Settings, docs: list[str]) -> Any:
    """The chunk table with `docs` in one version."""
    lancedb_store.ensure_chunk_table(lancedb_store.connect(settings), settings.table, DIM, MODEL)
    fragments.write_rows(settings, settings.table, chunk_rows(docs), [])
    return lancedb_store.connect(settings).open_table(settings.table)


# --- an object store needs a Prefect server that every writer shares --------------------------------------------


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path / "s3")
    try:
        server.create_bucket("ragops")
        yield server
    finally:
        server.stop()


def s3_settings(server: S3Server) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, lancedb_uri="s3://ragops/lancedb", table="chunks", storage_options=server.storage_options()
    )


def objects(server: S3Server) -> list[str]:
    listed = server.client().list_objects_v2(Bucket="ragops")
    return [item["Key"] for item in listed.get("Contents", [])]


@pytest.mark.parametrize("api", ["unset", "unreachable"])
def test_an_object_store_write_without_a_shared_prefect_server_is_refused_and_writes_nothing(
    api: str, s3: S3Server
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # given: an S3 store, and no Prefect API (or one nothing answers at)
    settings = s3_settings(s3)
    updates = {PREFECT_API_URL: "http://127.0.0.1:9/api"} if api == "unreachable" else {}
    restore = [PREFECT_API_URL] if api == "unset" else []
    with temporary_settings(updates=updates, restore_defaults=restore):
        # when: an ingest creates its table, a writer stages and commits rows, a promotion takes its lock
        db = lancedb_store.connect(settings)
        with pytest.raises(SettingsError) as creating:
            lancedb_store.ensure_chunk_table(db, settings.table, DIM, MODEL)
        with pytest.raises(SettingsError):
            fragments.write_rows(settings, settings.table, chunk_rows(["a"]), [])
        with pytest.raises(SettingsError), promotion_lock(settings):
            pytest.fail("the promotion lock was taken")

    # then: each is refused with what to do, and the bucket holds nothing
    message = str(creating.value)
    assert message.startswith("refusing to write s3://ragops/lancedb")
    assert "PREFECT_API_URL" in message and "ragops server start" in message
    assert ("is not set" in message) if api == "unset" else ("does not answer" in message)
    assert objects(s3) == []


def test_an_object_store_write_with_a_shared_prefect_server_goes_ahead(prefect_server: None, s3: S3Server) -> None:
    # given: an S3 store and this session's Prefect server (PREFECT_API_URL set by the harness)
    settings = s3_settings(s3)

    # when
    make_table(settings, ["a", "b"])

    # then: the table is written, its commit taken under the server's lock
    table = lancedb_store.connect(settings).open_table("chunks")
    assert table.count_rows() == 6
    assert any(key.startswith("lancedb/chunks.lance/") for key in objects(s3))


# --- a commit killed after its deletion files, before the manifest ---------------------------------------------

KILLED_IN_COMMIT = """
import os, signal, sys
import lance
import pyarrow as pa
from tasks.settings import Settings
from tasks.store import fragments
def die(*args, **kwargs):  # the deletion files are written; the process dies where Lance would commit them
    os.kill(os.getpid(), signal.SIGKILL)
lance.LanceDataset.commit = staticmethod(die)
settings = Settings(_env_file=None, lancedb_uri=sys.argv[1], table="chunks")
rows = pa.ipc.open_file(sys.argv[2]).read_all()
fragments.write_rows(settings, "chunks", rows, ["a"], run_id="killed-run")
"""


def deletion_files(root: Path) -> set[str]:
    folder = root / "db" / "chunks.lance" / "_deletions"
    return {f"_deletions/{p.name}" for p in folder.iterdir()} if folder.exists() else set()


def test_a_commit_killed_after_writing_deletion_files_leaves_them_to_the_next_run(tmp_path: Path) -> None:
    # given: a table of two documents in one fragment, and a run that replaces document a
    settings = local_settings(tmp_path, staging_stale_s=1)
    make_table(settings, ["a", "b"])
    before = lancedb.connect(settings.lancedb_uri).open_table("chunks").version
    rows = tmp_path / "rows.arrow"
    with pa.ipc.new_file(rows, chunk_rows(["a"]).schema) as writer:
        writer.write_table(chunk_rows(["a"]))

    # when: the process is SIGKILLed inside its commit, after the deletion file is written
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_IN_COMMIT, settings.lancedb_uri, str(rows)],
        cwd=REPO,
        capture_output=True,
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    )

    # then: it died there; nothing was committed; its deletion file is on disk and in its ledger
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert lancedb.connect(settings.lancedb_uri).open_table("chunks").version == before
    left = deletion_files(tmp_path)
    assert len(left) == 1, left
    ledger = tmp_path / "db" / "chunks.staging" / "killed-run" / "deletions.json"
    assert set(json.loads(ledger.read_text())) == left

    # and: once the run's heartbeat is stale, the next run removes it, and only it
    os.utime(ledger.parent, (0, 0))  # no heartbeat file: the ledger folder's age stands for it
    cleanup = fragments.remove_orphans(settings, "chunks", "next-run")
    assert cleanup.runs == ["killed-run"]
    assert deletion_files(tmp_path) == set()
    assert lancedb.connect(settings.lancedb_uri).open_table("chunks").count_rows() == 6

    # and: a committed run's deletion files are referenced, and survive a cleanup after a kill before its ledger went
    fragments.write_rows(settings, "chunks", chunk_rows(["a"]), ["a"], run_id="done-run")
    committed = deletion_files(tmp_path)
    fragments.record_deletions(settings, "chunks", "done-run", sorted(committed))
    os.utime(tmp_path / "db" / "chunks.staging" / "done-run", (0, 0))
    assert fragments.remove_orphans(settings, "chunks", "next-run").files == 0
    assert deletion_files(tmp_path) == committed and len(committed) == 1
    assert lancedb.connect(settings.lancedb_uri).open_table("chunks").count_rows() == 6


# --- retention keeps what running readers name in their heartbeats ----------------------------------------------


def test_maintenance_keeps_the_versions_and_tag_a_running_evaluation_reads(tmp_path: Path) -> None:
    # given: an old candidate (tagged, beyond the candidate window), production, and a newer version
    settings = local_settings(tmp_path)
    table = make_table(settings, ["a", "b"])
    candidate = table.version
    table.tags.create("candidate-old", candidate)
    fragments.write_rows(settings, "chunks", chunk_rows(["c"]), [])
    production = lancedb.connect(settings.lancedb_uri).open_table("chunks").version
    lancedb_store.tag_version(table, lancedb_store.PRODUCTION_TAG, production)
    fragments.write_rows(settings, "chunks", chunk_rows(["d"]), [])
    month_later = datetime.now(UTC) + timedelta(days=30)

    # when: maintenance runs a month later while an evaluation judges the candidate against production
    with fragments.heartbeat(
        settings, "chunks", "evaluate-1", versions=[candidate, production], reader="evaluation", clear_on_exit=True
    ):
        decided, result = maintenance.apply_retention(settings, now=month_later)
        readable = lancedb_store.open_table(lancedb_store.connect(settings), "chunks", candidate).count_rows()

    # then: the candidate's version and tag stay, with the reason; the evaluation could read it throughout
    assert candidate not in result.removed_versions and readable == 6
    assert decided.kept[candidate] == ["read by the running evaluation evaluate-1"]
    assert "candidate-old" not in result.deleted_tags
    assert result.removed_versions  # maintenance did remove what nothing reads
    assert not (tmp_path / "db" / "chunks.staging" / "evaluate-1").exists()  # the heartbeat went with the run

    # and: once the evaluation has ended, the next maintenance removes the old candidate
    _, after = maintenance.apply_retention(settings, now=month_later)
    assert candidate in after.removed_versions and "candidate-old" in after.deleted_tags
