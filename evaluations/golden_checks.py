"""Checks a golden-set item must pass: citations verbatim, answers supported and consistent with their evidence,
paraphrases without the evidence's words, no near-duplicates. Plain functions over text, testable without an LLM or
a table; `item_failures` runs every per-item check, and generation, review and `golden check` all call it.

Words are compared by their Snowball (Porter 2) stems, so "module"/"modules" and "compress"/"compression" match.
Negation is content: "not", "no", "never", "nor", "none", "nothing", "nobody", "nowhere", "neither", "without",
"cannot" and every n't contraction become the one token "not". The negation rule: a clause of the answer (sentences
split at . ; ! ?, clauses at commas and colons) is compared with every clause of the evidence, and every pair of
neighbouring clauses, that holds at least half of its topic words (content words besides negation); at least one
must agree with it: both negated or both not. A clause of the answer next to a negated clause may count as negated
("an alpha, where interfaces are not yet finalized"). So "X does not use Y" against "X uses Y" fails, and "X uses Y"
against "X does not use Y" fails too; a clause no evidence speaks about is left to the lexical floor. An answer
needs a topic word: "Yes.", "No" and "It does." fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from nltk.stem.snowball import SnowballStemmer

from evaluations.golden import GoldenQuestion, normalize_ws

# Words too common to count as shared content (English function words and question words). Negations are not here:
# they are content, counted as NEGATION.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each either else ever every few for from further had has have
    having he her here hers him his how however i if in into is it its itself just least less let like may me might
    more most much must my now of off on once one only or other our ours out over own per rather same she should since
    so some such than that the their theirs them then there these they this those though through thus to too under
    until up upon us very via was we were what when where whether which while who whom whose why will with within
    would yes yet you your yours""".split()  # noqa: SIM905
)
# The token every negation becomes.
NEGATION = "not"
NEGATIONS = frozenset(
    """not no never nor none nothing nobody nowhere neither without cannot dont doesnt didnt isnt arent wasnt werent
    hasnt havent hadnt wont wouldnt cant couldnt shouldnt mustnt""".split()  # noqa: SIM905
)
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
# Sentence and clause boundaries: punctuation followed by a space or the end of the text.
_SENTENCE_END = re.compile(r"[.;!?]+(?:\s+|$)")
_CLAUSE_END = re.compile(r"[,:]+(?:\s+|$)")
_STEMMER = SnowballStemmer("english")

