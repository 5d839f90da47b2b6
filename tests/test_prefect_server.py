"""Deployments on a real `prefect server` with a process worker, the CI gate, and the UI in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import httpx
import lancedb
import pytest
import yaml

from .conftest import REPO
from .event_corpus import change_page, write_sample_slice, write_workshop
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


def api(stack: Stack, method: str, path: str, body: dict | None = None) -> Any:
    """One call of the stack's API, its JSON answer; a 503 (SQLite busy under load) is retried, as Prefect's client
    does."""
    for attempt in range(6):
        response = httpx.request(method, f"{stack.api}{path}", json=body, timeout=30)
        if response.status_code != 503:
            break
        time.sleep(1 + attempt)
    response.raise_for_status()
    return response.json()


def api_post(stack: Stack, path: str, body: dict) -> list[dict]:
    return list(api(stack, "POST", path, body))


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
    by_target = {(tuple(a["trigger"]["expect"]), a["actions"][0]["deployment_id"]): a for a in automations}
    on_ingest = next(d for d in deployments if d["name"] == "on-ingest")
    assert set(by_target) >= {
        (("ragops.version.created",), on_ingest["id"]),
        (("ragops.version.created",), weekly["id"]),
        (("ragops.monitor.threshold-crossed",), next(d["id"] for d in deployments if d["name"] == "on-alert")),
    }, list(by_target)
    # a new version starts `evaluate/on-ingest` for the table and version the event names
    evaluate_on_ingest = by_target[(("ragops.version.created",), on_ingest["id"])]
    [action] = evaluate_on_ingest["actions"]
    assert action["type"] == "run-deployment"
    assert evaluate_on_ingest["trigger"]["match"]["ragops.judged-by"] == "trigger"
    assert "event.payload.table" in json.dumps(action["parameters"]["table"])
    assert "event.payload.version" in json.dumps(action["parameters"]["version"])
    # maintenance after every third new version of a table within a week: registered, off by default
    maintain_every = by_target[(("ragops.version.created",), weekly["id"])]
    assert maintain_every["enabled"] is False
    trigger = maintain_every["trigger"]
    assert (trigger["threshold"], trigger["within"], trigger["posture"]) == (3, 604800, "Reactive")
    assert trigger["for_each"] == ["prefect.resource.id"] and "ragops.judged-by" not in trigger["match"]
    assert "event.payload.table" in json.dumps(maintain_every["actions"][0]["parameters"]["table"])


def test_the_pipeline_deployment_promotes_the_sample_through_the_worker(stack: Stack) -> None:
    # a slice of the sample (16 documents) and the bundled golden set's questions on it, kept as the table's golden
    # set: the pipeline deployment reads it from the Variable (the whole sample took 4 minutes here)
    corpus, golden = write_sample_slice(stack.root / "sample-slice")
    variable = {"name": "ragops-golden-set-chunks", "value": str(golden), "tags": ["ragops"]}
    api(stack, "POST", "/variables/", variable)
    out = stack.root / "gate.json"
    gate = stack.run(
        str(BIN / "ragops"),
        "gate",
        "--deployment",
        "pipeline/sample",
        "--source",
        str(corpus),
        "--timeout",
        "1500",
        "--json",
        str(out),
        timeout=1800,
    )
    worker_log = (stack.root / "worker.log").read_text()[-4000:]
    assert gate.returncode == 0, gate.stdout[-3000:] + gate.stderr[-3000:] + worker_log
    result = json.loads(out.read_text())
    assert result["action"] == "promote" and result["ingest"]["docs_seen"] == len(list(corpus.rglob("*.*")))
    assert result["golden_set"] == str(golden), result.get("golden_set")
    assert f"flow run: {stack.ui}/runs/flow-run/" in (gate.stdout + gate.stderr).replace("\n", "")
    # the version names what produced it: the ingest run with its page on this server, started by CI
    produced = result["lineage"]["candidate"]["lineage"]
    assert produced["run_id"] == result["ingest"]["run_id"] and produced["trigger"]["kind"] == "ci"
    assert str(produced["flow_run_url"]).endswith(f"/runs/flow-run/{produced['run_id']}")

    table = lancedb.connect(str(stack.root / "lancedb")).open_table("chunks")
    assert table.tags.list()["production"]["version"] == result["candidate_version"]
    assert Path(result["report_html"]).is_file()

    artifact = api(stack, "GET", "/artifacts/evaluation-chunks/latest")
    assert artifact["type"] == "markdown" and "PROMOTE" in artifact["data"]

    # the pipeline's ingest announced its version as one the pipeline judges itself: no evaluation was triggered
    [event] = wait_until(lambda: version_events(stack, "chunks"), "no ragops.version.created for chunks", 60)
    assert int(event["payload"]["version"]) == result["candidate_version"]
    assert event["resource"]["ragops.judged-by"] == "pipeline" and event["payload"]["judged_by"] == "pipeline"
    time.sleep(5)  # (a triggered run shows within a second or two)
    assert not evaluations_of(stack, "chunks")


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
    artifact = api(stack, "GET", "/artifacts/monitor-chunks/latest")
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
    return list(api(stack, "POST", "/events/filter", body)["events"])


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


# --- the event-driven path on a second table: ingest → `ragops.version.created` → `evaluate/on-ingest` ---

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
TABLE = "pg"


@dataclass
class SecondTable:
    """Table `pg`: the workshop handbook, its golden set, and the environment its commands run in."""

    corpus: Path
    golden: Path
    env: dict[str, str]
    versions: list[int] = field(default_factory=list)  # every version an ingest wrote, in order


@pytest.fixture(scope="module")
def pg(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> SecondTable:
    corpus, golden = write_workshop(tmp_path_factory.mktemp("pg"), TABLE)
    return SecondTable(corpus, golden, {**stack.env, "RAGOPS_TABLE": TABLE})


def ragops(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "ragops"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"ragops {' '.join(args)}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def ingest_pg(pg: SecondTable, *extra: str) -> int | None:
    """`ragops ingest` of the handbook into pg, as a user runs it; the version it wrote (None: nothing changed)."""
    done = ragops(pg.env, "ingest", str(pg.corpus), "--table", TABLE, *extra, "--json", "-")
    version = json.loads(done.stdout)["table_version"]
    if version is not None:
        pg.versions.append(int(version))
    return version


def wait_until(condition: Callable[[], T | None], what: str, timeout: float, every: float = 2) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(every)
    return found


def evaluations_of(stack: Stack, table: str, since: datetime | None = None) -> list[dict]:
    """The `evaluate/on-ingest` runs of `table` (created after `since`), oldest first."""
    body = {"deployments": {"name": {"any_": ["on-ingest"]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200}
    runs = [r for r in api_post(stack, "/flow_runs/filter", body) if r["parameters"].get("table") == table]
    return [r for r in runs if since is None or datetime.fromisoformat(r["created"]) > since]


def finished_runs(stack: Stack, table: str, since: datetime | None = None, count: int = 1) -> list[dict] | None:
    """The table's `on-ingest` runs (since `since`) once there are `count` and all have ended, else None."""
    runs = evaluations_of(stack, table, since)
    done = len(runs) >= count and all((r.get("state") or {}).get("type") in FINAL for r in runs)
    return runs if done else None


