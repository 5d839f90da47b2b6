"""Faults during ingest: a Dask worker killed mid-embedding, the ingest process killed mid-write, two ingests at once,
a full disk and an unwritable location. Real processes, real LanceDB, real model; production must never move."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lancedb
import pytest

from flows.ingest import ingest
from tasks.store import lancedb_store

from .conftest import REPO, SAMPLE
from .processes import free_port, spawn, stop, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

BIN = Path(sys.executable).parent
IN_PROCESS = "1000000"  # RAGOPS_EMBED_LOCAL_MAX_CHUNKS: embed in the flow process, no cluster to start
FAQ = ["faq/general.md", "faq/library.md", "faq/extending.md", "faq/windows.md", "faq/gui.md", "faq/installed.md"]


# --- reading the table ------------------------------------------------------------------------------------------


def open_chunks(uri: Path, version: int | str | None = None) -> Any:
    table = lancedb.connect(str(uri)).open_table("chunks")
    if version is not None:
        table.checkout(version)
    return table


def rows_at(uri: Path, version: int | str | None = None) -> list[dict[str, Any]]:
    """Every row of a version (default: latest), sorted by chunk id."""
    return sorted(open_chunks(uri, version).to_arrow().to_pylist(), key=lambda r: r["chunk_id"])


def ids_by_doc(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """doc_id → its sorted chunk ids; the shape a complete ingest of a corpus must have."""
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["doc_id"], []).append(row["chunk_id"])
    return {doc: sorted(ids) for doc, ids in sorted(out.items())}


def assert_no_duplicates(rows: list[dict[str, Any]]) -> None:
    ids = [r["chunk_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate chunk rows"


def tags(uri: Path) -> dict[str, int]:
    return {name: int(info["version"]) for name, info in open_chunks(uri).tags.list().items()}


def table_state(uri: Path) -> dict[str, Any]:
    """Everything a failed run must leave as it was: versions, tags, latest rows."""
    table = open_chunks(uri)
    return {
        "versions": [v["version"] for v in table.list_versions()],
        "latest": table.version,
        "tags": tags(uri),
        "rows": rows_at(uri),
    }


# --- building corpora and tables ---------------------------------------------------------------------------------


def copy_docs(root: Path, rels: list[str]) -> Path:
    for rel in rels:
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / rel, dest)
    return root


def change_corpus(corpus: Path) -> None:
    """New documents (~150 chunks), one changed and one deleted."""
    copy_docs(corpus, FAQ)
    changed = corpus / "tutorial" / "appetite.txt"
    changed.write_text(changed.read_text() + "\n\nA closing paragraph added after production was promoted.\n")
    (corpus / "tutorial" / "whatnow.txt").unlink()


def use_store(monkeypatch: pytest.MonkeyPatch, uri: Path) -> Path:
    """Point in-process flows at `uri`, embedding in this process."""
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(uri))
    monkeypatch.setenv("RAGOPS_TABLE", "chunks")
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", IN_PROCESS)
    monkeypatch.delenv("RAGOPS_DASK_ADDRESS", raising=False)
    return uri


def ingest_and_promote(corpus: Path, uri: Path) -> tuple[int, list[dict[str, Any]]]:
    """A first ingest whose version becomes production; returns that version and its rows."""
    summary = ingest(str(corpus))
    assert summary.table_version is not None
    lancedb_store.tag_version(open_chunks(uri), lancedb_store.PRODUCTION_TAG, summary.table_version)
    return summary.table_version, rows_at(uri, summary.table_version)


def clean_ingest(corpus: Path, uri: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Chunk ids per document of a clean ingest of `corpus` into an empty table elsewhere."""
    with monkeypatch.context() as m:
        use_store(m, uri)
        ingest(str(corpus))
    rows = rows_at(uri)
    assert_no_duplicates(rows)
    return ids_by_doc(rows)


def assert_production_untouched(uri: Path, version: int, rows: list[dict[str, Any]]) -> None:
    assert tags(uri)[lancedb_store.PRODUCTION_TAG] == version
    assert rows_at(uri, lancedb_store.PRODUCTION_TAG) == rows


# --- running `ragops` as a separate process ----------------------------------------------------------------------


