"""An unchanged JSONL corpus is skipped on its metadata, as a file of a folder is: planned by the plain functions of
tasks/ingest/partitions.py, then a journey through the real ingest flow (real Prefect API, LanceDB, the model)."""

from __future__ import annotations

import json
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from flows.ingest import ingest
from tasks.ingest.partitions import corpora_read_whole, corpus_key, meta_key, plan_source, records_marker
from tasks.ingest.sources import SourceFile
from tasks.schemas import Quarantined

from .test_partitions import count_reads, listed, touch

TOPICS = ["river barges", "glacier surveys", "bread ovens", "tide tables", "orchard grafting", "lighthouse lenses"]


def record(i: int) -> dict[str, str]:
    topic = TOPICS[i % len(TOPICS)]
    text = f"Field note {i} on {topic}. " + f"The {topic} crew logged reading {i * 7} at dawn and again at dusk. " * 6
    return {"_id": f"note-{i}", "title": f"{topic.title()} {i}", "text": text}


def write_corpus(path: Path, records: list[dict[str, str]], extra: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra)


def stored(rows: list[tuple[str, str | None]], source: str = "corpus") -> pa.Table:
    """What read_table_state returns: one row per document, with its `source_meta`."""
    return pa.table(
        {
            "doc_id": pa.array([d for d, _ in rows], pa.string()),
            "doc_hash": pa.array(["h"] * len(rows), pa.string()),
            "source": pa.array([source] * len(rows), pa.string()),
            "source_meta": pa.array([m for _, m in rows], pa.string()),
            "chunks": pa.array([1] * len(rows), pa.int64()),
        }
    )


def test_a_jsonl_corpus_whose_recorded_key_matches_is_not_read_and_its_stored_records_count_as_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a folder with a JSONL corpus and a Markdown file, as listed
    root = tmp_path / "corpus"
    root.mkdir()
    write_corpus(root / "a.jsonl", [record(i) for i in range(3)])
    (root / "readme.md").write_text("# Readme\n\nA plain file beside the corpus.\n")
    files = listed(root)
    corpus = next(f for f in files if f.format == "beir")
    key = corpus_key(corpus, "fp")
    assert key is not None
    # and a table holding its three records (marked with the corpus), an unmarked record and the Markdown file
    table = stored(
        [(f"note-{i}", records_marker(corpus)) for i in range(3)]
        + [("old-note", None), ("readme.md", meta_key(next(f for f in files if f.format != "beir"), "fp"))]
    )

    # when the registry recorded the corpus's key: it is not read; its stored records count as listed, others not
    plan = plan_source(files, table, "fp", verify=False, corpora={corpus.doc_id: key})
    assert plan.record_files == [] and plan.unread_corpora == [corpus] and not plan.reads
    assert sorted(plan.listed_ids.to_pylist()) == ["note-0", "note-1", "note-2", "readme.md"]
    assert (plan.unchanged, plan.files_unread) == (4, 2)

    # when the key differs (new mtime, another pipeline), nothing is recorded, or --verify: it is read
    assert [f.doc_id for f in plan_source(files, table, "fp", False, {corpus.doc_id: key + "x"}).record_files] == [
        "a.jsonl"
    ]
    assert plan_source(files, table, "other pipeline", False, {corpus.doc_id: key}).record_files == [corpus]
    assert plan_source(files, table, "fp", False, {}).record_files == [corpus]
    monkeypatch.setattr("tasks.ingest.sources.BEIR_EXTRACTION", "a later one")  # records are extracted anew
    assert plan_source(files, table, "fp", False, {corpus.doc_id: key}).record_files == [corpus]
    monkeypatch.undo()
    verified = plan_source(files, table, "fp", True, {corpus.doc_id: key})
    assert verified.record_files == [corpus] and verified.files_unread == 0
    assert verified.listed_ids.to_pylist() == ["readme.md"]  # read again; the records are found by reading


def test_only_corpora_read_whole_without_a_bad_line_or_left_unread_are_recorded(tmp_path: Path) -> None:
    # given three corpora: one unread (unchanged), one read cleanly, one read with a bad line in a later byte range
    root = tmp_path / "corpus"
    root.mkdir()
    for name in ("kept", "clean", "bad"):
        write_corpus(root / f"{name}.jsonl", [record(1)])
    files = {f.doc_id: f for f in listed(root)}
    keys = {doc_id: corpus_key(f, "fp") for doc_id, f in files.items()}
    plan = plan_source(list(files.values()), stored([]), "fp", False, {"kept.jsonl": str(keys["kept.jsonl"])})
    assert sorted(f.doc_id for f in plan.record_files) == ["bad.jsonl", "clean.jsonl"]
    bad_line = Quarantined(f"{files['bad.jsonl'].location}@4096:9", "malformed JSON")

    recorded = corpora_read_whole(plan, [bad_line], "fp")

    assert recorded == {"kept.jsonl": keys["kept.jsonl"], "clean.jsonl": keys["clean.jsonl"]}
    whole_file = Quarantined(files["clean.jsonl"].location, "empty: no records in the JSONL file")
    assert sorted(corpora_read_whole(plan, [whole_file], "fp")) == ["bad.jsonl", "kept.jsonl"]


