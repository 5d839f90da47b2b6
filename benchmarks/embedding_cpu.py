"""CPU embedding throughput of each backend against plain `SentenceTransformer.encode`, and what it costs in quality.

Baseline: plain PyTorch fp32 `encode`, batch 64, all cores. Each backend runs through the project's embedding stage
(`tasks.embed.embedding.embed_texts`) on the same real passages, in this process, interleaved with the baseline in
pairs whose order alternates (A B, B A, A B, ...) so that a drifting machine load hits both alike; each pair gives
one ratio (backend passages/s ÷ baseline passages/s), and the figure is the median of the per-pair ratios.
Quality: every chunk of the bundled sample is embedded with the backend into a LanceDB table, and the golden set
is retrieved from it (vector and hybrid@0.7, k=10) with that backend's query vectors, against fp32 PyTorch.

Usage: python benchmarks/embedding_cpu.py [--passages 384] [--pairs 5] [--backends torch,onnx,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import sample_chunks, write_result

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


def cpu_flags() -> list[str]:
    """The vector-instruction flags that decide what the backends can compute in (bf16 needs AVX512-BF16 or AMX)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512", "amx", "avx2")))
    return []


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved_pairs(baseline: Callable[[], Any], backend: Callable[[], Any], pairs: int) -> tuple[list[dict], Any]:
    """`pairs` rounds of baseline and backend, the order alternating (A B, B A, A B, ...); seconds of each and the
    ratio backend/baseline in passages/s (= baseline seconds ÷ backend seconds) per pair, and the backend's last
    output."""
    rounds: list[dict] = []
    vectors = None
    for i in range(pairs):
        if i % 2 == 0:
            base_s, _ = timed(baseline)
            backend_s, vectors = timed(backend)
        else:
            backend_s, vectors = timed(backend)
            base_s, _ = timed(baseline)
        rounds.append(
            {
                "order": "baseline first" if i % 2 == 0 else "backend first",
                "baseline_s": base_s,
                "backend_s": backend_s,
                "ratio": base_s / backend_s,
            }
        )
    return rounds, vectors


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
    parser.add_argument("--pairs", type=int, default=5, help="interleaved baseline/backend pairs per backend (≥ 3)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    if args.pairs < 3:
        parser.error("--pairs must be at least 3")

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    load_start = load_average()
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    chunks = sample_chunks()
    passages = [c.text for c in random.Random(0).sample(chunks, min(args.passages, len(chunks)))]
    base_spec = dataclasses.replace(embedding.embed_spec(Settings()), device="cpu", threads=cores)

    plain = SentenceTransformer(base_spec.model_path, device="cpu", local_files_only=True)
    plain.encode(passages[:64], batch_size=64)

    def plain_encode() -> np.ndarray:
        return plain.encode(passages, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    reference = plain_encode()  # the fp32 vectors every backend's are compared with; also a warm-up
    n = len(passages)
    print(f"load average at start {load_start}; CPU flags {' '.join(cpu_flags()) or 'none'}", flush=True)

    results: dict[str, dict] = {}
    all_baseline_s: list[float] = []
    full_vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.backends.split(","):
            spec = dataclasses.replace(base_spec, backend=name, batch_size=64)
            start = time.perf_counter()
            embedding.load_model(spec)  # exports on first use; timed separately from throughput
            load_s = time.perf_counter() - start
            embedding.embed_texts(passages[:64], spec, role="passage")
            rounds, vectors = interleaved_pairs(
                plain_encode, lambda spec=spec: embedding.embed_texts(passages, spec, role="passage"), args.pairs
            )
            ratios = [r["ratio"] for r in rounds]
            all_baseline_s += [r["baseline_s"] for r in rounds]
            cosine = (vectors * reference).sum(axis=1)
            entry = {
                "precision": embedding.inference_precision(spec),
                "speedup_vs_plain_encode": round(statistics.median(ratios), 2),
                "speedup_min": round(min(ratios), 2),
                "speedup_max": round(max(ratios), 2),
                "passages_per_s": round(statistics.median(n / r["backend_s"] for r in rounds), 1),
                "baseline_passages_per_s": round(statistics.median(n / r["baseline_s"] for r in rounds), 1),
                "pairs": [
                    {
                        "order": r["order"],
                        "baseline_s": round(r["baseline_s"], 3),
                        "backend_s": round(r["backend_s"], 3),
                        "ratio": round(r["ratio"], 3),
                    }
                    for r in rounds
                ],
                "load_average_after": load_average(),
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
            print(name, {k: v for k, v in entry.items() if k != "golden"}, flush=True)

    reference_quality = results.get("torch", {}).get("golden", {})
    for entry in results.values():
        if "golden" in entry and reference_quality:
            deltas = {m: round(v - reference_quality[m], 4) for m, v in entry["golden"].items()}
            entry["golden_delta_vs_fp32"] = deltas
            entry["within_tolerance"] = all(abs(d) <= TOLERANCE for d in deltas.values())
    eligible = [n for n, e in results.items() if e.get("within_tolerance", e["min_cosine_vs_fp32"] >= EXACT_COSINE)]
    fastest = max(eligible, key=lambda n: results[n]["speedup_vs_plain_encode"]) if eligible else None
    write_result(
        "embedding_cpu",
        {
            "passages": n,
            "mean_passage_chars": round(statistics.fmean(len(p) for p in passages)),
            "corpus_chunks_for_quality": len(chunks),
            "pairs": args.pairs,
            "method": "per backend, interleaved pairs of baseline and backend, order alternating (A B, B A, ...); "
            "ratio = backend passages/s ÷ baseline passages/s within each pair; median of the pairs' ratios",
            "threads": cores,
            "cpu_flags": cpu_flags(),
            "load_average_at_start": load_start,
            "load_average_at_end": load_average(),
            "baseline": {
                "what": "SentenceTransformer.encode, PyTorch fp32, batch 64",
                "passages_per_s": round(statistics.median(n / s for s in all_baseline_s), 1),
                "passages_per_s_min": round(n / max(all_baseline_s), 1),
                "passages_per_s_max": round(n / min(all_baseline_s), 1),
                "runs": len(all_baseline_s),
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
