"""A table knows its sources and every version its lineage: a moved corpus is synced in full (deletions included)
once the move is declared, a second source is never touched by ingesting the first, two sources may hold the same
relative names, and `ragops versions --show N` says what produced N. Real Prefect, LanceDB and embedding model, on
a corpus that is not the bundled sample (package READMEs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lance
import lancedb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.ingest import ingest
from flows.sources import remove_source
from tasks.embed import embedding
from tasks.errors import BadSourceError, UnknownSourceError
from tasks.serve import retrieval
from tasks.settings import Settings
from tasks.store import lineage, version_info
from tasks.store.backends import open_store
from tests.package_corpus import write_package_corpus

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    uri = tmp_path / "lancedb"
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(uri))
    monkeypatch.setenv("RAGOPS_TABLE", "handbook")
    monkeypatch.delenv("RAGOPS_UNKNOWN_SOURCE", raising=False)
    return uri


def rows(uri: Path, table: str = "handbook") -> list[dict]:  # type: ignore[type-arg]
    return lance.dataset(str(uri / f"{table}.lance")).to_table(columns=["doc_id", "source", "metadata"]).to_pylist()


def doc_ids(uri: Path) -> set[str]:
    return {r["doc_id"] for r in rows(uri)}


def latest_version(uri: Path) -> int:
    return int(lance.dataset(str(uri / "handbook.lance")).version)


def test_a_moved_source_is_synced_deletions_included_and_nothing_unchanged_is_embedded_again(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a folder A of four READMEs ingested into a table
    a = write_package_corpus(tmp_path / "checkout-a" / "handbook", ("fsspec", "uvicorn", "pypdf", "humanize"))
    first = ingest(source=str(a))
    assert first.source_name == "handbook" and first.docs_new == 4

    # when it is copied to B (a new checkout), one document is deleted there, and B is ingested
    b = tmp_path / "checkout-b" / "handbook"
    shutil.copytree(a, b)
    (b / "pypdf.md").unlink()
    before = latest_version(env)
    with pytest.raises(UnknownSourceError) as refused:
        ingest(source=str(b))

    # then it stops with one line naming the table's source and both choices, and writes nothing
    message = str(refused.value)
    assert "\n" not in message
    assert f"handbook ({a})" in message and "--as NAME" in message and "--new-source NAME" in message
    assert "RAGOPS_UNKNOWN_SOURCE" in message
    assert latest_version(env) == before

    # when the move is declared
    moved = ingest(source=str(b), as_source="handbook")

    # then the deleted document is gone, the three others were recognised by content (nothing embedded), and
    # every row carries the new location
    assert (moved.docs_deleted, moved.docs_refreshed, moved.docs_new, moved.docs_changed) == (1, 3, 0, 0)
    assert moved.chunks_embedded == 0
    assert moved.source_event == f"source 'handbook' moved from {a} to {b}"
    assert doc_ids(env) == {"fsspec.md", "uvicorn.md", "humanize.md"}
    assert {r["source"] for r in rows(env)} == {"handbook"}
    assert all(json.loads(r["metadata"])["location"].startswith(f"{b}/") for r in rows(env))
    # and search no longer finds it: its own title, asked of every mode, returns other documents only
    settings = Settings()
    table = open_store(settings, "handbook").at()
    spec, ann = embedding.embed_spec(settings), retrieval.AnnQuery.from_settings(settings)
    for mode in ("vector", "fulltext", "hybrid"):
        hits = retrieval.search(table, "pypdf PdfReader extract text from PDF pages", spec, mode=mode, k=10, ann=ann)
        assert hits and "pypdf.md" not in {h.doc_id for h in hits}, mode

    # and the registry holds the new location, and where it was before
    (entry,) = version_info.sources_report(version_info.dataset_at(settings, "handbook"))
    assert (entry["name"], entry["location"], entry["moved_from"], entry["documents"]) == (
        "handbook",
        str(b),
        [str(a)],
        3,
    )

    # and `ragops versions --show` answers what produced the candidate
    shown = runner.invoke(app, ["versions", "--show", moved.candidate_tag or "", "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    recorded = info["lineage"]
    assert recorded["run_id"] == moved.run_id and recorded["data_version"] == moved.data_version
    assert recorded["event"] == moved.source_event and recorded["trigger"]["kind"] in ("flow call", "ci")
    assert recorded["sources"][0]["location"] == str(b) and len(recorded["sources"][0]["listing_digest"]) == 64
    assert recorded["settings"]["embedding_model"] == embedding.model_name(settings)
    assert recorded["settings"]["chunk_tokens"] == settings.chunk_tokens
    assert recorded["ragops_version"] not in ("", None) and "code_revision" in recorded
    assert info["tags"] == [moved.candidate_tag] and info["version"] == moved.table_version
    # the first version's lineage is its own run's: versions answer for themselves
    older = json.loads(runner.invoke(app, ["versions", "--show", str(first.table_version), "--json"]).output)
    assert older["lineage"]["run_id"] == first.run_id and older["lineage"]["sources"][0]["location"] == str(a)
    text = runner.invoke(app, ["versions", "--show", str(moved.table_version)])
    assert f"data written by: ingest run {moved.run_id}" in text.output and "trigger:" in text.output

    # when B is ingested again unchanged (the second round), nothing is read: the move stored each file's metadata
    again = ingest(source=str(b))
    assert again.table_version is None and again.files_unread == 3 and again.docs_deleted == 0

    # when the checkout moves once more, and runs without input say to follow a table's only source
    c = tmp_path / "checkout-c" / "handbook"
    shutil.copytree(b, c)
    (c / "humanize.md").unlink()
    monkeypatch.setenv("RAGOPS_UNKNOWN_SOURCE", "move")
    followed = ingest(source=str(c))
    assert followed.source_event == f"source 'handbook' moved from {b} to {c}"
    assert (followed.docs_deleted, followed.chunks_embedded) == (1, 0)
    assert doc_ids(env) == {"fsspec.md", "uvicorn.md"}


def test_two_sources_keep_their_own_documents_even_under_the_same_names(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given two folders that both hold a `guide.md` (other texts) and one page of their own
    a = write_package_corpus(tmp_path / "a" / "docs", ("fsspec", "attrs"))
    shutil.copyfile(a / "fsspec.md", a / "guide.md")
    c = write_package_corpus(tmp_path / "c" / "notes", ("httpx", "urllib3"))
    shutil.copyfile(c / "httpx.md", c / "guide.md")
    ingest(source=str(a))

    # when the second folder is ingested: refused without a word, added with --new-source
    with pytest.raises(UnknownSourceError):
        ingest(source=str(c))
    with pytest.raises(BadSourceError, match="already has a source 'docs'"):
        ingest(source=str(c), new_source="docs")
    added = ingest(source=str(c), new_source="notes")

    # then both `guide.md` are held, the second under its source's namespace
    assert added.docs_new == 3 and added.docs_deleted == 0
    assert doc_ids(env) == {
        "fsspec.md",
        "attrs.md",
        "guide.md",
        "notes::httpx.md",
        "notes::urllib3.md",
        "notes::guide.md",
    }
    by_doc = {r["doc_id"]: r["source"] for r in rows(env)}
    assert by_doc["guide.md"] == "docs" and by_doc["notes::guide.md"] == "notes"

    # when a page is deleted from the first source and it is ingested again
    (a / "attrs.md").unlink()
    first_again = ingest(source=str(a))
    # then only that page goes; the second source's documents are untouched
    assert first_again.docs_deleted == 1
    assert doc_ids(env) == {"fsspec.md", "guide.md", "notes::httpx.md", "notes::urllib3.md", "notes::guide.md"}

    # when the second source loses its `guide.md`: the first source's `guide.md` stays
    (c / "guide.md").unlink()
    second_again = ingest(source=str(c))
    assert second_again.source_name == "notes" and second_again.docs_deleted == 1
    assert doc_ids(env) == {"fsspec.md", "guide.md", "notes::httpx.md", "notes::urllib3.md"}
    # and the summary says, per source, what changed against production (none yet: against an empty table)
    assert second_again.source_changes["notes"]["documents"] == 2
    assert second_again.source_changes["docs"]["documents"] == 2

    # and `ragops sources` counts each source's documents and chunks
    listed = runner.invoke(app, ["sources", "--json"])
    assert listed.exit_code == 0, listed.output
    counted = {s["name"]: s for s in json.loads(listed.output)["sources"]}
    assert (counted["docs"]["documents"], counted["notes"]["documents"]) == (2, 2)
    assert counted["notes"]["prefix"] == "notes::" and counted["docs"]["chunks"] > 0
    assert sum(s["chunks"] for s in counted.values()) == len(rows(env))

    # when a third location arrives: "move" cannot pick among two sources; "new" adds it under a derived name
    d = write_package_corpus(tmp_path / "d" / "extra", ("platformdirs",))
    monkeypatch.setenv("RAGOPS_UNKNOWN_SOURCE", "move")
    with pytest.raises(UnknownSourceError, match="needs a table with one source; it has 2"):
        ingest(source=str(d))
    monkeypatch.setenv("RAGOPS_UNKNOWN_SOURCE", "new")
    assert ingest(source=str(d)).source_name == "extra"
    assert "extra::platformdirs.md" in doc_ids(env)

    # when a source is removed: a new candidate version without its documents, production untouched
    removed = remove_source(name="notes")
    assert removed["documents_removed"] == 2 and removed["candidate_tag"].startswith("candidate-")
    assert doc_ids(env) == {"fsspec.md", "guide.md", "extra::platformdirs.md"}
    names = {s["name"] for s in version_info.sources_report(version_info.dataset_at(Settings(), "handbook"))}
    assert names == {"docs", "extra"}
    with pytest.raises(BadSourceError, match="no source 'notes'"):
        remove_source(name="notes")


def test_a_table_from_before_the_registry_keeps_its_source_and_syncs_its_deletions(env: Path, tmp_path: Path) -> None:
    # given a table written before ragops kept a registry: rows carry their folder's path as `source`, no metadata
    a = write_package_corpus(tmp_path / "old" / "pages", ("starlette", "attrs", "humanize"))
    ingest(source=str(a))
    table = lancedb.connect(str(env)).open_table("handbook")
    table.update(values={"source": str(a)})
    dataset = lance.dataset(str(env / "handbook.lance"))
    dataset.update_metadata({lineage.SOURCES_KEY: None, lineage.LINEAGE_KEY: None})
    assert lineage.read_sources(lineage.table_metadata(lance.dataset(str(env / "handbook.lance")))) == {}

    # when a page is deleted and the same folder ingested
    (a / "attrs.md").unlink()
    summary = ingest(source=str(a))

    # then the old rows are recognised as that source's: the deleted page goes, the others stay unread
    assert summary.source_name == "pages" and summary.docs_deleted == 1 and summary.chunks_embedded == 0
    assert doc_ids(env) == {"starlette.md", "humanize.md"}
    (entry,) = version_info.sources_report(version_info.dataset_at(Settings(), "handbook"))
    assert (entry["name"], entry["location"], entry["documents"]) == ("pages", str(a), 2)
