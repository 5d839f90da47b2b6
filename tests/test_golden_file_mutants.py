"""Golden-set files: what mutation testing of evaluations/golden.py found unpinned (survivors in mutation_notes.md).

Expected messages, hashes and texts are written out by hand (hashes from `sha256sum`); nothing here recomputes them
with a helper of the module under test.
"""

from __future__ import annotations

import json
import locale
import os
import re
import sys
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from evaluations.golden import (
    BadGoldenSetError,
    Evidence,
    GoldenCoverageError,
    GoldenQuestion,
    GoldenSet,
    check_coverage,
    coverage_error,
    golden_notes,
    golden_set_hash,
    item_line,
    items_hash,
    load_golden_set,
    missing_evidence,
    normalize_ws,
    read_golden_set,
    source_texts,
    version_texts,
    write_golden_set,
)
from tasks.settings import Settings
from tasks.store.backends import open_store
from tasks.store.interface import TableVersion

ITEM = {
    "id": "q1",
    "question": "What does zlib do?",
    "kind": "factoid",
    "reference_answer": "It compresses data.",
    "evidence": [{"doc_id": "d1", "passage": "zlib compresses data with DEFLATE.", "relevance": 2}],
}


def question(qid: str, *docs: str, status: str | None = None, text: str = "What does zlib do?") -> GoldenQuestion:
    evidence = [Evidence(doc_id=d, passage=f"A passage quoted from {d}.") for d in docs]
    kind = "unanswerable" if not docs else "multi_document" if len(set(docs)) > 1 else "factoid"
    return GoldenQuestion(
        id=qid, question=text, kind=kind, reference_answer="An answer.", evidence=evidence, status=status
    )


def write_lines(path: Path, *lines: str | bytes) -> Path:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode("utf-8") for x in lines) + b"\n")
    return path


# --- reading a JSONL set: what each error says -------------------------------------------------------------------


def test_a_set_without_header_has_an_empty_header_and_its_own_path(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "set.jsonl", json.dumps(ITEM))
    golden = read_golden_set(path)
    assert golden.header == {} and golden.version is None and not golden.edited
    assert golden.path == str(path) and golden.layout == "jsonl"
    assert [q.id for q in load_golden_set(path)] == ["q1"]


def test_a_byte_order_mark_is_allowed_before_the_first_line_only(tmp_path: Path) -> None:
    # given a file saved by an editor that writes a UTF-8 byte order mark
    header = json.dumps({"golden_set": {"version": 2}})
    path = write_lines(tmp_path / "set.jsonl", b"\xef\xbb\xbf" + header.encode(), json.dumps(ITEM))
    # then the mark is skipped and the header is read
    assert read_golden_set(path).version == 2
    # but a mark inside the file is an error on its line
    write_lines(path, header, b"\xef\xbb\xbf" + json.dumps(ITEM).encode())
    with pytest.raises(BadGoldenSetError, match=r"set\.jsonl:2: not valid JSON \(Unexpected UTF-8 BOM"):
        read_golden_set(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadGoldenSetError, match=r"^golden set \S+nope\.jsonl does not exist: give --golden-set"):
        read_golden_set(tmp_path / "nope.jsonl")


def test_a_missing_relative_file_says_where_it_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        BadGoldenSetError, match=f"relative to the directory ragops runs in, {re.escape(str(tmp_path))}"
    ):
        read_golden_set("nope.jsonl")


def test_bytes_that_are_not_utf8_are_located_by_line_and_byte(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "set.jsonl", json.dumps(ITEM), b'{"id\xff": 1}')
    with pytest.raises(BadGoldenSetError, match=r"set\.jsonl:2: not valid UTF-8 \(byte 4 of the line\)$"):
        read_golden_set(path)


def test_json_errors_say_what_and_where(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "set.jsonl", "nope")
    with pytest.raises(BadGoldenSetError, match=r"set\.jsonl:1: not valid JSON \(Expecting value at column 1\)$"):
        read_golden_set(path)
    write_lines(path, json.dumps(ITEM), "", "1" * 5000)  # an integer over Python's 4300-digit limit
    with pytest.raises(BadGoldenSetError, match=r"set\.jsonl:3: not valid JSON \(ValueError: Exceeds the limit"):
        read_golden_set(path)


