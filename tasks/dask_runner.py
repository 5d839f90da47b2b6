"""Build the Prefect DaskTaskRunner for embedding: an existing scheduler, one worker per GPU, or local processes."""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from prefect_dask import DaskTaskRunner

from tasks.settings import Settings


def gpu_count() -> int:
    """Visible CUDA devices (0 without torch CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class _ShutdownHeartbeatFilter(logging.Filter):
    """Drop the heartbeat error a busy worker logs when the cluster closes under it: harmless, but a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to communicate with scheduler during heartbeat")


def dask_setup(worker: Any) -> None:
    """Dask preload hook, run in each local worker process as it starts."""
    logging.getLogger("distributed.worker").addFilter(_ShutdownHeartbeatFilter())


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


def dask_task_runner(settings: Settings) -> tuple[DaskTaskRunner, int]:
    """The task runner for embedding and how many torch threads each worker should use."""
    logging.getLogger("distributed").setLevel(logging.WARNING)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read by worker processes as they import
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address), settings.torch_threads
    gpus = gpu_count() if settings.device in ("auto", "cuda") else 0
    workers = settings.local_workers(gpus)
    cluster_kwargs: dict[str, Any] = {
        "n_workers": workers,
        "dashboard_address": settings.dask_dashboard,
        "env": worker_env(),
        "preload": [__name__],
    }
    if gpus and importlib.util.find_spec("dask_cuda") is not None:
        return DaskTaskRunner(cluster_class="dask_cuda.LocalCUDACluster", cluster_kwargs=cluster_kwargs), 0
    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // workers)
    cluster_kwargs.update(processes=True, threads_per_worker=1)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs), threads
