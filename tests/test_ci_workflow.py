"""The CI gate as a pull request meets it: the gate steps of deployments/github/ragops-gate.yml run as GitHub runs
them (`bash -e`, CI=true, no terminal, every secret and unset variable ""), in a copy of the repository that stands
for the pull request's checkout, against a LanceDB store that already has a production version. Then the pieces:
an empty CI variable is an unset one, the exit code of each outcome, and the message for a deployment that does not
exist.

The copy has no `.venv` of its own (`make install` takes minutes and needs the network): `.venv` there is a link to
the venv running these tests, whose ragops is an editable install of this checkout; PYTHONPATH puts the copy's own
packages first, so the code that runs is the copy's, as `make install` in the pull request's checkout would have it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lancedb
import pytest
import yaml

from evaluations.golden import write_golden_set
from flows.ci_gate import (
    decision_line,
    drop_empty_prefect_variables,
    exit_code_for,
    outcome_of,
    run_gate,
    step_summary,
    unknown_deployment_message,
)
from flows.cli.production import gate_parameters
from tasks import markdown
from tasks.settings import Settings

from .conftest import REPO
from .own_corpus import write_own_corpus
from .test_gate_calibration import QUESTIONS

WORKFLOW = REPO / "deployments" / "github" / "ragops-gate.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(secrets|vars)\.(\w+)\s*\}\}")
NOT_IN_A_CHECKOUT = (".venv", ".git", "mutants", "*_cache", ".pytest_cache", ".hypothesis", ".ragops", "__pycache__",
                     "*.egg-info", ".env", "reports", "python-docs")  # fmt: skip
NEW_SECTION = """
## Cleaning the tip after a session

