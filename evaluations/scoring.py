"""Score one table version on a golden set: retrieval in each mode, answers, IR and ragas metrics per question.

Each version is judged in the mode that scores best on the golden set. The evaluation sweeps the same modes for the
candidate and for production, so both carry the same selection advantage, and keeps every mode's per-question IR
scores (`mode_scores`) so the gate can bootstrap the whole select-then-score procedure, re-choosing the mode in each
resample.
"""

from __future__ import annotations

import math
import re
import statistics
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from functools import lru_cache, partial
from typing import Any

from evaluations.golden import GoldenQuestion, normalize_ws
from evaluations.ir_metrics import document_ranking, passage_metrics, ranking_metrics
from tasks.embed.embedding import EmbedSpec, embed_texts
from tasks.serve.answering import Answerer
from tasks.serve.retrieval import AnnQuery, SearchHit, search, split_mode
from tasks.store.interface import TableVersion

ABSTENTION = "abstention"
# The other half of abstention: answerable questions the system answers instead of declining (1 − false abstention).
ANSWER_RATE = "answer_rate"
CANNOT_DECLINE = (
    "the extractive answerer never declines (no LLM endpoint configured): abstention and answer_rate need an "
    "answerer that can decline"
)
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
    # mode → IR metric → question id → score, for every swept mode (the gate re-selects the mode per resample)
    mode_scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    failed_modes: dict[str, str] = field(default_factory=dict)  # mode → why its retrieval failed (e.g. no FTS index)

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


MIN_SHARED_CHARS = 30  # a passage cut by a chunk boundary counts when the chunk holds this much of it, and half


@lru_cache(maxsize=65_536)  # the same chunk meets the same passage in every mode and both versions
def covers(chunk_text: str, passage: str) -> bool:
    """True when a chunk holds the passage, or at least half of it (a passage cut by a chunk boundary)."""
    chunk, wanted = normalize_ws(chunk_text), normalize_ws(passage)
    if wanted in chunk:
        return True
    # A shared run of ≥ 30 characters holds one of the passage's aligned 15-character blocks whole: without any of
    # them in the chunk, no run is long enough, and the quadratic longest-match search is skipped.
    block = MIN_SHARED_CHARS // 2
    if not any(wanted[i : i + block] in chunk for i in range(0, len(wanted) - block + 1, block)):
        return False
    match = SequenceMatcher(None, chunk, wanted, autojunk=False).find_longest_match(0, len(chunk), 0, len(wanted))
    return match.size >= max(MIN_SHARED_CHARS, len(wanted) // 2)


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
    ideal_units: list[frozenset[str]] | None = None,
) -> dict[str, float]:
    """Document-level and passage-level hit rate, recall, MRR and nDCG at k.

    Documents: the first k distinct documents of the retrieval (`fetch(n)` retrieves n chunks, topping up when the
    k chunks hold fewer than k documents). Passages: every passage a retrieved chunk holds is credited. The ideal
    DCG is the best ranking of the version's own reference chunks, or of `ideal_units` when given (the passage sets
    of both compared versions' chunks: one normaliser for candidate and production).
    """
    docs = document_ranking(fetch or (lambda n: hits[:n]), k)
    scores = ranking_metrics(docs, question.relevant_docs, k, "doc")
    if not question.evidence:  # document judgements only: no passage to find in a chunk
        return scores
    grades = {f"p{i}": ev.relevance for i, ev in enumerate(question.evidence)}
    covered = [passages_held(question, h.doc_id, h.text) for h in hits[:k]]
    units = [r.passages for r in references] if references is not None else covered
    if ideal_units is not None:
        units = [*units, *ideal_units]
    scores.update(passage_metrics(covered, grades, k, units, "chunk"))
    return scores


def reference_chunks(table: TableVersion, questions: list[GoldenQuestion]) -> dict[str, list[ReferenceChunk]]:
    """question id → the version's chunks that hold its evidence, each with the passages it holds."""
    doc_ids = sorted({ev.doc_id for q in questions for ev in q.evidence})
    if not doc_ids:
        return {}
    data = table.rows(["chunk_id", "doc_id", "text"], doc_ids=doc_ids)
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


