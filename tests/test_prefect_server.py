"""Deployments on a real `prefect server` with a process worker, the CI gate, and the UI in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import lancedb
import pytest

from .conftest import REPO
from .processes import free_port, spawn, stop, wait_for_http
from .traffic import OFF_TOPIC

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
T = TypeVar("T")


class Stack:
    """A Prefect server and worker on loopback, with their own home, database and LanceDB."""

    def __init__(self, root: Path) -> None:
        port = free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        self.ui = f"http://127.0.0.1:{port}"
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAGOPS_"))}
        self.env.update(
            PREFECT_HOME=str(root / "prefect-home"),
            PREFECT_API_URL=self.api,
            PREFECT_UI_URL=self.ui,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",  # schedules added by the monitor test fire soon
            RAGOPS_LANCEDB_URI=str(root / "lancedb"),
            RAGOPS_REPORTS_DIR=str(root / "reports"),
            RAGOPS_DASK_WORKERS="2",
            COLUMNS="200",
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = port

    def start(self, *args: str, log: str) -> None:
        handle = open(self.root / log, "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(BIN / "prefect"), *args],
            cwd=REPO,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)

    def run(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)

    def wait_healthy(self, timeout: float = 180) -> None:
        """Poll the API's health until it answers 200; fail with the log's tail if the server exits or time runs out."""
        server, deadline = self.procs[0], time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert server.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError((self.root / "server.log").read_text()[-3000:])

    def wait_for_worker(self, pool: str, timeout: float = 120) -> None:
        """Poll the pool's workers until one is ONLINE (it has sent its first heartbeat), failing fast if it exits."""
        worker, deadline = self.procs[-1], time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert worker.poll() is None, (self.root / "worker.log").read_text()[-3000:]
            workers = httpx.post(f"{self.api}/work_pools/{pool}/workers/filter", json={}, timeout=10).json()
            if any(w["status"] == "ONLINE" for w in workers):
                return
            time.sleep(0.5)
        raise TimeoutError((self.root / "worker.log").read_text()[-3000:])

    def stop(self) -> None:
        stop(self.procs)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`prefect server start`, the process work pool, `prefect deploy --all` and a worker; stopped afterwards."""
    s = Stack(tmp_path_factory.mktemp("prefect-server"))
    try:
        s.start("server", "start", "--host", "127.0.0.1", "--port", str(s.port), log="server.log")
        s.wait_healthy()
        pool = s.run(str(BIN / "prefect"), "work-pool", "create", "ragops-process", "--type", "process")
        assert pool.returncode == 0, pool.stdout + pool.stderr
        deployed = s.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        s.start("worker", "start", "--pool", "ragops-process", log="worker.log")
        s.wait_for_worker("ragops-process")
        yield s
    finally:
        s.stop()
    assert all(proc.poll() is not None for proc in s.procs)  # everything shut down


def api_post(stack: Stack, path: str, body: dict) -> list[dict]:
    response = httpx.post(f"{stack.api}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_deploy_all_registers_the_deployments_schedule_and_trigger(stack: Stack) -> None:
    deployments = api_post(stack, "/deployments/filter", {})
    names = {(d["name"], d["entrypoint"]) for d in deployments}
    assert names == {
        ("nightly", "flows/ingest.py:ingest"),
        ("on-ingest", "flows/evaluate.py:evaluate"),
        ("gate", "flows/promote.py:promote"),
        ("sample", "flows/promote.py:pipeline"),
        ("hourly", "flows/monitor.py:monitor"),
        ("on-alert", "flows/evaluate.py:evaluate"),
        ("generate", "flows/golden.py:golden"),
        ("weekly", "flows/maintain.py:maintain"),
    }
    generate = next(d for d in deployments if d["name"] == "generate")
    assert not generate["schedules"] and generate["parameters"] == {"n": 60, "seed": 0}  # run by hand
    nightly = next(d for d in deployments if d["name"] == "nightly")
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert nightly["parameters"] == {"source": "datasets/python-docs", "sync": True}
    hourly = next(d for d in deployments if d["name"] == "hourly")
    assert [s["schedule"]["cron"] for s in hourly["schedules"]] == ["15 * * * *"]
    weekly = next(d for d in deployments if d["name"] == "weekly")
    assert [s["schedule"]["cron"] for s in weekly["schedules"]] == ["0 4 * * 0"]
    assert weekly["parameters"] == {"dry_run": False}
    automations = api_post(stack, "/automations/filter", {})
    assert any(a["trigger"]["expect"] == ["prefect.flow-run.Completed"] for a in automations)
    assert any(a["trigger"]["expect"] == ["ragops.monitor.threshold-crossed"] for a in automations)


def cancel_triggered_evaluations(stack: Stack, seen: list[str], stop_polling: threading.Event) -> None:
    """Cancel each `evaluate/on-ingest` run as soon as it appears (the test needs only to see that the trigger
    fired): otherwise it scores the whole sample on the same 2 cores as the pipeline it races."""
    while not stop_polling.wait(1.0):
        try:
            runs = api_post(stack, "/flow_runs/filter", {"deployments": {"name": {"any_": ["on-ingest"]}}})
            for run in runs:
                if run["id"] in seen:
                    continue
                seen.append(run["id"])
                running = (run.get("state") or {}).get("type") == "RUNNING"
                state = {"type": "CANCELLING", "name": "Cancelling"} if running else {"type": "CANCELLED"}
                httpx.post(f"{stack.api}/flow_runs/{run['id']}/set_state", json={"state": state, "force": True})
        except httpx.HTTPError:  # the server is busy; the next poll tries again
            continue


def test_the_pipeline_deployment_promotes_the_sample_through_the_worker(stack: Stack) -> None:
    out = stack.root / "gate.json"
    triggered: list[str] = []
    stop_polling = threading.Event()
    poller = threading.Thread(target=cancel_triggered_evaluations, args=(stack, triggered, stop_polling), daemon=True)
    poller.start()
    gate = stack.run(
        str(BIN / "ragops"),
        "gate",
        "--deployment",
        "pipeline/sample",
        "--timeout",
        "1500",
        "--json",
        str(out),
        timeout=1800,
    )
    worker_log = (stack.root / "worker.log").read_text()[-4000:]
    assert gate.returncode == 0, gate.stdout[-3000:] + gate.stderr[-3000:] + worker_log
    result = json.loads(out.read_text())
    assert result["action"] == "promote" and result["ingest"]["docs_seen"] >= 200
    assert f"{stack.ui}/runs/flow-run/" in gate.stdout.replace("\n", "")
    # the version names what produced it: the ingest run with its page on this server, started by CI
    produced = result["lineage"]["candidate"]["lineage"]
    assert produced["run_id"] == result["ingest"]["run_id"] and produced["trigger"]["kind"] == "ci"
    assert str(produced["flow_run_url"]).endswith(f"/runs/flow-run/{produced['run_id']}")

    table = lancedb.connect(str(stack.root / "lancedb")).open_table("chunks")
    assert table.tags.list()["production"]["version"] == result["candidate_version"]
    assert Path(result["report_html"]).is_file()

    artifact = httpx.get(f"{stack.api}/artifacts/evaluation-chunks/latest", timeout=30).json()
    assert artifact["type"] == "markdown" and "PROMOTE" in artifact["data"]

    # the Completed event of the ingest subflow triggered the `evaluate/on-ingest` deployment (then cancelled)
    deadline = time.monotonic() + 30
    while not triggered and time.monotonic() < deadline:
        time.sleep(1)
    stop_polling.set()
    poller.join(timeout=30)
    assert triggered, "the event trigger did not start evaluate/on-ingest"


def test_serve_answers_from_production_and_the_scheduled_monitor_alerts_on_off_topic_traffic(stack: Stack) -> None:
    # given: the sample the pipeline test promoted, served by `ragops serve`, and off-topic traffic
    production = lancedb.connect(str(stack.root / "lancedb")).open_table("chunks").tags.list()["production"]["version"]
    port = free_port()
    env = {**stack.env, "RAGOPS_SERVE_PORT": str(port), "RAGOPS_QUERY_LOG_FLUSH_S": "0.5"}
    server = spawn([str(BIN / "ragops"), "serve"], stack.root / "serve.log", env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health", server, stack.root / "serve.log")
        answer = httpx.post(f"{base}/query", json={"question": "How do I create a virtual environment?"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == production
        assert any("venv" in hit["doc_id"] for hit in answer.json()["chunks"])
        for question in OFF_TOPIC:
            assert httpx.post(f"{base}/query", json={"question": question}, timeout=60).status_code == 200
    finally:
        stop([server])  # SIGTERM: the server writes its queued query log before it exits
    logged = lancedb.connect(str(stack.root / "lancedb")).open_table("query_log").to_arrow()
    assert logged.num_rows == 1 + len(OFF_TOPIC) and set(logged.column("version").to_pylist()) == {production}

    # when: a user adds a 20-second interval schedule to monitor/hourly
    [deployment] = api_post(stack, "/deployments/filter", {"deployments": {"name": {"any_": ["hourly"]}}})
    added = datetime.now(UTC)
    schedule = [{"schedule": {"interval": 20, "anchor_date": added.isoformat()}, "active": True}]
    httpx.post(f"{stack.api}/deployments/{deployment['id']}/schedules", json=schedule, timeout=30).raise_for_status()
    try:
        # then: the scheduler makes a run, the worker runs it, and it ends Failed naming the crossed thresholds
        run = wait_for_finished_run(stack, deployment["id"], added, timeout=600)
    finally:
        httpx.post(f"{stack.api}/deployments/{deployment['id']}/pause_deployment", timeout=30)
    assert run["auto_scheduled"], run
    assert run["state"]["type"] == "FAILED", run["state"]
    assert "low_similarity_rate" in run["state"]["message"]
    artifact = httpx.get(f"{stack.api}/artifacts/monitor-chunks/latest", timeout=30).json()
    assert "ALERT" in artifact["data"] and "data:image/png;base64," in artifact["data"]
    deadline = time.monotonic() + 120  # the server stores events asynchronously
    while not (events := alert_events(stack)):
        assert time.monotonic() < deadline, "the monitor's alert event never reached the server"
        time.sleep(2)
    assert events[0]["resource"]["prefect.resource.id"] == "ragops.table.chunks"
    assert any("low_similarity_rate" in line for line in events[0]["payload"]["breaches"])
    # and the automation on that event started the re-evaluation deployment
    deadline = time.monotonic() + 120
    while not api_post(stack, "/flow_runs/filter", {"deployments": {"name": {"any_": ["on-alert"]}}}):
        assert time.monotonic() < deadline, "the monitor's event did not start evaluate/on-alert"
        time.sleep(2)


def alert_events(stack: Stack) -> list[dict]:
    body = {"filter": {"event": {"name": ["ragops.monitor.threshold-crossed"]}}, "limit": 10}
    return httpx.post(f"{stack.api}/events/filter", json=body, timeout=30).json()["events"]


def wait_for_finished_run(stack: Stack, deployment_id: str, after: datetime, timeout: float) -> dict:
    body = {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {
            "expected_start_time": {"after_": after.isoformat()},
            "state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}},
        },
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api_post(stack, "/flow_runs/filter", body)
        if runs:
            return runs[0]
        time.sleep(3)
    raise TimeoutError((stack.root / "worker.log").read_text()[-4000:])


def browser_wait(driver: WebDriver, condition: Callable[[WebDriver], T], what: str, timeout: float = 60) -> T:
    """Poll `condition(driver)` with Selenium's `WebDriverWait` until it returns something truthy, and return that.

    The UI re-renders as its queries resolve, so an element found a moment ago may be detached by the next render:
    conditions find their elements afresh on every try and keep no reference between tries, and a try that meets a
    stale, missing or covered element is simply tried again. On timeout it fails with the page's URL and text.
    """
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        ElementNotInteractableException,
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.wait import WebDriverWait

    retried = (
        StaleElementReferenceException,
        NoSuchElementException,
        ElementClickInterceptedException,
        ElementNotInteractableException,
    )
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5, ignored_exceptions=retried).until(condition)
    except TimeoutException:
        page = driver.execute_script("return document.body ? document.body.innerText : ''")  # no element to go stale
        raise AssertionError(f"{what} within {timeout:.0f} s; {driver.current_url} reads: {page[:1000]}") from None


def page_shows(*words: str) -> Callable[[WebDriver], bool]:
    """A condition: the page's text contains every word (each check finds <body> afresh; stale counts as not yet)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return ec.all_of(*(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), word) for word in words))


