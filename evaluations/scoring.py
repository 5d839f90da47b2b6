"""Score one table version on a golden set: retrieval in each mode, answers, IR and ragas metrics per question.

Each version is judged in the mode that scores best on the golden set. The evaluation sweeps the same modes for the
candidate and for production, so both carry the same selection advantage: a candidate identical to production
scores exactly as production does, instead of beating production's one mode through the sweep alone.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import partial
from typing import Any

from evaluations.golden import GoldenQuestion, normalize_ws
from evaluations.ir_metrics import document_ranking, passage_metrics, ranking_metrics
from tasks.ingest.embedding import EmbedSpec, embed_texts
from tasks.serve.answering import Answerer
from tasks.serve.retrieval import AnnQuery, SearchHit, search, split_mode
from tasks.store.lancedb_store import in_list

ABSTENTION = "abstention"
_DECLINES = re.compile(
    r"\b(i\s+(do\s*n[o']?t|cannot|can't|am\s+unable\s+to)\s+(know|answer|find|tell|say|determine)"
    r"|(context|passages?|documents?)\s+(do(es)?\s*n[o']?t|does\s+not)\s+(contain|mention|say|provide|include|cover)"
    r"|no\s+(information|mention|answer)\b|not\s+(mentioned|covered|provided|stated)\s+in)",
    re.IGNORECASE,
)


@dataclass
class QuestionResult:
    """Everything measured for one question on one version (in the mode it was judged in)."""

    id: str
    kind: str
    question: str
    retrieved: list[dict[str, Any]]
    answer: str | None
    scores: dict[str, float | None]
    errors: dict[str, str] = field(default_factory=dict)
    mode: str = ""


@dataclass
class VersionScores:
    """A version's per-question results in the judged modes, the means with their coverage, and the mode sweep."""

    version: int
    mode: str
    answerer: str
    questions: list[QuestionResult]
    means: dict[str, float | None]
    missing: dict[str, str]
    sweep: dict[str, dict[str, float | None]]
    coverage: dict[str, list[int]] = field(default_factory=dict)  # metric → [questions scored, questions asked]

    def per_question(self, metric: str) -> dict[str, float]:
        """question id → score, for questions where the metric was computed."""
        out = {}
        for q in self.questions:
            value = q.scores.get(metric)
            if value is not None and not math.isnan(value):
                out[q.id] = value
        return out


@dataclass(frozen=True)
class ReferenceChunk:
    """A chunk of the judged version that holds evidence of a question, and which passages (p0, p1, …) it holds."""

    chunk_id: str
    text: str
    passages: frozenset[str]


