"""Candidate versions of a promoted table whose true change is known by construction, made with LanceDB operations on
the real table (each a new version; `restore_production` goes back before the next one).

Evidence chunks are the chunks holding a golden passage. Worse: a share of them deleted, or their vectors replaced by
random unit vectors; a cited document deleted; the full-text index dropped. Neutral: documents no question is about
added (a real `ragops ingest` of another folder), uncited documents edited. Stale: a cited passage edited in its
document, so the golden set no longer matches the corpus. Edits re-embed the edited chunks with the project's model.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evaluations.golden import GoldenQuestion
from evaluations.scoring import reference_chunks
from tasks.embed import embedding
from tasks.settings import Settings
from tasks.store import lancedb_store

try:
    from tasks.store.sql import in_list, sql_string
except ImportError:  # the code before tasks/store/sql.py (gate_calibration.py --code)
    from tasks.store.lancedb_store import in_list, sql_string  # type: ignore[attr-defined,no-redef]


def open_latest(settings: Settings) -> Any:
    """The table at its latest version."""
    return lancedb_store.open_table(lancedb_store.connect(settings), settings.table)


def restore_production(settings: Settings, production: int) -> int:
    """A new latest version holding production's data and indexes (the next candidate starts from it)."""
    table = open_latest(settings)
    table.checkout(production)
    table.restore()
    return int(open_latest(settings).version)


def table_version(settings: Settings, version: int) -> Any:
    """A version as the evaluation functions of the checkout take it: a TableVersion behind the storage seam, a
    LanceDB table in the code from before it (gate_calibration.py --code)."""
    try:
        from tasks.store.backends import open_store
    except ImportError:
        return lancedb_store.open_table(lancedb_store.connect(settings), settings.table, version)
    return open_store(settings).at(version)


def evidence_chunk_ids(settings: Settings, version: int, questions: list[GoldenQuestion]) -> list[str]:
    """Ids of the chunks of `version` that hold a passage of an answerable golden question."""
    refs = reference_chunks(table_version(settings, version), [q for q in questions if q.answerable])
    return sorted({r.chunk_id for chunks in refs.values() for r in chunks})


def delete_chunks(settings: Settings, chunk_ids: list[str]) -> int:
    """A version without these chunks."""
    table = open_latest(settings)
    for start in range(0, len(chunk_ids), 400):
        table.delete(in_list("chunk_id", chunk_ids[start : start + 400]))
    return int(open_latest(settings).version)


def delete_document(settings: Settings, doc_id: str) -> int:
    """A version without one document."""
    table = open_latest(settings)
    table.delete(f"doc_id = {sql_string(doc_id)}")
    return int(open_latest(settings).version)


def _replace_rows(settings: Settings, rows: pa.Table) -> int:
    table = open_latest(settings)
    table.merge_insert("chunk_id").when_matched_update_all().execute(rows)
    return int(open_latest(settings).version)


def _rows(settings: Settings, where: str) -> pa.Table:
    return open_latest(settings).to_lance().to_table(filter=where)


def _with_vectors(rows: pa.Table, vectors: np.ndarray) -> pa.Table:
    dim = rows.schema.field("vector").type.list_size
    array = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).reshape(-1)), dim)
    return rows.set_column(rows.schema.get_field_index("vector"), rows.schema.field("vector"), array)


def noise_vectors(settings: Settings, chunk_ids: list[str], seed: int) -> int:
    """A version where these chunks' vectors are random unit vectors (a broken embedding of those rows)."""
    rows = _rows(settings, in_list("chunk_id", chunk_ids))
    dim = rows.schema.field("vector").type.list_size
    noise = np.random.default_rng(seed).normal(size=(rows.num_rows, dim))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return _replace_rows(settings, _with_vectors(rows, noise))


def drop_fulltext_index(settings: Settings) -> int:
    """A version without the full-text index."""
    table = open_latest(settings)
    for index in table.list_indices():
        if "FTS" in str(index.index_type).upper():
            table.drop_index(index.name)
    return int(open_latest(settings).version)


