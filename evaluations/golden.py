"""Golden sets: the questions an index version is judged on, their reference answers and evidence.

JSONL, one question per line (schema in datasets/golden/README.md). Loading validates every line and names the
file, line and field of the first problem before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.errors import RagopsError

QuestionKind = Literal["factoid", "multi_sentence", "paraphrase", "unanswerable"]


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
    evidence: list[Evidence] = Field(default_factory=list, validate_default=True)

    @field_validator("evidence")
    @classmethod
    def _answerable_needs_evidence(cls, value: list[Evidence], info) -> list[Evidence]:  # type: ignore[no-untyped-def]
        kind = info.data.get("kind")
        if kind == "unanswerable" and value:
            raise ValueError("an unanswerable question has no evidence")
        if kind and kind != "unanswerable" and not value:
            raise ValueError(f"a {kind} question needs at least one evidence passage")
        return value

    @property
    def answerable(self) -> bool:
        """False for questions whose answer is not in the corpus."""
        return self.kind != "unanswerable"

    @property
    def relevant_docs(self) -> dict[str, int]:
        """doc_id → graded relevance (the highest of its passages)."""
        grades: dict[str, int] = {}
        for ev in self.evidence:
            grades[ev.doc_id] = max(grades.get(ev.doc_id, 0), ev.relevance)
        return grades


def load_golden_set(path: str | Path) -> list[GoldenQuestion]:
    """Read and validate a golden-set JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise BadGoldenSetError(f"golden set {path} does not exist")
    questions: list[GoldenQuestion] = []
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
        try:
            question = GoldenQuestion.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(line)"
            raise BadGoldenSetError(f"{path}:{lineno}: field '{field}': {first['msg']}") from exc
        if question.id in seen:
            raise BadGoldenSetError(
                f"{path}:{lineno}: field 'id': {question.id!r} already used on line {seen[question.id]}"
            )
        seen[question.id] = lineno
        questions.append(question)
    if not questions:
        raise BadGoldenSetError(f"golden set {path} has no questions")
    return questions


def golden_set_hash(path: str | Path) -> str:
    """SHA-256 of a golden-set file: every decision records which version of the set judged it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


def _main(path: str, source: str) -> int:
    """Validate a golden set against the documents of a source folder: `python -m evaluations.golden FILE SOURCE`."""
    from collections import Counter

    from tasks.formats import extract
    from tasks.schemas import Document
    from tasks.settings import Settings
    from tasks.sources import discover

    questions = load_golden_set(path)
    settings = Settings()
    found = discover(source, settings)
    texts = {}
    for item in found.items:
        doc = extract(item, found.fs, settings, found.source)
        if isinstance(doc, Document):
            texts[doc.doc_id] = doc.text
    problems = missing_evidence(questions, texts)
    for problem in problems:
        print(problem)
    print(f"{len(questions)} questions {dict(Counter(q.kind for q in questions))}; {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "datasets/python-docs"))