def covers(chunk_text: str, passage: str) -> bool:
    """True when a chunk holds the passage, or at least half of it (a passage cut by a chunk boundary)."""
    chunk, wanted = normalize_ws(chunk_text), normalize_ws(passage)
    if wanted in chunk:
        return True
    match = SequenceMatcher(None, chunk, wanted, autojunk=False).find_longest_match(0, len(chunk), 0, len(wanted))
    return match.size >= max(30, len(wanted) // 2)


def passages_held(question: GoldenQuestion, doc_id: str, text: str) -> frozenset[str]:
    """Ids (p0, p1, …) of every evidence passage of `question` that a chunk of `doc_id` holds (all, not the first)."""
    return frozenset(
        f"p{i}" for i, ev in enumerate(question.evidence) if ev.doc_id == doc_id and covers(text, ev.passage)
    )


def retrieval_scores(
    question: GoldenQuestion,
    hits: list[SearchHit],
    k: int,
    references: list[ReferenceChunk] | None = None,
    fetch: Callable[[int], list[SearchHit]] | None = None,
) -> dict[str, float]:
    """Document-level and passage-level hit rate, recall, MRR and nDCG at k.

    Documents: the first k distinct documents of the retrieval (`fetch(n)` retrieves n chunks, topping up when the
    k chunks hold fewer than k documents). Passages: every passage a retrieved chunk holds is credited.
    """
    docs = document_ranking(fetch or (lambda n: hits[:n]), k)
    scores = ranking_metrics(docs, question.relevant_docs, k, "doc")
    if not question.evidence:  # document judgements only: no passage to find in a chunk
        return scores
    grades = {f"p{i}": ev.relevance for i, ev in enumerate(question.evidence)}
    covered = [passages_held(question, h.doc_id, h.text) for h in hits[:k]]
    units = [r.passages for r in references] if references is not None else covered
    scores.update(passage_metrics(covered, grades, k, units, "chunk"))
    return scores


def reference_chunks(table: Any, questions: list[GoldenQuestion]) -> dict[str, list[ReferenceChunk]]:
    """question id → the version's chunks that hold its evidence, each with the passages it holds."""
    doc_ids = sorted({ev.doc_id for q in questions for ev in q.evidence})
    if not doc_ids:
        return {}
    data = table.to_lance().to_table(columns=["chunk_id", "doc_id", "text"], filter=in_list("doc_id", doc_ids))
    by_doc: dict[str, list[tuple[str, str]]] = {}
    for cid, did, text in zip(*(data.column(c).to_pylist() for c in ("chunk_id", "doc_id", "text")), strict=True):
        by_doc.setdefault(did, []).append((cid, text))
    out: dict[str, list[ReferenceChunk]] = {}
    for q in questions:
        refs = []
        for did in sorted({ev.doc_id for ev in q.evidence}):
            for cid, text in sorted(by_doc.get(did, [])):
                held = passages_held(q, did, text)
                if held:
                    refs.append(ReferenceChunk(cid, text, held))
        out[q.id] = refs
    return out


def declines(answer: str) -> bool:
    """True when an answer says the context does not answer the question ("I don't know", "not mentioned in…")."""
    return bool(_DECLINES.search(answer))


def best_mode(sweep: dict[str, dict[str, float | None]], modes: list[str], metric: str) -> str:
    """The mode with the highest mean `metric` (ties: the earlier in the policy's list)."""
    return max(modes, key=lambda m: (_value(sweep[m].get(metric)), -modes.index(m)))


def mean_scores(results: list[QuestionResult], metrics: list[str]) -> dict[str, float | None]:
    """Mean of each metric over the questions where it was computed (None when none)."""
    means: dict[str, float | None] = {}
    for metric in metrics:
        values = [v for r in results if (v := r.scores.get(metric)) is not None and not math.isnan(v)]
        means[metric] = round(statistics.fmean(values), 6) if values else None
    return means


def coverage_of(results: list[QuestionResult], metrics: list[str]) -> dict[str, list[int]]:
    """metric → [questions scored, questions it applies to]: abstention applies to unanswerable questions only."""
    out = {}
    for metric in metrics:
        asked = [r for r in results if (r.kind == "unanswerable") == (metric == ABSTENTION)]
        scored = sum(1 for r in asked if (v := r.scores.get(metric)) is not None and not math.isnan(v))
        out[metric] = [scored, len(asked)]
    return out


def score_version(
    table: Any,
    version: int,
    questions: list[GoldenQuestion],
    spec: EmbedSpec,
    modes: list[str],
    k: int,
    primary_metric: str,
    answerer: Answerer,
    answer_metrics: Callable[[list[QuestionResult], dict[str, list[ReferenceChunk]]], dict[str, str]],
    progress: Callable[[str, int, int], None] | None = None,
    answer_concurrency: int = 1,
    ann: AnnQuery | None = None,
    *,
    no_answer_similarity: float = 0.3,
    llm_answers: bool = False,
    documents_only: bool = False,
) -> VersionScores:
    """Sweep retrieval modes, keep the best by `primary_metric`, then answer and score answers in that mode.

    Unanswerable questions score `abstention`: 1 when the system declines. With an LLM answerer that is the answer
    saying so; offline (the extractive answerer always answers) it is the best retrieved chunk's cosine similarity
    falling under `no_answer_similarity`, the monitor's "no good answer" line. `documents_only` (document
    judgements, no passages or reference answers) scores document-level retrieval and answers nothing.
    """
    answerable = [q for q in questions if q.answerable]
    references = reference_chunks(table, answerable)
    # each question is embedded once (one text at a time, as a served query is) for every mode and top-up search
    vectors = {q.id: embed_texts([q.question], spec)[0] for q in questions}
    sweep: dict[str, dict[str, float | None]] = {}
    per_mode: dict[str, dict[str, QuestionResult]] = {}
    total, done = len(modes) * len(questions), 0
    for mode in modes:
        base, weight = split_mode(mode)
        results: dict[str, QuestionResult] = {}
        for q in questions:
            fetch = partial(
                search, table, q.question, spec, base, fusion_weight=weight, ann=ann, query_vector=vectors[q.id]
            )
            hits = fetch(k, similarity=True)
            scores: dict[str, float | None] = {}
            if q.answerable:
                scores.update(retrieval_scores(q, hits, k, references.get(q.id, []), fetch))
            retrieved = [
                {
                    "chunk_id": h.chunk_id,
                    "doc_id": h.doc_id,
                    "score": round(h.score, 5),
                    "similarity": None if h.similarity is None else round(h.similarity, 5),
                    "text": h.text,
                }
                for h in hits
            ]
            results[q.id] = QuestionResult(q.id, q.kind, q.question, retrieved, None, scores, mode=mode)
            done += 1
            if progress:
                progress("retrieve", done, total)
        per_mode[mode] = results
        names = [n for n in _ir_names(k) if not (documents_only and n.startswith("chunk_"))]
        sweep[mode] = mean_scores([results[q.id] for q in answerable], names)

    best = best_mode(sweep, modes, primary_metric)
    chosen = [per_mode[best][q.id] for q in questions]
    by_id = {q.id: q for q in questions}

    def answer(result: QuestionResult) -> None:
        try:
            result.answer = answerer.answer(result.question, [h["text"] for h in result.retrieved])
        except Exception as exc:  # an endpoint failure makes the answer missing, never invented
            result.errors["answer"] = f"{type(exc).__name__}: {exc}"[:300]

    if documents_only:
        missing: dict[str, str] = {}
    else:
        with ThreadPoolExecutor(answer_concurrency) as pool:
            for i, _ in enumerate(pool.map(answer, chosen), start=1):
                if progress:
                    progress("answer", i, len(chosen))
        for result in chosen:
            if not by_id[result.id].answerable:
                result.scores[ABSTENTION] = _abstained(result, llm_answers, no_answer_similarity)
        missing = answer_metrics([r for r in chosen if by_id[r.id].answerable], references)
    metric_names = sorted({m for r in chosen for m in r.scores} | set(missing))
    means = mean_scores(chosen, metric_names)
    coverage = coverage_of(chosen, metric_names)
    if not documents_only and not any(not q.answerable for q in questions):
        missing.setdefault(ABSTENTION, "the golden set has no unanswerable question")
    missing.update({m: "no question could be scored" for m, v in means.items() if v is None and m not in missing})
    return VersionScores(version, best, answerer.name, chosen, means, missing, sweep, coverage)


def _abstained(result: QuestionResult, llm_answers: bool, threshold: float) -> float | None:
    if llm_answers:
        if result.answer is None:
            return None
        return 1.0 if declines(result.answer) else 0.0
    similarities = [h["similarity"] for h in result.retrieved if h.get("similarity") is not None]
    return 1.0 if not similarities or max(similarities) < threshold else 0.0


def _value(value: float | None) -> float:
    return -1.0 if value is None else value


def _ir_names(k: int) -> list[str]:
    return [f"{level}_{m}@{k}" for level in ("doc", "chunk") for m in ("hit_rate", "recall", "mrr", "ndcg")]
