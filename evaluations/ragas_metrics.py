"""ragas metrics per question: the ones that need no LLM always, the LLM-judged ones when an endpoint is set.

ragas is never handed a default LLM, so it never asks for OPENAI_API_KEY; a metric that cannot be computed is
reported missing with the reason, never as a number. ragas' non-LLM context precision and recall compare retrieved
chunks with reference contexts by Levenshtein similarity, which cannot match a 200-token chunk to the one-sentence
passage it holds; they are given a containment measure instead (`PassageContainment`).
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ragas import SingleTurnSample
from ragas.embeddings import BaseRagasEmbeddings
from ragas.metrics import (
    FactualCorrectness,
    Faithfulness,
    IDBasedContextRecall,
    LLMContextPrecisionWithReference,
    NonLLMContextPrecisionWithReference,
    ResponseRelevancy,
    RougeScore,
    SemanticSimilarity,
)
from ragas.metrics.base import MetricType, SingleTurnMetric

from evaluations.golden import GoldenQuestion
from evaluations.scoring import QuestionResult, ReferenceChunk, covers
from tasks.embed.embedding import EmbedSpec, embed_texts
from tasks.serve.answering import llm_api_key
from tasks.settings import Settings

# Not computed, because no reviewer learns anything from them: non_llm_context_recall (with passage containment as
# its measure it is chunk_recall@k to the digit) and id_based_context_precision (reference chunks over k retrieved:
# about 1/k by construction).
OFFLINE_METRICS = [
    "id_based_context_recall",
    "non_llm_context_precision_with_reference",
    "rouge_score",
    "semantic_similarity",
]
LLM_METRICS = ["faithfulness", "answer_relevancy", "llm_context_precision_with_reference", "factual_correctness"]
# Context metrics of a question whose retrieval came back empty (full-text search matching no word): nothing relevant
# was found, so they are 0, as trec_eval scores an empty ranking; ragas would return NaN or raise.
CONTEXT_METRICS = {
    "id_based_context_recall",
    "non_llm_context_precision_with_reference",
    "llm_context_precision_with_reference",
}
NO_LLM = "no LLM endpoint configured (set RAGOPS_LLM_BASE_URL and RAGOPS_LLM_MODEL)"


@dataclass
class PassageContainment(SingleTurnMetric):
    """1.0 when a retrieved chunk (`reference`) holds an evidence passage (`response`), else 0.0.

    The distance measure ragas' non-LLM context metrics call as measure(reference=retrieved, response=reference).
    """

    name: str = "passage_containment"
    _required_columns: dict[MetricType, set[str]] = field(
        default_factory=lambda: {MetricType.SINGLE_TURN: {"reference", "response"}}
    )

    def init(self, run_config: Any) -> None:
        pass

    async def _single_turn_ascore(self, sample: SingleTurnSample, callbacks: Any) -> float:
        return 1.0 if covers(sample.reference or "", sample.response or "") else 0.0

    async def _ascore(self, row: dict[str, Any], callbacks: Any) -> float:
        return await self._single_turn_ascore(SingleTurnSample(**row), callbacks)


def offline_metrics(embeddings: BaseRagasEmbeddings) -> list[Any]:
    """The ragas metrics that need no LLM, the context ones judging containment of the evidence passages."""
    return [
        IDBasedContextRecall(),
        NonLLMContextPrecisionWithReference(distance_measure=PassageContainment()),
        RougeScore(),
        SemanticSimilarity(embeddings=embeddings),
    ]


class LocalEmbeddings(BaseRagasEmbeddings):
    """ragas embeddings backed by the project's own embedding model (no network)."""

    def __init__(self, spec: EmbedSpec) -> None:
        from ragas.run_config import RunConfig

        super().__init__()
        self.spec = spec
        self.set_run_config(RunConfig())

    def embed_query(self, text: str) -> list[float]:
        return embed_texts([text], self.spec, role="query")[0].tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        # ragas compares like with like (generated questions with the question, an answer with the reference): a
        # symmetric task, for which E5-style models want the query prompt on both sides
        return embed_texts(list(texts), self.spec, role="query").tolist()

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)


def ragas_llm(settings: Settings) -> Any:
    """A ragas LLM over the configured OpenAI-compatible endpoint, with timeout and bounded retries.

    The OpenAI client does the retrying (with backoff, honouring Retry-After); ragas gets one attempt, because its own
    retry of rate limits would wrap the client's and multiply the attempts per call.
    """
    from langchain_openai import ChatOpenAI
    from ragas.llms import LangchainLLMWrapper
    from ragas.run_config import RunConfig

    chat = ChatOpenAI(
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=llm_api_key(settings) or "not-needed",  # type: ignore[arg-type]
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        temperature=0,
    )
    return LangchainLLMWrapper(chat, run_config=RunConfig(timeout=math.ceil(settings.llm_timeout_s), max_retries=1))


