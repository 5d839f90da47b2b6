"""The embedding backends: offline exports of the bundled model, what 'auto' picks, and agreement with fp32."""

from __future__ import annotations

import dataclasses
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.embed import embedding, model_export, openvino_encoder
from tasks.errors import SettingsError
from tasks.settings import Settings

from .conftest import REPO, SAMPLE

PASSAGES = [
    "The with statement wraps the execution of a block with methods defined by a context manager.",
    "A list comprehension consists of brackets containing an expression followed by a for clause.",
    "Exceptions raised in a finally clause replace the exception being handled.",
    "Unicode strings are sequences of code points; bytes are sequences of integers in range(256).",
]


def spec_for(backend: str) -> embedding.EmbedSpec:
    return dataclasses.replace(embedding.embed_spec(Settings()), device="cpu", backend=backend, threads=2)


@pytest.fixture(scope="module")
def fp32_vectors() -> np.ndarray:
    return embedding.embed_texts(PASSAGES, spec_for("torch"), role="passage")


@pytest.mark.parametrize(
    ("backend", "min_cosine"),
    [("onnx", 0.9999), ("openvino", 0.9999), ("onnx-int8", 0.97), ("openvino-int8", 0.97)],
)
def test_backend_matches_fp32_pytorch(backend: str, min_cosine: float, fp32_vectors: np.ndarray) -> None:
    spec = spec_for(backend)

    vectors = embedding.embed_texts(PASSAGES, spec, role="passage")

    folder, file_name = model_export.prepare(spec.model_path, backend, spec.cache_dir)
    assert file_name and (Path(folder) / file_name).exists()
    assert vectors.shape == fp32_vectors.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert (vectors * fp32_vectors).sum(axis=1).min() >= min_cosine
    # the nearest passage of each passage is itself, as with fp32
    assert (np.argmax(vectors @ fp32_vectors.T, axis=1) == np.arange(len(PASSAGES))).all()


def test_auto_backend_is_torch_on_gpu_and_the_measured_default_on_cpu() -> None:
    assert embedding.resolve_backend("auto", "cuda") == "torch"
    assert embedding.resolve_backend("auto", "cpu") == embedding.DEFAULT_CPU_BACKEND
    assert embedding.resolve_backend("onnx-int8", "cpu") == "onnx-int8"


def test_unknown_or_cpu_only_backend_is_refused_clearly() -> None:
    with pytest.raises(SettingsError, match="unknown embedding backend 'tensorrt'"):
        embedding.resolve_backend("tensorrt", "cpu")
    with pytest.raises(SettingsError, match="runs on CPUs only"):
        embedding.resolve_backend("openvino", "cuda")
    with pytest.raises(SettingsError, match="invalid setting RAGOPS_EMBED_BACKEND: Input should be"):
        Settings(embed_backend="tensorrt")  # type: ignore[arg-type]


def _prepare(args: tuple[str, str]) -> tuple[str, str | None]:
    model_path, cache_dir = args
    return model_export.prepare(model_path, "onnx", cache_dir)


def test_concurrent_exports_make_one_complete_export(tmp_path: Path) -> None:
    model_path = embedding.bundled_model_path()
    cache = str(tmp_path / "cache")

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_prepare, [(model_path, cache)] * 2)

    assert results[0] == results[1]
    folder = Path(results[0][0])
    assert (folder / "onnx" / "model.onnx").stat().st_size > 10_000_000
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".onnx-")]
    assert leftovers == []  # the staging folder was renamed into place, nothing half-written remains


def test_failed_export_leaves_no_export_behind(tmp_path: Path) -> None:
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")

    with pytest.raises(Exception):  # noqa: B017 - whatever the exporter raises, nothing may be left behind
        model_export.prepare(str(broken), "openvino", str(tmp_path / "cache"))

    exports = list((tmp_path / "cache").glob("*/*"))
    assert [p.name for p in exports if not p.name.endswith(".lock")] == []


def test_lean_openvino_encoder_matches_sentence_transformers_and_chunks_identically() -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from tasks.ingest.chunking import ChunkingConfig, TokenizerCounter, chunk_document
    from tasks.schemas import Document

    spec = spec_for("openvino")
    lean = embedding.load_model(spec)
    folder, file_name = model_export.prepare(spec.model_path, "openvino", spec.cache_dir)
    reference = SentenceTransformer(folder, backend="openvino", model_kwargs={"file_name": file_name})
    texts = [*PASSAGES, "short", "a much longer passage " * 200]  # one beyond the 256-token limit: truncated alike

    assert isinstance(lean, openvino_encoder.OpenVINOEncoder)
    got = embedding.embed_texts(texts, spec, role="passage")
    want = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert (got * want).sum(axis=1).min() > 0.9999

    text = (SAMPLE / "tutorial" / "controlflow.txt").read_text(encoding="utf-8")
    doc = Document("controlflow", text, "Control flow", "sample", "controlflow.txt", "txt")
    config = ChunkingConfig(200, 32, embedding.max_content_tokens(spec))
    hf = TokenizerCounter(AutoTokenizer.from_pretrained(embedding.bundled_model_path()))
    assert [c.chunk_id for c in chunk_document(doc, config, TokenizerCounter(lean.tokenizer))] == [
        c.chunk_id for c in chunk_document(doc, config, hf)
    ]


def test_embedding_on_cpu_does_not_import_torch() -> None:
    code = (
        "import sys; from tasks.embed import embedding; from tasks.settings import Settings; "
        "embedding.embed_texts(['hello'], embedding.embed_spec(Settings()), role='passage'); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # the lean OpenVINO path: no torch, transformers or sentence-transformers