def clicked(locator: tuple[str, str]) -> Callable[[WebDriver], bool]:
    """A condition that finds the element afresh and clicks it: missing, covered, hidden or stale, it tries again."""

    def click(driver: WebDriver) -> bool:
        driver.find_element(*locator).click()  # re-rendered in between: StaleElementReferenceException, tried again
        return True

    return click


def headless_chromium() -> WebDriver:
    """Debian's chromium, headless, driven by its chromedriver (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1400,900",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")
def test_the_ui_shows_the_deployments_schedule_and_report(stack: Stack, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    shots = Path(os.environ.get("RAGOPS_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    driver = headless_chromium()
    pages = {
        "deployments": (
            "/deployments",
            ["nightly", "sample", "gate", "on-ingest", "weekly", "maintain", "At 02:00 AM every day"],
        ),
        "artifacts": ("/artifacts", ["evaluation-chunks", "evaluation-questions-chunks"]),
    }
    # the monitor's latest artifact shows its table and both of its plots (data-URI PNGs that have decoded)
    plots = (
        "return Array.from(document.images)"
        ".filter(i => i.src.startsWith('data:image/png') && i.naturalWidth > 0).length"
    )
    report = ec.all_of(lambda d: d.execute_script(plots) >= 2, page_shows("low_similarity_rate", "ALERT"))
    try:
        for name, (path, expected) in pages.items():
            driver.get(stack.ui + path)
            browser_wait(driver, page_shows(*expected), f"{path} did not show {expected}")
            shot = shots / f"prefect-ui-{name}.png"
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # the monitor's artifact (from the scheduled run above): its key's timeline, then its latest
        driver.get(stack.ui + "/artifacts")
        browser_wait(driver, clicked((By.PARTIAL_LINK_TEXT, "monitor-chunks")), "no monitor-chunks link to click")
        browser_wait(driver, ec.url_contains("/artifacts/key/monitor-chunks"), "the link did not open the key")
        latest = (By.CSS_SELECTOR, 'a[href*="/artifacts/artifact/"]')  # the timeline, newest first
        browser_wait(driver, clicked(latest), "no artifact in the monitor-chunks timeline to click")
        browser_wait(driver, ec.url_contains("/artifacts/artifact/"), "the timeline did not open the artifact")
        browser_wait(driver, report, "the monitor's artifact did not render its alert table and two plots")
        driver.set_window_size(1400, 1800)
        browser_wait(driver, report, "the monitor's artifact did not render after the resize")
        driver.save_screenshot(str(shots / "prefect-ui-monitor.png"))
    finally:
        driver.quit()


HOSTILE_NAMES = ["<img src=x onerror=alert(1)>.txt", "[x](javascript:alert(1)).txt"]
RENDERED = """
const shown = Array.from(document.querySelectorAll('.markdown-renderer'));
return {
  text: shown.map(e => e.innerText).join(' '),
  images: Array.from(document.images).map(i => i.getAttribute('src')),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
};
"""


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")
def test_the_ingest_artifact_shows_hostile_file_names_as_text_in_the_ui(stack: Stack, tmp_path: Path) -> None:
    # given: a real document beside two empty files (quarantined) named as an image with an onerror handler and as
    # a javascript: link, ingested into a table of their own
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copyfile(REPO / "datasets/python-docs/tutorial/appetite.txt", corpus / "appetite.txt")
    for name in HOSTILE_NAMES:
        (corpus / name).write_text("")
    env = {**stack.env, "RAGOPS_TABLE": "hostile"}
    ingest = subprocess.run(
        [str(BIN / "ragops"), "ingest", str(corpus)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert ingest.returncode == 0, ingest.stdout[-3000:] + ingest.stderr[-3000:]
    newest = {"artifacts": {"key": {"any_": ["ingest-hostile"]}}, "sort": "CREATED_DESC", "limit": 1}
    [artifact] = api_post(stack, "/artifacts/filter", newest)  # (…/latest answers with the key's collection id)
    assert "&lt;img src=x onerror=alert(1)&gt;" in artifact["data"]

    # when: the artifact's page is opened in the browser
    driver = headless_chromium()
    try:
        driver.get(f"{stack.ui}/artifacts/artifact/{artifact['id']}")
        shown = lambda d: all(name in d.execute_script(RENDERED)["text"] for name in HOSTILE_NAMES)  # noqa: E731
        browser_wait(driver, shown, "the ingest artifact did not show the file names as text")
        rendered = driver.execute_script(RENDERED)
    finally:
        driver.quit()
    # then: both names show as text, and the page has no image they made and no javascript: link
    assert "x" not in rendered["images"], rendered["images"]
    assert not [link for link in rendered["links"] if link.strip().lower().startswith("javascript:")]