def version_events(stack: Stack, table: str) -> list[dict]:
    body = {"filter": {"event": {"name": ["ragops.version.created"]},
                       "resource": {"id": [f"ragops.table.{table}"]}}, "limit": 50}  # fmt: skip
    return list(api(stack, "POST", "/events/filter", body)["events"])


def production_of(stack: Stack, table: str) -> int | None:
    tags = lancedb.connect(str(stack.root / "lancedb")).open_table(table).tags.list()
    return tags["production"]["version"] if "production" in tags else None


def promotion_records(stack: Stack, table: str) -> list[dict]:
    """The table's promotion log, oldest first, with `details` and `reasons` decoded."""
    rows = lancedb.connect(str(stack.root / "lancedb")).open_table("promotions").to_arrow().to_pylist()
    rows = sorted((r for r in rows if r["table"] == table), key=lambda r: r["at"])
    return [{**r, "details": json.loads(r["details"] or "{}"), "reasons": json.loads(r["reasons"])} for r in rows]


def test_an_ingest_into_a_second_table_triggers_one_evaluation_of_its_version(stack: Stack, pg: SecondTable) -> None:
    # given: a folder of the user's own and its golden set
    # when: it is ingested into table pg, naming the golden set the table is judged by
    version = ingest_pg(pg, "--golden-set", str(pg.golden))

    # then: the version was announced, about table pg
    assert version is not None
    [event] = wait_until(lambda: version_events(stack, TABLE), "no ragops.version.created for pg", 120)
    assert event["payload"]["table"] == TABLE and int(event["payload"]["version"]) == version
    # and the trigger started one evaluation of that table and version, named for them, which the worker ran
    [run] = wait_until(lambda: finished_runs(stack, TABLE), "the evaluation of pg did not finish", 600)
    assert run["name"] == f"evaluate-{TABLE}-v{version}"
    assert str(run["parameters"]["version"]) == str(version) and run["parameters"]["newest_only"] is True
    assert run["state"]["type"] == "COMPLETED", run["state"]
    # on the golden set the ingest recorded for the table (not the sample's), and saying what it decided
    variable = api(stack, "GET", f"/variables/name/ragops-golden-set-{TABLE}")
    assert variable["value"] == str(pg.golden)
    # (a first version on a good golden set passes; named for what it would do, since an evaluation moves nothing)
    assert run["state"]["name"] == "Would promote", run["state"]
    assert run["state"]["message"].startswith(f"{TABLE} v{version}: PROMOTE against no production yet"), run["state"]
    newest = {"artifacts": {"key": {"any_": [f"evaluation-{TABLE}"]}}, "sort": "CREATED_DESC", "limit": 1}
    [artifact] = api_post(stack, "/artifacts/filter", newest)
    assert artifact["flow_run_id"] == run["id"] and TABLE in artifact["data"]
    # an evaluation moves no tag
    assert production_of(stack, TABLE) is None


