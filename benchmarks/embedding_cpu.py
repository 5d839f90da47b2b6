"""CPU embedding throughput of each backend against plain `SentenceTransformer.encode`, and what it costs in quality.

Baseline: plain PyTorch fp32 `encode`, batch 64, all cores. Each backend runs through the project's embedding stage
(`tasks.embed.embedding.embed_texts`) on the same real passages, in this process; medians of several repeats.
Quality: every chunk of the bundled sample is embedded with the backend into a LanceDB table, and the golden set
is retrieved from it (vector and hybrid@0.7, k=10) with that backend's query vectors, against fp32 PyTorch.

Usage: python benchmarks/embedding_cpu.py [--passages 384] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import tempfile
import time

from common import median_seconds, sample_chunks, write_result

from evaluations.golden import load_golden_set
from evaluations.scoring import retrieval_scores
from tasks.embed import embedding
from tasks.embed.model_export import BACKENDS
from tasks.serve.retrieval import search
from tasks.settings import Settings
from tasks.store.lance_backend import LanceTableVersion

QUALITY_METRICS = ["doc_hit_rate@10", "doc_ndcg@10", "chunk_recall@10", "chunk_ndcg@10"]
QUALITY_MODES = {"vector": None, "hybrid@0.7": 0.7}
TOLERANCE = 0.01
EXACT_COSINE = 0.99999  # above this the backend computes what fp32 PyTorch computes; golden metrics cannot move


def golden_metrics(chunks: list, vectors, spec: embedding.EmbedSpec, folder: str) -> dict[str, float]:
    """Mean golden-set retrieval metrics on a table of the sample's chunks embedded with `spec`."""
    import lancedb
    import pyarrow as pa

    settings = Settings()
    table = lancedb.connect(folder).create_table(
        spec.backend,
        pa.table(
            {
                "chunk_id": [c.chunk_id for c in chunks],
                "doc_id": [c.doc_id for c in chunks],
                "title": [""] * len(chunks),
                "section": [c.section for c in chunks],
                "text": [c.text for c in chunks],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
            }
        ),
    )
    table.create_fts_index("text")
    version = LanceTableVersion(table, spec.backend)
    questions = [q for q in load_golden_set(settings.golden_set) if q.answerable]
    out: dict[str, float] = {}
    for mode, weight in QUALITY_MODES.items():
        per_question = [
            retrieval_scores(q, search(version, q.question, spec, mode.split("@")[0], 10, weight), 10)
            for q in questions
        ]
        for metric in QUALITY_METRICS:
            out[f"{mode} {metric}"] = round(statistics.fmean(s[metric] for s in per_question), 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passages", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    chunks = sample_chunks()
    passages = [c.text for c in random.Random(0).sample(chunks, min(args.passages, len(chunks)))]
    base_spec = dataclasses.replace(embedding.embed_spec(Settings()), device="cpu", threads=cores)

    plain = SentenceTransformer(base_spec.model_path, device="cpu", local_files_only=True)
    plain.encode(passages[:64], batch_size=64)

    def plain_encode() -> np.ndarray:
        return plain.encode(passages, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    baseline_s, baseline_times, reference = median_seconds(plain_encode, args.repeats)
    print(f"plain encode fp32: {len(passages) / baseline_s:.1f} passages/s", flush=True)

    results: dict[str, dict] = {}
    full_vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.backends.split(","):
            spec = dataclasses.replace(base_spec, backend=name, batch_size=64)
            start = time.perf_counter()
            embedding.load_model(spec)  # exports on first use; timed separately from throughput
            load_s = time.perf_counter() - start
            embedding.embed_texts(passages[:64], spec, role="passage")
            seconds, times, vectors = median_seconds(
                lambda spec=spec: embedding.embed_texts(passages, spec, role="passage"), args.repeats
            )
            cosine = (vectors * reference).sum(axis=1)
            entry = {
                "precision": embedding.inference_precision(spec),
                "passages_per_s": round(len(passages) / seconds, 1),
                "speedup_vs_plain_encode": round(baseline_s / seconds, 2),
                "times_s": [round(t, 3) for t in times],
                "load_or_export_s": round(load_s, 1),
                "min_cosine_vs_fp32": round(float(cosine.min()), 5),
                "mean_cosine_vs_fp32": round(float(cosine.mean()), 5),
            }
            # Quality is measured for the reference and every backend whose vectors are not fp32-exact: int8, and
            # OpenVINO, which runs bf16 by default on CPUs with AVX512-BF16 or AMX.
            if name == "torch" or entry["min_cosine_vs_fp32"] < EXACT_COSINE:
                full_vectors[name] = embedding.embed_texts([c.text for c in chunks], spec, role="passage")
                entry["golden"] = golden_metrics(chunks, full_vectors[name], spec, folder)
            results[name] = entry
            print(name, entry, flush=True)

    reference_quality = results.get("torch", {}).get("golden", {})
    for entry in results.values():
        if "golden" in entry and reference_quality:
            deltas = {m: round(v - reference_quality[m], 4) for m, v in entry["golden"].items()}
            entry["golden_delta_vs_fp32"] = deltas
            entry["within_tolerance"] = all(abs(d) <= TOLERANCE for d in deltas.values())
    eligible = [n for n, e in results.items() if e.get("within_tolerance", e["min_cosine_vs_fp32"] >= EXACT_COSINE)]
    fastest = max(eligible, key=lambda n: results[n]["passages_per_s"]) if eligible else None
    write_result(
        "embedding_cpu",
        {
            "passages": len(passages),
            "mean_passage_chars": round(statistics.fmean(len(p) for p in passages)),
            "corpus_chunks_for_quality": len(chunks),
            "repeats": args.repeats,
            "threads": cores,
            "baseline": {
                "what": "SentenceTransformer.encode, PyTorch fp32, batch 64",
                "passages_per_s": round(len(passages) / baseline_s, 1),
                "times_s": [round(t, 3) for t in baseline_times],
            },
            "backends": results,
            "quality_tolerance": TOLERANCE,
            "fastest_within_tolerance": fastest,
            "default_cpu_backend": embedding.DEFAULT_CPU_BACKEND,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
