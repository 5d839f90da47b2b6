"""The reports' web server: the files of one folder, read-only (GET and HEAD), with their content types, no listing,
nothing outside the folder; started as a process of its own by the local server helper and stopped with it."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks import local_server
from tasks.report_server import make_server

from .processes import free_port

PAGE = "<!doctype html><title>chunks v4</title><p>PROMOTE</p>"
SECRET = "the secret outside the reports folder"


def reports_folder(root: Path) -> Path:
    """A reports folder as evaluations leave it, beside a file that must stay out of reach."""
    folder = root / "reports"
    (folder / "monitor").mkdir(parents=True)
    (folder / "chunks-v4-0a1b2c3d.html").write_text(PAGE, encoding="utf-8")
    (folder / "chunks-v4-0a1b2c3d.json").write_text(json.dumps({"decision": "promote"}), encoding="utf-8")
    (folder / "monitor" / "trend.md").write_text("# trend", encoding="utf-8")
    (root / "secret.txt").write_text(SECRET, encoding="utf-8")
    (folder / "link-out").symlink_to(root / "secret.txt")
    return folder


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The handler of `python -m tasks.report_server`, serving in a thread of this process: (host, port)."""
    server = make_server(reports_folder(tmp_path), 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def raw(where: tuple[str, int], method: str, target: str) -> tuple[int, str, str]:
    """(status, content type, body) of a request sent with its target exactly as written (no dot-segment cleanup)."""
    connection = http.client.HTTPConnection(*where, timeout=10)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def test_a_report_is_served_as_html_and_its_json_as_json(served: tuple[str, int]) -> None:
    status, kind, body = raw(served, "GET", "/chunks-v4-0a1b2c3d.html")
    assert (status, kind.split(";")[0], body) == (200, "text/html", PAGE)
    assert "charset=utf-8" in kind
    status, kind, body = raw(served, "GET", "/chunks-v4-0a1b2c3d.json")
    assert (status, kind, json.loads(body)) == (200, "application/json", {"decision": "promote"})
    status, kind, body = raw(served, "HEAD", "/monitor/trend.md")
    assert (status, kind.split(";")[0], body) == (200, "text/plain", "")


def test_a_missing_file_is_404(served: tuple[str, int]) -> None:
    assert raw(served, "GET", "/chunks-v5-ffffffff.html")[0] == 404


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/monitor/../../secret.txt",
        "/monitor/%2e%2e/%2e%2e/secret.txt",
        "/link-out",  # a link inside the folder that leads out of it
        "/secret.txt%00.html",
    ],
)
def test_nothing_outside_the_folder_is_served(served: tuple[str, int], target: str) -> None:
    status, _, body = raw(served, "GET", target)
    assert status in (400, 404) and SECRET not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_it_is_read_only(served: tuple[str, int], tmp_path: Path, method: str) -> None:
    status, _, _ = raw(served, method, "/chunks-v4-0a1b2c3d.html")
    assert status == 501
    assert (tmp_path / "reports" / "chunks-v4-0a1b2c3d.html").read_text(encoding="utf-8") == PAGE


@pytest.mark.parametrize("target", ["/", "/monitor/"])
def test_folders_are_not_listed(served: tuple[str, int], target: str) -> None:
    status, _, body = raw(served, "GET", target)
    assert status == 404 and "chunks-v4" not in body and "trend.md" not in body


# the process the local server helper starts (`ragops server start`) and stops (`ragops server stop`)


def record(home: Path, fields: dict[str, Any]) -> None:
    """A server.json holding only the reports' web server (no Prefect server or worker to stop)."""
    local_server.write_state(local_server.ServerState("http://127.0.0.1:1", 0, None, str(home), **fields))


def test_the_helper_serves_the_folder_made_absolute_and_stop_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    home, port = tmp_path / "prefect", free_port()
    home.mkdir()
    fields = local_server.serve_reports(home, "not yet/reports", port)
    folder = tmp_path / "not yet" / "reports"
    assert fields["reports_url"] == f"http://127.0.0.1:{port}" and fields["reports_dir"] == str(folder)
    (folder / "chunks-v4-0a1b2c3d.html").write_text(PAGE, encoding="utf-8")
    page = httpx.get(f"http://127.0.0.1:{port}/chunks-v4-0a1b2c3d.html", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and page.text == PAGE

    record(home, fields)
    assert local_server.stop(home, timeout_s=10)
    assert not local_server.alive(fields["reports_pid"])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/chunks-v4-0a1b2c3d.html", timeout=5)


def test_a_taken_port_gives_way_to_a_free_one(tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    home.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        fields = local_server.serve_reports(home, str(reports_folder(tmp_path)), port)
        try:
            assert fields["reports_url"] != f"http://127.0.0.1:{port}"
            page = httpx.get(f"{fields['reports_url']}/chunks-v4-0a1b2c3d.html", timeout=10)
            assert page.status_code == 200
        finally:
            record(home, fields)
            local_server.stop(home, timeout_s=10)


def test_an_object_store_folder_is_not_served_from_here(tmp_path: Path) -> None:
    assert local_server.serve_reports(tmp_path, "s3://bucket/reports", free_port()) == {}


def test_a_state_file_from_before_the_reports_server_still_reads(tmp_path: Path) -> None:
    old = {"url": "http://127.0.0.1:4200", "pid": 1, "worker_pid": None, "home": str(tmp_path), "deployed": ""}
    (tmp_path / "server.json").write_text(json.dumps(old))
    state = local_server.read_state(tmp_path)
    assert state is not None and (state.reports_url, state.reports_pid, state.reports_dir) == ("", None, "")