def cli_env(tmp_path: Path, uri: Path) -> dict[str, str]:
    """Environment for a `ragops` process: this session's Prefect API, the given store, in-process embedding."""
    from prefect.client.orchestration import get_client

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "PREFECT_"))}
    env.update(
        PREFECT_API_URL=str(get_client(sync_client=True).api_url).rstrip("/"),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        RAGOPS_LANCEDB_URI=str(uri),
        RAGOPS_TABLE="chunks",
        RAGOPS_EMBED_LOCAL_MAX_CHUNKS=IN_PROCESS,
        COLUMNS="1000",  # rich wraps at the terminal width; keep each message on its line
    )
    return env


def ragops_command(*args: str) -> list[str]:
    return [str(BIN / "ragops"), *args]


def error_line(stderr: str) -> str:
    """The CLI's `error: ...` line (exactly one)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


# --- 1. a Dask worker process killed mid-embedding ---------------------------------------------------------------


@pytest.fixture
def dask_cluster(prefect_server: None, tmp_path: Path) -> Iterator[str]:
    """`dask scheduler` and two single-threaded `dask worker` processes (each under a nanny) on loopback."""
    from distributed import Client
    from prefect.client.orchestration import get_client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(
        os.environ, PREFECT_API_URL=str(get_client(sync_client=True).api_url), DASK_LOGGING__DISTRIBUTED="warning"
    )
    scheduler = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    procs = [spawn([*scheduler, "--dashboard-address", ":0"], tmp_path / "scheduler.log", env)]
    try:
        wait_for_port(port)
        for name in ("embed-a", "embed-b"):
            args = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--name", name, "--no-dashboard"]
            procs.append(spawn(args, tmp_path / f"{name}.log", env))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        stop(procs)


def kill_a_busy_worker(client: Any, running: threading.Thread, busy_for: float = 1.5) -> tuple[str, int]:
    """SIGKILL the process of a worker that has been running an embedding task for `busy_for` seconds."""
    pids: dict[str, int] = client.run(os.getpid)  # worker address → pid of the worker process itself
    first_busy: float | None = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and running.is_alive():
        busy = sorted(addr for addr, keys in client.processing().items() if keys)
        if busy and first_busy is None:
            first_busy = time.monotonic()
        if busy and first_busy is not None and time.monotonic() - first_busy >= busy_for:
            os.kill(pids[busy[0]], signal.SIGKILL)
            return busy[0], pids[busy[0]]
        time.sleep(0.05)
    raise AssertionError("the ingest run never kept a worker busy embedding")


def test_a_worker_killed_mid_embedding_loses_no_chunks_and_leaves_production_alone(
    dask_cluster: str, small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Client

    # given: a promoted production version, and ~150 new chunks to embed on the two external workers
    uri = use_store(monkeypatch, tmp_path / "lancedb")
    production, production_rows = ingest_and_promote(small_corpus, uri)
    candidates_before = set(tags(uri))
    change_corpus(small_corpus)
    expected = clean_ingest(small_corpus, tmp_path / "reference", monkeypatch)
    monkeypatch.setenv("RAGOPS_DASK_ADDRESS", dask_cluster)
    monkeypatch.setenv("RAGOPS_DASK_WORKERS", "2")  # two batches: one per worker

    # when: one worker process is SIGKILLed while it embeds its batch
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["summary"] = ingest(str(small_corpus))
        except BaseException as exc:  # examined below
            outcome["error"] = exc

    running = threading.Thread(target=run, daemon=True)
    with Client(dask_cluster, timeout=60, set_as_default=False) as client:
        running.start()
        killed, pid = kill_a_busy_worker(client, running)
        deadline = time.monotonic() + 60
        while killed in client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert killed not in client.scheduler_info()["workers"], "the scheduler never noticed the lost worker"
    running.join(300)
    assert not running.is_alive(), "the ingest run hung after losing a worker"

    # then: production is untouched, and the run either finished with exactly the right chunks or tagged nothing
    assert not Path(f"/proc/{pid}/status").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert_production_untouched(uri, production, production_rows)
    print("worker kill outcome:", repr(outcome.get("error", "completed")))
    if "error" in outcome:
        assert set(tags(uri)) == candidates_before, f"a failed run tagged a candidate: {outcome['error']!r}"
    else:
        summary = outcome["summary"]
        assert killed not in summary.embed_workers  # its batch was redone elsewhere
        assert sum(w["chunks"] for w in summary.embed_workers.values()) == summary.chunks_embedded
        candidate = rows_at(uri, summary.candidate_tag)
        assert_no_duplicates(candidate)
        assert ids_by_doc(candidate) == expected

    # and: a re-run completes with exactly the right chunks
    again = ingest(str(small_corpus))
    if "summary" in outcome:
        assert again.table_version is None  # nothing left to do
    latest = rows_at(uri)
    assert_no_duplicates(latest)
    assert ids_by_doc(latest) == expected
    assert_production_untouched(uri, production, production_rows)


# --- 2. the ingest process killed mid-write ----------------------------------------------------------------------


def files_in(folder: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(folder)}
    except FileNotFoundError:
        return set()


def kill_when_a_file_appears(proc: subprocess.Popen[bytes], folder: Path, timeout: float = 240) -> bool:
    """SIGKILL the process group as soon as a new file appears in `folder`; False if the run ended first."""
    before = files_in(folder)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if files_in(folder) - before:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"no new file in {folder} after {timeout:.0f} s")
    return False


KILLED_IN_COMMIT = """
import os, signal, sys
import lance
from tasks.store import fragments
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "lance-commit":  # deletion files written, the new manifest not yet
    lance.LanceDataset.commit = staticmethod(die)