Tin the tip with fresh solder before you switch the iron off; a bare tip oxidises overnight and stops wetting.
"""


# --- the workflow, as GitHub reads it ---


def gate_job() -> dict[str, Any]:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert list(jobs) == ["gate"], list(jobs)
    return dict(jobs["gate"])


def runs_on(step: dict[str, Any], event: str) -> bool:
    """Whether a step runs on `event`: the step conditions this workflow uses, evaluated as GitHub does."""
    condition = str(step.get("if", "success()")).strip()
    on_event = re.fullmatch(r"github\.event_name == '(\w+)'", condition)
    if on_event:
        return on_event[1] == event
    assert condition in ("success()", "always()"), f"the test cannot evaluate `if: {condition}`"
    return True


def gate_step(event: str) -> str:
    """The `run:` text of the one gate step that runs on `event`, as written."""
    steps = [s for s in gate_job()["steps"] if "ragops gate" in s.get("run", "") and runs_on(s, event)]
    assert len(steps) == 1, f"{len(steps)} gate steps run on {event}"
    return str(steps[0]["run"])


def job_env(variables: dict[str, str]) -> dict[str, str]:
    """The job's `env:`, each `${{ secrets.X }}` "" (unset) and each `${{ vars.X }}` the repository's or ""."""
    env = {}
    for name, value in gate_job()["env"].items():
        text = EXPRESSION.sub(lambda m: variables.get(m[2], "") if m[1] == "vars" else "", str(value))
        assert "${{" not in text, f"the test cannot evaluate {name}: {value}"
        env[name] = text
    return env


def test_a_pull_request_only_gates_and_a_push_to_main_promotes_both_in_process() -> None:
    pull_request, push = gate_step("pull_request"), gate_step("push")
    assert "--in-process" in pull_request and "--gate-only" in pull_request
    assert "--in-process" in push and "--gate-only" not in push
    assert "--json reports/gate.json" in pull_request and "--json reports/gate.json" in push
    assert job_env({})["RAGOPS_REPORTS_DIR"] == "reports"
    upload = next(s for s in gate_job()["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"].rstrip("/") == "reports"


# --- the gate steps, run as CI runs them ---


def pull_request_checkout(root: Path) -> Path:
    """A copy of this repository with a small corpus and golden set of its own, and `.venv` linked (see above)."""
    checkout = root / "checkout"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(*NOT_IN_A_CHECKOUT), symlinks=True)
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    write_own_corpus(checkout / "datasets" / "workshop")
    write_golden_set(checkout / "datasets" / "golden" / "workshop.jsonl", QUESTIONS, {})
    return checkout


def run_like_ci(checkout: Path, store: Path, event: str, sha: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the event's gate step in `checkout` as a GitHub runner would; returns the process and the step summary."""
    summary = checkout.parent / f"summary-{sha}.md"
    summary.write_text("")
    variables = {"RAGOPS_LANCEDB_URI": str(store), "GATE_SOURCE": "datasets/workshop",
                 "RAGOPS_GOLDEN_SET": "datasets/golden/workshop.jsonl"}  # fmt: skip
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ["HOME"],  # the embedding model's exports are cached there
        "LANG": "C.UTF-8",
        **job_env(variables),
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_SHA": sha,
        "GITHUB_WORKSPACE": str(checkout),
        "GITHUB_STEP_SUMMARY": str(summary),
        "PYTHONPATH": str(checkout),
        "HF_HUB_OFFLINE": "1",  # no network here
        "PREFECT_HOME": str(checkout.parent / "prefect-home"),  # a fresh runner's
        "RAGOPS_PREFECT_HOME": os.environ["RAGOPS_PREFECT_HOME"],  # never a developer's local server (conftest)
    }
    done = subprocess.run(
        ["bash", "-e", "-c", gate_step(event)],
        cwd=checkout,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return done, summary.read_text()


def production_of(store: Path) -> int:
    return int(lancedb.connect(str(store)).open_table("chunks").tags.list()["production"]["version"])


@pytest.mark.slow
def test_the_pull_request_gate_judges_the_pull_requests_own_revision_and_moves_nothing(tmp_path: Path) -> None:
    # given: the shared store, where a push to main promoted the workshop handbook
    checkout, store = pull_request_checkout(tmp_path), tmp_path / "shared-lancedb"
    pushed, _ = run_like_ci(checkout, store, "push", "0000000000000000000000000000000000000001")
    log = pushed.stdout + pushed.stderr
    first = json.loads((checkout / "reports" / "gate.json").read_text())
    assert (pushed.returncode, first["outcome"]) == (0, "promoted"), log[-4000:]
    assert production_of(store) == first["candidate_version"]
    assert "Traceback" not in log

    # when: a pull request that leaves the corpus alone is gated
    same, summary = run_like_ci(checkout, store, "pull_request", "0000000000000000000000000000000000000002")
    # then: it passes, saying nothing changed
    log = same.stdout + same.stderr
    assert same.returncode == 0, log[-4000:]
    unchanged = json.loads((checkout / "reports" / "gate.json").read_text())
    assert unchanged["outcome"] == "unchanged"
    expected = f"nothing changed: version {first['candidate_version']} of table chunks is already production"
    assert expected in same.stdout and expected in summary

    # when: a pull request changes a page of the corpus
    page = checkout / "datasets" / "workshop" / "workshop" / "soldering.md"
    page.write_text(page.read_text(encoding="utf-8") + NEW_SECTION, encoding="utf-8")
    sha = "feedc0de" * 5
    changed, summary = run_like_ci(checkout, store, "pull_request", sha)

    # then: the decision is about a new version, produced by the pull request's revision, and production stays
    log = changed.stdout + changed.stderr
    result = json.loads((checkout / "reports" / "gate.json").read_text())
    assert result["outcome"] in ("passed", "blocked"), log[-4000:]
    assert result["action"] == "evaluated" and result["decision"] in ("promote", "block")
    assert changed.returncode == (0 if result["outcome"] == "passed" else 1), log[-4000:]
    assert result["candidate_version"] > first["candidate_version"]
    assert result["production_version"] == first["candidate_version"] == production_of(store)
    produced = result["lineage"]["candidate"]["lineage"]
    assert produced["trigger"]["kind"] == "ci" and produced["trigger"]["revision"] == sha
    assert result["ingest"]["docs_changed"] == 1
    # and the reports are in the job's workspace, for the upload step; the summary has the decision line
    assert Path(checkout / result["report_html"]).resolve().is_relative_to(checkout / "reports")
    assert list((checkout / "reports").rglob("*.html"))
    assert decision_line(result) in changed.stdout and markdown.text(decision_line(result)) in summary
    assert "Traceback" not in log

    # when: another pull request, on main's corpus, is gated after that candidate became the latest version
    page.write_text(page.read_text(encoding="utf-8").replace(NEW_SECTION, ""), encoding="utf-8")
    other, _ = run_like_ci(checkout, store, "pull_request", "0000000000000000000000000000000000000003")
    # then: its ingest writes production's rows again, and that is "nothing changed", not "blocked"
    log = other.stdout + other.stderr
    again = json.loads((checkout / "reports" / "gate.json").read_text())
    assert (other.returncode, again["outcome"]) == (0, "unchanged"), log[-4000:]
    assert again["ingest"]["table_version"] > result["candidate_version"]  # it did write a version
    assert "holds production's rows" in again["reasons"][0] and production_of(store) == first["candidate_version"]


# --- the pieces ---


def test_an_empty_ci_variable_is_an_unset_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # given: secrets and variables that are not set, which GitHub passes as ""
    monkeypatch.setenv("RAGOPS_STORAGE_OPTIONS", "")
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", "")
    monkeypatch.setenv("RAGOPS_GOLDEN_SET", "")
    # then: each has its default, as if unset
    defaults = {name: field.get_default(call_default_factory=True) for name, field in Settings.model_fields.items()}
    settings = Settings()
    assert settings.storage_options == {} and settings.lancedb_uri == defaults["lancedb_uri"] == ".ragops/lancedb"
    assert settings.golden_set == defaults["golden_set"]


def test_empty_prefect_variables_are_dropped_so_that_prefect_sees_no_api() -> None:
    environ = {"PREFECT_API_URL": "", "PREFECT_API_KEY": "", "PREFECT_HOME": "/x", "RAGOPS_TABLE": "", "CI": ""}
    assert drop_empty_prefect_variables(environ) == ["PREFECT_API_KEY", "PREFECT_API_URL"]
    assert environ == {"PREFECT_HOME": "/x", "RAGOPS_TABLE": "", "CI": ""}
    # and in a fresh process (Prefect reads its settings once, on import), an empty API URL means no API
    script = "import os; from flows.ci_gate import *; drop_empty_prefect_variables(os.environ); print(api_configured())"
    env = {**os.environ, "PREFECT_API_URL": "", "PREFECT_API_KEY": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_a_bad_setting_ends_the_gate_in_one_error_line_exit_2_and_a_json_saying_no_decision(tmp_path: Path) -> None:
    # given: a storage option that is not JSON, and every other secret unset ("")
    env = {**os.environ, "CI": "true", "RAGOPS_STORAGE_OPTIONS": "{region: eu", "PREFECT_API_URL": "",
           "PREFECT_API_KEY": "", "RAGOPS_LANCEDB_URI": ""}  # fmt: skip
    out = tmp_path / "reports" / "gate.json"
    summary = tmp_path / "summary.md"
    # when: the gate runs as CI runs it
    done = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "ragops"), "gate", "--in-process", "--gate-only", "--deployment", "pipeline",
         "--json", str(out), "--summary", str(summary)],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # then: no decision, said in one line that names the setting (never its value), and in the JSON and summary
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "storage_options" in lines[0], done.stderr
    assert "eu" not in lines[0] and "Traceback" not in done.stdout + done.stderr
    assert json.loads(out.read_text()) == {"outcome": "no decision", "error": lines[0].removeprefix("error: ")}
    assert summary.read_text().startswith("### ragops gate: no decision")