def test_a_nested_field_is_named_by_its_path_and_a_non_object_line_as_the_line(tmp_path: Path) -> None:
    bad_passage = ITEM | {"evidence": [{"doc_id": "d1", "passage": "too short"}]}
    path = write_lines(tmp_path / "set.jsonl", json.dumps(bad_passage))
    with pytest.raises(BadGoldenSetError, match=r"set\.jsonl:1: field 'evidence\.0\.passage': String should have"):
        read_golden_set(path)
    write_lines(path, json.dumps(["not", "an", "object"]))
    with pytest.raises(BadGoldenSetError, match=r"set\.jsonl:1: field '\(line\)': Input should be a valid dict"):
        read_golden_set(path)


def test_a_repeated_id_names_both_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "set.jsonl", json.dumps(ITEM), "", json.dumps(ITEM))
    with pytest.raises(BadGoldenSetError, match=r"^\S+set\.jsonl:3: field 'id': 'q1' already used on line 1$"):
        read_golden_set(path)


def test_a_header_alone_is_an_empty_set(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "set.jsonl", json.dumps({"golden_set": {"version": 1}}))
    with pytest.raises(BadGoldenSetError, match=r"^golden set \S+set\.jsonl has no questions$"):
        read_golden_set(path)


# --- writing: the items' hash, the exact lines, atomic replacement ------------------------------------------------


def test_items_hash_is_sha256_of_the_stripped_item_lines_joined_by_newlines() -> None:
    # printf 'a\nb' | sha256sum
    expected = "7e18f737311b2dc3b2f269dd78396b0351f14fb66efa879f768cb23181883c78"
    assert items_hash(["a", "b"]) == items_hash([" a ", "", "b\n"])
    assert items_hash(["a", "b"]) == expected


def test_an_item_line_keeps_unicode_and_leaves_out_unset_fields() -> None:
    q = question("q1", "d1", text="Que fait zlib, déjà ?")
    line = item_line(q)
    assert "déjà" in line
    assert set(json.loads(line)) == {"id", "question", "kind", "reference_answer", "evidence"}


