"""GPU check of the embedding stage: device=auto picks CUDA, runs fp16, matches fp32 vectors; and its speed.

Compares the stage (fp16, length-sorted token-budget batches) with plain `SentenceTransformer.encode` (fp16 and
fp32, batch 64) on the same passages, medians of three runs in this one process.

Runs the project's own `tasks.embed.embedding` and `tasks.ingest.chunking` on real chunks of the bundled sample.
Usage: python benchmarks/gpu_embedding_check.py MODEL_DIR OUT.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tasks.embed import embedding
from tasks.ingest.chunking import ChunkingConfig, TokenizerCounter, chunk_document
from tasks.schemas import Document
from tasks.settings import Settings

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "python-docs"


def sample_chunks(spec: embedding.EmbedSpec) -> list[str]:
    counter = TokenizerCounter(embedding.tokenizer(spec))
    config = ChunkingConfig(200, 32, embedding.max_content_tokens(spec))
    texts: list[str] = []
    for path in sorted(SAMPLE.glob("*/*.txt")) + sorted(SAMPLE.glob("*/*.md")):
        doc = Document(str(path), path.read_text(encoding="utf-8"), path.stem, "sample", str(path), "txt")
        texts += [c.text for c in chunk_document(doc, config, counter)]
    return texts


def timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(model_dir: str, out: str) -> int:
    settings = Settings(embedding_model=model_dir, device="auto", embed_batch_size=128, embed_token_budget=65536)
    spec = embedding.embed_spec(settings)
    resolved = embedding.resolve_device(spec.device)
    model = embedding.load_model(spec)
    dtype = str(next(model.parameters()).dtype)
    texts = sample_chunks(spec)

    fp16 = embedding.embed_texts(texts, spec, role="passage")
    from sentence_transformers import SentenceTransformer

    reference_model = SentenceTransformer(model_dir, device="cuda").float()
    fp32 = reference_model.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
    cosines = np.sum(fp16 * fp32, axis=1)

    big = texts * max(1, 20_000 // len(texts))
    fixed_spec = embedding.EmbedSpec(spec.model_path, spec.model_name, spec.device, 128)
    stage_s = timed(lambda: embedding.embed_texts(big, spec, role="passage"))
    fixed_s = timed(lambda: embedding.embed_texts(big, fixed_spec, role="passage"))
    plain_s = timed(lambda: reference_model.encode(big, batch_size=64, convert_to_numpy=True))
    plain_fp16 = SentenceTransformer(model_dir, device="cuda").half()
    plain16_s = timed(lambda: plain_fp16.encode(big, batch_size=64, convert_to_numpy=True))
    result = {
        "gpu": torch.cuda.get_device_name(0),
        "device_auto_resolved_to": resolved,
        "stage_dtype": dtype,
        "chunks": len(texts),
        "min_cosine_fp16_vs_fp32": float(cosines.min()),
        "mean_cosine_fp16_vs_fp32": float(cosines.mean()),
        "max_norm_error": float(np.abs(np.linalg.norm(fp16, axis=1) - 1).max()),
        "throughput_texts": len(big),
        "stage_fp16_token_budget_passages_per_s": len(big) / stage_s,
        "stage_fp16_batch128_passages_per_s": len(big) / fixed_s,
        "plain_encode_fp16_b64_passages_per_s": len(big) / plain16_s,
        "plain_encode_fp32_b64_passages_per_s": len(big) / plain_s,
        "stage_vs_plain_fp16": plain16_s / stage_s,
        "cpu_path_dim": int(
            embedding.embed_texts(
                texts[:8], embedding.EmbedSpec(model_dir, "m", "cpu", 8, backend="torch"), role="passage"
            ).shape[1]
        ),
    }
    ok = resolved == "cuda" and dtype == "torch.float16" and result["min_cosine_fp16_vs_fp32"] > 0.999
    result["ok"] = ok
    Path(out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
