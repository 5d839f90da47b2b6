"""BEIR-format evaluation: queries.jsonl + qrels TSV against a table ingested from the matching corpus.jsonl."""

from __future__ import annotations

import statistics
from functools import partial
from typing import Any

from evaluations.golden import BadGoldenSetError, load_qrels, load_queries
from evaluations.ir_metrics import document_ranking, ranking_metrics
from tasks.embed.embedding import EmbedSpec
from tasks.serve.retrieval import search, split_mode
from tasks.store.interface import TableVersion

__all__ = ["evaluate_beir", "load_qrels", "load_queries"]  # the loaders live with the other golden-set formats


def evaluate_beir(
    table: TableVersion,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    spec: EmbedSpec,
    modes: list[str],
    k: int,
) -> dict[str, Any]:
    """Document-level hit rate, recall, MRR and nDCG@k (graded, trec_eval definition) per retrieval mode.

    Each query ranks the first k distinct documents of its retrieval (`document_ranking`, as golden sets do).
    """
    judged = [qid for qid in qrels if qid in queries]
    if not judged:
        raise BadGoldenSetError("no query in the qrels has a text in the queries file")
    results: dict[str, Any] = {"queries": len(judged), "k": k, "modes": {}}
    for mode in modes:
        base, fusion = split_mode(mode)
        per_query = {}
        for qid in judged:
            # documents have several chunks: rank the first k distinct ones; fetch(n) searches the top k=n chunks
            fetch = partial(search, table, queries[qid], spec, base, fusion_weight=fusion)
            per_query[qid] = ranking_metrics(document_ranking(fetch, k), qrels[qid], k, "doc")
        names = next(iter(per_query.values())).keys()
        means: dict[str, Any] = {}
        for name in names:
            values = [v[name] for v in per_query.values() if v[name] == v[name]]  # NaN: no relevant document
            means[name] = statistics.fmean(values) if values else None
        results["modes"][mode] = means
        results["modes"][mode]["per_query"] = per_query
    return results
