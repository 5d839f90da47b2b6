"""Typed records and table schemas shared by every stage: declared once, imported everywhere."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
from pydantic import BaseModel


def sha256_hex(text: str) -> str:
    """Hex SHA-256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Document:
    """One source document after text extraction."""

    doc_id: str
    text: str
    title: str
    source: str  # the ingestion root (folder, file or URL) the document was found under
    location: str  # where this document itself lives (path or URL, plus line for JSONL records)
    format: str  # md, txt, html, pdf, beir
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """Hash of what the document says: title and text."""
        return sha256_hex(self.title + "\x1f" + self.text)


@dataclass(frozen=True)
class Quarantined:
    """An input that was skipped, and why."""

    location: str
    reason: str
    doc_id: str = ""
    count: int = 1  # the inputs it stands for: a JSONL file's bad lines of one reason class are one record


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, sized to fit the embedding model."""

    doc_id: str
    position: int
    text: str
    n_tokens: int
    section: str = ""

    @property
    def content_hash(self) -> str:
        """Hash of the chunk's text."""
        return sha256_hex(self.text)

    @property
    def chunk_id(self) -> str:
        """Deterministic id: document, position and content."""
        return f"{self.doc_id}#{self.position:04d}:{self.content_hash[:12]}"


def chunk_schema(dim: int) -> pa.Schema:
    """Schema of the chunk table for a model with `dim`-dimensional embeddings."""
    return pa.schema(
        [
            # the key Lance checks concurrent merge_inserts against: without it two runs inserting the same
            # chunk at once both commit, and the chunk is stored twice
            pa.field("chunk_id", pa.string(), nullable=False, metadata={"lance-schema:unenforced-primary-key": "true"}),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("n_tokens", pa.int32(), nullable=False),
            pa.field("position", pa.int32(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("doc_hash", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("title", pa.string()),
            pa.field("section", pa.string()),
            pa.field("metadata", pa.string()),  # JSON object
            pa.field("embedding_model", pa.string(), nullable=False),
            pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
            # the file's size and mtime (or ETag) and the pipeline when its rows were written: an unchanged value
            # means the file need not be read again (null for JSONL records, which are always read)
            pa.field("source_meta", pa.string()),
        ],
        metadata={"ragops.schema": "chunks/2"},
    )


QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("table", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("location", pa.string(), nullable=False),
        pa.field("doc_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detected_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


PROMOTION_SCHEMA = pa.schema(
    [
        pa.field("table", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),  # promote, block, rollback
        pa.field("version", pa.int64(), nullable=False),
        pa.field("previous_version", pa.int64()),
        pa.field("mode", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("trigger", pa.string(), nullable=False),
        pa.field("reasons", pa.string()),  # JSON list
        pa.field("metrics", pa.string()),  # JSON object
        pa.field("policy_hash", pa.string()),
        pa.field("report", pa.string()),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("golden_hash", pa.string()),  # SHA-256 of the golden-set file the decision was judged on
        pa.field("details", pa.string()),  # JSON: verdict, primary metric with its interval, golden-set path
    ]
)


def query_log_schema(dim: int) -> pa.Schema:
    """Schema of the served-query log: what was asked, which version answered, what it returned, how fast.

    Never the caller's credentials. The query vector is kept so monitoring can compare query distributions.
    """
    return pa.schema(
        [
            pa.field("query_id", pa.string(), nullable=False),
            pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("table", pa.string(), nullable=False),
            pa.field("version", pa.int64(), nullable=False),
            pa.field("mode", pa.string(), nullable=False),
            pa.field("k", pa.int32(), nullable=False),
            pa.field("question", pa.string(), nullable=False),
            pa.field("retrieved_ids", pa.list_(pa.string()), nullable=False),
            pa.field("scores", pa.list_(pa.float32()), nullable=False),
            pa.field("top1_similarity", pa.float32()),  # cosine similarity of the rank-1 chunk; null: none found
            pa.field("best_similarity", pa.float32()),  # the highest similarity among the returned chunks
            pa.field("latency_ms", pa.float32(), nullable=False),
            pa.field("answer", pa.string()),  # null unless an answer was generated
            pa.field("status", pa.int32(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ],
        metadata={"ragops.schema": "query_log/1"},
    )


MONITOR_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("table", pa.string(), nullable=False),
        pa.field("version", pa.int64()),
        pa.field("window_hours", pa.float64(), nullable=False),
        pa.field("queries", pa.int64(), nullable=False),
        pa.field("checks", pa.string(), nullable=False),  # JSON list of checks (name, value, threshold, ...)
        pa.field("breached", pa.bool_(), nullable=False),
    ]
)


QUARANTINE_SHOWN = 20  # quarantine records an ingest prints and publishes; its quarantine table holds them all


class IngestSummary(BaseModel):
    """What one ingest run did; printed by the CLI and published as a Prefect artifact."""

    run_id: str
    source: str
    table: str
    source_name: str = ""  # the source's name in the table's registry
    source_event: str = ""  # "source 'x' at ...", "new source ...", "source 'x' moved from ... to ..."
    docs_seen: int = 0
    docs_new: int = 0
    docs_changed: int = 0
    docs_unchanged: int = 0
    docs_deleted: int = 0
    docs_quarantined: int = 0
    docs_refreshed: int = 0  # touched, same content: rows rewritten with their vectors and the new file metadata
    files_unread: int = 0  # skipped on unchanged size and mtime/ETag, without reading a byte
    bytes_read: int = 0
    partitions: int = 0
    orphans_removed: int = 0  # staged files of runs that died before their commit
    chunks_written: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    chunks_deleted: int = 0
    table_version: int | None = None
    data_version: int | None = None
    candidate_tag: str | None = None
    production_version: int | None = None  # what source_changes compares with (None: no production yet)
    source_changes: dict[str, dict[str, int]] = {}  # source → documents added, changed, deleted against production
    quarantined: list[dict[str, str]] = []  # one per skipped file, and per file and reason class of bad lines
    quarantine_table: str = ""
    embed_workers: dict[str, dict[str, int]] = {}  # worker → chunks embedded, model loads
    prepare_workers: dict[str, int] = {}  # worker → partitions read, extracted and chunked there
    seconds: float = 0.0
    stage_seconds: dict[str, float] = {}  # discover and plan, extract, chunk, embed, write, index, ...
    embed_backend: str = ""
    embedding_model: str = ""  # the model id the version's rows hold
    model_switch_from: str | None = None  # a model switch: the id the table's rows held before (all re-embedded)
    started_at: datetime | None = None

    def quarantine_shown(self) -> tuple[list[dict[str, str]], str]:
        """The quarantine records to print or publish (the first QUARANTINE_SHOWN), and a line saying how many more
        there are and where ("" when none)."""
        more = len(self.quarantined) - QUARANTINE_SHOWN
        if more <= 0:
            return self.quarantined, ""
        where = f"table {self.quarantine_table!r}" if self.quarantine_table else "the quarantine table"
        return self.quarantined[:QUARANTINE_SHOWN], f"and {more} more quarantine records, all in {where}"

    def report_rows(self) -> list[tuple[str, object]]:
        """The figures with their labels, shared by the CLI summary and the Prefect artifact."""
        against = f"v{self.production_version}" if self.production_version is not None else "none yet"
        return [
            ("source", self.source_event or self.source),
            *(
                (f"{name}: vs production ({against})", changes_line(counts))
                for name, counts in sorted(self.source_changes.items())
            ),
            ("docs seen", self.docs_seen),
            ("new", self.docs_new),
            ("changed", self.docs_changed),
            ("unchanged", self.docs_unchanged),
            ("deleted", self.docs_deleted),
            ("quarantined", self.docs_quarantined),
            ("refreshed (metadata or location only)", self.docs_refreshed),
            ("files skipped unread", self.files_unread),
            ("bytes read", self.bytes_read),
            ("partitions", self.partitions),
            ("chunks written", self.chunks_written),
            ("chunks embedded", self.chunks_embedded),
            ("chunks with reused vectors", self.chunks_reused),
            ("chunks deleted", self.chunks_deleted),
            ("table version", self.table_version if self.table_version is not None else "unchanged"),
            ("candidate tag", self.candidate_tag or "none (nothing changed)"),
            ("embedding model", self.embedding_model),
            *(
                [("model switch", f"from {self.model_switch_from}: every chunk re-embedded")]
                if self.model_switch_from
                else []
            ),
            ("embedding backend", self.embed_backend or "none (nothing embedded)"),
            ("seconds", f"{self.seconds:.1f}"),
            *((f"seconds: {stage}", f"{s:.1f}") for stage, s in self.stage_seconds.items()),
        ]


def changes_line(counts: dict[str, int]) -> str:
    """ "1 document added, 0 changed, 2 deleted (40 held)": a source's changes between two versions."""
    added = counts.get("added", 0)
    line = f"{added} document{'' if added == 1 else 's'} added, {counts.get('changed', 0)} changed, "
    return line + f"{counts.get('deleted', 0)} deleted ({counts.get('documents', 0)} held)"
