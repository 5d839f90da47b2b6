"""Scale-out on object storage, as a user runs it: the corpus and the LanceDB table in an S3 bucket (a local moto
server), a real `dask scheduler` with two `dask worker` processes, and `ragops` processes that share one Prefect API
(on an object store the commit and promotion locks are Prefect global concurrency limits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import lancedb
import pytest

from evaluations.promotion import production_history
from tasks.store import lancedb_store

from .conftest import REPO, SAMPLE, SMALL_DOCS
from .processes import free_port, spawn, stop, wait_for_http, wait_for_port
from .s3_server import S3Server, start_s3_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

BIN = Path(sys.executable).parent
BUCKET = "ragops"
CHANGED_DOC = "tutorial/appetite.txt"
# The golden questions the seven SMALL_DOCS answer (as in tests/test_cli.py), and a policy that judges by them alone.
GOLDEN_IDS = {"q023", "q050", "q054", "q057", "q058"}
POLICY = "primary_metric: chunk_ndcg@10\nmodes: [vector, hybrid]\nrequired: [chunk_ndcg@10]\n"
IN_PROCESS = "1000000"  # RAGOPS_EMBED_LOCAL_MAX_CHUNKS: embed in the ragops process, no cluster


@dataclass
class Bucket:
    """An S3 server holding the corpus under s3://BUCKET/docs/, and the environment of `ragops` processes using it."""

    server: S3Server
    env: dict[str, str]
    tmp: Path

    @property
    def uri(self) -> str:
        return self.env["RAGOPS_LANCEDB_URI"]

    def ragops(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run `ragops ARGS` to its end, as a user would."""
        return subprocess.run(
            [str(BIN / "ragops"), *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    def ingest(self, name: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """`ragops ingest s3://BUCKET/docs`; the process and its JSON summary."""
        summary = self.tmp / f"{name}.json"
        done = self.ragops("ingest", f"s3://{BUCKET}/docs", "--json", str(summary))
        assert done.returncode == 0, done.stderr[-3000:]
        return done, json.loads(summary.read_text())

    def table(self) -> Any:
        db = lancedb.connect(self.uri, storage_options=self.server.storage_options())
        return db.open_table("chunks")

    def tags(self) -> dict[str, int]:
        return {name: int(info["version"]) for name, info in self.table().tags.list().items()}

    def chunk_ids(self, version: int) -> set[str]:
        table = self.table()
        table.checkout(version)
        return set(table.to_arrow().column("chunk_id").to_pylist())

    def promotion_records(self) -> list[dict[str, Any]]:
        db = lancedb.connect(self.uri, storage_options=self.server.storage_options())
        return lancedb_store.promotion_records(db, "promotions", "chunks")

    def docs_gets(self) -> list[str]:
        """Object reads of the corpus's keys so far."""
        return [path for path in self.server.object_gets() if path.startswith(f"/{BUCKET}/docs/")]

    def change_document(self, rel: str) -> None:
        key = f"docs/{rel}"
        body = self.server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        changed = body + b"\n\nA closing paragraph added to the copy in the bucket.\n"
        self.server.client().put_object(Bucket=BUCKET, Key=key, Body=changed)


def prefect_api_url() -> str:
    """This session's Prefect API (the `prefect_server` fixture), which every process must share."""
    from prefect.client.orchestration import get_client

    return str(get_client(sync_client=True).api_url).rstrip("/")


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[Bucket]:
    """A moto S3 server with the seven SMALL_DOCS under s3://BUCKET/docs/ and the table to be at s3://BUCKET/lancedb."""
    server = start_s3_server(tmp_path / "s3")
    try:
        server.create_bucket(BUCKET)
        client = server.client()
        for rel in SMALL_DOCS:
            client.put_object(Bucket=BUCKET, Key=f"docs/{rel}", Body=(SAMPLE / rel).read_bytes())
        lines = (REPO / "datasets/golden/python-docs.jsonl").read_text().splitlines()
        golden = tmp_path / "golden.jsonl"
        golden.write_text("\n".join(x for x in lines if json.loads(x).get("id") in GOLDEN_IDS) + "\n")
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "PREFECT_", "AWS_"))}
        env.update(
            server.env(),
            PREFECT_API_URL=prefect_api_url(),
            PREFECT_HOME=str(tmp_path / "prefect-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            HF_HUB_OFFLINE="1",
            RAGOPS_LANCEDB_URI=f"s3://{BUCKET}/lancedb",
            RAGOPS_TABLE="chunks",
            RAGOPS_GOLDEN_SET=str(golden),
            RAGOPS_POLICY=str(policy),
            RAGOPS_REPORTS_DIR=str(tmp_path / "reports"),
            RAGOPS_EMBED_LOCAL_MAX_CHUNKS=IN_PROCESS,
            RAGOPS_SERVE_REFRESH_S="0.5",
            RAGOPS_QUERY_LOG_FLUSH_S="0.5",
            COLUMNS="1000",  # rich wraps at the terminal width; keep each table row on its line
        )
        yield Bucket(server, env, tmp_path)
    finally:
        server.stop()


@pytest.fixture
def dask_cluster(bucket: Bucket) -> Iterator[tuple[str, list[str]]]:
    """`dask scheduler` and two single-threaded `dask worker` processes that reach the bucket; address, workers."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**bucket.env, "DASK_LOGGING__DISTRIBUTED": "warning"}
    scheduler = [
        str(BIN / "dask"),
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-address",
        ":0",
    ]
    procs = [spawn(scheduler, bucket.tmp / "scheduler.log", env, cwd=REPO)]
    try:
        wait_for_port(port)
        for name in ("embed-a", "embed-b"):
            args = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--name", name, "--no-dashboard"]
            procs.append(spawn(args, bucket.tmp / f"{name}.log", env, cwd=REPO))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            workers = sorted(client.scheduler_info()["workers"])
        yield address, workers
    finally:
        stop(procs)


def production_in_versions_listing(listing: str) -> int:
    """The version on whose row `ragops versions` shows the `production` tag."""
    rows = [line for line in listing.splitlines() if "production" in line]
    assert len(rows) == 1, listing
    return int(rows[0].strip("│┃| ").split()[0])


def wait_for_served_version(base: str, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    served = None
    while time.monotonic() < deadline:
        served = httpx.get(f"{base}/version", timeout=10).json().get("version")
        if served == version:
            return
        time.sleep(0.5)
    raise AssertionError(f"the server still serves version {served}, not {version}, after {timeout:.0f} s")


def test_the_scale_out_path_runs_end_to_end_on_object_storage(
    bucket: Bucket, dask_cluster: tuple[str, list[str]]
) -> None:
    address, workers = dask_cluster
    bucket.env.update(RAGOPS_DASK_ADDRESS=address, RAGOPS_EMBED_LOCAL_MAX_CHUNKS="0", RAGOPS_PARTITION_MB="0.02")

    # when the corpus in the bucket is ingested into a table in the bucket, on the external cluster
    _, first = bucket.ingest("first")
    # then every document is written as a candidate, in several partitions spread over both workers
    assert first["docs_new"] == 7 and first["chunks_written"] > 20, first
    assert first["partitions"] >= 2, first
    assert set(workers) <= set(first["embed_workers"]) | set(first["prepare_workers"]), first
    v1 = first["table_version"]
    assert v1 is not None and bucket.tags()[first["candidate_tag"]] == v1
    assert {f"/{BUCKET}/docs/{rel}" for rel in SMALL_DOCS} <= set(bucket.docs_gets())  # each document was read

    # when the unchanged bucket is ingested again
    gets_before, versions_before = bucket.docs_gets(), [v["version"] for v in bucket.table().list_versions()]
    again, unchanged = bucket.ingest("unchanged")
    # then nothing is written, and no document is read: the ETags of the listing say they did not change
    assert "nothing changed: 0 embedded" in again.stdout
    assert unchanged["table_version"] is None and unchanged["files_unread"] == 7, unchanged
    assert [v["version"] for v in bucket.table().list_versions()] == versions_before
    assert bucket.docs_gets() == gets_before

    # when the first candidate is promoted
    promoted = bucket.ragops("promote")
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert f"PROMOTE chunks version {v1}" in promoted.stdout
    assert bucket.tags()[lancedb_store.PRODUCTION_TAG] == v1

    # when one document in the bucket changes and the corpus is ingested again
    bucket.change_document(CHANGED_DOC)
    gets_before = bucket.docs_gets()
    _, second = bucket.ingest("second")
    # then only that document is read and re-chunked; the other six are skipped by their ETags
    assert second["docs_changed"] == 1 and second["docs_new"] == 0, second
    assert second["files_unread"] == 6, second
    assert set(bucket.docs_gets()[len(gets_before) :]) == {f"/{BUCKET}/docs/{CHANGED_DOC}"}
    v2 = second["table_version"]
    assert v2 is not None and v2 > v1

    # when the second candidate is evaluated and promoted (one `promote`: it evaluates, then moves the tag)
    decision_path = bucket.tmp / "decision.json"
    second_promotion = bucket.ragops("promote", "--json", str(decision_path))
    # then the gate decided (this policy gates no metric, so a changed candidate is promoted) and the log records it
    assert second_promotion.returncode in (0, 1), second_promotion.stderr[-3000:]
    assert f"chunks version {v2}" in second_promotion.stdout
    decision = json.loads(decision_path.read_text())
    assert decision["decision"] in ("promote", "block") and decision["candidate_version"] == v2
    assert decision["decision"] == "promote", decision["reasons"]
    records = bucket.promotion_records()
    assert [(r["action"], r["version"], r["previous_version"]) for r in records] == [
        ("promote", v1, None),
        ("promote", v2, v1),
    ]
    assert records[-1]["run_id"] == decision["run_id"]
    assert bucket.tags()[lancedb_store.PRODUCTION_TAG] == v2

    # when `ragops serve` serves the table from the bucket
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve_log = bucket.tmp / "serve.log"
    server = spawn([str(BIN / "ragops"), "serve", "--port", str(port)], serve_log, bucket.env, cwd=REPO)
    try:
        wait_for_http(f"{base}/health", server, serve_log)
        answer = httpx.post(f"{base}/query", json={"question": "How do I create a virtual environment?", "k": 3})
        # then it answers from the production version, with chunks of that version
        assert answer.status_code == 200, answer.text
        hits = {hit["chunk_id"] for hit in answer.json()["chunks"]}
        assert answer.json()["version"] == v2 and hits and hits <= bucket.chunk_ids(v2)

        # when production is rolled back from another process
        rolled = bucket.ragops("rollback")
        # then production is the first version again, in the tag, the log, the listing and the running server
        assert rolled.returncode == 0, rolled.stderr[-3000:]
        assert f"production: version {v2} → {v1}" in rolled.stdout
        assert bucket.tags()[lancedb_store.PRODUCTION_TAG] == v1
        assert [(r["action"], r["version"]) for r in bucket.promotion_records()][-1] == ("rollback", v1)
        listed = bucket.ragops("versions")
        assert listed.returncode == 0, listed.stderr[-3000:]
        assert production_in_versions_listing(listed.stdout) == v1
        history = bucket.ragops("report", "--history")
        assert history.returncode == 0, history.stderr[-3000:]
        assert "rollback" in history.stdout and f"production is version {v1}" in history.stdout
        wait_for_served_version(base, v1)
    finally:
        stop([server])


def test_two_promoters_on_two_processes_take_turns_on_object_storage(bucket: Bucket) -> None:
    # given a table in the bucket with two candidates and no production yet
    _, first = bucket.ingest("first")
    bucket.change_document(CHANGED_DOC)
    _, second = bucket.ingest("second")
    candidates = [first["table_version"], second["table_version"]]
    assert None not in candidates and candidates[0] < candidates[1]

    # when two `ragops promote` processes, one per candidate, start at once against the same Prefect API
    procs = []
    for i, version in enumerate(candidates):
        args = [str(BIN / "ragops"), "promote", "--version", str(version), "--json", str(bucket.tmp / f"p{i}.json")]
        procs.append(
            subprocess.Popen(args, env=bucket.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outcomes = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            outcomes.append((proc.returncode, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    # then each either decided (0 promoted, 1 blocked) or was refused because the other moved production meanwhile
    decided = []
    for i, (code, err) in enumerate(outcomes):
        assert code in (0, 1, 2), err[-3000:]
        if code == 2:
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "moved from version" in errors[0], err[-3000:]
            continue
        decided.append(json.loads((bucket.tmp / f"p{i}.json").read_text()))
    assert decided, [err[-3000:] for _, err in outcomes]
    # and the log holds exactly one record per decision, a serial history that replays to the tag
    records = bucket.promotion_records()
    assert sorted(r["run_id"] for r in records) == sorted(d["run_id"] for d in decided)
    for record, decision in zip(
        sorted(records, key=lambda r: r["run_id"]), sorted(decided, key=lambda d: d["run_id"]), strict=True
    ):
        assert record["action"] == decision["action"] and record["version"] == decision["candidate_version"]
    promotions = [r for r in records if r["action"] == "promote"]
    assert promotions, records
    previous = None
    for record in records:
        assert record["previous_version"] == previous, records
        if record["action"] == "promote":
            previous = record["version"]
    tag = bucket.tags()[lancedb_store.PRODUCTION_TAG]
    assert tag == promotions[-1]["version"] == production_history(records)[-1]
    # and the turns were taken on the Prefect API's lock for this table, the one every machine shares
    assert promotion_lock_slots(bucket.uri) == 1
    print(f"promoters exited {[code for code, _ in outcomes]}; log {[(r['action'], r['version']) for r in records]}")


def promotion_lock_slots(uri: str) -> int:
    """Slots of the global concurrency limit that serves as the table's promotion lock on the Prefect API."""
    from prefect.client.orchestration import get_client

    from tasks.settings import Settings
    from tasks.store.locks import lock_name

    settings = Settings(_env_file=None, lancedb_uri=uri, table="chunks")  # type: ignore[call-arg]
    with get_client(sync_client=True) as client:
        return int(client.read_global_concurrency_limit_by_name(lock_name(settings, "promotion")).limit)
