"""Partitioned ingestion specification: plan by file metadata, cut the work into partitions, build them on Dask.

The flow tests use a real Prefect API, real Dask process workers, real LanceDB and the real model; the planning tests
call the plain functions of tasks/ingest/partitions.py on real listings of small corpora.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from fsspec.implementations.local import LocalFileSystem

from flows.ingest import ingest
from tasks.embed import embedding
from tasks.ingest.partitions import (
    BuildContext,
    Partition,
    deleted_documents,
    meta_key,
    partitions,
    pipeline_fingerprint,
    plan_source,
    prepare_partition,
    read_many,
)
from tasks.ingest.sources import SourceFile, list_source
from tasks.schemas import chunk_schema
from tasks.settings import Settings

from .conftest import SMALL_DOCS
from .processes import free_port, spawn, stop, wait_for_port

BIN = Path(sys.executable).parent
flow_test = pytest.mark.usefixtures("prefect_server")


def table_rows(uri: Path, name: str = "chunks") -> list[dict[str, Any]]:
    return lancedb.connect(str(uri)).open_table(name).to_arrow().to_pylist()


def versions(uri: Path, name: str = "chunks") -> list[int]:
    return [v["version"] for v in lancedb.connect(str(uri)).open_table(name).list_versions()]


def by_chunk(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["chunk_id"]: row for row in rows}


def listed(root: Path) -> list[SourceFile]:
    return list_source(str(root), Settings())[2]


def stored_state(files: list[SourceFile], fingerprint: str, source: str) -> pa.Table:
    """What read_table_state returns after these files were ingested: one row per document."""
    return pa.table(
        {
            "doc_id": pa.array([f.doc_id for f in files], pa.string()),
            "doc_hash": pa.array([f"hash of {f.doc_id}" for f in files], pa.string()),
            "source": pa.array([source] * len(files), pa.string()),
            "source_meta": pa.array([meta_key(f, fingerprint) for f in files], pa.string()),
            "chunks": pa.array([3] * len(files), pa.int64()),
        }
    )


def touch(path: Path, seconds_later: float = 60) -> None:
    """A new modification time, the same bytes."""
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + seconds_later))


def count_reads(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the files under `root` this process opens through fsspec (relative paths, one per open)."""
    opened: list[str] = []
    original = LocalFileSystem._open
    prefix = str(root) + os.sep

    def counting_open(self: LocalFileSystem, path: str, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith(prefix):
            opened.append(os.path.relpath(str(path), root))
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "_open", counting_open)
    return opened


# --- the flow, end to end ---


@pytest.mark.slow
@flow_test
def test_many_partitions_give_the_same_chunks_and_vectors_as_one(
    small_corpus: Path, store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the small corpus, ingested on the two-worker cluster in 0.02 MiB partitions (store_env)
    many = ingest(str(small_corpus))
    # and ingested again, into another store, as one partition
    one_uri = tmp_path / "one-partition"
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(one_uri))
    monkeypatch.setenv("RAGOPS_PARTITION_MB", "1024")
    one = ingest(str(small_corpus))

    # then the partitioning shows only in the summaries
    assert many.partitions >= 3 and one.partitions == 1
    assert all(worker.startswith("tcp://") for worker in many.embed_workers)  # built on Dask workers
    assert many.docs_new == one.docs_new == len(SMALL_DOCS)
    many_rows, one_rows = table_rows(store_env), table_rows(one_uri)
    assert len(many_rows) == len(one_rows) == many.chunks_written == one.chunks_written
    many_chunks, one_chunks = by_chunk(many_rows), by_chunk(one_rows)
    assert set(many_chunks) == set(one_chunks)
    assert {row["doc_id"] for row in many_rows} == set(SMALL_DOCS)
    for chunk_id, row in many_chunks.items():
        assert row["text"] == one_chunks[chunk_id]["text"]
        assert np.allclose(row["vector"], one_chunks[chunk_id]["vector"], atol=1e-4), chunk_id


