"""The `ragops` command as a user runs it: a real process with Prefect's ephemeral API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def ragops(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("ragops")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "PREFECT_"))}
    env.update(
        RAGOPS_LANCEDB_URI=str(tmp_path / "db"),
        RAGOPS_DASK_WORKERS="2",
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        RAGOPS_PREFECT_HOME=str(tmp_path / "no-local-server"),  # a server a developer runs here is not used
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="200",
    )
    return env


@pytest.fixture
def served_env(cli_env: dict[str, str], prefect_server: None) -> dict[str, str]:
    """cli_env reporting to the session's Prefect test server (PREFECT_API_URL): no temporary server per command.
    test_bad_source_and_bad_version_exit_2_with_a_message keeps the temporary-server path."""
    from prefect.settings import PREFECT_API_URL

    return {**cli_env, "PREFECT_API_URL": str(PREFECT_API_URL.value())}


def test_ingest_search_and_versions_from_the_command_line(
    small_corpus: Path, served_env: dict[str, str], tmp_path: Path
) -> None:
    cli_env = served_env
    summary_path = tmp_path / "summary.json"
    first = ragops("ingest", str(small_corpus), "--json", str(summary_path), env=cli_env)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["docs_new"] == 7 and summary["chunks_embedded"] > 20
    assert "docs seen" in first.stdout and summary["candidate_tag"] in first.stdout
    assert "build" in first.stderr  # the progress bar

    again = ragops("ingest", str(small_corpus), env=cli_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing changed: 0 embedded" in again.stdout

    found = ragops("search", "create a virtual environment", "--mode", "hybrid", "--k", "3", "--json", env=cli_env)
    assert found.returncode == 0, found.stderr[-3000:]
    hits = json.loads(found.stdout)
    assert len(hits) == 3 and "tutorial/venv.txt" in [h["doc_id"] for h in hits]

    listed = ragops("versions", env=cli_env)
    assert listed.returncode == 0 and summary["candidate_tag"] in listed.stdout  # piped: never cut
    as_json = json.loads(ragops("versions", "--json", env=cli_env).stdout)
    assert summary["candidate_tag"] in [t for v in as_json["versions"] for t in v["tags"]]
    shown = json.loads(ragops("versions", "--show", summary["candidate_tag"], "--json", env=cli_env).stdout)
    assert shown["lineage"]["run_id"] == summary["run_id"] and shown["lineage"]["trigger"] == {"kind": "cli"}
    assert [(s["name"], s["documents"]) for s in shown["sources"]] == [("corpus", 7)]


def test_bad_source_and_bad_version_exit_2_with_a_message(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = ragops("ingest", str(tmp_path / "nowhere"), env=cli_env)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr

    no_table = ragops("search", "anything", env=cli_env)
    assert no_table.returncode == 2 and "run `ragops ingest` first" in no_table.stderr


def test_promote_prints_one_line_for_llm_metrics_and_report_history_tells_where_production_is(
    small_corpus: Path, served_env: dict[str, str], tmp_path: Path
) -> None:
    cli_env = served_env
    from .conftest import REPO

    keep = {"q023", "q050", "q054", "q057", "q058"}
    lines = (REPO / "datasets/golden/python-docs.jsonl").read_text().splitlines()
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(x for x in lines if json.loads(x).get("id") in keep) + "\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("primary_metric: chunk_ndcg@10\nmodes: [vector, hybrid]\nrequired: [chunk_ndcg@10]\n")
    env = {**cli_env, "RAGOPS_GOLDEN_SET": str(golden), "RAGOPS_POLICY": str(policy),
           "RAGOPS_REPORTS_DIR": str(tmp_path / "reports"), "RAGOPS_EMBED_LOCAL_MAX_CHUNKS": "100000"}  # fmt: skip
    assert ragops("ingest", str(small_corpus), env=env).returncode == 0

    promoted = ragops("promote", env=env)

    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert "PROMOTE chunks version" in promoted.stdout
    needs = [x for x in promoted.stdout.splitlines() if x.startswith("needs an LLM endpoint")]
    assert len(needs) == 1 and "faithfulness" in needs[0]
    assert "faithfulness " not in promoted.stdout.replace(needs[0], "")  # no row per LLM metric
    assert "abstention" in promoted.stdout and "3/3" in promoted.stdout  # coverage: 3 answerable questions

    history = ragops("report", "--history", env=env)

    assert history.returncode == 0, history.stderr[-3000:]
    assert "promote" in history.stdout and "first promotion" in history.stdout
    assert "production is version" in history.stdout and "promoted on" in history.stdout
    latest = ragops("report", env=env)
    assert latest.returncode == 0 and "production is version" in latest.stdout
    empty = ragops("report", "--history", env={**env, "RAGOPS_TABLE": "other"})
    assert empty.returncode == 2 and "error: no decision recorded" in empty.stderr