def table_docs(uri: Path) -> dict[str, str | None]:
    rows = lancedb.connect(str(uri)).open_table("chunks").to_arrow().select(["doc_id", "source_meta"]).to_pylist()
    return {r["doc_id"]: r["source_meta"] for r in rows}


def table_versions(uri: Path) -> list[int]:
    return [v["version"] for v in lancedb.connect(str(uri)).open_table("chunks").list_versions()]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_jsonl_corpus_is_skipped_unread_until_it_changes_and_its_records_survive_deletions_around_it(
    tmp_path: Path, store_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a folder of field notes: a JSONL corpus of 60 records cut into two byte ranges, a Markdown file,
    # and a second corpus with a malformed line; built in this process, where the reads are counted
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")
    root = tmp_path / "notes"
    root.mkdir()
    notes = [record(i) for i in range(60)]
    write_corpus(root / "notes.jsonl", notes)
    assert (root / "notes.jsonl").stat().st_size > 0.02 * (1 << 20)  # more than one partition of store_env
    (root / "index.md").write_text("# Index of the field notes\n\nBarges, glaciers, ovens, tides and lenses.\n")
    write_corpus(root / "extra.jsonl", [record(100), record(101)], extra="{not json\n")
    first = ingest(str(root))
    assert (first.docs_new, first.docs_quarantined) == (63, 1)
    docs = table_docs(store_env)
    assert {docs[f"note-{i}"] for i in range(60)} == {"records:notes.jsonl"}
    assert docs["note-100"] == "records:extra.jsonl"
    opened = count_reads(root, monkeypatch)

    # when nothing changed: the clean corpus is not opened, the one with a bad line is read again (and reported)
    before = table_versions(store_env)
    again = ingest(str(root))
    assert sorted(set(opened)) == ["extra.jsonl"]
    assert (again.files_unread, again.docs_unchanged, again.docs_quarantined) == (2, 63, 1)
    assert again.bytes_read == (root / "extra.jsonl").stat().st_size
    assert again.docs_deleted == 0 and again.table_version is None and table_versions(store_env) == before

    # when the corpus is touched (new mtime, same bytes): it is read, nothing is embedded or written, and only
    # the registry records its new metadata, so the run after it reads it no more
    touch(root / "notes.jsonl")
    opened.clear()
    touched = ingest(str(root))
    assert "notes.jsonl" in opened and touched.docs_unchanged == 63
    assert touched.table_version is None and touched.chunks_embedded == touched.chunks_written == 0
    assert table_docs(store_env) == docs
    opened.clear()
    settled = ingest(str(root))
    assert "notes.jsonl" not in opened and settled.files_unread == 2

    # when the Markdown file is deleted and the corpus is not: the file's rows go, every record stays
    (root / "index.md").unlink()
    removed = ingest(str(root))
    assert removed.docs_deleted == 1 and removed.table_version is not None
    left = table_docs(store_env)
    assert "index.md" not in left and {f"note-{i}" for i in range(60)} <= set(left)

    # when a record is appended: the corpus is read, only the new record is embedded, none is deleted
    write_corpus(root / "notes.jsonl", [*notes, record(60)])
    opened.clear()
    grown = ingest(str(root))
    assert "notes.jsonl" in opened
    assert (grown.docs_new, grown.docs_changed, grown.docs_deleted) == (1, 0, 0)
    assert table_docs(store_env)["note-60"] == "records:notes.jsonl"

    # and --verify reads every corpus again and finds nothing changed
    opened.clear()
    verified = ingest(str(root), verify=True)
    assert {"notes.jsonl", "extra.jsonl"} <= set(opened)
    assert verified.files_unread == 0 and verified.docs_unchanged == 63 and verified.table_version is None


def test_a_record_marker_names_the_corpus_file_within_its_source() -> None:
    corpus = SourceFile(
        name="/data/a.jsonl", location="/data/a.jsonl", doc_id="web::a.jsonl", size=1, format="beir", meta="1:2"
    )
    assert records_marker(corpus) == "records:web::a.jsonl"