def test_write_creates_missing_folders_and_keeps_unicode_in_the_header(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "set.jsonl"
    digest = write_golden_set(path, [question("q1", "d1")], {"corpus": {"source": "données"}})
    text = path.read_text(encoding="utf-8")
    assert '"source": "données"' in text
    assert golden_set_hash(path) == digest
    assert os.listdir(path.parent) == ["set.jsonl"]  # no temporary file left behind


def test_write_goes_through_a_hidden_temporary_sibling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a spy on the rename that makes the write atomic
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "set.jsonl"
    write_golden_set(path, [question("q1", "d1")], {})
    # then the file was written beside the target (same filesystem) as .set.jsonl.<random>.tmp, then renamed
    [(src, dst)] = renames
    assert dst == str(path)
    assert Path(src).parent == tmp_path
    assert Path(src).name.startswith(".set.jsonl.") and Path(src).name.endswith(".tmp")


@pytest.mark.skipif(sys.flags.utf8_mode == 1, reason="Python's UTF-8 mode ignores the locale's encoding")
def test_a_set_is_written_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    # given a process whose locale encoding is ASCII (the C locale), as on a bare server
    path = tmp_path / "set.jsonl"
    before = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")
        # when a set with accented text is written
        write_golden_set(path, [question("q1", "d1", text="Que fait zlib, déjà ?")], {})
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
    # then the file is UTF-8
    assert "Que fait zlib, déjà ?".encode() in path.read_bytes()


def test_a_failed_write_keeps_the_old_file_and_raises_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "set.jsonl"
    write_golden_set(path, [question("q1", "d1")], {"version": 1})
    before = path.read_bytes()

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        write_golden_set(path, [question("q2", "d2")], {"version": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["set.jsonl"]  # the temporary file was removed


# --- BEIR folders ---------------------------------------------------------------------------------------------


def beir_folder(root: Path, *qrels_files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "python"}\n', encoding="utf-8")
    for rel in qrels_files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    return root


def test_beir_prefers_qrels_test_tsv_among_several_splits(tmp_path: Path) -> None:
    folder = beir_folder(tmp_path / "b", "qrels/dev.tsv", "qrels/test.tsv")
    golden = read_golden_set(folder)
    assert golden.path == str(folder)
    assert golden.header == {"corpus": {"source": str(folder)}, "qrels": str(folder / "qrels" / "test.tsv")}


def test_beir_takes_the_only_qrels_file_whatever_its_split(tmp_path: Path) -> None:
    folder = beir_folder(tmp_path / "b", "qrels/dev.tsv")
    assert read_golden_set(folder).header["qrels"] == str(folder / "qrels" / "dev.tsv")


def test_beir_with_two_splits_and_no_test_split_is_ambiguous(tmp_path: Path) -> None:
    folder = beir_folder(tmp_path / "b", "qrels/dev.tsv", "qrels/train.tsv")
    with pytest.raises(BadGoldenSetError, match=r"found \['qrels', 'queries\.jsonl'\]$"):
        read_golden_set(folder)


def test_beir_questions_are_document_judged_factoids_without_evidence(tmp_path: Path) -> None:
    folder = beir_folder(tmp_path / "b", "qrels.tsv")
    [q] = read_golden_set(folder).questions
    assert (q.id, q.question, q.kind, q.judged_docs) == ("q1", "python", "factoid", {"d1": 1})
    assert q.reference_answer == "(BEIR document judgements: no reference answer)"
    assert q.evidence == [] and q.status is None and q.provenance is None


def test_beir_hash_is_sha256_of_queries_nul_qrels(tmp_path: Path) -> None:
    folder = beir_folder(tmp_path / "b", "qrels.tsv")
    # printf '{"_id": "q1", "text": "python"}\n\0query-id\tcorpus-id\tscore\nq1\td1\t1\n' | sha256sum
    assert read_golden_set(folder).sha256 == "f4b8c0ab84d0f9a7968417a72cb45e34ed8178d64b091f4e7f4ed3f8c4eec554"


def test_beir_without_a_usable_query_names_both_files(tmp_path: Path) -> None:
    folder = beir_folder(tmp_path / "b")
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n", encoding="utf-8")
    expected = f"{folder / 'qrels.tsv'}: no query with a relevant document has a text in {folder / 'queries.jsonl'}"
    with pytest.raises(BadGoldenSetError) as caught:
        read_golden_set(folder)
    assert str(caught.value) == expected


# --- coverage against a table version ---------------------------------------------------------------------------


def table_of(tmp_path: Path, rows: list[tuple[str, int, str]]) -> TableVersion:
    doc, position, text = zip(*rows, strict=True)
    data = pa.table({"doc_id": list(doc), "position": list(position), "text": list(text)})
    lancedb.connect(tmp_path / "db").create_table("chunks", data=data)
    return open_store(Settings(lancedb_uri=str(tmp_path / "db"))).at()


def test_coverage_lists_five_missing_documents_without_and_more() -> None:
    golden = GoldenSet("g.jsonl", [question(f"q{i}", f"d{i}") for i in range(1, 9)])
    message = coverage_error(golden, {"d1", "d2", "d3"}, "t", 4, 0.9)
    assert message is not None
    assert "needs 90%; first missing: d4, d5, d6, d7, d8): it was written" in message


def test_check_coverage_counts_the_cited_documents_a_version_holds(tmp_path: Path) -> None:
    table = table_of(tmp_path, [("d1", 0, "one"), ("d2", 0, "two"), ("other", 0, "x")])
    golden = GoldenSet("g.jsonl", [question("q1", "d1"), question("q2", "d2", "d3"), question("q3")])
    assert check_coverage(table, golden, "chunks", 0.5) == {"cited_docs": 3, "cited_found": 2}
    with pytest.raises(GoldenCoverageError) as caught:
        check_coverage(table, golden, "chunks", 0.9)
    assert str(caught.value).startswith(
        "golden set g.jsonl cites 3 documents; 2 are in table 'chunks' version 1 (needs 90%; first missing: d3)"
    )


def test_version_texts_joins_the_chunks_of_each_cited_document_in_order(tmp_path: Path) -> None:
    rows = [("d1", 1, "second"), ("d2", 0, "other"), ("d1", 0, "first"), ("d3", 0, "not cited")]
    table = table_of(tmp_path, rows)
    assert version_texts(table, ["d1", "d2"]) == {"d1": "first second", "d2": "other"}
    assert version_texts(table, []) == {}


def test_source_texts_reads_each_document_as_ingest_does(tmp_path: Path) -> None:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a.txt").write_text("Plain text about zlib.\nIt compresses.\n", encoding="utf-8")
    (tmp_path / "src" / "sub" / "b.md").write_text("# Title\n\nBody of b.\n", encoding="utf-8")
    (tmp_path / "src" / "bad.txt").write_bytes(b"\xff\xfe not UTF-8")  # quarantined by ingest: left out
    texts = source_texts(str(tmp_path / "src"), Settings())
    assert texts == {"a.txt": "Plain text about zlib.\nIt compresses.", "sub/b.md": "# Title\n\nBody of b."}


def test_whitespace_normalizes_to_single_spaces() -> None:
    assert normalize_ws(" zlib\tcompresses\n\n data  ") == "zlib compresses data"


def test_missing_evidence_names_unknown_documents_and_unmatched_passages() -> None:
    long_passage = "This passage is longer than sixty characters, so the message cuts it short there."
    questions = [
        GoldenQuestion.model_validate(ITEM | {"evidence": [{"doc_id": "d9", "passage": "zlib compresses data."}]}),
        GoldenQuestion.model_validate(ITEM | {"id": "q2", "evidence": [{"doc_id": "d1", "passage": long_passage}]}),
        GoldenQuestion.model_validate(ITEM | {"id": "q3"}),  # found, across a line break and double spaces
    ]
    texts = {"d1": "Intro.  zlib compresses\ndata   with DEFLATE. End."}
    assert missing_evidence(questions, texts) == [
        "q1: unknown doc_id 'd9'",
        "q2: passage not found in d1: 'This passage is longer than sixty characters, so the message'",
    ]


# --- notes a report must carry -------------------------------------------------------------------------------------


def test_golden_notes() -> None:
    clean = GoldenSet("g.jsonl", [question("q1", "d1")], {"corpus": {"table": "chunks"}})
    assert golden_notes(clean, "chunks", allow_drafts=False) == []
    assert golden_notes(GoldenSet("g.jsonl", [question("q1", "d1")]), "chunks", allow_drafts=False) == []
    assert golden_notes(GoldenSet("g.jsonl", [question("q1", "d1")], {"corpus": {}}), "t", allow_drafts=False) == []
    other = GoldenSet("g.jsonl", [question("q1", "d1")], {"corpus": {"table": "old"}, "sha256": "x"}, sha256="y")
    assert golden_notes(other, "chunks", allow_drafts=False) == [
        "golden set g.jsonl was edited since its header was written (its hash differs)",
        "golden set g.jsonl was written for table 'old', not 'chunks'",
    ]


def test_unreviewed_drafts_block_unless_allowed() -> None:
    drafts = GoldenSet("g.jsonl", [question(f"q{i}", "d1", status="draft") for i in range(1, 5)])
    with pytest.raises(BadGoldenSetError) as caught:
        golden_notes(drafts, "chunks", allow_drafts=False)
    assert str(caught.value) == (
        "golden set g.jsonl has 4 unreviewed draft question(s) (first: q1, q2, q3): review them with "
        "`ragops golden review g.jsonl`, or pass --allow-drafts to judge by them anyway"
    )
    assert golden_notes(drafts, "chunks", allow_drafts=True) == [
        "judged on a golden set with 4 unreviewed draft question(s) (--allow-drafts)"
    ]