else:  # "clear-ledger": the new manifest written, the run's ledger not yet cleared, the candidate not tagged
    fragments.clear_staging = die
from flows.cli import app
app(sys.argv[2:], prog_name="ragops")
"""


def deletion_files(uri: Path) -> set[str]:
    """Deletion files on disk, as paths within the dataset."""
    return {f"_deletions/{name}" for name in files_in(uri / "chunks.lance" / "_deletions")}


def referenced_deletions(uri: Path) -> set[str]:
    """Deletion files some version of the table references."""
    import lance

    dataset = lance.dataset(str(uri / "chunks.lance"))
    return {
        fragment.metadata.deletion_file.path(fragment.fragment_id)
        for v in dataset.versions()
        for fragment in dataset.checkout_version(v["version"]).get_fragments()
        if fragment.metadata.deletion_file is not None
    }


def test_killing_the_ingest_process_mid_write_never_exposes_a_partial_version(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a promoted production version, then new, changed and deleted documents
    uri = use_store(monkeypatch, tmp_path / "lancedb")
    production, production_rows = ingest_and_promote(small_corpus, uri)
    old = ids_by_doc(production_rows)
    change_corpus(small_corpus)
    expected = clean_ingest(small_corpus, tmp_path / "reference", monkeypatch)
    env = {**cli_env(tmp_path, uri), "RAGOPS_STAGING_STALE_S": "1"}
    lance = uri / "chunks.lance"

    def check_after_kill(where: str) -> str:
        """Production untouched; the latest version and every candidate hold the old or the new corpus, whole."""
        latest = rows_at(uri)
        assert_production_untouched(uri, production, production_rows)
        assert_no_duplicates(latest)
        assert ids_by_doc(latest) in (old, expected), f"a kill {where} left a partial version"
        for tag, version in tags(uri).items():
            if tag.startswith(lancedb_store.CANDIDATE_PREFIX):
                tagged = rows_at(uri, version)
                assert_no_duplicates(tagged)
                assert ids_by_doc(tagged) in (old, expected), f"{tag} points at an incomplete version {version}"
        return "new corpus committed" if ids_by_doc(latest) == expected else "old corpus kept"

    def ingest_killed_in_commit(point: str) -> subprocess.CompletedProcess[bytes]:
        """`ragops ingest` in a process that SIGKILLs itself at `point` of its commit (see KILLED_IN_COMMIT)."""
        command = [sys.executable, "-c", KILLED_IN_COMMIT, point, "ingest", str(small_corpus)]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True)

    # when: `ragops ingest` is SIGKILLed as its partitions stage their first data file
    proc = spawn(ragops_command("ingest", str(small_corpus)), tmp_path / "ingest-staging.log", env)
    assert kill_when_a_file_appears(proc, lance / "data"), "the run ended before it staged a data file"
    # then
    assert proc.returncode == -signal.SIGKILL
    assert check_after_kill("while staging") == "old corpus kept"

    # when: the next run is SIGKILLed inside its commit, after its deletion files are written, before the manifest
    time.sleep(1.5)  # the killed run's heartbeat is stale: this run removes its staged files first
    killed = ingest_killed_in_commit("lance-commit")
    # then: nothing is committed; the deletion files it wrote are referenced by no version, and are in its ledger
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert check_after_kill("inside the commit, before the manifest") == "old corpus kept"
    left = deletion_files(uri) - referenced_deletions(uri)
    assert left, "the commit wrote no deletion file before it died"
    (ledger,) = (uri / "chunks.staging").glob("*/deletions.json")
    assert set(json.loads(ledger.read_text())) == left

    # when: the next run is SIGKILLed inside its commit, after the new manifest, before clearing its ledger
    time.sleep(1.5)
    killed = ingest_killed_in_commit("clear-ledger")
    # then: the new corpus is committed whole; the deletion files the earlier kill left are gone
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert check_after_kill("inside the commit, after the manifest") == "new corpus committed"
    assert not deletion_files(uri) & left

    # and: a re-run completes with exactly the right chunks, and no file on disk is left unreferenced
    time.sleep(1.5)
    final = subprocess.run(ragops_command("ingest", str(small_corpus)), env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-3000:]
    latest = rows_at(uri)
    assert_no_duplicates(latest)
    assert ids_by_doc(latest) == expected
    assert_production_untouched(uri, production, production_rows)
    assert deletion_files(uri) <= referenced_deletions(uri)
    # (a file Lance was still writing when the first kill came stays as data/.tmp*: never in a ledger, known gap)
    assert {name for name in files_in(lance / "data") if not name.startswith(".tmp")} <= referenced_files(uri)


KILLED_BEFORE_COMMIT = """
import os, signal, sys
from tasks.store import fragments
def die(*args, **kwargs):  # every partition is staged; the process dies where the commit would begin
    os.kill(os.getpid(), signal.SIGKILL)
