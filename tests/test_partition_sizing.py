"""Partitions of equal embedding work: cut by estimated chunks (at most RAGOPS_PARTITION_CHUNKS), under the byte cap
(RAGOPS_PARTITION_MB), whatever the format (plain functions of tasks/ingest/partitions.py on real listings)."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.ingest.partitions import file_chunks, partitions, plan_source
from tasks.settings import Settings

from .test_jsonl_skip import stored
from .test_partitions import listed


def test_a_jsonl_corpus_is_cut_into_byte_ranges_of_about_the_chunk_target(tmp_path: Path) -> None:
    # given a 60 KB corpus of passages, 200-token chunks (about 600 bytes of text each)
    corpus = tmp_path / "passages.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"p{i}", "text": "word " * 120}) + "\n" for i in range(100)))
    plan = plan_source(listed(corpus), stored([]), "", verify=False)

    # when partitions hold at most 20 estimated chunks: ranges of 20 × 600 bytes, the last to the end
    parts = list(partitions(plan, Settings(chunk_tokens=200, partition_chunks=20, partition_mb=2)))
    ranges = [p.records for p in parts]
    assert [r.length for r in ranges[:-1] if r] == [12_000] * (len(parts) - 1)
    assert ranges[-1] is not None and ranges[-1].length == -1
    assert len(parts) == -(-corpus.stat().st_size // 12_000)

    # and the byte cap still bounds a range when it is the smaller
    capped = list(partitions(plan, Settings(chunk_tokens=200, partition_chunks=10_000, partition_mb=0.01)))
    assert [p.records.length for p in capped[:-1] if p.records] == [int(0.01 * (1 << 20))] * (len(capped) - 1)


def test_files_are_grouped_by_estimated_chunks_so_a_markup_heavy_file_counts_for_less(tmp_path: Path) -> None:
    # given 6 text files and 6 HTML files of the same size (HTML is mostly markup: an eighth of it is text)
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(6):
        (root / f"t{i}.txt").write_text("plain words " * 500)  # 6,000 bytes: 10 chunks of 200 tokens
        (root / f"h{i}.html").write_text(("<p>" + "plain words " * 499 + "</p>").ljust(6000))  # 1.25 chunks
    files = listed(root)
    text = next(f for f in files if f.format == "txt")
    html = next(f for f in files if f.format == "html")
    assert file_chunks(text, 200) == 8 * file_chunks(html, 200)

    # when partitions hold at most 20 estimated chunks
    plan = plan_source(files, stored([]), "", verify=False)
    parts = list(partitions(plan, Settings(chunk_tokens=200, partition_chunks=20, partition_mb=2)))

    # then the six HTML files share the first partition with two text files, the other text files go two by two
    by_format = [sorted({w.file.format for w in p.files}) for p in parts]
    sizes = [len(p.files) for p in parts]
    assert sum(sizes) == 12
    assert all(len(p.files) <= 2 for p in parts if by_format[p.index] == ["txt"])
    assert sizes == [8, 2, 2] and {w.file.format for w in parts[0].files} == {"html", "txt"}
    for part in parts[:-1]:  # every partition but the last reaches the target with its last file
        total = sum(file_chunks(w.file, 200) for w in part.files)
        assert total >= 20 > total - file_chunks(part.files[-1].file, 200)
