"""An object store's commit lock on a real `prefect server`: a holder killed with SIGKILL leaves its slot on a lease
that lapses (the server's lease service frees it), and the next writer proceeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from .conftest import REPO
from .processes import start_prefect_server, stop

pytestmark = pytest.mark.slow

URI = "s3://ragops/lancedb"  # the lock is named by the store; taking it touches only the Prefect API

HOLD = """
import sys, time
from tasks.settings import Settings
from tasks.store.locks import table_lock
settings = Settings(_env_file=None, lancedb_uri=sys.argv[1], table="chunks", lock_timeout_s=float(sys.argv[2]))
with table_lock(settings, "commit"):
    print("holding", flush=True)
    if sys.argv[3] == "hold":
        time.sleep(3600)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`prefect server start` (its lease service looking every second), and the environment of its clients."""
    root = tmp_path_factory.mktemp("lease-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAGOPS_"))}
    env["PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS"] = "1"
    proc, api = start_prefect_server(root / "home", env)
    try:
        yield api, {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(root / "client-home")}
    finally:
        stop([proc])


def lock_slots(api: str) -> int:
    """Active slots of the table's commit lock on the server."""
    from tasks.settings import Settings
    from tasks.store.locks import lock_name

    name = lock_name(Settings(_env_file=None, lancedb_uri=URI, table="chunks"), "commit")  # type: ignore[call-arg]
    return int(httpx.get(f"{api}/v2/concurrency_limits/{name}", timeout=10).json()["active_slots"])


def test_a_lock_holder_killed_with_sigkill_frees_its_slot_when_its_lease_lapses(
    server: tuple[str, dict[str, str]],
) -> None:
    api, env = server
    # given: a writer holding the commit lock of an object-store table
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, URI, "30", "hold"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        assert lock_slots(api) == 1

        # when: it is killed with SIGKILL (no release, no cleanup)
        os.kill(holder.pid, signal.SIGKILL)
        assert holder.wait(timeout=30) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
    assert lock_slots(api) == 1  # the dead holder's slot is still taken

    # then: the next writer, willing to wait longer than a lease, gets the lock and releases it
    after = subprocess.run(
        [sys.executable, "-c", HOLD, URI, "240", "release"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert after.returncode == 0, after.stderr[-3000:]
    assert after.stdout.strip() == "holding"
    assert lock_slots(api) == 0