@pytest.mark.slow
@flow_test
def test_an_unchanged_file_is_skipped_on_its_metadata_without_reading_a_byte(
    small_corpus: Path, store_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an ingested corpus, every later build in this process (where the reads are counted)
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")
    first = ingest(str(small_corpus))
    assert first.docs_new == len(SMALL_DOCS)
    opened = count_reads(small_corpus, monkeypatch)
    before = versions(store_env)

    # when nothing changed: not a byte is read and no version is made
    again = ingest(str(small_corpus))
    assert opened == []
    assert (again.files_unread, again.bytes_read, again.partitions) == (len(SMALL_DOCS), 0, 0)
    assert again.table_version is None
    assert versions(store_env) == before

    # when one file is touched (new mtime, same bytes): only it is read, and its rows keep their vectors
    touched = small_corpus / "tutorial" / "venv.txt"
    old_rows = by_chunk([r for r in table_rows(store_env) if r["doc_id"] == "tutorial/venv.txt"])
    others = sorted(
        (r["chunk_id"], r["source_meta"]) for r in table_rows(store_env) if r["doc_id"] != "tutorial/venv.txt"
    )
    touch(touched)
    refreshed = ingest(str(small_corpus))
    assert opened == ["tutorial/venv.txt"]
    assert refreshed.docs_refreshed == 1 and refreshed.docs_changed == refreshed.docs_new == 0
    assert refreshed.files_unread == len(SMALL_DOCS) - 1
    assert refreshed.bytes_read == touched.stat().st_size
    assert refreshed.chunks_embedded == 0
    assert refreshed.table_version is not None and len(versions(store_env)) > len(before)
    rows = table_rows(store_env)
    new_rows = by_chunk([r for r in rows if r["doc_id"] == "tutorial/venv.txt"])
    assert set(new_rows) == set(old_rows)
    for chunk_id, row in new_rows.items():
        assert np.array_equal(row["vector"], old_rows[chunk_id]["vector"])
        assert row["text"] == old_rows[chunk_id]["text"]
        assert row["source_meta"] != old_rows[chunk_id]["source_meta"]  # the new mtime, so the next run skips it
    assert sorted((r["chunk_id"], r["source_meta"]) for r in rows if r["doc_id"] != "tutorial/venv.txt") == others

    # then a further run reads nothing again
    opened.clear()
    settled_versions = versions(store_env)
    settled = ingest(str(small_corpus))
    assert opened == []
    assert settled.files_unread == len(SMALL_DOCS) and settled.table_version is None
    assert versions(store_env) == settled_versions

    # and verify reads every file, finds nothing changed, and makes no version
    verified = ingest(str(small_corpus), verify=True)
    assert sorted(opened) == sorted(SMALL_DOCS)
    assert verified.files_unread == 0 and verified.docs_unchanged == len(SMALL_DOCS)
    assert verified.bytes_read == sum((small_corpus / doc).stat().st_size for doc in SMALL_DOCS)
    assert verified.chunks_embedded == verified.chunks_written == verified.chunks_deleted == 0
    assert verified.table_version is None
    assert versions(store_env) == settled_versions


@pytest.fixture
def labelled_cluster(prefect_server: None, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`dask scheduler` with two single-threaded CPU workers: one labelled GPU=1, one labelled CPU=1."""
    from distributed import Client
    from prefect.client.orchestration import get_client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(
        os.environ, PREFECT_API_URL=str(get_client(sync_client=True).api_url), DASK_LOGGING__DISTRIBUTED="warning"
    )
    dask = str(BIN / "dask")
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"]
    procs = [spawn(scheduler, tmp_path / "scheduler.log", env)]
    try:
        wait_for_port(port)
        for name, label in {"gpu-labelled": "GPU=1", "cpu-labelled": "CPU=1"}.items():
            args = [dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--resources", label]
            procs.append(spawn([*args, "--name", name, "--no-dashboard"], tmp_path / f"{name}.log", env))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            workers = {info["name"]: addr for addr, info in client.scheduler_info()["workers"].items()}
        yield address, workers
    finally:
        stop(procs)


@pytest.mark.slow
def test_embedding_lands_only_on_the_gpu_labelled_worker(
    labelled_cluster: tuple[str, dict[str, str]],
    small_corpus: Path,
    store_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a cluster whose workers advertise a GPU and a CPU resource
    address, workers = labelled_cluster
    monkeypatch.setenv("RAGOPS_DASK_ADDRESS", address)

    # when the small corpus is ingested there in 0.02 MiB partitions
    summary = ingest(str(small_corpus))

    # then every partition was prepared on the CPU worker and embedded on the GPU one
    assert summary.partitions >= 3
    assert set(summary.embed_workers) == {workers["gpu-labelled"]}
    assert set(summary.prepare_workers) == {workers["cpu-labelled"]}
    assert sum(summary.prepare_workers.values()) == summary.partitions
    assert summary.embed_workers[workers["gpu-labelled"]]["chunks"] == summary.chunks_embedded > 0
    # and the table is complete: every document has chunks, none twice
    rows = table_rows(store_env)
    assert {row["doc_id"] for row in rows} == set(SMALL_DOCS)
    assert len(by_chunk(rows)) == len(rows) == summary.chunks_written


# --- planning by metadata ---


def test_the_plan_reads_only_new_files_and_files_whose_metadata_changed(small_corpus: Path) -> None:
    # given a table holding the corpus as listed now
    fingerprint = pipeline_fingerprint(Settings())
    stored = stored_state(listed(small_corpus), fingerprint, str(small_corpus))
    # when one file is touched and one added
    touch(small_corpus / "tutorial" / "appetite.txt")
    (small_corpus / "notes.md").write_text("# Notes\n\nA new file.\n")

    plan = plan_source(listed(small_corpus), stored, fingerprint, verify=False)

    # then only those two are read, the touched one with what its rows recorded
    assert {w.file.doc_id: w.stored_hash for w in plan.files} == {
        "notes.md": None,
        "tutorial/appetite.txt": "hash of tutorial/appetite.txt",
    }
    [work] = [w for w in plan.files if w.stored_hash is not None]
    assert work.stored_meta is not None and work.stored_meta != meta_key(work.file, fingerprint)
    assert plan.unchanged == len(SMALL_DOCS) - 1
    assert sorted(plan.listed_ids.to_pylist()) == sorted([*SMALL_DOCS, "notes.md"])
    assert plan.record_files == [] and plan.reads


def test_verify_or_a_new_pipeline_reads_every_file(small_corpus: Path) -> None:
    # given a table holding the corpus, unchanged since
    files = listed(small_corpus)
    fingerprint = pipeline_fingerprint(Settings())
    stored = stored_state(files, fingerprint, str(small_corpus))
    assert plan_source(files, stored, fingerprint, verify=False).unchanged == len(SMALL_DOCS)

    # when verifying, or when the chunk size changed
    verified = plan_source(files, stored, fingerprint, verify=True)
    rechunked_fingerprint = pipeline_fingerprint(Settings(chunk_tokens=100))
    rechunked = plan_source(files, stored, rechunked_fingerprint, verify=False)

    # then every file is read, with its stored hash to compare against
    assert rechunked_fingerprint != fingerprint
    for plan in (verified, rechunked):
        assert plan.unchanged == 0
        assert {w.file.doc_id: w.stored_hash for w in plan.files} == {d: f"hash of {d}" for d in SMALL_DOCS}


# --- cutting partitions ---


def test_file_partitions_close_at_partition_mb_or_partition_max_files(small_corpus: Path) -> None:
    # given a plan to read the seven files (listed in path order; the PDF alone is 189 KiB)
    plan = plan_source(listed(small_corpus), stored_state([], "", ""), "", verify=False)

    # when cut at 0.02 MiB, or at two files
    by_size = list(partitions(plan, Settings(partition_mb=0.02)))
    by_count = list(partitions(plan, Settings(partition_mb=1024, partition_max_files=2)))

    # then a partition closes as soon as it reaches the size, or the file count; files stay whole and in order
    def docs(parts: list[Partition]) -> list[list[str]]:
        return [[w.file.doc_id for w in p.files] for p in parts]

    assert docs(by_size) == [
        ["library/builtins.html", "library/tty.html"],
        ["pdf/secrets.pdf"],
        ["tutorial/appetite.txt", "tutorial/venv.txt", "tutorial/whatnow.txt", "using/editors.md"],
    ]
    assert docs(by_count) == [
        ["library/builtins.html", "library/tty.html"],
        ["pdf/secrets.pdf", "tutorial/appetite.txt"],
        ["tutorial/venv.txt", "tutorial/whatnow.txt"],
        ["using/editors.md"],
    ]
    limit = int(0.02 * (1 << 20))
    for part in by_size[:-1]:
        assert part.size >= limit > part.size - part.files[-1].file.size
    for parts in (by_size, by_count):
        assert [p.index for p in parts] == list(range(len(parts)))
        assert all(p.records is None for p in parts)
        assert sum(p.size for p in parts) == sum(w.file.size for w in plan.files)


def test_a_jsonl_corpus_bigger_than_a_partition_is_cut_into_byte_ranges_that_read_each_record_once(
    tmp_path: Path,
) -> None:
    # given a BEIR corpus of 300 records, about 40 KiB, lines of uneven length
    corpus = tmp_path / "corpus.jsonl"
    records = [{"_id": f"r{i}", "title": f"Record {i}", "text": "spam and eggs " * (1 + i % 13)} for i in range(300)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = Settings(partition_mb=0.01)
    plan = plan_source(listed(corpus), stored_state([], "", ""), "", verify=False)
    assert plan.files == [] and [f.doc_id for f in plan.record_files] == ["corpus.jsonl"]

    # when it is cut into 0.01 MiB partitions
    parts = list(partitions(plan, settings))

    # then the byte ranges cover [0, size) with no gap or overlap, the last one reading to the end
    size = corpus.stat().st_size
    ranges = [p.records for p in parts]
    assert len(parts) >= 3 and all(r is not None and p.files == [] for p, r in zip(parts, ranges, strict=True))
    starts = [r.start for r in ranges if r is not None]
    lengths = [r.length for r in ranges if r is not None]
    assert starts[0] == 0 and lengths[-1] == -1 and starts[-1] < size
    assert [s + n for s, n in zip(starts[:-1], lengths[:-1], strict=True)] == starts[1:]
    assert sum(p.size for p in parts) == size

    # and reading the ranges (cut at line ends) yields every record exactly once, whole
    spec = embedding.embed_spec(settings)
    ctx = BuildContext(str(corpus), settings, "chunks", None, "", chunk_schema(384), spec, "run")
    prepared = [prepare_partition(p, ctx) for p in parts]
    assert sorted(doc_id for p in prepared for doc_id in p.seen) == sorted(r["_id"] for r in records)
    assert [p.quarantined for p in prepared] == [[]] * len(parts)  # no line cut in two


# --- deletions ---


def test_only_this_sources_documents_that_are_neither_listed_nor_skipped_are_deleted() -> None:
    # given a table holding documents of two sources
    stored = pa.table(
        {
            "doc_id": ["a.md", "b.md", "c.md", "d.md", "e.md"],
            "doc_hash": ["h"] * 5,
            "source": ["/corpus"] * 4 + ["/other"],
            "source_meta": [None] * 5,
            "chunks": [1] * 5,
        }
    )
    # when this run listed a.md, read record b.md, skipped c.md (quarantined), and found nothing of d.md or e.md
    present = [pa.array(["a.md"], pa.string()), pa.array([], pa.string()), pa.array(["b.md"], pa.string())]

    deleted = deleted_documents(stored, ["/corpus"], present, {"c.md"})

    # then only d.md goes: e.md belongs to another source, c.md keeps its rows until it can be read
    assert deleted.to_pylist() == ["d.md"]
    assert deleted_documents(stored, ["/corpus"], [pa.array(["a.md", "b.md", "c.md", "d.md"])], set()).to_pylist() == []
    # a source's scope is its name and the location older rows carry: both kinds of row are its own
    renamed = stored.set_column(2, "source", pa.array(["docs", "/corpus", "docs", "/corpus", "/other"]))
    assert deleted_documents(renamed, ["docs", "/corpus"], present, set()).to_pylist() == ["c.md", "d.md"]


def test_files_named_with_glob_characters_are_read_as_themselves(tmp_path: Path) -> None:
    # given files whose names fsspec's `cat` of a list would take for globs, beside the files those globs match
    names = {
        "x.md": "plain x",
        "[x].md": "brackets",
        "[x](javascript:alert(1)).md": "a link",  # the glob `[x]` matches only "x": fsspec found no file at all
        "a.md": "plain a",
        "?.md": "question mark",
    }  # (no `*.md`: as a glob it would bring every file in, the link's too)
    for name, text in names.items():
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / name) for name in names]
    # when the partition reads them in one batch
    blobs = read_many(LocalFileSystem(), paths)
    # then each name holds its own bytes, and nothing else was read
    assert {Path(p).name: blobs[p] for p in paths} == {name: text.encode() for name, text in names.items()}
    assert set(blobs) == set(paths)
