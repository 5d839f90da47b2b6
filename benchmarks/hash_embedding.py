"""BENCHMARK ONLY: a cheap deterministic stand-in for the embedding model, so that 1M-chunk memory benchmarks finish on
2 cores. Never selectable through settings; a benchmark loads it as a Dask worker preload (`--preload
benchmarks.hash_embedding`) or calls `install()` in its own process.

Each text's vector is derived from its BLAKE2b digest: unit-norm, 384-dimensional, the same text always gives the
same vector. The tokenizer (and so chunking) is still the real model's.
"""

from __future__ import annotations

import hashlib
import importlib
from typing import Any

import numpy as np

DIM = 384


def embed_texts(texts: list[str], spec: Any, role: str = "passage") -> np.ndarray:
    """Unit-norm pseudo-embeddings, one row per text."""
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        seed = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
        out[i] = (
            np.frombuffer(np.random.default_rng(int.from_bytes(seed, "little")).bytes(DIM * 4), np.uint8)[::4].astype(
                np.float32
            )
            - 127.5
        )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def install() -> None:
    """Replace the embedding function of ragops' embedding package (tasks/embed/)."""
    module = importlib.import_module("tasks.embed.embedding")
    module.embed_texts = embed_texts  # type: ignore[attr-defined]


def dask_setup(worker: Any) -> None:
    """Dask preload hook."""
    install()