def score_answers(
    results: list[QuestionResult],
    references: dict[str, list[ReferenceChunk]],
    questions: dict[str, GoldenQuestion],
    spec: EmbedSpec,
    llm: Any = None,
    concurrency: int = 4,
    timeout_s: float = 120.0,
) -> dict[str, str]:
    """Add ragas scores to each answerable result; return {metric: reason} for metrics left missing.

    Offline metrics run in turn (local CPU); LLM-judged metrics run `concurrency` at a time, each call bounded by
    `timeout_s` on top of the client's own timeout and retries.
    """
    embeddings = LocalEmbeddings(spec)
    offline = offline_metrics(embeddings)
    judged: list[Any] = []
    if llm is not None:
        judged = [
            Faithfulness(llm=llm),
            ResponseRelevancy(llm=llm, embeddings=embeddings),
            LLMContextPrecisionWithReference(llm=llm),
            FactualCorrectness(llm=llm),
        ]
    jobs: list[tuple[QuestionResult, SingleTurnSample, Any]] = []
    for result in results:
        question = questions[result.id]
        if not question.answerable:
            continue
        sample = SingleTurnSample(
            user_input=question.question,
            retrieved_contexts=[h["text"] for h in result.retrieved],
            retrieved_context_ids=[h["chunk_id"] for h in result.retrieved],
            reference_contexts=[ev.passage for ev in question.evidence],
            reference_context_ids=reference_ids(question, references.get(result.id, [])),
            response=result.answer or "",
            reference=question.reference_answer,
        )
        for metric in offline + judged:
            if metric.name in ("rouge_score", "semantic_similarity", *LLM_METRICS) and result.answer is None:
                _record(result, metric.name, None, "no answer: " + result.errors.get("answer", "generation failed"))
            elif metric.name in CONTEXT_METRICS and not result.retrieved:
                _record(result, metric.name, 0.0)
            else:
                jobs.append((result, sample, metric))

    for result, sample, metric in (job for job in jobs if job[2].name not in LLM_METRICS):
        try:
            _record(result, metric.name, float(metric.single_turn_score(sample)))
        except Exception as exc:  # ragas raises many types; the metric is then missing for this question
            _record(result, metric.name, None, f"{type(exc).__name__}: {exc}")
    llm_jobs = [job for job in jobs if job[2].name in LLM_METRICS]
    if llm_jobs:
        with ThreadPoolExecutor(1) as pool:  # a fresh event loop, whatever the caller runs in
            pool.submit(asyncio.run, _score_concurrently(llm_jobs, concurrency, timeout_s)).result()

    missing = {} if llm is not None else dict.fromkeys(LLM_METRICS, NO_LLM)
    for metric in offline + judged:
        scored = [r for r in results if questions[r.id].answerable]
        if scored and all(r.scores.get(metric.name) is None for r in scored):
            first_error = next((r.errors[metric.name] for r in scored if metric.name in r.errors), "not computed")
            missing[metric.name] = first_error
    return missing


def reference_ids(question: GoldenQuestion, references: list[ReferenceChunk]) -> list[str]:
    """Ids of the chunks that hold the evidence, plus a placeholder for each passage no chunk holds (never found)."""
    held = {p for r in references for p in r.passages}
    missing = [f"missing:{ev.doc_id}#p{i}" for i, ev in enumerate(question.evidence) if f"p{i}" not in held]
    return [r.chunk_id for r in references] + missing


async def _score_concurrently(
    jobs: list[tuple[QuestionResult, SingleTurnSample, Any]], concurrency: int, timeout_s: float
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(result: QuestionResult, sample: SingleTurnSample, metric: Any) -> None:
        async with gate:
            try:
                value = await asyncio.wait_for(metric.single_turn_ascore(sample), timeout_s)
                _record(result, metric.name, float(value))
            except TimeoutError:  # asyncio's carries no message
                _record(result, metric.name, None, f"TimeoutError: no score within {timeout_s:g} s")
            except Exception as exc:  # HTTP errors, malformed JSON: the metric is missing
                _record(result, metric.name, None, f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(*job) for job in jobs))


def _record(result: QuestionResult, name: str, value: float | None, error: str | None = None) -> None:
    """Store a score; NaN and failures become None with the reason kept."""
    if value is not None and math.isnan(value):
        value, error = None, "ragas returned NaN"
    result.scores[name] = value
    if error:
        result.errors[name] = error[:300]


def faithfulness_scores(
    samples: list[SingleTurnSample], llm: Any, concurrency: int = 4, timeout_s: float = 120.0
) -> tuple[list[float], list[str]]:
    """ragas faithfulness of each (question, contexts, answer) sample: the scores made, and the others' errors."""
    results = [QuestionResult(str(i), "served", s.user_input or "", [], s.response, {}) for i, s in enumerate(samples)]
    jobs = [(result, sample, Faithfulness(llm=llm)) for result, sample in zip(results, samples, strict=True)]
    with ThreadPoolExecutor(1) as pool:  # a fresh event loop, whatever the caller runs in
        pool.submit(asyncio.run, _score_concurrently(jobs, concurrency, timeout_s)).result()
    scores = [r.scores["faithfulness"] for r in results if r.scores.get("faithfulness") is not None]
    errors = [r.errors["faithfulness"] for r in results if "faithfulness" in r.errors]
    return [float(s) for s in scores if s is not None], errors