fragments.commit_staged = die
from flows.cli import app
app(sys.argv[1:], prog_name="ragops")
"""


def referenced_files(uri: Path) -> set[str]:
    """Data files some version of the table references."""
    import lance

    dataset = lance.dataset(str(uri / "chunks.lance"))
    return {
        f.path
        for v in dataset.versions()
        for fragment in dataset.checkout_version(v["version"]).get_fragments()
        for f in fragment.data_files()
    }


def test_the_flow_killed_before_its_commit_changes_nothing_and_the_next_run_removes_its_files(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a promoted production version, then new, changed and deleted documents
    uri = use_store(monkeypatch, tmp_path / "lancedb")
    production, production_rows = ingest_and_promote(small_corpus, uri)
    before = table_state(uri)
    change_corpus(small_corpus)
    expected = clean_ingest(small_corpus, tmp_path / "reference", monkeypatch)
    env = {**cli_env(tmp_path, uri), "RAGOPS_STAGING_STALE_S": "1"}

    # when: the ingest process dies after its partitions staged their fragments, before the commit
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_COMMIT, "ingest", str(small_corpus)],
        cwd=REPO,
        env=env,
        capture_output=True,
    )

    # then: the table is exactly as it was; the staged files are on disk, referenced by no version
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert table_state(uri) == before
    assert_production_untouched(uri, production, production_rows)
    data = uri / "chunks.lance" / "data"
    orphans = files_in(data) - referenced_files(uri)
    ledgers = files_in(uri / "chunks.staging")
    assert orphans and len(ledgers) == 1, (orphans, ledgers)

    # and: once its heartbeat is stale, the next run removes those files and commits the right chunks
    time.sleep(1.5)
    again = subprocess.run(
        ragops_command("ingest", str(small_corpus), "--json", str(tmp_path / "again.json")),
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((tmp_path / "again.json").read_text())
    assert summary["orphans_removed"] == len(orphans)
    assert not (files_in(data) & orphans)
    assert files_in(data) <= referenced_files(uri)
    assert files_in(uri / "chunks.staging") == set()
    latest = rows_at(uri)
    assert_no_duplicates(latest)
    assert ids_by_doc(latest) == expected
    assert_production_untouched(uri, production, production_rows)


# --- 3. two ingests into one table at once -----------------------------------------------------------------------


WRITE_TOGETHER = """
import os, sys, time
from pathlib import Path
from tasks.store import lancedb_store
barrier, ensure_chunk_table = Path(sys.argv[1]), lancedb_store.ensure_chunk_table
def ensure_together(*args, **kwargs):  # hold each run at its write until the other one gets there too
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    return ensure_chunk_table(*args, **kwargs)
lancedb_store.ensure_chunk_table = ensure_together
from flows.cli import app
app(sys.argv[2:], prog_name="ragops")
"""


def test_two_ingests_at_once_store_each_documents_chunks_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: two corpora sharing documents, and no table yet
    shared = ["tutorial/classes.txt", "tutorial/venv.txt"]
    only_x = ["tutorial/errors.txt", "tutorial/whatnow.txt"]
    only_y = ["tutorial/modules.txt", "tutorial/appetite.txt"]
    corpora = [copy_docs(tmp_path / "x", shared + only_x), copy_docs(tmp_path / "y", shared + only_y)]
    union = copy_docs(tmp_path / "union", shared + only_x + only_y)
    expected = clean_ingest(union, tmp_path / "reference", monkeypatch)
    uri = tmp_path / "lancedb"
    env = cli_env(tmp_path, uri)
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    # when: both run at once, and both create the table and commit at the same moment (held at a barrier)
    runs = [(tmp_path / f"run-{i}.log", tmp_path / f"run-{i}.json") for i in range(2)]
    procs = [
        spawn(
            [sys.executable, "-c", WRITE_TOGETHER, str(barrier), "ingest", str(corpus), "--json", str(out), "-v"],
            log,
            env,
            cwd=REPO,
        )
        for corpus, (log, out) in zip(corpora, runs, strict=True)
    ]
    try:
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        stop(procs)

    # then: both succeed, every document's chunks are stored exactly once, each candidate holds all its documents
    for proc, (log, _) in zip(procs, runs, strict=True):
        assert proc.returncode == 0, log.read_text()[-3000:]
        print(log.name, *(line for line in log.read_text().splitlines() if "commit" in line), sep="\n  ")
    assert len(list(barrier.iterdir())) == 2
    latest = rows_at(uri)
    assert_no_duplicates(latest)
    assert ids_by_doc(latest) == expected
    for corpus, (_, out) in zip(corpora, runs, strict=True):
        tag = json.loads(out.read_text())["candidate_tag"]
        candidate = rows_at(uri, tag)
        assert_no_duplicates(candidate)
        own = {doc: ids for doc, ids in expected.items() if (corpus / doc).is_file()}
        assert {doc: ids_by_doc(candidate).get(doc) for doc in own} == own, f"{tag} misses chunks of {corpus.name}"


# --- 4. a full disk and an unwritable location -------------------------------------------------------------------

FILE_SIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from flows.cli import app
app(sys.argv[2:], prog_name="ragops")
"""


