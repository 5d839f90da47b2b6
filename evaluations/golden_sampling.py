"""Which chunks a generated golden set is written from: stratified across documents and their sections.

Documents take turns (round-robin in a seeded order), and within a document its sections take turns, so no document
gets more than its share of questions (at most one more than any other that still has material) and a long section
does not crowd out the rest of its document.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

# Kinds and their default shares, as in the bundled set (multi_document needs two documents).
DEFAULT_MIX: dict[str, float] = {
    "factoid": 0.35,
    "multi_sentence": 0.2,
    "paraphrase": 0.2,
    "unanswerable": 0.15,
    "multi_document": 0.1,
}
MIN_CHUNK_CHARS = 200  # shorter chunks (a heading, a stub) hold too little to ask about


@dataclass(frozen=True)
class SourceChunk:
    """A chunk of the table version a question may be written from."""

    chunk_id: str
    doc_id: str
    section: str
    text: str
    position: int


def plan_kinds(n: int, mix: dict[str, float], documents: int) -> dict[str, int]:
    """How many items of each kind make `n` (largest remainders); no multi_document item with a single document."""
    shares = {kind: share for kind, share in mix.items() if share > 0 and (kind != "multi_document" or documents > 1)}
    total = sum(shares.values())
    if n <= 0 or total <= 0:
        return {}
    exact = {kind: n * share / total for kind, share in shares.items()}
    counts = {kind: math.floor(value) for kind, value in exact.items()}
    for kind in sorted(exact, key=lambda k: (counts[k] - exact[k], list(shares).index(k)))[: n - sum(counts.values())]:
        counts[kind] += 1
    return {kind: count for kind, count in counts.items() if count}


class StratifiedSampler:
    """Hands out unused chunks, documents in turn and sections in turn within each document (seeded)."""

    def __init__(self, chunks: list[SourceChunk], seed: int, min_chars: int = MIN_CHUNK_CHARS) -> None:
        rng = random.Random(seed)
        eligible = [c for c in chunks if len(" ".join(c.text.split())) >= min_chars]
        by_doc: dict[str, OrderedDict[str, list[SourceChunk]]] = {}
        for chunk in sorted(eligible, key=lambda c: (c.doc_id, c.position, c.chunk_id)):
            by_doc.setdefault(chunk.doc_id, OrderedDict()).setdefault(chunk.section or "", []).append(chunk)
        self._docs: list[str] = sorted(by_doc)
        rng.shuffle(self._docs)
        self._sections: dict[str, list[list[SourceChunk]]] = {}
        for doc, sections in by_doc.items():
            queues = [list(chunks_) for chunks_ in sections.values()]
            for queue in queues:
                rng.shuffle(queue)
            rng.shuffle(queues)
            self._sections[doc] = queues
        self._turn = 0
        self.used: set[str] = set()
        self.documents = len(self._docs)
        self.pool = eligible  # partners for multi-document questions come from here

    def next_chunk(self, exclude_doc: str | None = None) -> SourceChunk | None:
        """The next unused chunk: from the next document in turn, from its next section in turn; None when used up."""
        for _ in range(len(self._docs)):
            doc = self._docs[self._turn % len(self._docs)]
            self._turn += 1
            if doc == exclude_doc:
                continue
            queues = self._sections[doc]
            while queues:
                queue = queues.pop(0)
                while queue and queue[0].chunk_id in self.used:
                    queue.pop(0)
                if not queue:
                    continue
                chunk = queue.pop(0)
                if queue:
                    queues.append(queue)  # the section goes to the back of its document's line
                self.used.add(chunk.chunk_id)
                return chunk
        return None

    def partner(self, anchor: SourceChunk, pool: list[SourceChunk], vectors: np.ndarray) -> SourceChunk | None:
        """The unused chunk of another document most similar to `anchor` (a question can then need both)."""
        index = {c.chunk_id: i for i, c in enumerate(pool)}
        if anchor.chunk_id not in index:
            return None
        sims = vectors @ vectors[index[anchor.chunk_id]]
        for i in np.argsort(-sims):
            other = pool[int(i)]
            if other.doc_id != anchor.doc_id and other.chunk_id not in self.used:
                self.used.add(other.chunk_id)
                return other
        return None
