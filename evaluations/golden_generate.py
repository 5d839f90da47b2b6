"""Generate a golden set from the chunks of a table version: one prompt per chunk (two for multi-document), then
checks that no unverified item survives.

Why not ragas' test-set generation: it builds a knowledge graph first (headline, summary, theme and entity
extraction over every document: several LLM calls per document before the first question), and its
`reference_contexts` are not checked against the source. A question per sampled chunk costs one generation call and
one support check per item, and every citation can be checked where it was taken from. What each item must pass
(`golden_checks.item_failures`, which `ragops golden review` and `golden check` run too, except the LLM check):

- its evidence passages occur verbatim (whitespace-normalized) in a chunk of the document they cite, and each
  holds at least three content words (not a bare heading);
- its reference answer has a content word besides negation ("Yes." does not), and is supported by the evidence: a
  lexical floor (LEXICAL_SUPPORT_FLOOR of the answer's content words, negation included, occur in the evidence),
  negation consistent with it ("does not use" against "uses" fails) and an LLM check;
- paraphrase: the question shares no content word with its evidence (checked, not trusted);
- unanswerable: retrieval over the version finds no chunk at least as similar as the no-good-answer line;
- multi_document: its evidence comes from two documents;
- no near-duplicate of a question kept before it.

Items that fail are dropped and counted by reason; the rest are written as drafts for review. Drafts from served
queries (`served_query_drafts`) pass the same item checks, the served answer included.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from evaluations.golden import Evidence, GoldenQuestion, QuestionKind
from evaluations.golden_checks import citable, item_failures, near_duplicates
from evaluations.golden_sampling import DEFAULT_MIX, SourceChunk, StratifiedSampler, plan_kinds

UNANSWERABLE_ANSWER = "The documents in this corpus do not answer this."
GENERATE_HEAD = "You write one test question for a search system over a document collection. Kind: {kind}."
INSTRUCTIONS = {
    "factoid": "Ask one specific question that a single fact stated in the passage answers. Answer in one short "
    "sentence. Evidence: the sentence of the passage that states the fact.",
    "multi_sentence": "Ask one question whose answer needs two or more sentences of the passage together (how or "
    "why something works, or several conditions). Answer in two or three sentences. Evidence: those sentences.",
    "paraphrase": "Ask one question as a user who has not read the passage would: use none of the passage's "
    "content words (no noun, verb, adjective, name or number that occurs in it; describe things in other words). "
    "Answer in one or two sentences. Evidence: the sentences of the passage that answer it.",
    "unanswerable": "Ask one plausible question about the subject of the passage that neither the passage nor the "
    "rest of a collection on this subject is likely to answer (a neighbouring topic it does not cover). Answer "
    f'"{UNANSWERABLE_ANSWER}". Evidence: an empty list.',
    "multi_document": "Ask one question that needs both passages to answer (it combines or compares a fact from "
    "each). Answer in one to three sentences. Evidence: at least one sentence from each passage.",
}
GENERATE_TAIL = (
    "Reply with one JSON object and nothing else, in this form:\n"
    '{{"question": "...", "answer": "...", "evidence": [{{"passage": 1, "text": "..."}}]}}\n'
    "Every evidence text must be copied exactly, character for character, from the passage whose number it gives.\n"
    "\n{passages}"
)
SUPPORT_PROMPT = (
    "Check an answer against its evidence.\n\n{passages}\n\nQuestion: {question}\nAnswer: {answer}\n\n"
    "Is every claim of the answer stated in, or directly implied by, the evidence? Reply with one JSON object and "
    'nothing else: {{"supported": true or false, "reason": "..."}}'
)
PASSAGE = '<passage number="{number}" doc="{doc}">\n{text}\n</passage>'
EVIDENCE = '<evidence doc="{doc}">\n{text}\n</evidence>'


def prompt_hash(kind: str) -> str:
    """SHA-256 (first 16 hex digits) of the prompts an item of this kind was made and checked with."""
    text = "\n".join([GENERATE_HEAD, INSTRUCTIONS[kind], GENERATE_TAIL, SUPPORT_PROMPT, PASSAGE, EVIDENCE])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def generation_prompt(kind: str, chunks: list[SourceChunk]) -> str:
    """The prompt that asks for one item of `kind` from these chunks."""
    passages = "\n\n".join(
        PASSAGE.format(number=i, doc=c.doc_id, text=c.text.strip()) for i, c in enumerate(chunks, start=1)
    )
    return "\n".join([GENERATE_HEAD.format(kind=kind), INSTRUCTIONS[kind], GENERATE_TAIL.format(passages=passages)])


def support_prompt(question: str, answer: str, evidence: list[Evidence]) -> str:
    """The prompt that asks whether the evidence supports the answer."""
    passages = "\n\n".join(EVIDENCE.format(doc=ev.doc_id, text=ev.passage) for ev in evidence)
    return SUPPORT_PROMPT.format(passages=passages, question=question, answer=answer)


def parse_json_object(text: str) -> dict[str, Any]:
    """The JSON object in an LLM reply (code fences and chatter around it tolerated); ValueError when none."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    if 0 <= text.find("[") < start:  # a list of objects is not the one object asked for
        raise ValueError("the reply is not a JSON object")
    value = json.loads(text[start : end + 1])
    if not isinstance(value, dict):
        raise ValueError("the reply is not a JSON object")
    return value


class Dropped(Exception):
    """An item that failed a check; `reason` is what it is counted under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Candidate:
    """A generated item that passed the per-item checks, before the unanswerable and near-duplicate checks."""

    kind: str
    question: str
    answer: str
    evidence: list[Evidence]
    chunks: list[SourceChunk]


@dataclass
class GenerationResult:
    """What a generation run kept, what it dropped and why, and what it cost."""

    requested: int
    kept: list[GoldenQuestion] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason → one example of what was dropped
    attempts: int = 0
    llm_calls: int = 0
    seconds: float = 0.0
    planned: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The counts the CLI, the flow's artifact and the set's header show."""
        kinds = Counter(q.kind for q in self.kept)
        docs = Counter(doc for q in self.kept for doc in {ev.doc_id for ev in q.evidence})
        kept = len(self.kept)
        return {
            "requested": self.requested,
            "planned": self.planned,
            "attempts": self.attempts,
            "kept": kept,
            "dropped": dict(self.dropped.most_common()),
            "drop_examples": self.examples,
            "kinds": dict(kinds),
            "documents_covered": len(docs),
            "max_items_per_document": max(docs.values(), default=0),
            "llm_calls": self.llm_calls,
            "seconds": round(self.seconds, 2),
            "llm_calls_per_kept": round(self.llm_calls / kept, 2) if kept else None,
            "seconds_per_kept": round(self.seconds / kept, 2) if kept else None,
        }


class ChatClient:
    """One chat completion at a time per call, counted; timeouts and bounded retries are the OpenAI client's."""

    def __init__(self, client: Any, model: str, max_tokens: int = 512) -> None:
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, prompt: str) -> str:
        with self._lock:
            self.calls += 1
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0.2,
            max_tokens=self.max_tokens,
        )
        content = response.choices[0].message.content
        if not isinstance(content, str) or not content.strip():
            raise ValueError("the LLM returned no text")
        return content


