"""Answer a question from retrieved chunks: an OpenAI-compatible LLM when configured, else an offline extractor."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tasks.embed.embedding import EmbedSpec, embed_spec, embed_texts
from tasks.errors import SettingsError
from tasks.secrets import secret_value
from tasks.settings import Settings

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[])|\n{2,}")
PROMPT = (
    "Answer the question using only the context passages. If they do not contain the answer, say "
    '"I don\'t know." Answer in at most three sentences.\n\nContext:\n{context}\n\nQuestion: {question}\nAnswer:'
)


class Answerer(Protocol):
    """Anything that turns a question and its retrieved contexts into an answer."""

    name: str

    def answer(self, question: str, contexts: list[str]) -> str: ...


@dataclass
class ExtractiveAnswerer:
    """Offline answerer: the sentences of the retrieved chunks most similar to the question, in reading order."""

    spec: EmbedSpec
    sentences: int = 2
    contexts_used: int = 3
    name: str = "offline extractive (best-matching sentences of the retrieved chunks; no LLM)"

    def answer(self, question: str, contexts: list[str]) -> str:
        """Pick the top sentences by embedding similarity."""
        candidates = [s.strip() for ctx in contexts[: self.contexts_used] for s in split_sentences(ctx)]
        candidates = [s for s in candidates if len(s) >= 20]
        if not candidates:
            return "I don't know."
        query = embed_texts([question], self.spec, role="query")[0]
        scores = embed_texts(candidates, self.spec, role="passage") @ query
        best = sorted(np.argsort(-scores)[: self.sentences])
        return " ".join(candidates[i] for i in best)


def split_sentences(text: str) -> list[str]:
    """Sentences and paragraph pieces of a chunk, headings stripped of their # marks."""
    pieces = _SENTENCE.split(text)
    return [re.sub(r"^#+\s*", "", p).replace("\n", " ").strip() for p in pieces if p and p.strip()]


def llm_api_key(settings: Settings) -> str:
    """The LLM API key: RAGOPS_LLM_API_KEY, else the Prefect Secret block RAGOPS_LLM_API_KEY_BLOCK names, else ''.

    Only these two sources: the key never travels in a flow parameter, a report or the promotion log.
    """
    return secret_value(settings.llm_api_key, settings.llm_api_key_block, "RAGOPS_LLM_API_KEY_BLOCK")


def redact_secrets(text: str, settings: Settings) -> str:
    """`text` with every secret of `settings` replaced by [redacted]: for error strings an endpoint or a store may
    echo a key in, before they are logged, stored or published. With an LLM or embeddings endpoint configured, the
    key its Secret block holds too (a block that cannot be read is left to the call that needs it to report)."""
    secrets = settings.secret_values()
    if settings.llm_configured and settings.llm_api_key_block and not settings.llm_api_key.get_secret_value():
        with contextlib.suppress(SettingsError):
            secrets.append(llm_api_key(settings))
    if settings.embed_base_url and settings.embed_api_key_block and not settings.embed_api_key.get_secret_value():
        with contextlib.suppress(SettingsError):
            secrets.append(
                secret_value(settings.embed_api_key, settings.embed_api_key_block, "RAGOPS_EMBED_API_KEY_BLOCK")
            )
    for secret in sorted(filter(None, secrets), key=len, reverse=True):  # a key inside another goes with it
        text = text.replace(secret, "[redacted]")
    return text


@dataclass
class LLMAnswerer:
    """Generation through any OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp)."""

    client: Any
    model: str
    max_tokens: int = 256
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"LLM {self.model}"

    def answer(self, question: str, contexts: list[str]) -> str:
        """One chat completion; errors propagate (the caller records the answer as missing)."""
        context = "\n\n".join(f"[{i + 1}] {c}" for i, c in enumerate(contexts))
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": PROMPT.format(context=context, question=question)}],
            temperature=0,
            max_tokens=self.max_tokens,
        )
        content = response.choices[0].message.content
        if not isinstance(content, str) or not content.strip():
            raise ValueError("the LLM returned no answer text")
        return content.strip()


def llm_client(settings: Settings) -> Any:
    """An OpenAI client for the configured endpoint: the settings' timeout, bounded retries and key."""
    from openai import OpenAI

    return OpenAI(
        base_url=settings.llm_base_url,
        api_key=llm_api_key(settings) or "not-needed",
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
    )


def make_answerer(settings: Settings) -> Answerer:
    """The LLM answerer when an endpoint is configured, else the offline extractive one (evaluation and serving)."""
    if not settings.llm_configured:
        return ExtractiveAnswerer(embed_spec(settings))
    return LLMAnswerer(llm_client(settings), settings.llm_model)
