"""What `ragops` prints for scripts and CI logs: tables that never cut a name or a tag, one JSON document with the
keys docs/CLI_JSON.md documents for every command that prints a table, and no ANSI escape under NO_COLOR."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from flows.cli import app, output
from flows.cli.decisions import metric_table
from flows.cli.versions import versions_table

from .conftest import REPO, SAMPLE

runner = CliRunner()
TABLE = "a_rather_long_table_name_that_a_ci_log_must_show_whole"
LONG_TAG = "release-2025-01-31-with-a-long-name-that-a-ci-log-must-show-whole"
LONG_METRIC = "id_based_context_precision_without_reference"
DOCS = REPO / "docs" / "CLI_JSON.md"
GOLDEN_IDS = {"q023", "q050", "q054", "q057", "q058"}  # citing only the two documents ingested, or none


class Terminal(io.StringIO):
    """A file that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def documented(heading: str, prefix: str = "") -> tuple[set[str], set[str]]:
    """(every key, the keys always present) that docs/CLI_JSON.md lists in the section whose heading holds
    `heading`, at `prefix` ("": the top level; "versions[].": each version)."""
    sections = [part for part in DOCS.read_text().split("\n## ")[1:] if heading in part.splitlines()[0]]
    assert len(sections) == 1, heading
    every, always = set(), set()
    for line in sections[0].splitlines():
        found = re.match(r"\| `([^`]+)` \|", line)
        if not found or not found[1].startswith(prefix):
            continue
        key = found[1].removeprefix(prefix)
        if "." in key or "[" in key:
            continue
        every.add(key)
        if "*Only" not in line:
            always.add(key)
    assert every, heading
    return every, always


def assert_documented(data: dict[str, Any], heading: str, prefix: str = "") -> None:
    every, always = documented(heading, prefix)
    assert set(data) <= every, (heading, sorted(set(data) - every))  # every key printed is documented
    assert always <= set(data), (heading, sorted(always - set(data)))  # every key documented is printed


def invoke_json(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.output[-3000:])
    return json.loads(result.stdout)  # stdout holds the JSON and nothing else


def test_off_a_terminal_a_table_prints_long_metric_names_and_tags_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # given: results going to a pipe (a console on a file: 80 columns, as rich renders a CI log)
    printed = io.StringIO()
    monkeypatch.setattr(output, "out", Console(file=printed))
    row = {"candidate": 0.5, "production": 0.4, "delta": 0.1, "ci_low": 0.01, "ci_high": 0.2, "scored": 5, "asked": 5}
    result = {"production_version": 3, "metrics": [{"metric": LONG_METRIC, **row}, {"metric": "mrr@10", **row}]}
    version = SimpleNamespace(version=7, timestamp="2025-01-31 12:00:00+00:00", tags=[LONG_TAG, "production"],
                              bytes=10**6, unique_bytes=10**5, fragments=1, rows=10)  # fmt: skip
    measured = SimpleNamespace(storage=SimpleNamespace(versions=[version]))

    # when
    output.print_table(metric_table(result, skip=[]))
    output.print_table(versions_table(f"{TABLE} at s3://bucket/a/long/prefix/of/the/store", measured, {7: []}))

    # then: every name, tag and title whole, on one line each, nothing cut
    text = printed.getvalue()
    assert "…" not in text
    assert LONG_METRIC in text and LONG_TAG in text and f"{TABLE} at s3://bucket/a/long/prefix/of/the/store" in text
    assert max(len(line) for line in text.splitlines()) > 80  # wider than the console: the content decides


