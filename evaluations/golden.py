"""Golden sets: the questions an index version is judged on, their reference answers and evidence.

JSONL, one question per line (schema in datasets/golden/README.md), after an optional header line
`{"golden_set": {...}}` naming the corpus the set was written for, its version and the hash of its items. Loading
validates every line and names the file, line and field of the first problem before any work starts. A folder in
BEIR layout (queries.jsonl + qrels/*.tsv) is a golden set too: document judgements, scored at document level.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.errors import RagopsError
from tasks.settings import where_relative
from tasks.store.interface import TableVersion

QuestionKind = Literal["factoid", "multi_sentence", "paraphrase", "unanswerable", "multi_document"]
KINDS: tuple[str, ...] = ("factoid", "multi_sentence", "paraphrase", "unanswerable", "multi_document")
HEADER_KEY = "golden_set"


class BadGoldenSetError(RagopsError):
    """A golden-set file is missing, malformed or inconsistent."""


class Evidence(BaseModel):
    """A passage that answers (part of) the question, quoted verbatim from one document."""

    model_config = ConfigDict(extra="forbid")

    doc_id: str = Field(min_length=1)
    passage: str = Field(min_length=10, max_length=600)
    relevance: int = Field(2, ge=1, le=3)


class GoldenQuestion(BaseModel):
    """One evaluation case."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    question: str = Field(min_length=5)
    kind: QuestionKind
    reference_answer: str = Field(min_length=1)
    judged_docs: dict[str, int] | None = None  # document judgements (BEIR qrels) instead of evidence passages
    evidence: list[Evidence] = Field(default_factory=list, validate_default=True)
    status: Literal["draft", "reviewed"] | None = None  # generated items start as drafts; None: written by hand
    provenance: dict[str, Any] | None = None  # how a generated item was made: chunk ids, model, prompt hash

    @field_validator("evidence")
    @classmethod
    def _answerable_needs_evidence(cls, value: list[Evidence], info) -> list[Evidence]:  # type: ignore[no-untyped-def]
        kind = info.data.get("kind")
        if kind == "unanswerable" and value:
            raise ValueError("an unanswerable question has no evidence")
        if kind and kind != "unanswerable" and not value and not info.data.get("judged_docs"):
            raise ValueError(f"a {kind} question needs at least one evidence passage")
        if kind == "multi_document" and len({ev.doc_id for ev in value}) < 2:
            raise ValueError("a multi_document question needs evidence from at least two documents")
        return value

    @property
    def is_draft(self) -> bool:
        """True for a generated item nobody has reviewed yet."""
        return self.status == "draft"

    @property
    def answerable(self) -> bool:
        """False for questions whose answer is not in the corpus."""
        return self.kind != "unanswerable"

    @property
    def relevant_docs(self) -> dict[str, int]:
        """doc_id → graded relevance (the highest of its passages, or the document judgements)."""
        if self.judged_docs is not None:
            return dict(self.judged_docs)
        grades: dict[str, int] = {}
        for ev in self.evidence:
            grades[ev.doc_id] = max(grades.get(ev.doc_id, 0), ev.relevance)
        return grades


@dataclass
class GoldenSet:
    """A golden set as loaded: its questions, its header, and the hash of its items (recorded with every decision)."""

    path: str
    questions: list[GoldenQuestion]
    header: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    layout: Literal["jsonl", "beir"] = "jsonl"

    @property
    def drafts(self) -> list[str]:
        """Ids of the generated items nobody has reviewed."""
        return [q.id for q in self.questions if q.is_draft]

    @property
    def cited_docs(self) -> list[str]:
        """Every document the set's evidence (or judgements) cites, sorted."""
        return sorted({doc for q in self.questions for doc, grade in q.relevant_docs.items() if grade > 0})

    @property
    def documents_only(self) -> bool:
        """True for document judgements (BEIR): IR metrics at document level only, no answers to score."""
        return self.layout == "beir"

    @property
    def version(self) -> int | None:
        """The set's version, from its header."""
        value = self.header.get("version")
        return value if isinstance(value, int) else None

    @property
    def edited(self) -> bool:
        """True when the items no longer match the hash their header was written with (edited by hand since)."""
        recorded = self.header.get("sha256")
        return bool(recorded) and recorded != self.sha256


def items_hash(lines: list[str]) -> str:
    """SHA-256 of a set's item lines (header and blank lines excluded): what identifies its version."""
    return hashlib.sha256("\n".join(line.strip() for line in lines if line.strip()).encode("utf-8")).hexdigest()


