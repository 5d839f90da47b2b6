"""ragas metrics per question: the ones that need no LLM always, the LLM-judged ones when an endpoint is set.

ragas is never handed a default LLM, so it never asks for OPENAI_API_KEY; a metric that cannot be computed is
reported missing with the reason, never as a number.
"""

from __future__ import annotations

import math
from typing import Any

from ragas import SingleTurnSample
from ragas.embeddings import BaseRagasEmbeddings
from ragas.metrics import (
    FactualCorrectness,
    Faithfulness,
    IDBasedContextPrecision,
    IDBasedContextRecall,
    LLMContextPrecisionWithReference,
    NonLLMContextPrecisionWithReference,
    NonLLMContextRecall,
    ResponseRelevancy,
    RougeScore,
    SemanticSimilarity,
)

from evaluations.golden import GoldenQuestion
from evaluations.scoring import QuestionResult
from tasks.embedding import EmbedSpec, embed_texts
from tasks.settings import Settings

OFFLINE_METRICS = [
    "id_based_context_precision",
    "id_based_context_recall",
    "non_llm_context_precision_with_reference",
    "non_llm_context_recall",
    "rouge_score",
    "semantic_similarity",
]
LLM_METRICS = ["faithfulness", "answer_relevancy", "llm_context_precision_with_reference", "factual_correctness"]
NO_LLM = "no LLM endpoint configured (set RAGOPS_LLM_BASE_URL and RAGOPS_LLM_MODEL)"


class LocalEmbeddings(BaseRagasEmbeddings):
    """ragas embeddings backed by the project's own embedding model (no network)."""

    def __init__(self, spec: EmbedSpec) -> None:
        from ragas.run_config import RunConfig

        super().__init__()
        self.spec = spec
        self.set_run_config(RunConfig())

    def embed_query(self, text: str) -> list[float]:
        return embed_texts([text], self.spec)[0].tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return embed_texts(list(texts), self.spec).tolist()

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)


def ragas_llm(settings: Settings) -> Any:
    """A ragas LLM over the configured OpenAI-compatible endpoint, with timeout and bounded retries."""
    from langchain_openai import ChatOpenAI
    from ragas.llms import LangchainLLMWrapper
    from ragas.run_config import RunConfig

    chat = ChatOpenAI(
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value() or "not-needed",  # type: ignore[arg-type]
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        temperature=0,
    )
    return LangchainLLMWrapper(
        chat, run_config=RunConfig(timeout=int(settings.llm_timeout_s), max_retries=settings.llm_max_retries)
    )


def score_answers(
    results: list[QuestionResult],
    reference_ids: dict[str, list[str]],
    questions: dict[str, GoldenQuestion],
    spec: EmbedSpec,
    llm: Any = None,
) -> dict[str, str]:
    """Add ragas scores to each answerable result; return {metric: reason} for metrics left missing."""
    embeddings = LocalEmbeddings(spec)
    offline: list[Any] = [
        IDBasedContextPrecision(),
        IDBasedContextRecall(),
        NonLLMContextPrecisionWithReference(),
        NonLLMContextRecall(),
        RougeScore(),
        SemanticSimilarity(embeddings=embeddings),
    ]
    judged: list[Any] = []
    if llm is not None:
        judged = [
            Faithfulness(llm=llm),
            ResponseRelevancy(llm=llm, embeddings=embeddings),
            LLMContextPrecisionWithReference(llm=llm),
            FactualCorrectness(llm=llm),
        ]
    failures: dict[str, str] = {}
    for result in results:
        question = questions[result.id]
        if not question.answerable:
            continue
        sample = SingleTurnSample(
            user_input=question.question,
            retrieved_contexts=[h["text"] for h in result.retrieved],
            retrieved_context_ids=[h["chunk_id"] for h in result.retrieved],
            reference_contexts=[ev.passage for ev in question.evidence],
            reference_context_ids=reference_ids.get(result.id, []),
            response=result.answer or "",
            reference=question.reference_answer,
        )
        for metric in offline + judged:
            needs_answer = metric.name in ("rouge_score", "semantic_similarity", *LLM_METRICS)
            if needs_answer and result.answer is None:
                result.scores[metric.name] = None
                result.errors[metric.name] = "no answer: " + result.errors.get("answer", "generation failed")
                continue
            try:
                value = float(metric.single_turn_score(sample))
                result.scores[metric.name] = None if math.isnan(value) else value
                if math.isnan(value):
                    result.errors[metric.name] = "ragas returned NaN"
            except Exception as exc:  # ragas and LLM clients raise many types; the metric is then missing
                result.scores[metric.name] = None
                result.errors[metric.name] = f"{type(exc).__name__}: {exc}"[:300]
                failures.setdefault(metric.name, result.errors[metric.name])
    missing = {} if llm is not None else dict.fromkeys(LLM_METRICS, NO_LLM)
    for name, reason in failures.items():
        if all(r.scores.get(name) is None for r in results if questions[r.id].answerable):
            missing[name] = reason
    return missing
