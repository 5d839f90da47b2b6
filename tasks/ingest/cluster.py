"""The Dask cluster that builds partitions: an existing scheduler, one worker per GPU, or local processes.

A local cluster is started in the background as soon as the flow knows it will need one, and each worker loads
the embedding model as it starts, so cluster start-up and model loads overlap extraction and chunking.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tasks.settings import Settings

if TYPE_CHECKING:  # imported where a cluster is used: a run that embeds nothing never loads Dask
    from prefect_dask import DaskTaskRunner

    from tasks.ingest.partitions import BuildContext, Partition, PartitionResult

WARM_SPEC_ENV = "RAGOPS_WORKER_WARM_SPEC"


def gpu_count() -> int:
    """Visible CUDA devices (0 without torch CUDA)."""
    from tasks.embed.embedding import gpu_device_files

    if not gpu_device_files():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class _ShutdownHeartbeatFilter(logging.Filter):
    """Drop the heartbeat error a busy worker logs when the cluster closes under it: harmless, but a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to communicate with scheduler during heartbeat")


def dask_setup(worker: Any) -> None:
    """Dask preload hook, run in each local worker process as it starts: quiet logs, load the model once."""
    logging.getLogger("distributed.worker").addFilter(_ShutdownHeartbeatFilter())
    spec = os.environ.get(WARM_SPEC_ENV)
    if spec:
        from tasks.embed import embedding

        try:  # a warm-up: if it fails, the first batch loads the model again and reports a real failure
            embedding.load_model(embedding.EmbedSpec(**json.loads(spec)))
        except Exception as exc:
            logging.getLogger(__name__).debug("model warm-up failed, the first batch loads it: %s", exc)