def test_an_ingest_that_changes_nothing_triggers_no_evaluation(stack: Stack, pg: SecondTable) -> None:
    # given: table pg ingested and evaluated once (the test above)
    assert len(evaluations_of(stack, TABLE)) == 1
    # when: the same folder is ingested again
    assert ingest_pg(pg) is None
    time.sleep(20)  # the trigger fired within seconds of each version so far
    # then: no event, and no evaluation
    assert len(version_events(stack, TABLE)) == 1
    assert len(evaluations_of(stack, TABLE)) == 1


def test_a_burst_of_ingests_is_evaluated_at_most_twice_the_newest_among_them(stack: Stack, pg: SecondTable) -> None:
    # given: pg's first evaluation done
    started = datetime.now(UTC)
    # when: five quick ingests each write a version (one page changed before each)
    for n in range(5):
        change_page(pg.corpus, n)
        assert ingest_pg(pg) is not None
    burst = pg.versions[-5:]
    assert burst == sorted(set(burst))
    # then: one evaluation per new version was started, and all of them end
    runs = wait_until(lambda: finished_runs(stack, TABLE, started, 5), "the burst's evaluations did not end", 1200)
    assert sorted(r["name"] for r in runs) == sorted(f"evaluate-{TABLE}-v{v}" for v in burst)
    assert all(r["state"]["type"] == "COMPLETED" for r in runs), [r["state"] for r in runs]
    # at most two of them scored anything (the one running and the newest); the others ended Superseded at once
    scored = [r for r in runs if r["state"]["name"] != "Superseded"]
    assert 1 <= len(scored) <= 2, [(r["name"], r["state"]["name"]) for r in runs]
    assert f"evaluate-{TABLE}-v{burst[-1]}" in {r["name"] for r in scored}
    for run in runs:
        if run["state"]["name"] == "Superseded":
            assert "superseded by v" in run["state"]["message"], run["state"]


# --- the review step: a promotion that waits for a person, in the UI or from a terminal ---