def draft_item(
    kind: str, chunks: list[SourceChunk], doc_texts: dict[str, list[str]], chat: Callable[[str], str]
) -> Candidate:
    """Ask for one item of `kind` from `chunks`, and check it; raises Dropped with the reason it failed."""
    try:
        reply = chat(generation_prompt(kind, chunks))
    except Exception as exc:  # after the client's bounded retries
        raise Dropped("LLM call failed", f"{type(exc).__name__}: {exc}"[:200]) from exc
    try:
        raw = parse_json_object(reply)
        question, answer = str(raw["question"]).strip(), str(raw["answer"]).strip()
        cited = raw.get("evidence") or []
        if not isinstance(cited, list):
            raise ValueError("evidence is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise Dropped("malformed reply", f"{exc}: {reply[:120]!r}") from exc
    if len(question) < 5 or not answer:
        raise Dropped("malformed reply", "empty question or answer")
    evidence = []
    for entry in cited:
        number = entry.get("passage", 1) if isinstance(entry, dict) else 1
        text = str(entry.get("text", "") if isinstance(entry, dict) else entry).strip()
        if not isinstance(number, int) or not 1 <= number <= len(chunks):
            raise Dropped("citation not in its document", f"passage number {number!r}")
        evidence.append(Evidence.model_construct(doc_id=chunks[number - 1].doc_id, passage=text))
    drafted = GoldenQuestion.model_construct(
        id="draft",
        question=question,
        kind=cast(QuestionKind, kind),
        reference_answer=answer,
        evidence=evidence,
        status="draft",
    )
    if failures := item_failures(drafted, doc_texts):
        raise Dropped(failures[0].reason, failures[0].detail)
    if kind == "unanswerable":
        return Candidate(kind, question, UNANSWERABLE_ANSWER, [], chunks)
    try:
        verdict = parse_json_object(chat(support_prompt(question, answer, evidence)))
    except Exception as exc:
        raise Dropped("support check failed", f"{type(exc).__name__}: {exc}"[:200]) from exc
    if verdict.get("supported") is not True:
        raise Dropped("answer not supported (LLM check)", str(verdict.get("reason", ""))[:200])
    return Candidate(kind, question, answer, evidence, chunks)


def generate(
    chunks: list[SourceChunk],
    vectors: np.ndarray,
    n: int,
    chat: ChatClient,
    *,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    best_similarity: Callable[[str], float],
    no_answer_similarity: float,
    embed: Callable[[list[str]], np.ndarray],
    concurrency: int = 4,
    rounds: int = 3,
    provenance: dict[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> GenerationResult:
    """Write up to `n` verified drafts from `chunks` (rows of `vectors` are theirs, unit norm).

    Kinds follow `mix`; items that fail a check are replaced from fresh chunks for up to `rounds` rounds.
    `best_similarity(question)` is the cosine similarity of the version's best chunk for a question.
    """
    started = time.monotonic()
    sampler = StratifiedSampler(chunks, seed)
    pool_index = {c.chunk_id: i for i, c in enumerate(chunks)}
    pool_vectors = vectors[[pool_index[c.chunk_id] for c in sampler.pool]] if sampler.pool else vectors[:0]
    doc_texts: dict[str, list[str]] = {}
    for chunk in chunks:
        doc_texts.setdefault(chunk.doc_id, []).append(chunk.text)
    result = GenerationResult(requested=n, planned=plan_kinds(n, mix or DEFAULT_MIX, sampler.documents))
    wanted = dict(result.planned)
    kept: list[Candidate] = []
    kept_vectors: list[np.ndarray] = []
    for _ in range(rounds):
        slots: list[tuple[str, list[SourceChunk]]] = []
        for kind, count in wanted.items():
            for _ in range(count):
                anchor = sampler.next_chunk()
                if anchor is None:
                    break
                group = [anchor]
                if kind == "multi_document":
                    other = sampler.partner(anchor, sampler.pool, pool_vectors)
                    if other is None:
                        continue
                    group.append(other)
                slots.append((kind, group))
        if not slots:
            break
        result.attempts += len(slots)

        def attempt(slot: tuple[str, list[SourceChunk]]) -> Candidate | Dropped:
            try:
                return draft_item(slot[0], slot[1], doc_texts, chat)
            except Dropped as dropped:
                return dropped

        candidates: list[Candidate] = []
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            for i, outcome in enumerate(pool.map(attempt, slots), start=1):
                if isinstance(outcome, Dropped):
                    result.dropped[outcome.reason] += 1
                    result.examples.setdefault(outcome.reason, outcome.detail[:240])
                else:
                    candidates.append(outcome)
                if progress:
                    progress("generate", result.attempts - len(slots) + i, result.attempts)
        survivors = []
        for candidate in candidates:
            if candidate.kind == "unanswerable":
                similarity = best_similarity(candidate.question)
                if similarity >= no_answer_similarity:
                    reason = "unanswerable question answered by the corpus"
                    result.dropped[reason] += 1
                    result.examples.setdefault(
                        reason, f"{candidate.question!r}: best chunk similarity {similarity:.2f}"
                    )
                    continue
            survivors.append(candidate)
        if survivors:
            new_vectors = embed([c.question for c in survivors])
            all_vectors = np.vstack([*kept_vectors, new_vectors]) if kept_vectors else new_vectors
            twins = near_duplicates(all_vectors)[len(kept_vectors) :]
            for candidate, vector, twin in zip(survivors, new_vectors, twins, strict=True):
                if twin is not None:
                    result.dropped["near-duplicate question"] += 1
                    result.examples.setdefault("near-duplicate question", candidate.question[:200])
                    continue
                kept.append(candidate)
                kept_vectors.append(vector[None, :])
                wanted[candidate.kind] -= 1
        wanted = {kind: count for kind, count in wanted.items() if count > 0}
        if not wanted:
            break
    result.llm_calls = chat.calls
    result.kept = [_question(i, c, chat.model, provenance or {}) for i, c in enumerate(kept, start=1)]
    result.seconds = time.monotonic() - started
    return result


def _question(number: int, candidate: Candidate, model: str, provenance: dict[str, Any]) -> GoldenQuestion:
    return GoldenQuestion(
        id=f"g{number:03d}",
        question=candidate.question,
        kind=candidate.kind,  # type: ignore[arg-type]
        reference_answer=candidate.answer,
        evidence=candidate.evidence,
        status="draft",
        provenance={
            "method": "llm",
            "model": model,
            "prompt_sha256": prompt_hash(candidate.kind),
            "chunk_ids": [c.chunk_id for c in candidate.chunks],
            **provenance,
        },
    )


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def served_query_drafts(
    rows: list[dict[str, Any]],
    texts: dict[str, str],
    embed: Callable[[list[str]], np.ndarray],
    provenance: dict[str, Any],
) -> tuple[list[GoldenQuestion], Counter[str], dict[str, str]]:
    """Offline drafts from served queries: the question, and as evidence the sentence of its top retrieved chunk
    closest to it. The retriever that served the query proposed that evidence: a reviewer must confirm it, or the
    set would grade the retriever by its own output. The served answer, when there is one, is the reference answer
    only if it passes the item checks against that evidence; else the draft is dropped with the reason.

    Returns the drafts, the count of dropped rows by reason and one example of each reason.
    """
    dropped: Counter[str] = Counter()
    examples: dict[str, str] = {}
    drafts: list[GoldenQuestion] = []
    questions: list[str] = []

    def drop(reason: str, example: str) -> None:
        dropped[reason] += 1
        examples.setdefault(reason, example[:240])

    for row in rows:
        chunk_id = next((cid for cid in row.get("retrieved_ids") or [] if cid in texts), None)
        if chunk_id is None or len(row["question"].strip()) < 5:
            drop(
                "no retrieved chunk left in this version" if chunk_id is None else "question too short", row["question"]
            )
            continue
        doc_id, text = texts[chunk_id].split("\0", 1)
        sentences = [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if citable(s.strip())]
        if not sentences:
            drop("no sentence to cite in the retrieved chunk", f"{chunk_id}: {text[:120]!r}")
            continue
        vectors = embed([row["question"], *sentences])
        best = sentences[int(np.argmax(vectors[1:] @ vectors[0]))]
        answer = (row.get("answer") or "").strip() or best
        draft = GoldenQuestion(
            id=f"served-{row['query_id']}",
            question=row["question"].strip(),
            kind="factoid",
            reference_answer=answer,
            evidence=[Evidence(doc_id=doc_id, passage=best)],
            status="draft",
            provenance={
                "method": "served-query (offline; evidence proposed by the retriever that served it)",
                "query_id": row["query_id"],
                "served_at": str(row.get("at")),
                "chunk_ids": [chunk_id],
                **provenance,
            },
        )
        if failures := item_failures(draft, {doc_id: [text]}):
            drop(failures[0].reason, f"{draft.id}: {failures[0].detail}")
            continue
        drafts.append(draft)
        questions.append(row["question"])
    if drafts:
        twins = near_duplicates(embed(questions))
        for draft, twin in zip(drafts, twins, strict=True):
            if twin is not None:
                drop("near-duplicate question", draft.question)
        drafts = [d for d, t in zip(drafts, twins, strict=True) if t is None]
    return drafts, dropped, examples
