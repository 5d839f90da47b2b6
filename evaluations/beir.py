"""BEIR-format evaluation: queries.jsonl + qrels TSV against a table ingested from the matching corpus.jsonl."""

from __future__ import annotations

import csv
import json
import statistics
from functools import partial
from pathlib import Path
from typing import Any

from evaluations.golden import BadGoldenSetError
from evaluations.ir_metrics import document_ranking, ranking_metrics
from tasks.embed.embedding import EmbedSpec
from tasks.serve.retrieval import search, split_mode


def load_queries(path: str | Path) -> dict[str, str]:
    """query id → text from a BEIR queries.jsonl (`_id`, `text`)."""
    queries: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            queries[str(record["_id"])] = str(record["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadGoldenSetError(f"{path}:{lineno}: a BEIR query needs '_id' and 'text' ({exc})") from exc
    return queries


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """query id → {doc id: graded relevance} from a BEIR qrels TSV (`query-id corpus-id score`, header optional)."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for lineno, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (lineno == 1 and len(row) >= 3 and not row[-1].lstrip("-").isdigit()):
                continue  # blank line or header
            if len(row) < 3 or not row[-1].lstrip("-").isdigit():
                raise BadGoldenSetError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score'")
            qrels.setdefault(row[0], {})[row[1]] = int(row[-1])
    return qrels


def evaluate_beir(
    table: Any, queries: dict[str, str], qrels: dict[str, dict[str, int]], spec: EmbedSpec, modes: list[str], k: int
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