def review_policy(root: Path, timeout_s: int) -> Path:
    """The default policy, but every promotion waits up to `timeout_s` for a review."""
    policy = yaml.safe_load((REPO / "evaluations" / "policies" / "default.yaml").read_text())
    policy |= {"review": "always", "review_timeout_s": timeout_s}
    path = root / f"review-{timeout_s}s.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def start_promotion(stack: Stack, pg: SecondTable, policy: Path, version: int | None = None) -> str:
    """Run the `promote/gate` deployment on pg through the API, as the UI's "Run" does; its flow run id."""
    [deployment] = api_post(stack, "/deployments/filter", {"deployments": {"name": {"any_": ["gate"]}}})
    parameters = {"table": TABLE, "policy": str(policy), "golden_set": str(pg.golden), "source": str(pg.corpus)}
    if version is not None:
        parameters["version"] = str(version)
    return str(api(stack, "POST", f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})["id"])


def flow_run(stack: Stack, run_id: str) -> dict:
    return dict(api(stack, "GET", f"/flow_runs/{run_id}"))


def wait_for_state(stack: Stack, run_id: str, types: tuple[str, ...], timeout: float) -> dict:
    """The run once its state is one of `types`; fail at once, with its message, if it ends otherwise."""

    def reached() -> dict | None:
        run = flow_run(stack, run_id)
        state = run.get("state") or {}
        if state.get("type") in types:
            return run
        assert state.get("type") not in FINAL, (
            f"{run['name']} ended {state.get('name')}: {state.get('message')}\n"
            + (stack.root / "worker.log").read_text()[-3000:]
        )
        return None

    return wait_until(reached, f"flow run {run_id} did not reach {types}", timeout, every=2)