def read_golden_set(path: str | Path) -> GoldenSet:
    """Read and validate a golden set: a JSONL file (optional header line first) or a BEIR folder."""
    path = Path(path)
    if path.is_dir():
        return _read_beir(path)
    if not path.is_file():
        raise BadGoldenSetError(
            f"golden set {path} does not exist{where_relative(path)}: give --golden-set FILE or set RAGOPS_GOLDEN_SET"
        )
    questions: list[GoldenQuestion] = []
    header: dict[str, Any] = {}
    header_seen = False
    item_lines: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw_line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw_line.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise BadGoldenSetError(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start} of the line)") from exc
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadGoldenSetError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        except (ValueError, RecursionError) as exc:  # an integer over 4300 digits, arrays nested too deep
            raise BadGoldenSetError(f"{path}:{lineno}: not valid JSON ({type(exc).__name__}: {exc})") from exc
        if isinstance(raw, dict) and set(raw) == {HEADER_KEY}:
            if questions or header_seen or not isinstance(raw[HEADER_KEY], dict):
                raise BadGoldenSetError(f"{path}:{lineno}: a '{HEADER_KEY}' header must be an object on the first line")
            header, header_seen = raw[HEADER_KEY], True
            continue
        try:
            question = GoldenQuestion.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(line)"
            raise BadGoldenSetError(f"{path}:{lineno}: field '{where}': {first['msg']}") from exc
        if question.judged_docs is not None:
            raise BadGoldenSetError(f"{path}:{lineno}: field 'judged_docs': only BEIR qrels carry document judgements")
        if question.id in seen:
            raise BadGoldenSetError(
                f"{path}:{lineno}: field 'id': {question.id!r} already used on line {seen[question.id]}"
            )
        seen[question.id] = lineno
        questions.append(question)
        item_lines.append(line)
    if not questions:
        raise BadGoldenSetError(f"golden set {path} has no questions")
    return GoldenSet(str(path), questions, header, items_hash(item_lines))


def load_golden_set(path: str | Path) -> list[GoldenQuestion]:
    """The questions of a golden set (`read_golden_set` for its header and hash)."""
    return read_golden_set(path).questions


def golden_set_hash(path: str | Path) -> str:
    """SHA-256 of a golden set's items: every decision records which version of the set judged it."""
    return read_golden_set(path).sha256


def item_line(question: GoldenQuestion) -> str:
    """One question as its JSONL line."""
    return json.dumps(question.model_dump(exclude_none=True), ensure_ascii=False)