def worker_env() -> dict[str, str]:
    """Environment for local workers: report task runs to the same Prefect API as this process.

    Without it each worker process would start an ephemeral Prefect server of its own, and the task runs
    would land in a database nobody looks at.
    """
    from prefect.client.orchestration import get_client

    env = {"DASK_LOGGING__DISTRIBUTED": "warning", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    api_url = get_client(sync_client=True).api_url
    if api_url:
        env["PREFECT_API_URL"] = str(api_url).rstrip("/")
    return env


@dataclasses.dataclass
class LocalCluster:
    """A local Dask cluster starting in a background thread; `address()` waits for it."""

    future: Future[Any]
    threads: int  # torch/OpenVINO threads each worker uses
    workers: int

    def address(self) -> str:
        """The scheduler address, once every worker has started and loaded the model."""
        return str(self.future.result().scheduler_address)

    def close(self) -> None:
        """Stop the workers and the scheduler (waits for a start still in progress)."""
        try:
            self.future.result().close()
        except Exception as exc:  # a cluster that failed to start has nothing to close; its error surfaced already
            logging.getLogger(__name__).debug("cluster did not start: %s", exc)


def start_local_cluster(settings: Settings, warm: bool = True) -> LocalCluster:
    """Start a local cluster in the background: one worker per GPU, else one process per core (or as set).

    With `warm`, each worker loads the embedding model for `embedding.embed_spec(settings, threads)` as it starts.
    """
    from tasks.embed import embedding

    logging.getLogger("distributed").setLevel(logging.WARNING)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read by worker processes as they import
    gpus = gpu_count() if settings.device in ("auto", "cuda") else 0
    workers = settings.local_workers(gpus)
    env = worker_env()
    kwargs: dict[str, Any] = {
        "n_workers": workers,
        "dashboard_address": settings.dask_dashboard,
        "preload": [__name__],
    }
    if gpus and importlib.util.find_spec("dask_cuda") is not None:
        cluster_class, threads = "dask_cuda.LocalCUDACluster", 0
    else:
        cluster_class, threads = (
            "distributed.LocalCluster",
            settings.torch_threads or max(1, (os.cpu_count() or 1) // workers),
        )
        kwargs.update(processes=True, threads_per_worker=1)
    if warm:
        # the endpoint key stays out of the workers' environment: an endpoint has no model to warm up
        warm_spec = {**dataclasses.asdict(embedding.embed_spec(settings, threads)), "api_key": ""}
        env[WARM_SPEC_ENV] = json.dumps(warm_spec)
    kwargs["env"] = env
    module, _, name = cluster_class.rpartition(".")
    pool = ThreadPoolExecutor(1, thread_name_prefix="ragops-cluster-start")
    future = pool.submit(lambda: getattr(importlib.import_module(module), name)(**kwargs))
    pool.shutdown(wait=False)
    return LocalCluster(future, threads, workers)


class EmbeddingCluster:
    """Where a run embeds: the configured scheduler, or a local cluster started early (`start`) or on demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.local: LocalCluster | None = None

    def start(self) -> None:
        """Begin starting a local cluster now, in the background (nothing to do with a configured scheduler)."""
        if self.local is None and not self.settings.dask_address:
            self.local = start_local_cluster(self.settings)

    def task_runner(self) -> tuple[DaskTaskRunner, int]:
        """A Prefect task runner on the cluster, and how many threads each worker should use."""
        from prefect_dask import DaskTaskRunner

        if self.settings.dask_address:
            return DaskTaskRunner(address=self.settings.dask_address), self.settings.torch_threads
        self.start()
        assert self.local is not None
        return DaskTaskRunner(address=self.local.address()), self.local.threads

    def close(self) -> None:
        """Stop the local cluster, if one was started."""
        if self.local is not None:
            self.local.close()
            self.local = None


@contextmanager
def embedding_cluster(settings: Settings) -> Iterator[EmbeddingCluster]:
    """An `EmbeddingCluster` whose local cluster, if any was started, is stopped on leaving the block."""
    cluster = EmbeddingCluster(settings)
    try:
        yield cluster
    finally:
        cluster.close()


def cluster_resources(client: Any) -> tuple[int, set[str]]:
    """How many workers the cluster has, and the resource names they advertise (`dask worker --resources GPU=1`)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return len(workers), {name for info in workers.values() for name in (info.get("resources") or {})}


def task_resources(available: set[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Resources a partition's (prepare, embed-and-write) tasks ask for: embedding goes to workers labelled GPU and
    extraction to workers labelled CPU, when the cluster has such workers; otherwise anywhere."""
    return ({"CPU": 1} if "CPU" in available else {}), ({"GPU": 1} if "GPU" in available else {})


def submit_with_resources(
    runner: DaskTaskRunner, task: Any, parameters: dict[str, Any], resources: dict[str, float]
) -> Any:
    """Submit a Prefect task to the runner's cluster with Dask resources attached.

    `DaskTaskRunner.submit` passes `resources=None` to Dask, so a `dask.annotate(resources=...)` around it is lost on
    an existing cluster (prefect-dask issue #47); the runner's own client takes them directly.
    """
    from prefect_dask.task_runners import PrefectDaskFuture

    params = {k: getattr(v, "wrapped_future", v) for k, v in parameters.items()}
    future = runner.client.submit(task, parameters=params, return_type="state", resources=resources or None, pure=False)
    return PrefectDaskFuture(wrapped_future=future, task_run_id=future.task_run_id)


def run_partitions(
    parts: Iterable[Partition], ctx: BuildContext, runner: DaskTaskRunner, in_flight: int
) -> Iterator[PartitionResult]:
    """Build partitions on the cluster, at most `in_flight` at a time (0: twice the workers; a new one starts as one
    finishes), and yield their results as they complete. A partition is one task on a cluster whose workers are
    alike; where some advertise `CPU` or `GPU` it is two: prepare (CPU) then embed-and-write (GPU if any)."""
    from distributed import as_completed

    from tasks.ingest.steps import build_partition, prepare, write_partition

    workers, available = cluster_resources(runner.client)
    prepare_on, embed_on = task_resources(available)
    in_flight = in_flight or 2 * max(1, workers)
    pending = iter(parts)
    running: dict[str, Any] = {}
    completed = as_completed(loop=runner.client.loop)

    def submit_next() -> bool:
        part = next(pending, None)
        if part is None:
            return False
        if prepare_on or embed_on:
            prepared = submit_with_resources(runner, prepare, {"part": part, "ctx": ctx}, prepare_on)
            written = submit_with_resources(runner, write_partition, {"prepared": prepared, "ctx": ctx}, embed_on)
        else:
            written = submit_with_resources(runner, build_partition, {"part": part, "ctx": ctx}, {})
        running[written.wrapped_future.key] = written
        completed.add(written.wrapped_future)
        return True

    for _ in range(max(1, in_flight)):
        if not submit_next():
            break
    for done in completed:
        written = running.pop(done.key)
        yield written.result()
        submit_next()