def stale_passages(questions: list[GoldenQuestion], texts: dict[str, str]) -> dict[str, list[str]]:
    """question id → its evidence passages that are no longer verbatim in a document the version still holds.

    Such a question no longer matches the corpus (its source was edited): judging retrieval or answers by it would
    report the golden set's staleness as a regression or, with partial credit, credit a passage that changed. A
    document missing altogether is not staleness: losing it is the version's own regression.
    """
    stale: dict[str, list[str]] = {}
    normalized = {doc_id: normalize_ws(text) for doc_id, text in texts.items()}
    for q in questions:
        for i, ev in enumerate(q.evidence):
            text = normalized.get(ev.doc_id)
            if text is not None and normalize_ws(ev.passage) not in text:
                stale.setdefault(q.id, []).append(f"p{i} in {ev.doc_id}: {normalize_ws(ev.passage)[:80]!r}")
    return stale


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


@dataclass
class Retrieval:
    """A version's mode sweep on the golden set: every mode's IR scores, the judged mode and its retrievals.

    Nothing in it depends on an answer, so one retrieval serves every answering of the version (`answer_retrieval`):
    an A/A calibration re-answers and re-judges production without searching again.
    """

    version: int
    questions: list[GoldenQuestion]
    references: dict[str, list[ReferenceChunk]]
    mode: str
    judged: list[QuestionResult]  # the judged mode's results: retrievals and IR scores, nothing answered
    sweep: dict[str, dict[str, float | None]]
    mode_scores: dict[str, dict[str, dict[str, float]]]
    failed: dict[str, str]
    documents_only: bool = False

    def results(self) -> list[QuestionResult]:
        """Fresh copies of the judged mode's results, for one answering to fill in."""
        return [
            replace(r, retrieved=[dict(h) for h in r.retrieved], scores=dict(r.scores), errors=dict(r.errors))
            for r in self.judged
        ]


class RememberedAnswers:
    """A deterministic answerer (the offline extractive one) that answers each question and contexts once: asked
    again, by another run or by another version retrieving the same chunks, it returns the same answer without
    embedding anything. An LLM's answers vary from run to run, which the A/A calibration measures: never wrap one."""

    def __init__(self, answerer: Answerer) -> None:
        self.answerer = answerer
        self.name = answerer.name
        self.answers: dict[tuple[str, tuple[str, ...]], str] = {}
        self._lock = threading.Lock()

    def answer(self, question: str, contexts: list[str]) -> str:
        """The answer given before to this question with these contexts, else the answerer's (a failure is not
        remembered: asked again, it is asked again)."""
        key = (question, tuple(contexts))
        with self._lock:
            known = self.answers.get(key)
        if known is None:
            known = self.answerer.answer(question, contexts)
            with self._lock:
                self.answers[key] = known
        return known


def score_version(
    table: TableVersion,
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
    llm_answers: bool = False,
    documents_only: bool = False,
    ideal_units: dict[str, list[frozenset[str]]] | None = None,
) -> VersionScores:
    """Sweep retrieval modes, keep the best by `primary_metric`, then answer and score answers in that mode
    (`retrieve_modes`, then `answer_retrieval`)."""
    retrieval = retrieve_modes(
        table,
        version,
        questions,
        spec,
        modes,
        k,
        primary_metric,
        progress,
        ann,
        documents_only=documents_only,
        ideal_units=ideal_units,
    )
    return answer_retrieval(retrieval, answerer, answer_metrics, progress, answer_concurrency, llm_answers=llm_answers)


def retrieve_modes(
    table: TableVersion,
    version: int,
    questions: list[GoldenQuestion],
    spec: EmbedSpec,
    modes: list[str],
    k: int,
    primary_metric: str,
    progress: Callable[[str, int, int], None] | None = None,
    ann: AnnQuery | None = None,
    *,
    documents_only: bool = False,
    ideal_units: dict[str, list[frozenset[str]]] | None = None,
) -> Retrieval:
    """Retrieve every question in every mode, score the retrievals (IR metrics), and choose the mode with the best
    mean `primary_metric`. `documents_only` (document judgements, no passages): document-level metrics only.
    `ideal_units` (question id → passage sets of another version's chunks) makes the ideal DCG shared.
    """
    answerable = [q for q in questions if q.answerable]
    references = reference_chunks(table, answerable)
    # each question is embedded once (one text at a time, as a served query is) for every mode and top-up search
    vectors = {q.id: embed_texts([q.question], spec, role="query")[0] for q in questions}
    sweep: dict[str, dict[str, float | None]] = {}
    per_mode: dict[str, dict[str, QuestionResult]] = {}
    mode_scores: dict[str, dict[str, dict[str, float]]] = {}
    names = [n for n in _ir_names(k) if not (documents_only and n.startswith("chunk_"))]
    total, done = len(modes) * len(questions), 0
    failed: dict[str, str] = {}
    for mode in modes:
        base, weight = split_mode(mode)
        results: dict[str, QuestionResult] = {}
        for q in questions:
            fetch = partial(
                search, table, q.question, spec, base, fusion_weight=weight, ann=ann, query_vector=vectors[q.id]
            )
            try:
                hits = fetch(k, similarity=True)
            except Exception as exc:  # a mode the version cannot serve (no full-text index): judged without it
                failed[mode] = f"{type(exc).__name__}: {exc}"[:300]
                break
            scores: dict[str, float | None] = {}
            if q.answerable:
                extra = ideal_units.get(q.id) if ideal_units is not None else None
                scores.update(retrieval_scores(q, hits, k, references.get(q.id, []), fetch, extra))
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
        if mode in failed:
            sweep[mode] = dict.fromkeys(names)
            done += len(questions) - len(results)
            continue
        per_mode[mode] = results
        chosen_mode = [results[q.id] for q in answerable]
        sweep[mode] = mean_scores(chosen_mode, names)
        mode_scores[mode] = {
            name: {r.id: v for r in chosen_mode if (v := r.scores.get(name)) is not None and not math.isnan(v)}
            for name in names
        }

    if len(failed) == len(modes):
        raise RuntimeError(f"version {version}: retrieval failed in every mode: {failed}")
    best = best_mode(sweep, [m for m in modes if m not in failed], primary_metric)
    judged = [per_mode[best][q.id] for q in questions]
    return Retrieval(version, questions, references, best, judged, sweep, mode_scores, failed, documents_only)