def write_golden_set(path: str | Path, questions: list[GoldenQuestion], header: dict[str, Any]) -> str:
    """Write a set atomically (a temporary file renamed over the old one): header line, then one item per line.

    The header gains the items' hash; returns it.
    """
    path = Path(path)
    lines = [item_line(q) for q in questions]
    digest = items_hash(lines)
    text = json.dumps({HEADER_KEY: {**header, "sha256": digest}}, ensure_ascii=False) + "\n"
    text += "".join(line + "\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def load_queries(path: str | Path) -> dict[str, str]:
    """query id → text from a BEIR queries.jsonl (`_id`, `text`)."""
    queries: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            queries[str(record["_id"])] = str(record["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadGoldenSetError(f"{path}:{lineno}: a BEIR query needs '_id' and 'text' ({exc})") from exc
    return queries


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """query id → {doc id: graded relevance} from a BEIR qrels TSV (`query-id corpus-id score`, header optional)."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for lineno, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (lineno == 1 and len(row) >= 3 and not row[-1].lstrip("-").isdigit()):
                continue  # blank line or header
            if len(row) < 3 or not row[-1].lstrip("-").isdigit():
                raise BadGoldenSetError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score'")
            qrels.setdefault(row[0], {})[row[1]] = int(row[-1])
    return qrels


def _read_beir(folder: Path) -> GoldenSet:
    """A BEIR folder as a golden set: queries.jsonl and its qrels (qrels/test.tsv, the one qrels/*.tsv, qrels.tsv)."""
    queries_path = folder / "queries.jsonl"
    candidates = [folder / "qrels" / "test.tsv", folder / "qrels.tsv"]
    tsvs = sorted((folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
    qrels_path = next((c for c in candidates if c.is_file()), tsvs[0] if len(tsvs) == 1 else None)
    if not queries_path.is_file() or qrels_path is None:
        raise BadGoldenSetError(
            f"golden set {folder} is a folder: it must hold a BEIR queries.jsonl and its qrels "
            f"(qrels/test.tsv, a single qrels/*.tsv or qrels.tsv); found {sorted(p.name for p in folder.iterdir())}"
        )
    queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
    questions = [
        GoldenQuestion.model_construct(  # BEIR queries may be one word: not held to the golden-set schema's lengths
            id=qid,
            question=queries[qid],
            kind="factoid",
            reference_answer="(BEIR document judgements: no reference answer)",
            judged_docs={doc: grade for doc, grade in judged.items() if grade > 0},
            evidence=[],
            status=None,
            provenance=None,
        )
        for qid, judged in qrels.items()
        if qid in queries and any(grade > 0 for grade in judged.values())
    ]
    if not questions:
        raise BadGoldenSetError(f"{qrels_path}: no query with a relevant document has a text in {queries_path}")
    digest = hashlib.sha256(queries_path.read_bytes() + b"\0" + qrels_path.read_bytes()).hexdigest()
    header = {"corpus": {"source": str(folder)}, "qrels": str(qrels_path)}
    return GoldenSet(str(folder), questions, header, digest, "beir")


class GoldenCoverageError(BadGoldenSetError):
    """The golden set cites documents the judged version does not hold: it was written for another corpus."""


def coverage_error(golden: GoldenSet, present: set[str], table: str, version: int, minimum: float) -> str | None:
    """Why the version cannot be judged by this set (too few of its cited documents are in it), or None.

    A set citing no document at all (only unanswerable questions) has nothing to check.
    """
    cited = golden.cited_docs
    found = [doc for doc in cited if doc in present]
    if not cited or len(found) >= minimum * len(cited):
        return None
    missing = [doc for doc in cited if doc not in present]
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (
        f"golden set {golden.path} cites {len(cited)} documents; {len(found)} are in table {table!r} version "
        f"{version} (needs {minimum:.0%}; first missing: {shown}): it was written for another corpus. Generate one "
        f"for this table with `ragops golden generate --table {table}`"
    )


def check_coverage(table: TableVersion, golden: GoldenSet, name: str, minimum: float) -> dict[str, int]:
    """How many of the documents the set cites a table version holds; GoldenCoverageError under `minimum`."""
    present = table.doc_ids()
    problem = coverage_error(golden, present, name, table.version, minimum)
    if problem:
        raise GoldenCoverageError(problem)
    return {"cited_docs": len(golden.cited_docs), "cited_found": sum(1 for d in golden.cited_docs if d in present)}


def golden_notes(golden: GoldenSet, table: str, allow_drafts: bool) -> list[str]:
    """What a report must say about the golden set; BadGoldenSetError on unreviewed drafts unless they are allowed."""
    notes = []
    if golden.drafts:
        if not allow_drafts:
            raise BadGoldenSetError(
                f"golden set {golden.path} has {len(golden.drafts)} unreviewed draft question(s) (first: "
                f"{', '.join(golden.drafts[:3])}): review them with `ragops golden review {golden.path}`, "
                "or pass --allow-drafts to judge by them anyway"
            )
        notes.append(f"judged on a golden set with {len(golden.drafts)} unreviewed draft question(s) (--allow-drafts)")
    if golden.edited:
        notes.append(f"golden set {golden.path} was edited since its header was written (its hash differs)")
    written_for = (golden.header.get("corpus") or {}).get("table")
    if written_for and written_for != table:
        notes.append(f"golden set {golden.path} was written for table {written_for!r}, not {table!r}")
    return notes


def normalize_ws(text: str) -> str:
    """Collapse whitespace, so passages match across line wrapping."""
    return " ".join(text.split())


def missing_evidence(questions: list[GoldenQuestion], texts: dict[str, str]) -> list[str]:
    """Problems where an evidence passage is not found verbatim (modulo whitespace) in its document."""
    normalized = {doc_id: normalize_ws(text) for doc_id, text in texts.items()}
    problems: list[str] = []
    for q in questions:
        for ev in q.evidence:
            if ev.doc_id not in normalized:
                problems.append(f"{q.id}: unknown doc_id {ev.doc_id!r}")
            elif normalize_ws(ev.passage) not in normalized[ev.doc_id]:
                problems.append(f"{q.id}: passage not found in {ev.doc_id}: {ev.passage[:60]!r}")
    return problems


def source_texts(source: str, settings: Any) -> dict[str, str]:
    """doc_id → extracted text of every document under a source (as ingest would read it)."""
    from tasks.ingest.formats import extract
    from tasks.ingest.sources import discover
    from tasks.schemas import Document

    found = discover(source, settings)
    texts = {}
    for item in found.items:
        doc = extract(item, found.fs, settings, found.source)
        if isinstance(doc, Document):
            texts[doc.doc_id] = doc.text
    return texts


def merge_overlapping(parts: list[str], probe: int = 24, window: int = 8000) -> str:
    """One text from consecutive chunks (whitespace-normalized), each chunk's overlap with the one before merged.

    A chunk starting with the end of the previous one (the chunker's overlap) is joined at the longest such overlap;
    otherwise the two are joined by a space, as the whitespace they were cut at normalizes to.
    """
    merged = ""
    for part in (normalize_ws(p) for p in parts):
        if not merged:
            merged = part
            continue
        tail = merged[-window:]
        start = tail.find(part[:probe])
        while start != -1 and not part.startswith(tail[start:]):
            start = tail.find(part[:probe], start + 1)
        merged = merged + part[len(tail) - start :] if start != -1 else f"{merged} {part}"
    return merged


def version_texts(table: TableVersion, doc_ids: list[str]) -> dict[str, str]:
    """doc_id → the document's text as a table version holds it: its chunks in order, overlaps merged (whitespace
    normalized), for the cited documents."""
    if not doc_ids:
        return {}
    data = table.rows(["doc_id", "position", "text"], doc_ids=doc_ids)
    rows = sorted(zip(*(data.column(c).to_pylist() for c in ("doc_id", "position", "text")), strict=True))
    parts: dict[str, list[str]] = {}
    for doc_id, _, text in rows:
        parts.setdefault(doc_id, []).append(text)
    return {doc_id: merge_overlapping(chunks) for doc_id, chunks in parts.items()}


if __name__ == "__main__":
    raise SystemExit("use `ragops golden check FILE [SOURCE]`")
