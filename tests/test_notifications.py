"""Notifications on a real Prefect server: `ragops server notify` installs a webhook block and two automations, and
the server's triggers and actions post one Slack-compatible message to a local HTTP receiver for a blocked gate and
one for a failed flow run, none for a promotion; the webhook URL is never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

WAIT_S = 60  # for a notification to arrive: the server's triggers and actions services run on 2 busy cores
QUIET_S = 10  # then this long for one that should not come


class Receiver:
    """An HTTP server on loopback that records every POST: its path and JSON body."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, json.loads(body or b"null")))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        # shaped like a Slack webhook: the last part is the secret that must never be printed
        self.path = f"/services/T0RAGOPS/B0NOTIFY/{uuid.uuid4().hex}"
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def texts(self, *words: str) -> list[str]:
        """The `text` of every post made to the webhook's path that holds all of `words`."""
        return [
            str(body.get("text"))
            for path, body in list(self.posts)
            if path == self.path and isinstance(body, dict) and all(w in str(body.get("text")) for w in words)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def uninstall() -> Iterator[None]:
    """Remove the block and the automations afterwards: later tests' failed runs must not post to a closed port."""
    yield
    from tasks.notifications import remove_notifications

    remove_notifications()


def ragops(*args: str, api_url: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`ragops ARGS` as a user runs it, reporting to the session's Prefect server (None: to no server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "PREFECT_"))}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RAGOPS_PREFECT_HOME=str(tmp_path / "no-local-server"),
        COLUMNS="200",
    )
    exe = Path(sys.executable).with_name("ragops")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def wait_until(done: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.5)
    return done()


def stored(event: str, resource_id: str) -> int:
    """How many `event`s about `resource_id` the server has stored."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    query = EventFilter(event=EventNameFilter(name=[event]), resource=EventResourceFilter(id=[resource_id]))
    with get_client(sync_client=True) as client:
        return len(client.read_events(filter=query, limit=10).events)


def gate_summary(reason: str) -> dict[str, Any]:
    """The gate's summary as tasks.events.gate_decided reads it (a candidate worse than production)."""
    return {
        "candidate_version": 7,
        "production_version": 5,
        "primary_metric": "ndcg@10",
        "metrics": [
            {"metric": "ndcg@10", "candidate": 0.61, "production": 0.72, "ci_low": -0.16, "ci_high": -0.05},
        ],
        "reasons": [reason],
        "verdict": "worse",
        "run_id": str(uuid.uuid4()),
    }


def test_a_blocked_gate_and_a_failed_run_each_post_one_message_and_a_promotion_none(
    receiver: Receiver, uninstall: None, tmp_path: Path
) -> None:
    from prefect import flow
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL

    from tasks.events import GATE_DECIDED, gate_decided
    from tasks.settings import Settings

    # given: notifications installed from the command line, pointing at the receiver
    api_url = str(PREFECT_API_URL.value())
    installed = ragops("server", "notify", "--webhook-url", receiver.url, api_url=api_url, tmp_path=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert "notifications installed: webhook block ragops-notify" in installed.stdout
    assert "'ragops: gate blocked'" in installed.stdout and "'ragops: flow run failed'" in installed.stdout
    as_json = ragops("server", "notify", "--webhook-url", receiver.url, "--json", api_url=api_url, tmp_path=tmp_path)
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    result = json.loads(as_json.stdout)["installed"]
    assert result["block"]["name"] == "ragops-notify"
    assert sorted(a["name"] for a in result["automations"]) == ["ragops: flow run failed", "ragops: gate blocked"]
    secret = receiver.path.rsplit("/", 1)[-1]
    for run in (installed, as_json):
        assert secret not in run.stdout + run.stderr and receiver.url not in run.stdout + run.stderr

    # when: the gate blocks one table's candidate and promotes another's, and a flow run fails
    blocked, promoted = f"blocked-{uuid.uuid4().hex[:8]}", f"promoted-{uuid.uuid4().hex[:8]}"
    reason = "ndcg@10 fell by 0.1100 (more than 0.02 absolute)"
    report = f"http://127.0.0.1:8000/reports/{blocked}/7.html"
    for table, verdict in ((blocked, "block"), (promoted, "promote")):
        settings = Settings(table=table, lancedb_uri=str(tmp_path / "lancedb"))
        assert gate_decided(settings, gate_summary(reason), verdict, report)
    EventsWorker.drain_all(timeout=30)

    run_name = f"probe-{uuid.uuid4().hex[:8]}"

    @flow(name="ragops-notify-probe", flow_run_name=run_name)
    def failing_probe() -> None:
        raise RuntimeError("the probe fails on purpose")

    failed = failing_probe(return_state=True)
    assert failed.is_failed()

    # then: one message for the block, naming the table, version, reason and report; one naming the failed run
    assert wait_until(lambda: bool(receiver.texts(blocked) and receiver.texts(run_name))), receiver.posts
    assert wait_until(lambda: stored(GATE_DECIDED, f"ragops.table.{promoted}") == 1)  # the server had it to act on
    time.sleep(QUIET_S)  # a duplicate, or a message for the promotion, would arrive by now
    [gate_text] = receiver.texts(blocked)
    assert "gate blocked version 7" in gate_text and reason in gate_text and report in gate_text
    assert "production stays at version 5" in gate_text and "[-0.1600, -0.0500]: worse" in gate_text
    [failed_text] = receiver.texts(run_name)
    assert "ragops-notify-probe" in failed_text and "Failed" in failed_text
    assert "the probe fails on purpose" in failed_text and str(failed.state_details.flow_run_id) in failed_text
    assert not receiver.texts(promoted)
    assert all(path == receiver.path for path, _ in receiver.posts)  # the secret URL, from the block

    removed = ragops("server", "notify", "--remove", api_url=api_url, tmp_path=tmp_path)
    assert removed.returncode == 0, removed.stderr[-3000:]
    assert "notifications removed: webhook block ragops-notify" in removed.stdout


def test_installing_twice_keeps_one_block_and_two_automations_and_hides_the_url(uninstall: None) -> None:
    from prefect.client.orchestration import get_client

    from tasks.notifications import AUTOMATION_NAMES, install_notifications, remove_notifications

    secret = uuid.uuid4().hex
    first = install_notifications(f"https://hooks.example.com/services/T0/B0/{secret}")
    second = install_notifications(f"https://hooks.example.com/services/T0/B0/{secret}-rotated")
    assert secret not in json.dumps(first) + json.dumps(second)
    assert second["block"]["id"] == first["block"]["id"]
    assert [a["created"] for a in first["automations"]] == [True, True]
    assert [a["created"] for a in second["automations"]] == [False, False]
    assert [a["id"] for a in second["automations"]] == [a["id"] for a in first["automations"]]

    with get_client(sync_client=True) as client:
        for name in AUTOMATION_NAMES:
            [automation] = client.read_automations_by_name(name)
            [action] = automation.actions
            assert str(getattr(action, "block_document_id", None)) == first["block"]["id"]
        blocks = [b for b in client.read_block_documents() if b.name == "ragops-notify"]
        assert len(blocks) == 1
        hidden = client.read_block_document(blocks[0].id, include_secrets=False)
        assert secret not in json.dumps(hidden.model_dump(mode="json"))
        shown = client.read_block_document(blocks[0].id, include_secrets=True)
        assert shown.data["secrets"]["webhook_url"].endswith(f"{secret}-rotated")  # updated, not duplicated
    gate = next(a for a in second["automations"] if a["name"] == "ragops: gate blocked")
    assert gate["expect"] == ["ragops.gate.decided"]

    removed = remove_notifications()
    assert removed["block"] == {"name": "ragops-notify", "id": first["block"]["id"]}
    assert sorted(a["name"] for a in removed["automations"]) == sorted(AUTOMATION_NAMES)
    assert remove_notifications() == {"block": None, "automations": []}


def test_notify_without_a_url_or_with_a_bad_one_says_so_in_one_line(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    api_url = str(PREFECT_API_URL.value())
    missing = ragops("server", "notify", api_url=api_url, tmp_path=tmp_path)
    assert missing.returncode == 2 and "RAGOPS_NOTIFY_WEBHOOK_URL" in missing.stderr
    bad = ragops(
        "server", "notify", "--webhook-url", "hooks.slack.com/services/T/B/s3cr3t", api_url=api_url, tmp_path=tmp_path
    )
    assert bad.returncode == 2 and "http:// or https:// URL" in bad.stderr and "Traceback" not in bad.stderr
    assert "s3cr3t" not in bad.stdout + bad.stderr
    nowhere = ragops(
        "server", "notify", "--webhook-url", "https://hooks.example.com/s3cr3t", api_url=None, tmp_path=tmp_path
    )
    assert nowhere.returncode == 2 and "no Prefect server to install notifications on" in nowhere.stderr
    assert "s3cr3t" not in nowhere.stdout + nowhere.stderr
