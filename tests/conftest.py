"""Shared fixtures: a real Prefect test server, real small corpora copied from the bundled sample, temp LanceDB."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Nobody answers a review in the suite: a borderline candidate keeps the gate's decision (the review tests set it).
os.environ.setdefault("RAGOPS_REVIEW_WAIT", "false")
# A local Prefect server a developer runs in this checkout (`ragops server start`) is never what a test reports to.
os.environ["RAGOPS_PREFECT_HOME"] = os.path.join(tempfile.gettempdir(), f"ragops-tests-{os.getpid()}-no-server")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "datasets" / "python-docs"
SMALL_DOCS = [
    "tutorial/appetite.txt",
    "tutorial/whatnow.txt",
    "tutorial/venv.txt",
    "using/editors.md",
    "library/tty.html",
    "library/builtins.html",
    "pdf/secrets.pdf",
]


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One real Prefect API (temporary server and database) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """Seven real documents of every format, copied from the bundled sample."""
    return copy_small_corpus(tmp_path / "corpus")


def copy_small_corpus(root: Path) -> Path:
    """Copy the seven SMALL_DOCS of the bundled sample under `root`."""
    for rel in SMALL_DOCS:
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / rel, dest)
    return root


@pytest.fixture
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ragops at a fresh LanceDB folder, with a two-process local Dask cluster."""
    uri = tmp_path / "lancedb"
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(uri))
    monkeypatch.setenv("RAGOPS_TABLE", "chunks")
    monkeypatch.setenv("RAGOPS_DASK_WORKERS", "2")
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "0")  # small test corpora still go through Dask
    monkeypatch.setenv("RAGOPS_PARTITION_MB", "0.02")  # small test corpora still make several partitions
    return uri
