"""A lean encoder for OpenVINO exports of mean-pooling sentence-transformers models: Hugging Face `tokenizers` and
the OpenVINO runtime, without importing PyTorch, transformers or sentence-transformers.

Those imports take about 5 s; this encoder starts in well under one, which is what makes a small incremental ingest,
a Dask worker's start and a single query fast. It computes what `SentenceTransformer.encode` computes for such
models (tests check the vectors against it) and is used only for exports whose modules it fully understands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.quiet import decline_openvino_telemetry

SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def supported(folder: str) -> bool:
    """True when the export is Transformer → mean Pooling (→ Normalize) with a fast tokenizer file."""
    root = Path(folder)
    try:
        modules = json.loads((root / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"] or any(k not in SUPPORTED_MODULES for k in kinds):
            return False
        pooling = json.loads((root / modules[1]["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, IndexError):
        return False
    mean = pooling.get("pooling_mode") == "mean" or pooling.get("pooling_mode_mean_tokens") is True
    return mean and (root / "tokenizer.json").exists() and max_seq_length(root) > 0


def max_seq_length(root: Path) -> int:
    """Longest input in tokens: sentence-transformers' setting, else the tokenizer's (0 when neither says)."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        try:
            value = json.loads((root / name).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and 0 < value < 100_000:
            return value
    return 0


class Tokenizer:
    """The model's fast tokenizer, called like a Hugging Face tokenizer (what the chunker needs)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        self._counting = RustTokenizer.from_file(str(path))
        self._counting.no_truncation()
        self._counting.no_padding()

    def __call__(
        self, text: str | list[str], add_special_tokens: bool = True, return_offsets_mapping: bool = False, **_: Any
    ) -> dict[str, Any]:
        texts = [text] if isinstance(text, str) else list(text)
        encodings = self._counting.encode_batch(texts, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        return {k: v[0] for k, v in out.items()} if isinstance(text, str) else out


class OpenVINOEncoder:
    """Encodes texts with a compiled OpenVINO model: tokenize, length-sorted batches, mean pooling, normalize."""

    def __init__(self, folder: str, file_name: str, threads: int = 0) -> None:
        decline_openvino_telemetry()
        import openvino as ov
        from tokenizers import Tokenizer as RustTokenizer

        root = Path(folder)
        self.max_seq_length = max_seq_length(root)
        self.tokenizer = Tokenizer(root / "tokenizer.json")
        self._encoding = RustTokenizer.from_file(str(root / "tokenizer.json"))
        self._encoding.enable_truncation(max_length=self.max_seq_length)
        self._encoding.enable_padding(pad_id=self._encoding.token_to_id("[PAD]") or 0)
        # No pinning: OpenVINO pins its threads to cores, and two worker processes would pin to the same ones.
        config: dict[str, Any] = {"ENABLE_CPU_PINNING": False}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        model = core.read_model(str(root / file_name))
        self._inputs = {port.get_any_name() for port in model.inputs}
        try:  # compiled blobs cached beside the export: later loads skip most of the compilation
            cached = ov.Core()
            cached.set_property({"CACHE_DIR": str(root / "compiled")})
            self.compiled = cached.compile_model(model, "CPU", config)  # default precision: bf16 where supported
        except RuntimeError:  # a read-only folder, or another process writing the same blob: compile uncached
            self.compiled = core.compile_model(model, "CPU", config)
        self._dim = int(self.compiled.outputs[0].get_partial_shape()[2].get_length())

    def get_sentence_embedding_dimension(self) -> int:
        return self._dim

    def encode(self, texts: list[str], batch_size: int = 64, **_: Any) -> np.ndarray:
        """Unit-norm float32 embeddings, in the order of `texts`."""
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        request = self.compiled.create_infer_request()
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            encodings = self._encoding.encode_batch([texts[i] for i in batch])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
            hidden = request.infer(feed)[self.compiled.outputs[0]]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out[batch] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out