def edit_documents(settings: Settings, edits: dict[str, tuple[str, str]]) -> int:
    """A version where, in each document, every occurrence of a word is replaced (doc_id → (word, new)), the edited
    chunks re-embedded: an edit of the source re-ingested."""
    where = in_list("doc_id", sorted(edits))
    rows = _rows(settings, where)
    texts = rows.column("text").to_pylist()
    docs = rows.column("doc_id").to_pylist()
    new_texts = [
        re.sub(rf"\b{re.escape(edits[d][0])}\b", edits[d][1], text) for d, text in zip(docs, texts, strict=True)
    ]
    changed = [i for i, (a, b) in enumerate(zip(texts, new_texts, strict=True)) if a != b]
    if not changed:
        raise ValueError(f"no chunk of {sorted(edits)} holds the words to edit")
    # every chunk of an edited document carries its new content hash, as a re-ingest of the edited source writes
    rows = _new_doc_hash(rows.set_column(rows.schema.get_field_index("text"), "text", pa.array(new_texts)))
    vectors = rows.column("vector").combine_chunks().flatten().to_numpy().reshape(rows.num_rows, -1).copy()
    vectors[changed] = embedding.embed_texts(
        [new_texts[i] for i in changed], embedding.embed_spec(settings), role="passage"
    )
    return _replace_rows(settings, _with_vectors(rows, vectors))


def _new_doc_hash(rows: pa.Table) -> pa.Table:
    """The rows with each document's `doc_hash` changed (an edited document's content hash differs)."""
    hashes = [hashlib.sha256(f"{h}:edited".encode()).hexdigest() for h in rows.column("doc_hash").to_pylist()]
    return rows.set_column(rows.schema.get_field_index("doc_hash"), "doc_hash", pa.array(hashes))


def append_to_documents(settings: Settings, doc_ids: list[str], sentence: str) -> int:
    """A version where the last chunk of each document ends with `sentence` (re-embedded)."""
    rows = _rows(settings, in_list("doc_id", doc_ids))
    last: dict[str, tuple[int, int]] = {}
    for i, (doc, pos) in enumerate(
        zip(rows.column("doc_id").to_pylist(), rows.column("position").to_pylist(), strict=True)
    ):
        if doc not in last or pos > last[doc][0]:
            last[doc] = (pos, i)
    picked = rows.take([i for _, i in last.values()])
    texts = [f"{t.rstrip()} {sentence}" for t in picked.column("text").to_pylist()]
    picked = picked.set_column(picked.schema.get_field_index("text"), "text", pa.array(texts))
    vectors = embedding.embed_texts(texts, embedding.embed_spec(settings), role="passage")
    appended = _with_vectors(picked, vectors).cast(rows.schema)
    others = rows.filter(pc.invert(pc.is_in(rows.column("chunk_id"), appended.column("chunk_id"))))
    return _replace_rows(settings, _new_doc_hash(pa.concat_tables([appended, others])))


def ingest_folder(settings: Settings, folder: Path, work: Path) -> int:
    """A version with the documents of `folder` added by a real `ragops ingest` (its own source: nothing deleted)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "RAGOPS_LLM"))}
    env.update(
        RAGOPS_LANCEDB_URI=settings.lancedb_uri,
        RAGOPS_TABLE=settings.table,
        RAGOPS_PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_HOME=str(work / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        RAGOPS_UNKNOWN_SOURCE="new",  # the folder is a source of its own beside the corpus (ids `<folder>::…`)
    )
    ragops = str(Path(sys.executable).parent / "ragops")
    done = subprocess.run([ragops, "ingest", str(folder)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ragops ingest {folder} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return int(open_latest(settings).version)


def distinctive_word(passage: str) -> str | None:
    """The longest alphabetic word of a passage (edited to make the passage stale)."""
    words = sorted({w for w in re.findall(r"[A-Za-z]{6,}", passage)}, key=lambda w: (-len(w), w))
    return words[0] if words else None
