"""Offline exports of the embedding model to the faster sentence-transformers backends (ONNX, OpenVINO, int8).

Each export is made once per machine from the local model folder, into a cache folder, under a file lock so
that Dask workers starting together export it once; it is written to a temporary folder and renamed into place,
so a crash never leaves a half-written export behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tasks.errors import SettingsError
from tasks.quiet import quiet_export

EXPORT_VERSION = "1"
CALIBRATION_FILE = resources.files("tasks.embed").joinpath("data", "calibration.jsonl")  # package data
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    """How sentence-transformers loads one variant of the model."""

    engine: str  # sentence-transformers backend: torch, onnx, openvino
    file_name: str | None  # weights file inside the export folder; None = the engine's default
    int8: bool = False


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", None),
    "onnx": Backend("onnx", "onnx/model.onnx"),
    "onnx-int8": Backend("onnx", "onnx/model_int8_avx2.onnx", int8=True),
    "openvino": Backend("openvino", "openvino/openvino_model.xml"),
    "openvino-int8": Backend("openvino", "openvino/openvino_model_int8.xml", int8=True),
}


def backend(name: str) -> Backend:
    """The backend called `name`, or a clear error listing the valid ones."""
    if name not in BACKENDS:
        raise SettingsError(f"unknown embedding backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]


def export_folder(model_path: str, name: str, cache_dir: str) -> Path:
    """Where the `name` export of the model at `model_path` lives (made on first use)."""
    return Path(cache_dir).expanduser() / f"{Path(model_path).name}-{_model_fingerprint(model_path)}" / name


def prepare(model_path: str, name: str, cache_dir: str) -> tuple[str, str | None]:
    """(folder, weights file) to load the model with backend `name`, exporting it first if needed."""
    variant = backend(name)
    if variant.engine == "torch":
        return model_path, None
    if not Path(model_path).is_dir():
        raise SettingsError(f"backend {name!r} needs a local model folder, not {model_path!r}")
    target = export_folder(model_path, name, cache_dir)
    if (target / str(variant.file_name)).exists():
        return str(target), variant.file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{name}.lock"):
        if not (target / str(variant.file_name)).exists():  # another process may have exported while we waited
            staging = target.parent / f".{name}-{uuid.uuid4().hex[:8]}"
            try:
                log.info("exporting %s to %s (once per machine)", name, target)
                with quiet_export():
                    _export(model_path, name, staging)
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return str(target), variant.file_name


def calibration_texts(limit: int = 256) -> list[str]:
    """Passages for static int8 calibration, shipped with the package (no download)."""
    with CALIBRATION_FILE.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()][:limit]


def _export(model_path: str, name: str, folder: Path) -> None:
    from sentence_transformers import SentenceTransformer

    variant = BACKENDS[name]
    model = SentenceTransformer(model_path, device="cpu", backend=variant.engine, local_files_only=True)
    model.save_pretrained(str(folder))
    if name == "onnx-int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        export_dynamic_quantized_onnx_model(model, "avx2", str(folder), file_suffix="int8_avx2")
    elif name == "openvino-int8":
        _quantize_openvino(model, folder)
    if not (folder / str(variant.file_name)).exists():
        raise RuntimeError(f"export of {name} did not produce {variant.file_name}")


def _quantize_openvino(model: Any, folder: Path) -> None:
    """Post-training static int8 quantization (NNCF, with SmoothQuant) calibrated on the shipped passages."""
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer

    from datasets import Dataset  # type: ignore[attr-defined]  # mypy resolves the repository's datasets/ folder

    texts = calibration_texts()
    encoded = Dataset.from_dict({"text": texts}).map(
        lambda batch: model.tokenizer(batch["text"], truncation=True, max_length=model.max_seq_length),
        batched=True,
        remove_columns=["text"],
    )
    staging = folder / "int8-staging"
    quantizer = OVQuantizer.from_pretrained(model.transformers_model)
    config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(texts)))
    quantizer.quantize(save_directory=str(staging), ov_config=config, calibration_dataset=encoded)
    exported = folder / "openvino"
    for suffix in ("xml", "bin"):
        (staging / "openvino" / f"openvino_model.{suffix}").rename(exported / f"openvino_model_int8.{suffix}")
        (exported / f"openvino_model.{suffix}").unlink()  # the fp32 export is not needed beside it
    shutil.rmtree(staging)


def _model_fingerprint(model_path: str) -> str:
    """Changes when the model folder's weights or config change, or when the export recipe does."""
    root = Path(model_path)
    parts = [EXPORT_VERSION, str(root.resolve())]
    for path in sorted(root.glob("*.json")) + sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")):
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}")
    parts.append(hashlib.sha256(CALIBRATION_FILE.read_bytes()).hexdigest())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