# An answer counts as lexically supported when this share of its content words occurs in its evidence.
LEXICAL_SUPPORT_FLOOR = 0.5
# Two questions whose embeddings are at least this cosine-similar are near-duplicates: the later one is dropped.
NEAR_DUPLICATE_SIMILARITY = 0.92
# An evidence passage is 10 to 600 characters long and holds at least this many content words (not a bare heading).
MIN_CITATION_WORDS = 3


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball (Porter 2) English stem of a lower-case word: "compression" and "compressed" share "compress"."""
    return str(_STEMMER.stem(word))


def _tokens(text: str) -> list[str]:
    """Lower-case words of `text`, possessives cut ("zlib's" → "zlib"), every negation as NEGATION."""
    out = []
    for raw in _WORD.findall(text.lower().replace("_", " ")):
        word = raw.replace("’", "'")
        if word.endswith("n't"):
            out.append(NEGATION)
            continue
        word = word.split("'")[0]
        out.append(NEGATION if word in NEGATIONS else word)
    return out


def content_words(text: str) -> set[str]:
    """Stems of the words of `text` that carry content: negations (as NEGATION), digits, and other words of three
    characters or more that are not stopwords."""
    words = set()
    for word in _tokens(text):
        if word == NEGATION:
            words.add(NEGATION)
        elif word not in STOPWORDS and (len(word) >= 3 or word.isdigit()):
            words.add(stem(word))
    return words


def topic_words(text: str) -> set[str]:
    """Content words other than negation: what a text is about."""
    return content_words(text) - {NEGATION}


def _evidence_words(passages: Sequence[str]) -> set[str]:
    words: set[str] = set()
    for passage in passages:
        words |= content_words(passage)
    return words


def shared_words(question: str, passages: Sequence[str]) -> set[str]:
    """Content words a question shares with its evidence, negation aside (a paraphrase question must share none)."""
    return topic_words(question) & _evidence_words(passages)


def lexical_support(answer: str, passages: Sequence[str]) -> float:
    """Share of the answer's content words (negation included) that occur in its passages; 0.0 for an answer with
    no content word besides negation ("Yes.", "No"), which nothing can support."""
    if not topic_words(answer):
        return 0.0
    words = content_words(answer)
    return len(words & _evidence_words(passages)) / len(words)


def clauses(text: str) -> list[list[str]]:
    """The sentences of `text` (split at . ; ! ? and a space), each as its clauses (split at commas and colons)."""
    return [
        [part.strip() for part in _CLAUSE_END.split(sentence) if part.strip()]
        for sentence in _SENTENCE_END.split(text)
        if sentence.strip()
    ]


def _units(text: str) -> list[tuple[set[str], bool]]:
    """Topic words and negation of each clause of `text` and of each pair of neighbouring clauses of a sentence."""
    out = []
    for parts in clauses(text):
        for i in range(len(parts)):
            for j in range(i + 1, min(i + 3, len(parts) + 1)):
                words = content_words(" ".join(parts[i:j]))
                out.append((words - {NEGATION}, NEGATION in words))
    return out


def negation_mismatches(answer: str, passages: Sequence[str]) -> list[str]:
    """Clauses of the answer whose negation no evidence clause about the same words shares (the module's rule)."""
    evidence = [unit for passage in passages for unit in _units(passage)]
    out = []
    for parts in clauses(answer):
        for i, part in enumerate(parts):
            topic = topic_words(part)
            close = {negated for words, negated in evidence if topic and 2 * len(topic & words) >= len(topic)}
            if not close:
                continue  # no evidence says what this clause is about: left to the lexical floor
            negated = NEGATION in content_words(part)
            neighbours = [NEGATION in content_words(parts[j]) for j in (i - 1, i + 1) if 0 <= j < len(parts)]
            if not ({negated} | {negated or other for other in neighbours}) & close:
                out.append(part)
    return out


def verbatim_in(passage: str, texts: Sequence[str]) -> bool:
    """True when the passage occurs verbatim, whitespace-normalized, in one of the texts (a document's chunks)."""
    wanted = normalize_ws(passage)
    return bool(wanted) and any(wanted in normalize_ws(text) for text in texts)


def citable(passage: str) -> bool:
    """True for a passage long enough to cite and short enough to check: 10 to 600 characters, three content words."""
    return 10 <= len(passage) <= 600 and len(content_words(passage)) >= MIN_CITATION_WORDS


@dataclass(frozen=True)
class ItemFailure:
    """A check an item failed: `reason` is what it is counted under, `detail` what was wrong with this item."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def item_failures(item: GoldenQuestion, doc_texts: Mapping[str, str | Sequence[str]] | None) -> list[ItemFailure]:
    """Every check `item` fails, in the order generation reports them; [] for an item that passes.

    `doc_texts` maps a doc_id to its text or the texts of its chunks; None skips the verbatim-citation check (an
    edit in review changes the question and answer, not the evidence). Items judged by documents (BEIR) have no
    answer or passage to check. An unanswerable item's answer is not checked against evidence (it has none).
    """
    if item.judged_docs is not None:
        return []
    failures = []
    for ev in item.evidence:
        if doc_texts is not None:
            found = doc_texts.get(ev.doc_id)
            if found is None:
                failures.append(ItemFailure("citation not in its document", f"unknown document {ev.doc_id!r}"))
                continue
            texts = [found] if isinstance(found, str) else list(found)
            if not verbatim_in(ev.passage, texts):
                failures.append(
                    ItemFailure(
                        "citation not in its document", f"passage not found in {ev.doc_id}: {ev.passage[:80]!r}"
                    )
                )
                continue
        if not citable(ev.passage):
            detail = (
                f"{len(ev.passage)} characters, {len(content_words(ev.passage))} content words: {ev.passage[:80]!r}"
            )
            failures.append(ItemFailure("citation too short or too long", detail))
    if item.kind == "unanswerable":
        if item.evidence:
            failures.append(ItemFailure("unanswerable question cites evidence", item.question[:120]))
        return failures
    if not item.evidence:
        failures.append(ItemFailure("no evidence cited", item.question[:120]))
        return failures
    if item.kind == "multi_document" and len({ev.doc_id for ev in item.evidence}) < 2:
        failures.append(ItemFailure("multi-document evidence from one document", item.evidence[0].doc_id))
    passages = [ev.passage for ev in item.evidence]
    if item.kind == "paraphrase" and (shared := shared_words(item.question, passages)):
        failures.append(ItemFailure("paraphrase shares words with its evidence", ", ".join(sorted(shared)[:5])))
    answer = item.reference_answer
    if not topic_words(answer):
        failures.append(ItemFailure("answer has no content word", repr(answer[:80])))
        return failures
    support = lexical_support(answer, passages)
    if support < LEXICAL_SUPPORT_FLOOR:
        failures.append(
            ItemFailure("answer not supported (lexical floor)", f"{support:.2f} of its content words in the evidence")
        )
    if mismatched := negation_mismatches(answer, passages):
        failures.append(
            ItemFailure("answer's negation differs from its evidence", "; ".join(repr(c[:80]) for c in mismatched))
        )
    return failures


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
