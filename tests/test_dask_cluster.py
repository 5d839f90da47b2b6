"""Scale-out: an ingest through a real `dask scheduler` with two `dask worker` processes equals a local run."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import lancedb
import numpy as np
import pytest

from flows.ingest import ingest

from .processes import free_port, spawn, stop, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
BIN = Path(sys.executable).parent


@pytest.fixture
def dask_cluster(prefect_server: None, tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """`dask scheduler` and two single-threaded `dask worker` processes on loopback."""
    from prefect.client.orchestration import get_client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(
        os.environ, PREFECT_API_URL=str(get_client(sync_client=True).api_url), DASK_LOGGING__DISTRIBUTED="warning"
    )
    procs = [
        spawn(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
            tmp_path / "scheduler.log",
            env,
        )
    ]
    wait_for_port(port)
    names = ["embed-a", "embed-b"]
    for name in names:
        args = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--name", name, "--no-dashboard"]
        procs.append(spawn(args, tmp_path / f"{name}.log", env))
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
        addresses = sorted(client.scheduler_info()["workers"])
    try:
        yield address, addresses
    finally:
        stop(procs)


def rows(uri: Path) -> dict[str, np.ndarray]:
    data = lancedb.connect(str(uri)).open_table("chunks").to_arrow()
    vectors = np.array(data.column("vector").to_pylist(), dtype=np.float32)
    return dict(zip(data.column("chunk_id").to_pylist(), vectors, strict=True))


def test_an_existing_cluster_embeds_on_both_workers_and_matches_a_local_run(
    dask_cluster: tuple[str, list[str]], small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, workers = dask_cluster
    monkeypatch.setenv("RAGOPS_DASK_WORKERS", "2")
    monkeypatch.setenv("RAGOPS_PARTITION_MB", "0.02")  # several partitions, so both workers get some
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(tmp_path / "remote"))
    monkeypatch.setenv("RAGOPS_DASK_ADDRESS", address)
    remote = ingest(str(small_corpus))

    assert sorted(remote.embed_workers) == workers  # both external workers did embedding work
    assert sorted(remote.prepare_workers) == workers  # and extraction and chunking
    assert all(w["chunks"] > 0 and w["model_loads"] == 1 for w in remote.embed_workers.values())

    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(tmp_path / "local"))
    monkeypatch.delenv("RAGOPS_DASK_ADDRESS")
    local = ingest(str(small_corpus))

    assert not set(local.embed_workers) & set(workers)
    remote_rows, local_rows = rows(tmp_path / "remote"), rows(tmp_path / "local")
    assert sorted(remote_rows) == sorted(local_rows)
    for chunk_id, vector in remote_rows.items():
        np.testing.assert_allclose(vector, local_rows[chunk_id], atol=1e-4)