def test_a_narrow_terminal_folds_a_long_name_instead_of_cutting_it(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = Terminal()
    monkeypatch.setattr(output, "out", Console(file=printed, width=40, color_system=None))
    row = {"candidate": 0.5, "production": 0.4, "delta": 0.1, "ci_low": 0.01, "ci_high": 0.2, "scored": 5, "asked": 5}

    output.print_table(metric_table({"production_version": 3, "metrics": [{"metric": LONG_METRIC, **row}]}, skip=[]))

    text = printed.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 40 and "…" not in text
    first_column = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert "".join(first_column) == LONG_METRIC  # folded over several lines, every character there
    cut = Console(file=Terminal(), width=40, color_system=None)  # what rich does by default, for contrast
    default = Table("metric", "candidate", "production", "delta (paired)")
    default.add_row(LONG_METRIC, "0.5000", "0.4000", "+0.1000")
    cut.print(default)
    assert "…" in cut.file.getvalue()  # type: ignore[attr-defined]


def test_no_color_means_no_ansi_escape_even_when_colour_is_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    def rendered() -> str:
        console = output.make_console()
        console.file = io.StringIO()
        grid = output.new_table("check", "alert", title="monitor")
        grid.add_row("drift", "[red]yes[/red]")
        console.print(grid)
        console.print("[bold green]PROMOTE[/bold green] chunks")
        return console.file.getvalue()  # type: ignore[attr-defined]

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" in rendered()  # colour forced: escapes (so the check below can fail)
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in rendered()


@pytest.fixture(scope="module")
def table(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One real small table for the module: two documents through `ragops ingest --json -`, its version also tagged
    with a long tag, and one served query in its query log. Yields the ingest's JSON and the environment."""
    root = tmp_path_factory.mktemp("ci-output")
    for rel in ("tutorial/venv.txt", "pdf/secrets.pdf"):
        (root / "corpus" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / rel, root / "corpus" / rel)
    lines = (REPO / "datasets/golden/python-docs.jsonl").read_text().splitlines()
    golden = [x for x in lines if json.loads(x).get("id") in GOLDEN_IDS]
    (root / "golden.jsonl").write_text("\n".join(golden) + "\n")
    policy = "primary_metric: chunk_ndcg@10\nmodes: [vector, hybrid]\nrequired: [chunk_ndcg@10]\n"
    (root / "policy.yaml").write_text(policy)
    env = {
        "RAGOPS_LANCEDB_URI": str(root / "db"),
        "RAGOPS_TABLE": TABLE,
        "RAGOPS_EMBED_LOCAL_MAX_CHUNKS": "100000",  # no Dask cluster for two documents
        "RAGOPS_REPORTS_DIR": str(root / "reports"),
        "RAGOPS_GOLDEN_SET": str(root / "golden.jsonl"),
        "RAGOPS_POLICY": str(root / "policy.yaml"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        summary = invoke_json("ingest", str(root / "corpus"), "--json", "-")
        serve_one_query(summary["table_version"])
        yield {"summary": summary, "env": env, "root": root}


def serve_one_query(version: int) -> None:
    """Tag `version` with LONG_TAG and log one query it served, as the query service would."""
    from tasks.embed import embedding
    from tasks.serve import query_log
    from tasks.serve.retrieval import search
    from tasks.settings import Settings
    from tasks.store.backends import open_store

    settings = Settings()
    store = open_store(settings)
    store.tag(LONG_TAG, version)
    spec = embedding.embed_spec(settings)
    question = "how do I create a virtual environment"
    hits = search(store.at(version), question, spec, "hybrid", k=3)
    vector = embedding.embed_texts([question], spec, role="query")[0]
    served = query_log.LoggedQuery(
        query_id="q1", at=datetime.now(UTC), table=TABLE, version=version, mode="hybrid", k=3, question=question,
        retrieved_ids=[h.chunk_id for h in hits], scores=[h.score for h in hits], top1_similarity=0.6,
        best_similarity=0.6, latency_ms=9.0, answer=None, status=200, vector=vector,
    )  # fmt: skip
    query_log.append(store, settings.query_log_table, [served], len(vector))


def ragops_piped(env: dict[str, str], *args: str, **more: str) -> subprocess.CompletedProcess[str]:
    """`ragops ARGS` as a user runs it in CI: a new process whose stdout is a pipe, COLUMNS unset."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "COLUMNS", "FORCE_COLOR", "NO_COLOR"))}
    full = {**clean, **env, **more, "RAGOPS_PREFECT_HOME": os.environ["RAGOPS_PREFECT_HOME"]}
    exe = Path(sys.executable).with_name("ragops")
    return subprocess.run([str(exe), *args], env=full, capture_output=True, text=True, timeout=300, check=False)


def test_piped_versions_prints_every_tag_and_the_table_name_whole(table: dict[str, Any]) -> None:
    listed = ragops_piped(table["env"], "versions")

    assert listed.returncode == 0, listed.stderr[-3000:]
    assert LONG_TAG in listed.stdout and table["summary"]["candidate_tag"] in listed.stdout
    assert f"{TABLE} at {table['env']['RAGOPS_LANCEDB_URI']}" in listed.stdout
    assert "…" not in listed.stdout and "\x1b[" not in listed.stdout


def test_no_color_keeps_a_piped_table_free_of_escapes_even_when_colour_is_forced(table: dict[str, Any]) -> None:
    coloured = ragops_piped(table["env"], "versions", FORCE_COLOR="1")
    plain = ragops_piped(table["env"], "versions", FORCE_COLOR="1", NO_COLOR="1")

    assert coloured.returncode == plain.returncode == 0, plain.stderr[-3000:]
    assert "\x1b[" in coloured.stdout  # colour forced on a pipe: escapes (so the check below can fail)
    assert "\x1b[" not in plain.stdout and LONG_TAG in plain.stdout  # and still every tag whole


def test_the_json_of_every_reading_command_has_the_documented_keys(table: dict[str, Any]) -> None:
    assert_documented(table["summary"], "`ragops ingest --json`")

    listed = invoke_json("versions", "--json")
    assert_documented(listed, "`ragops versions --json`")
    for version in listed["versions"]:
        assert_documented(version, "`ragops versions --json`", "versions[].")
    assert LONG_TAG in listed["versions"][-1]["tags"]

    shown = invoke_json("versions", "--show", LONG_TAG, "--json")
    assert_documented(shown, "`ragops versions --show N --json`")

    sources = invoke_json("sources", "--json")
    assert_documented(sources, "`ragops sources --json`")
    assert_documented(sources["sources"][0], "`ragops sources --json`", "sources[].")

    hits = invoke_json("search", "virtual environment", "--k", "2", "--json")
    assert len(hits) == 2
    for hit in hits:
        assert_documented(hit, "`ragops search QUERY --json`", "[].")

    served = invoke_json("queries", "--json")
    assert_documented(served, "`ragops queries --json`")
    assert [q["query_id"] for q in served["queries"]] == ["q1"]
    assert_documented(served["queries"][0], "`ragops queries --json`", "queries[].")

    status = invoke_json("server", "status", "--json", code=1)  # no local server runs for the tests
    assert_documented(status, "`ragops server status --json`")
    assert status["running"] is False

    maintained = invoke_json("maintain", "--dry-run", "--json", "-")
    assert_documented(maintained, "`ragops maintain --json`")

    listed_models = invoke_json("models", "--json")
    for entry in listed_models:
        assert_documented(entry, "`ragops models --json`", "[].")
    by_name = {m["name"]: m for m in listed_models}
    assert (
        f"{TABLE} latest" in by_name["all-MiniLM-L6-v2"]["used_by"] and not by_name["multilingual-e5-small"]["used_by"]
    )
    assert by_name["multilingual-e5-small"]["query_prompt"] == "query: "


@pytest.mark.slow
def test_the_json_of_decisions_monitoring_and_golden_sets_has_the_documented_keys(table: dict[str, Any]) -> None:
    decided = invoke_json("promote", "--json", "-")
    assert_documented(decided, "`ragops evaluate --json`")
    assert decided["action"] == "promote"

    latest = invoke_json("report", "--json")
    assert_documented(latest, "`ragops report --json`")
    assert latest["decision"]["run_id"] == decided["run_id"]
    history = invoke_json("report", "--history", "--json")
    assert_documented(history, "`ragops report --history --json`")
    assert_documented(history["decisions"][0], "`ragops report --history --json`", "decisions[].")

    result = runner.invoke(app, ["monitor", "--json", "-"])
    assert result.exit_code in (0, 1), result.output[-3000:]  # 1: an alert on one served query
    assert_documented(json.loads(result.stdout), "`ragops monitor --json`")

    drafted = invoke_json("golden", "generate", "--from-queries", "--out", str(table["root"] / "served.jsonl"),
                          "--json", "-")  # fmt: skip
    assert_documented(drafted, "`ragops golden generate --json`")