@pytest.mark.parametrize(
    ("result", "outcome", "code"),
    [
        ({"decision": "unchanged", "action": "unchanged"}, "unchanged", 0),
        ({"decision": "promote", "action": "promote"}, "promoted", 0),
        ({"decision": "promote", "action": "evaluated"}, "passed", 0),  # --gate-only: would promote
        ({"decision": "promote"}, "passed", 0),  # an evaluate flow: decides, moves nothing
        ({"decision": "block", "action": "evaluated"}, "blocked", 1),
        ({"decision": "block", "action": "block"}, "blocked", 1),
        ({"decision": "block"}, "blocked", 1),
        ({"decision": "promote", "action": "block"}, "blocked", 1),  # decided promote, but production did not move
        ({"decision": "superseded", "action": "superseded"}, "no decision", 2),
        ({}, "no decision", 2),
    ],
)
def test_each_outcome_has_its_exit_code(result: dict[str, Any], outcome: str, code: int) -> None:
    assert (outcome_of(result), exit_code_for(result)) == (outcome, code)


def test_nothing_changed_reads_as_such_in_the_log_and_the_summary() -> None:
    result = {"decision": "unchanged", "action": "unchanged", "reasons": ["nothing changed: no document changed"],
              "table": "handbook", "candidate_version": 7, "production_version": 7}  # fmt: skip
    line = decision_line(result)
    assert line == "nothing changed: version 7 of table handbook is already production"
    assert step_summary(line, result) == f"### ragops gate: unchanged\n\n{line}\n\n"


def test_a_pull_request_gate_passes_gate_only_the_trigger_and_the_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAGOPS_REVISION", "CI_COMMIT_SHA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_SHA", "abc123")
    parameters = gate_parameters("pipeline/sample", None, "datasets/x", None, gate_only=True)
    assert parameters == {"source": "datasets/x", "trigger": "ci", "revision": "abc123", "gate_only": True}
    assert "gate_only" not in gate_parameters("pipeline/sample", None, None, "r1")


def test_an_unknown_deployment_is_named_with_the_ones_that_exist() -> None:
    message = unknown_deployment_message("pipeline/nightly", ["ingest/nightly", "pipeline/sample"], "http://h/api")
    assert message.startswith("deployment 'pipeline/nightly' does not exist on the Prefect API at http://h/api")
    assert "deployments there: ingest/nightly, pipeline/sample" in message
    assert "it has no deployments" in unknown_deployment_message("a/b", [], "http://h/api")


def test_an_unknown_deployment_on_a_real_server_lists_the_existing_ones(prefect_server: None) -> None:
    from prefect.client.orchestration import get_client

    from flows.ci_gate import GateInfrastructureError

    # given: a server with one deployment, pipeline/sample
    with get_client(sync_client=True) as client:
        client.create_deployment(flow_id=client.create_flow_from_name("pipeline"), name="sample")
    # when: the gate is asked for one that does not exist
    with pytest.raises(GateInfrastructureError) as raised:
        run_gate("pipeline/nightly", {}, timeout_s=30)
    # then: it says so, and names the one there is
    assert "deployment 'pipeline/nightly' does not exist" in str(raised.value)
    assert "pipeline/sample" in str(raised.value) and "ObjectNotFound" not in str(raised.value)
