"""A report's URL (`report_url`): the served base plus the file's place in the reports folder, or None; and how the
local server's reports URL reaches the commands and the worker (RAGOPS_REPORTS_URL), the user's own winning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.local_server import ServerState, served_reports_url, worker_reports_env, write_state
from tasks.report_links import report_url
from tasks.settings import Settings

BASE = "http://127.0.0.1:4201"


def settings(reports_dir: str | Path, reports_url: str = BASE) -> Settings:
    return Settings(reports_dir=str(reports_dir), reports_url=reports_url)


def test_a_report_in_the_folder_gets_the_base_url_plus_its_name(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    url = report_url(settings(reports), str(reports / "chunks-v4-0a1b2c3d.html"))
    assert url == "http://127.0.0.1:4201/chunks-v4-0a1b2c3d.html"


def test_a_base_with_a_path_and_a_trailing_slash_gets_one_slash(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    url = report_url(settings(reports, "https://reports.example.org/ragops/"), str(reports / "monitor" / "m.html"))
    assert url == "https://reports.example.org/ragops/monitor/m.html"


def test_names_are_quoted_and_folders_kept(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    url = report_url(settings(reports), str(reports / "sub dir" / "a #1?ü%.html"))
    assert url == "http://127.0.0.1:4201/sub%20dir/a%20%231%3F%C3%BC%25.html"


def test_relative_folder_and_paths_are_read_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = settings(".ragops/reports")
    assert report_url(relative, ".ragops/reports/chunks-v4-x.html") == f"{BASE}/chunks-v4-x.html"
    assert report_url(relative, str(tmp_path / ".ragops/reports/chunks-v4-x.html")) == f"{BASE}/chunks-v4-x.html"
    assert report_url(settings(tmp_path / ".ragops/reports"), ".ragops/reports/a.html") == f"{BASE}/a.html"


@pytest.mark.parametrize(
    "where",
    [
        "../secret.html",  # climbs out
        "sub/../../secret.html",
        "../reports-old/a.html",  # a sibling folder whose name starts alike
        ".",  # the folder itself is no report
        "/etc/passwd",
        "s3://bucket/reports/a.html",
    ],
)
def test_a_file_outside_the_folder_gets_no_url(tmp_path: Path, where: str) -> None:
    reports = tmp_path / "reports"
    path = where if where.startswith(("/", "s3:")) else str(reports / where)
    assert report_url(settings(reports), path) is None


def test_a_link_out_of_the_folder_gets_no_url(tmp_path: Path) -> None:
    reports, elsewhere = tmp_path / "reports", tmp_path / "elsewhere"
    reports.mkdir()
    elsewhere.mkdir()
    (reports / "out").symlink_to(elsewhere)
    assert report_url(settings(reports), str(reports / "out" / "a.html")) is None


@pytest.mark.parametrize("base", ["", "   "])
def test_no_reports_url_no_url(tmp_path: Path, base: str) -> None:
    assert report_url(settings(tmp_path, base), str(tmp_path / "a.html")) is None


def test_an_object_store_folder_gets_a_url_only_from_a_configured_base() -> None:
    bucket = "s3://ragops-bucket/reports"
    assert report_url(settings(bucket, ""), f"{bucket}/a.html") is None
    site = settings(bucket, "https://ragops-bucket.s3-website.example.com/reports")
    assert report_url(site, f"{bucket}/v4 x.html") == "https://ragops-bucket.s3-website.example.com/reports/v4%20x.html"
    assert report_url(site, "s3:/ragops-bucket/reports/a.html") == f"{site.reports_url}/a.html"  # as Path() writes it
    assert report_url(site, f"{bucket}/../a.html") is None
    assert report_url(site, "s3://other-bucket/reports/a.html") is None
    assert report_url(site, f"{bucket}/") is None


# the handoff: which reports URL the worker and the commands are given


def served_state(tmp_path: Path, folder: Path, pid: int) -> ServerState:
    return ServerState(
        url="http://127.0.0.1:4200",
        pid=pid,
        worker_pid=None,
        home=str(tmp_path / "prefect"),
        reports_url=BASE,
        reports_pid=pid,
        reports_dir=str(folder.resolve()),
    )


def test_the_worker_gets_the_served_folder_and_url_unless_the_user_has_a_url(tmp_path: Path) -> None:
    state = served_state(tmp_path, tmp_path / "reports", os.getpid())
    folder = str((tmp_path / "reports").resolve())
    assert worker_reports_env(state) == {"RAGOPS_REPORTS_DIR": folder, "RAGOPS_REPORTS_URL": BASE}
    mine = "https://reports.example.org"
    assert worker_reports_env(state, mine) == {"RAGOPS_REPORTS_DIR": folder, "RAGOPS_REPORTS_URL": mine}
    nothing_served = ServerState("http://127.0.0.1:4200", os.getpid(), None, str(tmp_path))
    assert worker_reports_env(nothing_served) == {}
    assert worker_reports_env(nothing_served, mine) == {"RAGOPS_REPORTS_URL": mine}


def test_the_served_url_is_for_the_served_folder_only_while_its_server_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    state = served_state(tmp_path, tmp_path / "reports", os.getpid())
    assert served_reports_url(state, "reports") == BASE  # relative, from the working directory
    assert served_reports_url(state, str(tmp_path / "reports")) == BASE
    assert served_reports_url(state, str(tmp_path / "other")) == ""
    assert served_reports_url(state, "s3://bucket/reports") == ""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert served_reports_url(served_state(tmp_path, tmp_path / "reports", process.pid), "reports") == ""


@pytest.fixture
def recorded_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServerState:
    """A server.json naming a reports server (this process stands in for it) and PREFECT_API_URL naming its API."""
    state = served_state(tmp_path, tmp_path / "reports", os.getpid())
    write_state(state)
    monkeypatch.setenv("RAGOPS_PREFECT_HOME", state.home)
    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("PREFECT_API_URL", state.api_url)
    monkeypatch.setenv("RAGOPS_REPORTS_URL", "restored at the end")
    monkeypatch.delenv("RAGOPS_REPORTS_URL")  # unset, and put back as it was after the test
    return state


def test_a_command_reporting_to_the_local_server_gets_its_reports_url(recorded_server: ServerState) -> None:
    from flows.cli.flow_runs import choose_prefect_api

    choose_prefect_api()
    assert os.environ["RAGOPS_REPORTS_URL"] == BASE
    assert Settings().reports_url == BASE


def test_the_users_reports_url_wins(recorded_server: ServerState, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli.flow_runs import choose_prefect_api

    monkeypatch.setenv("RAGOPS_REPORTS_URL", "https://reports.example.org")
    choose_prefect_api()
    assert os.environ["RAGOPS_REPORTS_URL"] == "https://reports.example.org"


def test_a_command_writing_its_reports_elsewhere_gets_no_url(
    recorded_server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli.flow_runs import choose_prefect_api

    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(tmp_path / "elsewhere"))
    choose_prefect_api()
    assert "RAGOPS_REPORTS_URL" not in os.environ


def test_a_command_reporting_to_another_prefect_api_gets_no_url(
    recorded_server: ServerState, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli.flow_runs import choose_prefect_api

    monkeypatch.setenv("PREFECT_API_URL", "https://prefect.example.org/api")
    choose_prefect_api()
    assert "RAGOPS_REPORTS_URL" not in os.environ