@pytest.fixture(scope="module")
def waiting_review(stack: Stack, pg: SecondTable, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A `promote/gate` run of pg's newest version, paused for its review (nobody has answered yet)."""
    policy = review_policy(tmp_path_factory.mktemp("policies"), timeout_s=3600)
    run = wait_for_state(stack, start_promotion(stack, pg, policy), ("PAUSED",), timeout=900)
    return {"id": run["id"], "version": pg.versions[-1], "policy": policy}


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")
def test_the_ui_shows_the_paused_promotion_and_its_review_form(
    stack: Stack, waiting_review: dict, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("RAGOPS_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    version = waiting_review["version"]
    driver = headless_chromium()
    try:
        # given: the paused promotion's page
        driver.get(f"{stack.ui}/runs/flow-run/{waiting_review['id']}")
        browser_wait(
            driver, page_shows(f"promote-{TABLE}-v{version}", "Paused"), "the run's page did not show it Paused"
        )
        # when: the reviewer clicks Resume
        resume = (By.XPATH, "//button[normalize-space()='Resume']")
        browser_wait(driver, clicked(resume), "no Resume button to click")
        # then: the form asks for the decision, a note and the reviewer, under the candidate's description
        form = page_shows("Resume Flow Run", f"Review {TABLE} version {version}", "Decision", "Note", "Reviewer",
                          "Submit", "Gate: PROMOTE")  # fmt: skip
        browser_wait(driver, form, "the Resume dialog did not show the review form")
        text = driver.execute_script("return document.body.innerText")
        assert "review: always" in text, text[:2000]  # why it waits
        shot = shots / "prefect-ui-review.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # and closing the dialog leaves the run waiting
        browser_wait(driver, clicked((By.XPATH, "//button[normalize-space()='Close']")), "no Close button to click")
        browser_wait(driver, lambda d: "Resume Flow Run" not in d.execute_script("return document.body.innerText"),
                     "the dialog did not close")  # fmt: skip
    finally:
        driver.quit()
    assert flow_run(stack, waiting_review["id"])["state"]["type"] == "PAUSED"


def test_a_promotion_approved_from_the_terminal_moves_production_and_logs_the_review(
    stack: Stack, pg: SecondTable, waiting_review: dict
) -> None:
    # given: a promotion of pg waiting for its review, listed as such
    version = waiting_review["version"]
    listed = json.loads(ragops(pg.env, "review", "--list", "--json").stdout)
    assert [(r["run_id"], r["table"], r["name"]) for r in listed] == [
        (waiting_review["id"], TABLE, f"promote-{TABLE}-v{version}")
    ]
    # when: a reviewer approves it
    approved = ragops(pg.env, "review", "--table", TABLE, "--approve", "--note", "checked", "--reviewer", "tester")
    assert "approved" in approved.stdout and "tester" in approved.stdout, approved.stdout
    # then: the run goes on, promotes, and says so
    run = wait_for_state(stack, waiting_review["id"], ("COMPLETED",), timeout=600)
    assert run["state"]["name"] == "Promoted", run["state"]
    assert "approved by tester" in run["state"]["message"], run["state"]["message"]
    assert production_of(stack, TABLE) == version
    # and the promotion log keeps the review beside the gate's decision
    record = promotion_records(stack, TABLE)[-1]
    assert (record["action"], record["version"], record["trigger"]) == ("promote", version, "deployment")
    review = record["details"]["review"]
    assert (review["decision"], review["kind"], review["reviewer"], review["note"]) == (
        "approve", "approved", "tester", "checked")  # fmt: skip
    # and so does the history a user reads
    history = json.loads(ragops(pg.env, "report", "--history", "--json").stdout)
    assert history["table"] == TABLE and history["production_version"] == version
    assert history["decisions"][0]["review"]["reviewer"] == "tester"
    assert history["decisions"][0]["action"] == "promote" and history["decisions"][0]["version"] == version
    # and the run-level artifact of the table's decisions
    newest = {"artifacts": {"key": {"any_": [f"decision-{TABLE}"]}}, "sort": "CREATED_DESC", "limit": 1}
    [artifact] = api_post(stack, "/artifacts/filter", newest)
    assert artifact["flow_run_id"] == waiting_review["id"] and "approved, by tester" in artifact["data"]


def test_a_promotion_rejected_through_the_api_leaves_production_and_a_silent_one_times_out(
    stack: Stack, pg: SecondTable, waiting_review: dict
) -> None:
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # given: production approved (above), and a changed handbook ingested as a new candidate
    production = production_of(stack, TABLE)
    assert production is not None and production == waiting_review["version"]
    change_page(pg.corpus, 100)
    candidate = ingest_pg(pg)
    assert candidate is not None and candidate > production
    # when: its promotion waits for review and is rejected through the API
    run_id = start_promotion(stack, pg, waiting_review["policy"], version=candidate)
    paused = wait_for_state(stack, run_id, ("PAUSED",), timeout=900)
    assert paused["name"] == f"promote-{TABLE}-v{candidate}"
    answer = {"decision": "reject", "note": "the soldering notes are wrong", "reviewer": "auditor"}
    with temporary_settings({PREFECT_API_URL: stack.api}):
        resume_flow_run(UUID(paused["id"]), run_input=answer)
    # then: the run ends Blocked, production stays, and the log says who rejected it and why
    run = wait_for_state(stack, run_id, ("COMPLETED",), timeout=600)
    assert run["state"]["name"] == "Blocked", run["state"]
    assert "rejected by auditor" in run["state"]["message"], run["state"]["message"]
    assert production_of(stack, TABLE) == production
    record = promotion_records(stack, TABLE)[-1]
    assert (record["action"], record["version"]) == ("block", candidate)
    assert record["details"]["review"]["kind"] == "rejected" and record["details"]["review"]["reviewer"] == "auditor"
    assert "review: rejected by auditor: the soldering notes are wrong" in record["reasons"]

    # when: the same candidate waits again, under a policy that waits 20 s, and nobody answers
    short = review_policy(waiting_review["policy"].parent, timeout_s=20)
    run_id = start_promotion(stack, pg, short, version=candidate)
    wait_for_state(stack, run_id, ("PAUSED",), timeout=900)
    paused_at = time.monotonic()
    run = wait_for_state(stack, run_id, ("COMPLETED",), timeout=300)
    # then: after the timeout it rejects: Blocked, production unchanged, the review logged as timed out
    assert time.monotonic() - paused_at >= 15
    assert run["state"]["name"] == "Blocked", run["state"]
    assert production_of(stack, TABLE) == production
    record = promotion_records(stack, TABLE)[-1]
    assert (record["action"], record["version"]) == ("block", candidate)
    assert record["details"]["review"]["decision"] == "timeout" and record["details"]["review"]["reviewer"] is None
    assert any("no answer within 20 s" in reason for reason in record["reasons"]), record["reasons"]
    history = json.loads(ragops(pg.env, "report", "--history", "--json").stdout)
    assert [d["review"]["kind"] for d in history["decisions"][:3]] == ["timed out", "rejected", "approved"]
