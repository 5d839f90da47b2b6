"""Do two versions of the table answer alike? Probe queries drawn from the rows themselves, compared top-k by top-k.

Maintenance moves `production` to a compacted version only when every row is the same and these probes rank the
same chunks in the same order in every search mode: materializing deletions changes the full-text index's BM25
statistics (Lance counts deleted rows until compaction drops them), which can reorder near-ties.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from tasks.embed.embedding import EmbedSpec
from tasks.serve.retrieval import SEARCH_MODES, AnnQuery, search, split_mode
from tasks.settings import Settings
from tasks.store.interface import TableVersion

PROBES = 32
PROBE_WORDS = 12


def probe_queries(table: TableVersion, n: int = PROBES) -> list[tuple[str, np.ndarray]]:
    """`n` queries spread over the table: a chunk's first words as the text, its stored vector as the query vector
    (no model is loaded; both versions get exactly the same inputs)."""
    rows = table.count()
    if rows == 0:
        return []
    step = max(1, rows // n)
    data = table.take(list(range(0, rows, step))[:n], columns=["text", "vector"])
    texts = data.column("text").to_pylist()
    vectors = data.column("vector").to_numpy(zero_copy_only=False)
    probes = []
    for text, vector in zip(texts, vectors, strict=True):
        words = " ".join(text.split()[:PROBE_WORDS])
        if words:
            probes.append((words, np.asarray(vector, dtype=np.float32)))
    return probes


def differing_queries(
    before: TableVersion, after: TableVersion, mode: str, settings: Settings, k: int = 10
) -> list[str]:
    """Probe queries whose top-k chunk ids differ between two versions, in any search mode (`mode` sets the fusion
    weight of hybrid, as production was promoted with it)."""
    _, weight = split_mode(mode)
    ann = AnnQuery.from_settings(settings)
    spec = cast(EmbedSpec, None)  # never used: every probe brings its vector
    differing = []
    for text, vector in probe_queries(before):
        for each in SEARCH_MODES:
            fusion = weight if each == "hybrid" else None
            ids = [
                [h.chunk_id for h in search(t, text, spec, each, k, fusion, ann, query_vector=vector)]
                for t in (before, after)
            ]
            if ids[0] != ids[1]:
                differing.append(f"{each}: {text!r}")
    return differing