def answer_retrieval(
    retrieval: Retrieval,
    answerer: Answerer,
    answer_metrics: Callable[[list[QuestionResult], dict[str, list[ReferenceChunk]]], dict[str, str]],
    progress: Callable[[str, int, int], None] | None = None,
    answer_concurrency: int = 1,
    *,
    llm_answers: bool = False,
) -> VersionScores:
    """Answer every question from its retrieval in the judged mode and score the answers (on fresh copies of the
    retrieval's results: it can be answered again).

    With an answerer that can decline (an LLM: `llm_answers`), unanswerable questions score `abstention` (1 when
    the answer declines) and answerable ones `answer_rate` (1 when it does not), so declining everything is not
    rewarded. The extractive answerer always answers: both are then missing, never a constant. A `documents_only`
    retrieval (document judgements, no passages or reference answers) is answered nothing.
    """
    questions, references = retrieval.questions, retrieval.references
    chosen = retrieval.results()
    by_id = {q.id: q for q in questions}

    def answer(result: QuestionResult) -> None:
        try:
            result.answer = answerer.answer(result.question, [h["text"] for h in result.retrieved])
        except Exception as exc:  # an endpoint failure makes the answer missing, never invented
            result.errors["answer"] = f"{type(exc).__name__}: {exc}"[:300]

    missing: dict[str, str] = {}
    if not retrieval.documents_only:
        with ThreadPoolExecutor(answer_concurrency) as pool:
            for i, _ in enumerate(pool.map(answer, chosen), start=1):
                if progress:
                    progress("answer", i, len(chosen))
        if llm_answers:
            for result in chosen:
                name = ANSWER_RATE if by_id[result.id].answerable else ABSTENTION
                result.scores[name] = abstention_scores(result.answer, by_id[result.id].answerable)
        else:
            missing = dict.fromkeys((ABSTENTION, ANSWER_RATE), CANNOT_DECLINE)
        missing.update(answer_metrics([r for r in chosen if by_id[r.id].answerable], references))
        if not any(not q.answerable for q in questions):
            missing.setdefault(ABSTENTION, "the golden set has no unanswerable question")
    metric_names = sorted({m for r in chosen for m in r.scores} | set(missing))
    means = mean_scores(chosen, metric_names)
    coverage = coverage_of(chosen, metric_names)
    missing.update({m: "no question could be scored" for m, v in means.items() if v is None and m not in missing})
    return VersionScores(
        retrieval.version,
        retrieval.mode,
        answerer.name,
        chosen,
        means,
        missing,
        retrieval.sweep,
        coverage,
        retrieval.mode_scores,
        retrieval.failed,
    )


def abstention_scores(answer: str | None, answerable: bool) -> float | None:
    """1.0 when the system did the right thing: declined an unanswerable question, answered an answerable one."""
    if answer is None:
        return None
    return float(declines(answer) != answerable)


def _value(value: float | None) -> float:
    return -1.0 if value is None else value


def _ir_names(k: int) -> list[str]:
    return [f"{level}_{m}@{k}" for level in ("doc", "chunk") for m in ("hit_rate", "recall", "mrr", "ndcg")]
