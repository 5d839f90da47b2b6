"""Ingest flow specification, end to end: real Prefect API, real Dask process workers, real LanceDB, real model."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import lancedb
import numpy as np
import pytest

from flows.ingest import ingest
from tasks.embed import embedding
from tasks.schemas import IngestSummary
from tasks.settings import Settings

from .conftest import SAMPLE, SMALL_DOCS

pytestmark = pytest.mark.usefixtures("prefect_server")


def table_rows(uri: Path, name: str = "chunks", version: int | str | None = None) -> list[dict]:
    table = lancedb.connect(str(uri)).open_table(name)
    if version is not None:
        table.checkout(version)
    return table.to_arrow().to_pylist()


def versions(uri: Path, name: str = "chunks") -> list[int]:
    return [v["version"] for v in lancedb.connect(str(uri)).open_table(name).list_versions()]


def by_doc(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["doc_id"], []).append(row)
    return out


def test_full_ingest_writes_a_complete_candidate_version(small_corpus: Path, store_env: Path) -> None:
    summary = ingest(str(small_corpus))

    rows = table_rows(store_env)
    assert summary.docs_seen == summary.docs_new == len(SMALL_DOCS)
    assert summary.docs_quarantined == 0
    assert summary.chunks_written == summary.chunks_embedded == len(rows) > 20
    assert set(by_doc(rows)) == set(SMALL_DOCS)  # every document has chunks
    assert len({r["chunk_id"] for r in rows}) == len(rows)
    vectors = np.array([r["vector"] for r in rows], dtype=np.float32)
    assert vectors.shape == (len(rows), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert max(r["n_tokens"] for r in rows) <= 254
    assert {r["embedding_model"] for r in rows} == {"sentence-transformers/all-MiniLM-L6-v2"}
    assert {r["source"] for r in rows} == {small_corpus.name}  # the source's name in the table's registry
    assert all(json.loads(r["metadata"])["location"].startswith(str(small_corpus)) for r in rows)

    table = lancedb.connect(str(store_env)).open_table("chunks")
    tags = table.tags.list()
    assert summary.candidate_tag == f"candidate-{summary.run_id}"
    assert tags[summary.candidate_tag]["version"] == summary.table_version == table.version
    assert "production" not in tags
    assert any(idx.index_type == "FTS" for idx in table.list_indices())

    # several partitions, spread over both Dask worker processes; each loaded the model exactly once
    assert summary.partitions >= 3
    assert len(summary.embed_workers) == 2
    assert all(w["model_loads"] == 1 and w["chunks"] > 0 for w in summary.embed_workers.values())
    assert sum(w["chunks"] for w in summary.embed_workers.values()) == summary.chunks_embedded


def test_reingest_with_nothing_changed_writes_nothing(small_corpus: Path, store_env: Path) -> None:
    ingest(str(small_corpus))
    before_versions, before_rows = versions(store_env), table_rows(store_env)

    again = ingest(str(small_corpus))

    assert again.chunks_embedded == again.chunks_written == again.chunks_deleted == 0
    assert again.docs_unchanged == len(SMALL_DOCS)
    assert again.table_version is None and again.candidate_tag is None
    assert again.embed_workers == {}  # no cluster was even started
    assert versions(store_env) == before_versions
    assert table_rows(store_env) == before_rows


def test_a_small_change_is_embedded_in_the_flow_process_without_a_cluster(
    small_corpus: Path, store_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(str(small_corpus))
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "256")
    (small_corpus / "notes.md").write_text("# Release notes\n\nSmall changes skip the cluster start.\n")

    summary = ingest(str(small_corpus))

    assert summary.chunks_embedded == 1
    assert list(summary.embed_workers) == [f"{socket.gethostname()}:{os.getpid()}"]  # this very process
    assert summary.embed_backend == embedding.resolve_backend("auto", "cpu")
    assert {"list and plan", "build partitions", "commit", "index and tag"} <= set(summary.stage_seconds)
    [row] = by_doc(table_rows(store_env))["notes.md"]
    expected = embedding.embed_texts([row["text"]], embedding.embed_spec(Settings()), role="passage")[0]
    assert float(np.dot(row["vector"], expected)) > 0.999


def test_changed_deleted_and_added_documents_make_exactly_one_new_version(small_corpus: Path, store_env: Path) -> None:
    first = ingest(str(small_corpus))
    old = by_doc(table_rows(store_env))
    old_versions = versions(store_env)

    changed = small_corpus / "tutorial" / "appetite.txt"
    changed.write_text(changed.read_text() + "\n\nA new closing paragraph about the Flying Circus and spam.\n")
    (small_corpus / "tutorial" / "whatnow.txt").unlink()
    (small_corpus / "notes.md").write_text("# Release notes\n\nThe ragops index now tracks document deletions.\n")

    second = ingest(str(small_corpus))

    assert (second.docs_new, second.docs_changed, second.docs_deleted) == (1, 1, 1)
    assert second.docs_unchanged == len(SMALL_DOCS) - 2
    # one data commit; any later version of the run only refreshed indexes (same rows), and is the tagged one
    assert second.data_version == old_versions[-1] + 1
    assert versions(store_env)[: len(old_versions) + 1] == [*old_versions, second.data_version]
    assert second.table_version == versions(store_env)[-1]
    data_rows = sorted(table_rows(store_env, version=second.data_version), key=lambda r: r["chunk_id"])
    for version in range(second.data_version + 1, second.table_version + 1):
        assert sorted(table_rows(store_env, version=version), key=lambda r: r["chunk_id"]) == data_rows

    new = by_doc(table_rows(store_env))
    assert "tutorial/whatnow.txt" not in new
    assert [r["text"] for r in new["notes.md"]] == [
        "# Release notes\n\nThe ragops index now tracks document deletions."
    ]
    assert "Flying Circus and spam" in new["tutorial/appetite.txt"][-1]["text"]
    for doc_id in set(new) - {"tutorial/appetite.txt", "notes.md"}:  # untouched rows, same ids and timestamps
        key = lambda r: r["chunk_id"]  # noqa: E731
        assert [(r["chunk_id"], r["ingested_at"]) for r in sorted(new[doc_id], key=key)] == [
            (r["chunk_id"], r["ingested_at"]) for r in sorted(old[doc_id], key=key)
        ]
    # the changed document's unchanged chunks reused their vectors: only new text was embedded
    assert second.chunks_reused == len(new["tutorial/appetite.txt"]) - 1
    assert second.chunks_embedded == 2  # appetite's last chunk and notes.md
    assert second.chunks_deleted == len(old["tutorial/whatnow.txt"]) + 1

    # the first candidate is still readable as it was
    assert "tutorial/whatnow.txt" in by_doc(table_rows(store_env, version=first.candidate_tag))


def test_bad_files_are_quarantined_and_good_chunks_are_kept(small_corpus: Path, store_env: Path) -> None:
    first = ingest(str(small_corpus))
    venv_rows = by_doc(table_rows(store_env))["tutorial/venv.txt"]

    (small_corpus / "tutorial" / "venv.txt").write_bytes(b"\xff\xfe not utf-8 any more")
    (small_corpus / "empty.md").write_text("   \n")
    (small_corpus / "broken.pdf").write_bytes(b"%PDF-1.7 garbage")
    with open(small_corpus / "huge.txt", "wb") as handle:
        handle.truncate(2 * 1024**3)
    (small_corpus / "fine.md").write_text("# Fine\n\nThis one is good.\n")

    second = ingest(str(small_corpus))

    reasons = {Path(q["location"]).name: q["reason"] for q in second.quarantined}
    assert set(reasons) == {"venv.txt", "empty.md", "broken.pdf", "huge.txt"}
    assert second.docs_quarantined == 4 and second.docs_new == 1
    rows = by_doc(table_rows(store_env))
    assert "fine.md" in rows
    assert rows["tutorial/venv.txt"] == venv_rows  # last good chunks are kept, not deleted
    assert second.docs_deleted == 0

    quarantine = lancedb.connect(str(store_env)).open_table("quarantine").to_arrow().to_pylist()
    recorded = {(q["run_id"], Path(q["location"]).name) for q in quarantine}
    assert {(second.run_id, name) for name in reasons} <= recorded
    assert all(q["run_id"] != first.run_id for q in quarantine)


def test_no_sync_keeps_chunks_of_removed_documents(small_corpus: Path, store_env: Path) -> None:
    ingest(str(small_corpus))
    (small_corpus / "tutorial" / "whatnow.txt").unlink()

    kept = ingest(str(small_corpus), sync=False)
    assert kept.docs_deleted == 0 and kept.table_version is None
    assert "tutorial/whatnow.txt" in by_doc(table_rows(store_env))

    synced = ingest(str(small_corpus))
    assert synced.docs_deleted == 1
    assert "tutorial/whatnow.txt" not in by_doc(table_rows(store_env))


def test_ingest_never_moves_the_production_tag(small_corpus: Path, store_env: Path) -> None:
    first = ingest(str(small_corpus))
    table = lancedb.connect(str(store_env)).open_table("chunks")
    table.tags.create("production", first.table_version)
    (small_corpus / "extra.md").write_text("# Extra\n\nOne more document.\n")

    second = ingest(str(small_corpus))

    table = lancedb.connect(str(store_env)).open_table("chunks")
    assert second.table_version > first.table_version
    assert table.tags.list()["production"]["version"] == first.table_version


def test_an_ann_index_is_built_once_the_table_is_big_enough(
    small_corpus: Path, store_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGOPS_ANN_INDEX_MIN_ROWS", "20")
    summary = ingest(str(small_corpus))

    table = lancedb.connect(str(store_env)).open_table("chunks")
    kinds = {idx.index_type for idx in table.list_indices()}
    assert summary.chunks_written >= 20
    assert kinds == {"FTS", "IvfHnswSq"}
    assert table.tags.list()[summary.candidate_tag]["version"] == table.version  # the tag includes the index

    from tasks.embed import embedding
    from tasks.serve.retrieval import search
    from tasks.settings import Settings
    from tasks.store.backends import open_store

    latest = open_store(Settings()).at()
    hits = search(latest, "create a virtual environment", embedding.embed_spec(Settings()), "vector", 3)
    assert hits[0].doc_id == "tutorial/venv.txt"


def test_beir_corpus_jsonl_is_ingested_with_its_ids(tmp_path: Path, store_env: Path) -> None:
    texts = {
        "venv": (SAMPLE / "tutorial" / "venv.txt").read_text()[:3000],
        "appetite": (SAMPLE / "tutorial" / "appetite.txt").read_text()[:3000],
    }
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": k, "title": k.title(), "text": v}) + "\n" for k, v in texts.items()))

    summary = ingest(str(corpus), table="beir")

    rows = by_doc(table_rows(store_env, "beir"))
    assert set(rows) == {"venv", "appetite"}
    assert summary.docs_new == 2 and rows["venv"][0]["title"] == "Venv"


def test_emptying_the_source_in_sync_mode_removes_what_it_wrote(small_corpus: Path, store_env: Path) -> None:
    first = ingest(str(small_corpus))
    assert isinstance(first, IngestSummary) and first.seconds > 0 and first.started_at is not None
    shutil.rmtree(small_corpus)
    small_corpus.mkdir()

    emptied = ingest(str(small_corpus))

    assert emptied.docs_deleted == len(SMALL_DOCS)
    assert emptied.chunks_deleted == first.chunks_written
    assert table_rows(store_env) == []
    assert len(table_rows(store_env, version=first.candidate_tag)) == first.chunks_written


def test_chunks_larger_than_the_model_reads_are_refused_before_writing(
    small_corpus: Path, store_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.errors import SettingsError

    monkeypatch.setenv("RAGOPS_CHUNK_TOKENS", "400")
    with pytest.raises(SettingsError, match="chunk_tokens 400 exceeds what the model reads \\(254 tokens\\)"):
        ingest(str(small_corpus))
    assert not store_env.exists() or "chunks" not in lancedb.connect(str(store_env)).list_tables().tables
