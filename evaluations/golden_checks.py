"""Checks a generated golden-set item must pass: citations verbatim, answers supported, paraphrases without the
evidence's words, no near-duplicates. Plain functions over text, testable without an LLM or a table."""

from __future__ import annotations

import re

import numpy as np

from evaluations.golden import normalize_ws

# Words too common to count as shared content (English function words and question words).
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each either else ever every few for from further had has have
    having he her here hers him his how however i if in into is it its itself just least less let like may me might
    more most much must my no nor not now of off on once one only or other our ours out over own per rather same she
    should since so some such than that the their theirs them then there these they this those though through thus to
    too under until up upon us very via was we were what when where whether which while who whom whose why will with
    within without would yes yet you your yours isn aren wasn weren doesn don didn hasn haven hadn won wouldn can
    couldn shouldn mustn""".split()  # noqa: SIM905
)
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "es", "ed", "ly", "s")

# An answer counts as lexically supported when this share of its content words occurs in its evidence.
LEXICAL_SUPPORT_FLOOR = 0.5
# Two questions whose embeddings are at least this cosine-similar are near-duplicates: the later one is dropped.
NEAR_DUPLICATE_SIMILARITY = 0.92


def stem(word: str) -> str:
    """A crude suffix-stripping stem, enough to see that "compressing" and "compressed" share a word."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Stems of the words of `text` that carry content: not stopwords, three characters or more, or digits."""
    words = [w.replace("’", "'").split("'")[0] for w in _WORD.findall(text.lower().replace("_", " "))]
    return {stem(w) for w in words if w not in STOPWORDS and (len(w) >= 3 or w.isdigit())}


def shared_words(question: str, passages: list[str]) -> set[str]:
    """Content words a question shares with its evidence (a paraphrase question must share none)."""
    evidence: set[str] = set()
    for passage in passages:
        evidence |= content_words(passage)
    return content_words(question) & evidence


def lexical_support(answer: str, passages: list[str]) -> float:
    """Share of the answer's content words that occur in its passages (1.0 for an answer with none)."""
    words = content_words(answer)
    if not words:
        return 1.0
    evidence: set[str] = set()
    for passage in passages:
        evidence |= content_words(passage)
    return len(words & evidence) / len(words)


def verbatim_in(passage: str, texts: list[str]) -> bool:
    """True when the passage occurs verbatim, whitespace-normalized, in one of the texts (a document's chunks)."""
    wanted = normalize_ws(passage)
    return bool(wanted) and any(wanted in normalize_ws(text) for text in texts)


def near_duplicates(vectors: np.ndarray, threshold: float = NEAR_DUPLICATE_SIMILARITY) -> list[int | None]:
    """For each (normalized) question vector, the index of an earlier kept one it nearly repeats, else None.

    Greedy in order: a question is compared only with the questions kept before it.
    """
    kept: list[int] = []
    out: list[int | None] = []
    for i, vector in enumerate(vectors):
        twin = None
        if kept:
            sims = vectors[kept] @ vector
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                twin = kept[best]
        out.append(twin)
        if twin is None:
            kept.append(i)
    return out