def test_a_full_disk_fails_the_ingest_with_a_clear_error_and_keeps_the_table(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a promoted table, new documents to add, and no file may grow past 64 KiB ("disk full")
    uri = use_store(monkeypatch, tmp_path / "lancedb")
    production, _ = ingest_and_promote(small_corpus, uri)
    before = table_state(uri)
    copy_docs(small_corpus, FAQ)

    # when
    command = [sys.executable, "-c", FILE_SIZE_LIMIT, str(64 * 1024), "ingest", str(small_corpus)]
    result = subprocess.run(command, cwd=REPO, env=cli_env(tmp_path, uri), capture_output=True, text=True, timeout=300)

    # then: a non-zero exit with one line that says what failed and where; the table is exactly as it was
    assert result.returncode != 0
    message = error_line(result.stderr)
    assert "could not write" in message and str(uri) in message and "File too large" in message, message
    assert table_state(uri) == before
    assert before["tags"][lancedb_store.PRODUCTION_TAG] == production


@pytest.mark.parametrize("location", ["under /proc", "a regular file"])
def test_an_unwritable_location_fails_the_ingest_with_a_clear_error(
    location: str, small_corpus: Path, tmp_path: Path
) -> None:
    # given: a store location nothing can be written to (the tests run as root, so permissions would not stop it)
    if location == "under /proc":
        uri = Path("/proc/ragops-readonly/lancedb")
    else:
        uri = tmp_path / "store"
        uri.write_text("not a folder\n")

    # when
    result = subprocess.run(
        ragops_command("ingest", str(small_corpus)), env=cli_env(tmp_path, uri), capture_output=True, text=True
    )

    # then: a non-zero exit with one line that names the location; nothing was created or changed there
    assert result.returncode != 0
    message = error_line(result.stderr)
    assert f"could not create the LanceDB folder {uri}" in message, message
    if location == "under /proc":
        assert not uri.parent.exists()
    else:
        assert "a file is in the way" in message
        assert uri.read_text() == "not a folder\n"
