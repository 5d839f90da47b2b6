"""A generated golden set on a corpus that is not the sample (installed packages' READMEs), through its second and
third round: generate, review, promote; move the corpus to a new checkout, delete a page, change documents, promote
again (the page gone from what is served); then a cited sentence edited in the source is reported as a stale golden
passage, not as a regression. Real LanceDB, embedding model, Prefect; the fake
OpenAI-compatible server writes the drafts."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from evaluations.golden import read_golden_set, write_golden_set
from flows.cli import app
from flows.ingest import ingest
from tasks.errors import UnknownSourceError
from tasks.serve.query_service import create_app
from tasks.settings import Settings
from tasks.store.lance_reads import log_records
from tests.fake_llm import FakeLLM
from tests.own_corpus import PAGES
from tests.package_corpus import write_package_corpus

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()

NEW_SECTION = """
## Questions from the workshop

Hang every tool back on its outline on the pegboard at the end of the session, and report a missing one on the
whiteboard by the door.
"""


def promote(tmp_path: Path, golden: Path, name: str) -> dict:  # type: ignore[type-arg]
    out = tmp_path / f"{name}.json"
    result = runner.invoke(app, ["promote", "--golden-set", str(golden), "--json", str(out)])
    assert out.exists(), result.output
    decision = json.loads(out.read_text())
    decision["exit_code"] = result.exit_code
    return decision


def test_a_generated_golden_set_promotes_a_changed_second_version_and_reports_stale_passages(
    store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the workshop handbook ingested, and a golden set generated for it and reviewed
    monkeypatch.setenv("RAGOPS_TABLE", "packages")
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")
    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(tmp_path / "reports"))
    corpus = write_package_corpus(tmp_path / "readmes")
    assert ingest(source=str(corpus)).table_version is not None
    golden = tmp_path / "packages.jsonl"
    with FakeLLM() as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake-writer")
        generated = runner.invoke(app, ["golden", "generate", "--out", str(golden), "--n", "40", "--seed", "5"])
    for name in ("RAGOPS_LLM_BASE_URL", "RAGOPS_LLM_MODEL"):
        monkeypatch.delenv(name)  # the gate answers offline: abstention cannot be judged, and must not block
    assert generated.exit_code == 0, generated.output
    drafts = read_golden_set(golden)
    reviewed = runner.invoke(app, ["golden", "review", str(golden)], input="a\n" * len(drafts.questions))
    assert reviewed.exit_code == 0, reviewed.output
    questions = read_golden_set(golden).questions
    unanswerable = [q for q in questions if not q.answerable]
    assert 0 < len(unanswerable) < 10 and len(questions) - len(unanswerable) >= 20
    assert not read_golden_set(golden).drafts

    first = promote(tmp_path, golden, "first")
    assert first["decision"] == "promote", first["reasons"]
    assert first["exit_code"] == 0

    # when the handbook moves (a new checkout), loses the page its questions cite least (those questions retired
    # with it), gains pages on another topic and a section, and is judged again
    first_location = corpus
    corpus = tmp_path / "checkout-2" / "readmes"
    shutil.copytree(first_location, corpus)
    citations = Counter(e.doc_id for q in questions for e in q.evidence)
    gone = min(sorted(p.name for p in corpus.glob("*.md") if p.name != "humanize.md"), key=lambda d: citations[d])
    gone_text = (corpus / gone).read_text(encoding="utf-8")
    (corpus / gone).unlink()
    kept = [q for q in questions if gone not in {e.doc_id for e in q.evidence}]
    write_golden_set(golden, kept, read_golden_set(golden).header)
    questions = read_golden_set(golden).questions
    for name in ("garden/compost.md", "workshop/soldering.md"):
        (corpus / name).parent.mkdir(exist_ok=True)
        (corpus / name).write_text(PAGES[name], encoding="utf-8")
    appended = corpus / "humanize.md"
    appended.write_text(appended.read_text(encoding="utf-8") + NEW_SECTION, encoding="utf-8")
    with pytest.raises(UnknownSourceError, match="--as NAME"):
        ingest(source=str(corpus))
    moved = ingest(source=str(corpus), as_source="readmes")
    assert (moved.docs_deleted, moved.docs_new, moved.docs_changed, moved.docs_refreshed) == (1, 2, 1, 8)
    second = promote(tmp_path, golden, "second")

    # then it is promoted: abstention (too few unanswerable questions, and no answerer that can decline) is
    # dropped with a note instead of blocking every second promotion
    assert second["decision"] == "promote", second["reasons"]
    # and the decision says what changed before any metric, and where both versions came from
    assert second["source_changes"] == {"readmes": {"added": 2, "changed": 1, "deleted": 1, "documents": 11}}
    page = Path(second["report_html"]).read_text(encoding="utf-8")
    assert "What changed" in page and "2 documents added, 1 changed, 1 deleted (11 held)" in page
    assert page.index("What changed") < page.index("<h2>Metrics</h2>")
    assert moved.run_id in page and f"moved from {first_location} to {corpus}" in page
    assert second["lineage"]["production"]["lineage"]["sources"][0]["location"] == str(first_location)
    record = log_records(Settings(), "promotions", "packages")[-1]
    assert json.loads(record["details"])["candidate_lineage"]["run_id"] == moved.run_id
    # and the served version no longer returns the deleted page, even asked in its own words
    with TestClient(create_app(Settings())) as client:
        served = client.post("/query", json={"question": gone_text[:300], "k": 10})
        assert served.status_code == 200, served.text
        assert served.json()["version"] == second["candidate_version"]
        assert gone not in {hit["doc_id"] for hit in served.json()["chunks"]}
    assert second["production_version"] == first["candidate_version"]
    assert any(n.startswith("abstention not judged") for n in second["notes"]), second["notes"]
    assert second["verdict"] in ("equivalent", "not worse", "better")
    # both versions were swept over every mode of the policy (production too, not only in the mode it serves)
    swept = set(second["mode_sweep"])
    assert swept == set(second["production_mode_sweep"]) and len(swept) == 4

    # when a cited sentence is edited in the source (one of its words changes), the golden set no longer matches it
    cited = next(q for q in questions if q.answerable and len(q.evidence) == 1)
    passage = cited.evidence[0].passage
    word = max(re.findall(r"[A-Za-z]{4,}", passage), key=len)
    page = corpus / cited.evidence[0].doc_id
    wrapped = re.compile(r"\s+".join(map(re.escape, passage.split())))  # the source wraps lines inside the passage
    text = page.read_text(encoding="utf-8")
    edited = wrapped.sub(lambda m: m.group(0).replace(word, word.upper() + "S", 1), text, count=1)
    assert edited != text
    page.write_text(edited, encoding="utf-8")
    assert ingest(source=str(corpus)).table_version is not None
    third = promote(tmp_path, golden, "third")

    # then the stale passage is its own finding, and the question is left out instead of counted as a regression
    assert cited.id in third["stale_questions"], third.get("stale_questions")
    assert any(n.startswith("stale golden set: 1 of") for n in third["notes"]), third["notes"]
    assert "Stale golden passages (1)" in Path(third["report_html"]).read_text(encoding="utf-8")
    assert not any("fell by" in r or "interval of the change" in r for r in third["reasons"]), third["reasons"]
