"""Query latency on a 100,000-chunk table: vector, full-text and hybrid, with and without the ANN index, and the
ANN index's recall@10 against exact search.

The table is made from the bundled sample: real chunk texts (each row adds a sentence of another chunk, so rows
differ) for full-text search, and vectors that are the real embeddings of those chunks plus Gaussian noise, so
they cluster as real embeddings do. Queries are the golden-set questions and the first sentences of random chunks.
Latency is measured through the project's own `tasks.serve.retrieval.search`, query embedding included; each query runs
once to warm up, then is timed.

Usage: python benchmarks/query_latency.py [--rows 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import re
import tempfile
import time
from typing import Any

import numpy as np
from common import percentile, sample_chunks, write_result

from evaluations.golden import load_golden_set
from tasks.embed import embedding
from tasks.serve.retrieval import AnnQuery, search
from tasks.settings import Settings
from tasks.store import lancedb_store
from tasks.store.lance_backend import LanceTableVersion

NOISE = 0.02  # per dimension: neighbours stay close to their source chunk, yet every vector is distinct


def build_table(
    folder: str, rows: int, settings: Settings, spec: embedding.EmbedSpec
) -> tuple[LanceTableVersion, float, float]:
    """The synthetic table, its build time and its index build time."""
    import lancedb
    import pyarrow as pa

    chunks = sample_chunks()
    base = embedding.embed_texts([c.text for c in chunks], spec, role="passage")
    rng = np.random.default_rng(0)
    source = rng.integers(0, len(chunks), rows)
    extra = rng.integers(0, len(chunks), rows)
    vectors = base[source] + rng.normal(0, NOISE, (rows, base.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    first_sentence = [re.split(r"(?<=[.!?])\s", c.text, maxsplit=1)[0][:300] for c in chunks]
    texts = [f"{chunks[s].text} {first_sentence[e]}" for s, e in zip(source, extra, strict=True)]
    start = time.perf_counter()
    data = pa.table(
        {
            "chunk_id": [f"synthetic#{i}" for i in range(rows)],
            "doc_id": [chunks[s].doc_id for s in source],
            "title": [""] * rows,
            "section": [chunks[s].section for s in source],
            "text": texts,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
        }
    )
    table = lancedb.connect(folder).create_table("chunks", data)
    table.create_fts_index("text")
    built = time.perf_counter() - start
    start = time.perf_counter()
    lancedb_store.maintain_indexes(table, settings.model_copy(update={"ann_index_min_rows": 1}))
    return LanceTableVersion(table, "chunks"), built, time.perf_counter() - start


def queries(count: int) -> list[str]:
    """Golden-set questions, then first sentences of random sample chunks."""
    golden = [q.question for q in load_golden_set(Settings().golden_set)]
    chunks = sample_chunks()
    rng = random.Random(1)
    extra = [re.split(r"(?<=[.!?])\s", rng.choice(chunks).text, maxsplit=1)[0][:200] for _ in range(count)]
    return (golden + extra)[:count]


def latencies(
    table: LanceTableVersion, qs: list[str], spec: embedding.EmbedSpec, mode: str, ann: AnnQuery
) -> dict[str, float]:
    """p50/p95/mean milliseconds of `search` over the queries."""
    weight = 0.7 if mode == "hybrid" else None
    times = []
    for q in qs:
        search(table, q, spec, mode, 10, weight, ann)  # warm-up: caches, lazy index loads
        start = time.perf_counter()
        search(table, q, spec, mode, 10, weight, ann)
        times.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": round(percentile(times, 50), 2),
        "p95_ms": round(percentile(times, 95), 2),
        "mean_ms": round(sum(times) / len(times), 2),
    }


def top10(table: LanceTableVersion, vector: np.ndarray, ann: AnnQuery) -> set[str]:
    return {row["chunk_id"] for row in table.search(mode="vector", k=10, columns=["chunk_id"], vector=vector, ann=ann)}


def recall_at_10(table: LanceTableVersion, vectors: np.ndarray, truth: list[set[str]], ann: AnnQuery) -> float:
    """Mean share of the exact top 10 that the ANN query returns."""
    return float(np.mean([len(top10(table, v, ann) & t) / len(t) for v, t in zip(vectors, truth, strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobes", default="10,20,40,80")
    parser.add_argument("--refine", default="0,5")
    args = parser.parse_args()

    settings = Settings()
    spec = dataclasses.replace(embedding.embed_spec(settings), device="cpu")
    qs = queries(args.queries)
    with tempfile.TemporaryDirectory() as folder:
        table, build_s, index_s = build_table(folder, args.rows, settings, spec)
        indices = [
            f"{i.index_type}({', '.join(i.columns)})" for i in table.handle.list_indices()
        ]  # LanceDB-specific: a benchmark of its index
        query_vectors = embedding.embed_texts(qs, spec, role="query")
        default_ann = AnnQuery.from_settings(settings)
        truth = [top10(table, v, AnnQuery(exact=True)) for v in query_vectors]

        sweep = []
        for nprobes in (int(x) for x in args.nprobes.split(",")):
            for refine in (int(x) for x in args.refine.split(",")):
                ann = dataclasses.replace(default_ann, nprobes=nprobes, refine_factor=refine or None)
                recall = recall_at_10(table, query_vectors, truth, ann)
                timing = latencies(table, qs, spec, "vector", ann)
                sweep.append(
                    {"nprobes": nprobes, "refine_factor": refine or None, "recall@10": round(recall, 4)} | timing
                )
                print(sweep[-1], flush=True)
        default_recall = recall_at_10(table, query_vectors, truth, default_ann)

        modes: dict[str, dict[str, Any]] = {}
        for mode in ("vector", "fulltext", "hybrid"):
            modes[mode] = {"ann": latencies(table, qs, spec, mode, default_ann)}
            if mode != "fulltext":
                modes[mode]["exact"] = latencies(table, qs, spec, mode, AnnQuery(exact=True))
            print(mode, modes[mode], flush=True)
        embed_ms = latencies_embedding(qs, spec)

    write_result(
        "query_latency",
        {
            "rows": args.rows,
            "queries": len(qs),
            "table_build_s": round(build_s, 1),
            "ann_index_build_s": round(index_s, 1),
            "indices": indices,
            "ann_index_type": settings.ann_index_type,
            "default_ann": dataclasses.asdict(default_ann),
            "default_ann_recall@10": round(default_recall, 4),
            "modes": modes,
            "query_embedding": embed_ms,
            "ann_sweep": sweep,
        },
    )
    return 0


def latencies_embedding(qs: list[str], spec: embedding.EmbedSpec) -> dict[str, float]:
    """What embedding one query costs, inside the figures above."""
    times = []
    for q in qs:
        start = time.perf_counter()
        embedding.embed_texts([q], spec, role="query")
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(percentile(times, 50), 2), "p95_ms": round(percentile(times, 95), 2)}


if __name__ == "__main__":
    raise SystemExit(main())
