"""Score one table version on a golden set: retrieval in each mode, answers, IR and ragas metrics per question."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from evaluations.answering import Answerer
from evaluations.golden import GoldenQuestion, normalize_ws
from evaluations.ir_metrics import dedupe, ranking_metrics
from tasks.embedding import EmbedSpec
from tasks.lancedb_store import in_list
from tasks.retrieval import AnnQuery, SearchHit, search, split_mode

NOT_MEASURED = "not measured"


@dataclass
class QuestionResult:
    """Everything measured for one question on one version."""

    id: str
    kind: str
    question: str
    retrieved: list[dict[str, Any]]
    answer: str | None
    scores: dict[str, float | None]
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class VersionScores:
    """A version's per-question results in its chosen mode, the means, and the mode sweep."""

    version: int
    mode: str
    answerer: str
    questions: list[QuestionResult]
    means: dict[str, float | None]
    missing: dict[str, str]
    sweep: dict[str, dict[str, float | None]]

    def per_question(self, metric: str) -> dict[str, float]:
        """question id → score, for questions where the metric was computed."""
        out = {}
        for q in self.questions:
            value = q.scores.get(metric)
            if value is not None and not math.isnan(value):
                out[q.id] = value
        return out


def covers(chunk_text: str, passage: str) -> bool:
    """True when a chunk holds the passage, or at least half of it (a passage cut by a chunk boundary)."""
    chunk, wanted = normalize_ws(chunk_text), normalize_ws(passage)
    if wanted in chunk:
        return True
    match = SequenceMatcher(None, chunk, wanted, autojunk=False).find_longest_match(0, len(chunk), 0, len(wanted))
    return match.size >= max(30, len(wanted) // 2)


def retrieval_scores(question: GoldenQuestion, hits: list[SearchHit], k: int) -> dict[str, float]:
    """Doc-level and passage-level hit rate, recall, MRR and nDCG at k."""
    docs = dedupe([h.doc_id for h in hits])
    scores = ranking_metrics(docs, question.relevant_docs, k, "doc")
    grades = {f"p{i}": ev.relevance for i, ev in enumerate(question.evidence)}
    ranked: list[str] = []
    found: set[str] = set()
    for rank, hit in enumerate(hits[:k]):
        label = f"miss{rank}"
        for i, ev in enumerate(question.evidence):
            pid = f"p{i}"
            if pid not in found and ev.doc_id == hit.doc_id and covers(hit.text, ev.passage):
                label = pid
                found.add(pid)
                break
        ranked.append(label)
    scores.update(ranking_metrics(ranked, grades, k, "chunk"))
    return scores


def reference_chunk_ids(table: Any, questions: list[GoldenQuestion]) -> dict[str, list[str]]:
    """question id → ids of the version's chunks that hold its evidence (for ragas' id-based metrics)."""
    doc_ids = sorted({ev.doc_id for q in questions for ev in q.evidence})
    if not doc_ids:
        return {}
    data = table.to_lance().to_table(columns=["chunk_id", "doc_id", "text"], filter=in_list("doc_id", doc_ids))
    by_doc: dict[str, list[tuple[str, str]]] = {}
    for cid, did, text in zip(*(data.column(c).to_pylist() for c in ("chunk_id", "doc_id", "text")), strict=True):
        by_doc.setdefault(did, []).append((cid, text))
    return {
        q.id: sorted({cid for ev in q.evidence for cid, text in by_doc.get(ev.doc_id, []) if covers(text, ev.passage)})
        for q in questions
    }


def mean_scores(results: list[QuestionResult], metrics: list[str]) -> dict[str, float | None]:
    """Mean of each metric over the questions where it was computed (None when none)."""
    means: dict[str, float | None] = {}
    for metric in metrics:
        values = [v for r in results if (v := r.scores.get(metric)) is not None and not math.isnan(v)]
        means[metric] = round(statistics.fmean(values), 6) if values else None
    return means


def score_version(
    table: Any,
    version: int,
    questions: list[GoldenQuestion],
    spec: EmbedSpec,
    modes: list[str],
    k: int,
    primary_metric: str,
    answerer: Answerer,
    answer_metrics: Callable[[list[QuestionResult], dict[str, list[str]]], dict[str, str]],
    progress: Callable[[str, int, int], None] | None = None,
    answer_concurrency: int = 1,
    ann: AnnQuery | None = None,
) -> VersionScores:
    """Sweep retrieval modes, keep the best by `primary_metric`, then answer and score answers in that mode."""
    answerable = [q for q in questions if q.answerable]
    sweep: dict[str, dict[str, float | None]] = {}
    per_mode: dict[str, list[QuestionResult]] = {}
    total = len(modes) * len(questions)
    done = 0
    for mode in modes:
        results = []
        for q in questions:
            base, weight = split_mode(mode)
            hits = search(table, q.question, spec, mode=base, k=k, fusion_weight=weight, ann=ann)
            scores: dict[str, float | None] = dict(retrieval_scores(q, hits, k)) if q.answerable else {}
            retrieved = [
                {"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": round(h.score, 5), "text": h.text} for h in hits
            ]
            results.append(QuestionResult(q.id, q.kind, q.question, retrieved, None, scores))
            done += 1
            if progress:
                progress("retrieve", done, total)
        per_mode[mode] = results
        sweep[mode] = mean_scores([r for r in results if r.kind != "unanswerable"], _ir_names(k))
    best = max(modes, key=lambda m: (sweep[m].get(primary_metric) or -1.0, -modes.index(m)))
    chosen = per_mode[best]
    contexts = {r.id: [h["text"] for h in r.retrieved] for r in chosen}

    def answer(pair: tuple[QuestionResult, GoldenQuestion]) -> None:
        result, q = pair
        try:
            result.answer = answerer.answer(q.question, contexts[q.id])
        except Exception as exc:  # an endpoint failure makes the answer missing, never invented
            result.errors["answer"] = f"{type(exc).__name__}: {exc}"[:300]

    with ThreadPoolExecutor(answer_concurrency) as pool:
        for i, _ in enumerate(pool.map(answer, zip(chosen, questions, strict=True)), start=1):
            if progress:
                progress("answer", i, len(questions))
    reference_ids = reference_chunk_ids(table, answerable)
    missing = answer_metrics(chosen, reference_ids)
    metric_names = sorted({m for r in chosen for m in r.scores} | set(missing))
    means = mean_scores([r for r in chosen if r.kind != "unanswerable"], metric_names)
    missing.update({m: "no question could be scored" for m, v in means.items() if v is None and m not in missing})
    return VersionScores(version, best, answerer.name, chosen, means, missing, sweep)


def _ir_names(k: int) -> list[str]:
    return [f"{level}_{m}@{k}" for level in ("doc", "chunk") for m in ("hit_rate", "recall", "mrr", "ndcg")]
