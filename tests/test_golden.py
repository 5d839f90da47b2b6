"""Golden sets for your own corpus, end to end: generate (fake OpenAI-compatible server), review, gate; coverage
errors on a foreign set; BEIR judgements as a gate source. Real LanceDB, real embedding model, real Prefect."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evaluations.golden import GoldenCoverageError, normalize_ws, read_golden_set
from evaluations.golden_checks import content_words
from flows.cli import app
from flows.evaluate import evaluate
from flows.ingest import ingest
from tasks.embed import embedding
from tasks.serve.retrieval import search
from tasks.settings import Settings
from tasks.store.backends import open_store
from tests.fake_llm import FakeLLM
from tests.own_corpus import PAGES, write_own_corpus

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()
BUNDLED = Path(__file__).resolve().parents[1] / "datasets" / "golden" / "python-docs.jsonl"


@pytest.fixture
def workshop(store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The workshop handbook (not the sample) ingested into table 'workshop'; returns the corpus folder."""
    monkeypatch.setenv("RAGOPS_TABLE", "workshop")
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")
    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("RAGOPS_CHUNK_TOKENS", "80")  # a small corpus, cut small: about 25 chunks to write from
    monkeypatch.setenv("RAGOPS_CHUNK_OVERLAP", "0")
    offline(monkeypatch)
    corpus = write_own_corpus(tmp_path / "handbook")
    summary = ingest(source=str(corpus))
    assert summary.table_version is not None
    return corpus


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAGOPS_LLM_BASE_URL", "RAGOPS_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)


def use_llm(monkeypatch: pytest.MonkeyPatch, llm: FakeLLM) -> None:
    monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
    monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake-writer")


def generate(out: Path, *args: str) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    summary_path = out.with_suffix(".summary.json")
    result = runner.invoke(app, ["golden", "generate", "--out", str(out), "--json", str(summary_path), *args])
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return result.exit_code, result.output, summary


def test_generate_review_and_gate_on_your_own_corpus(
    workshop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "workshop.jsonl"
    with FakeLLM() as llm:
        use_llm(monkeypatch, llm)
        code, output, summary = generate(out, "--n", "10", "--seed", "3")
        calls = llm.count(kind="generate") + llm.count(kind="support")
    offline(monkeypatch)  # the gate below answers offline
    assert code == 0, output
    golden = read_golden_set(out)
    questions = golden.questions
    assert summary["kept"] == len(questions) == 10, summary
    assert summary["llm_calls"] == calls  # every call counted, none hidden
    assert set(summary["kinds"]) == {"factoid", "multi_sentence", "paraphrase", "unanswerable", "multi_document"}
    assert golden.header["sha256"] == golden.sha256 and not golden.edited
    assert golden.header["corpus"]["table"] == "workshop"
    assert golden.drafts == [q.id for q in questions]  # nothing unreviewed is presented as reviewed

    # every citation occurs verbatim in its document, read independently from the source files
    for q in questions:
        assert q.provenance and q.provenance["model"] == "fake-writer" and q.provenance["chunk_ids"]
        for ev in q.evidence:
            assert normalize_ws(ev.passage) in normalize_ws(PAGES[ev.doc_id]), (q.id, ev.passage)
    by_kind = {kind: [q for q in questions if q.kind == kind] for kind in summary["kinds"]}
    for q in by_kind["paraphrase"]:
        shared = content_words(q.question) & content_words(" ".join(ev.passage for ev in q.evidence))
        assert not shared, (q.question, shared)
    settings = Settings()
    table = open_store(settings, "workshop").at()
    spec = embedding.embed_spec(settings)
    for q in by_kind["unanswerable"]:
        best = search(table, q.question, spec, "vector", k=1, similarity=True)[0].similarity
        assert best is not None and best < settings.monitor_low_similarity, (q.question, best)
    for q in by_kind["multi_document"]:
        assert len({ev.doc_id for ev in q.evidence}) == 2
    # stratified: no document holds more than its share of the answerable questions
    per_doc = Counter(ev.doc_id for q in questions for ev in {e.doc_id: e for e in q.evidence}.values())
    assert max(per_doc.values()) <= math.ceil(sum(per_doc.values()) / len(PAGES)) + 1, per_doc
    assert len(per_doc) == len(PAGES)

    # the gate refuses drafts, and says how to proceed
    refused = runner.invoke(app, ["evaluate", "--golden-set", str(out)])
    assert refused.exit_code == 2
    assert "10 unreviewed draft question(s)" in flat(refused.output) and "ragops golden review" in flat(refused.output)

    # review through the terminal: accept, edit, reject, then quit
    first, second, third = questions[0], questions[1], questions[2]
    reviewed = runner.invoke(
        app, ["golden", "review", str(out)], input="a\ne\nHow worn may a chain get before it is replaced?\n\n\nr\nq\n"
    )
    assert reviewed.exit_code == 0, reviewed.output
    assert "1 accepted, 1 edited, 1 rejected, 7 left as drafts" in flat(reviewed.output)
    after = read_golden_set(out)
    ids = [q.id for q in after.questions]
    assert third.id not in ids and len(ids) == 9 and after.version == 2
    assert after.questions[0].status == "reviewed" and after.questions[0].question == first.question
    assert after.questions[1].question == "How worn may a chain get before it is replaced?"
    assert after.questions[1].reference_answer == second.reference_answer
    assert after.questions[1].provenance and after.questions[1].provenance["reviewed"] == "edited"
    assert len(after.drafts) == 7 and not after.edited

    # accept the rest; the gate now judges by the set, and the decision records its hash
    runner.invoke(app, ["golden", "review", str(out)], input="a\n" * 7)
    final = read_golden_set(out)
    assert not final.drafts
    checked = runner.invoke(app, ["golden", "check", str(out), str(workshop)])
    assert checked.exit_code == 0 and "; 0 problem(s)" in flat(checked.output), checked.output
    result_path = tmp_path / "promote.json"
    promoted = runner.invoke(app, ["promote", "--golden-set", str(out), "--json", str(result_path)])
    assert promoted.exit_code == 0, promoted.output
    result = json.loads(result_path.read_text())
    assert result["golden_set_hash"] == final.sha256 and result["golden"]["cited_found"] == len(final.cited_docs)
    assert result["questions"] == 9
    records = open_store(settings, "workshop").log_records(settings.promotions_table)
    assert records[-1]["golden_hash"] == final.sha256 and records[-1]["action"] == "promote"


def test_generation_drops_what_fails_its_checks_and_counts_why(
    workshop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "faulty.jsonl"
    faults = {"factoid": "fabricate", "paraphrase": "overlap", "unanswerable": "answerable"}
    with FakeLLM(golden_faults=faults) as llm:
        use_llm(monkeypatch, llm)
        code, output, summary = generate(out, "--n", "10")
    assert code == 0, output
    dropped = summary["dropped"]
    assert dropped["citation not in its document"] >= 1
    assert dropped["paraphrase shares words with its evidence"] >= 1
    assert dropped["unanswerable question answered by the corpus"] >= 1
    kept = read_golden_set(out).questions
    assert {q.kind for q in kept} <= {"multi_sentence", "multi_document"}  # every faulty kind was dropped
    assert summary["kept"] == len(kept) >= 1
    assert summary["attempts"] == summary["kept"] + sum(dropped.values())
    assert "citation not in its document" in flat(output) and "e.g. paraphrase shares words" in flat(output)

    # a refused overwrite keeps the file as it was
    before = out.read_bytes()
    code, output, _ = generate(out, "--n", "3")
    assert code == 2 and "exists" in flat(output) and out.read_bytes() == before

    # a fabricated passage written into the file by hand is caught by the validator
    lines = out.read_text().splitlines()
    item = json.loads(lines[1])
    item["evidence"][0]["passage"] = "The chain must be replaced every single week without exception."
    out.write_text("\n".join([lines[0], json.dumps(item), *lines[2:]]) + "\n")
    checked = runner.invoke(app, ["golden", "check", str(out), str(workshop)])
    assert checked.exit_code == 1 and "passage not found" in flat(checked.output)
    assert "edited since its header was written" in flat(checked.output)


def test_a_foreign_golden_set_stops_before_scoring_with_counts_and_missing_documents(
    workshop: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["evaluate", "--golden-set", str(BUNDLED)])
    assert result.exit_code == 2
    message = flat(result.output)
    assert "cites 52 documents; 0 are in table 'workshop' version" in message
    assert "first missing: faq/design.md" in message and "ragops golden generate" in message
    assert not (tmp_path / "reports").exists()  # nothing was scored, no report written
    with pytest.raises(GoldenCoverageError, match="cites 52 documents; 0 are in table"):
        evaluate(golden_set=str(BUNDLED))  # the flow checks too (deployments do not go through the CLI)


def test_without_an_llm_generate_says_what_it_cannot_do_and_what_works_offline(workshop: Path, tmp_path: Path) -> None:
    out = tmp_path / "offline.jsonl"
    code, output, _ = generate(out, "--n", "5")
    message = flat(output)
    assert code == 2 and not out.exists()
    assert "needs an LLM endpoint" in message and "--from-queries" in message


BEIR_RECORDS = {
    "d01": ("Tide tables", "High tide at the harbour mouth comes fifty minutes later each day, following the moon."),
    "d02": ("Reefing a sail", "Reef the mainsail before the wind rises above fifteen knots, starting from the luff."),
    "d03": ("Bowline knot", "The bowline makes a fixed loop at the end of a rope that does not slip or jam."),
    "d04": ("Anchoring", "Let out anchor chain of five times the water depth and reverse gently to set the anchor."),
    "d05": ("Fog signals", "In fog a motor vessel under way sounds one prolonged blast at least every two minutes."),
    "d06": ("Lifejackets", "Inflate-on-contact lifejackets need their gas cylinder and trigger checked every year."),
    "d07": ("Navigation lights", "A sailing vessel under way shows red to port, green to starboard and white astern."),
    "d08": ("Hull cleaning", "Scrub barnacles off the hull in spring and repaint the antifouling before launching."),
    "d09": ("Radio calls", "Mayday is the distress call for grave and imminent danger to a vessel or person."),
    "d10": ("Engine checks", "Check the outboard's cooling water tell-tale stream as soon as the engine starts."),
    "d11": ("Seasickness", "Looking at the horizon and staying on deck in fresh air helps against seasickness."),
    "d12": ("Mooring lines", "Spring lines stop a moored boat from surging forward and back along the pontoon."),
}
BEIR_QUERIES = {
    "q1": ("why is high water later every day", "d01"),
    "q2": ("when should I make the sail smaller", "d02"),
    "q3": ("knot for a loop that will not slip", "d03"),
    "q4": ("how much chain to put out when anchoring", "d04"),
    "q5": ("sound signal of a motor boat in fog", "d05"),
    "q6": ("servicing an automatic life vest", "d06"),
    "q7": ("colours of the lights on a sailboat at night", "d07"),
    "q8": ("removing barnacles and antifouling paint", "d08"),
    "q9": ("what does mayday mean on the radio", "d09"),
    "q10": ("outboard motor cooling water check", "d10"),
    "q11": ("how to avoid feeling seasick", "d11"),
}


def test_beir_judgements_gate_at_document_level(
    store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGOPS_TABLE", "sailing")
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")
    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(tmp_path / "reports"))
    corpus = tmp_path / "sailing" / "corpus.jsonl"
    corpus.parent.mkdir()
    records = [{"_id": i, "title": t, "text": x} for i, (t, x) in BEIR_RECORDS.items()]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    judgements = tmp_path / "judgements"
    (judgements / "qrels").mkdir(parents=True)
    (judgements / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": text}) + "\n" for q, (text, _) in BEIR_QUERIES.items())
    )
    (judgements / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{doc}\t1\n" for q, (_, doc) in BEIR_QUERIES.items())
    )
    monkeypatch.setenv("RAGOPS_GOLDEN_SET", str(judgements))
    ingest(source=str(corpus))
    first = runner.invoke(app, ["promote", "--json", str(tmp_path / "first.json")])
    assert first.exit_code == 0, first.output
    summary = json.loads((tmp_path / "first.json").read_text())
    assert summary["primary_metric"] == "doc_ndcg@10" and summary["golden"]["layout"] == "beir"
    assert {row["metric"].split("_")[0] for row in summary["metrics"]} == {"doc"}  # IR metrics at document level
    assert any("BEIR judgements" in note for note in summary["notes"])
    assert summary["questions"] == len(BEIR_QUERIES)

    # a candidate that lost four judged documents regresses, and the paired bootstrap blocks it
    kept = [r for r in records if r["_id"] not in ("d01", "d02", "d03", "d04")]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in kept))
    monkeypatch.setenv("RAGOPS_GOLDEN_MIN_DOC_COVERAGE", "0.5")
    ingest(source=str(corpus))
    second = runner.invoke(app, ["promote", "--json", str(tmp_path / "second.json")])
    assert second.exit_code == 1, second.output
    blocked = json.loads((tmp_path / "second.json").read_text())
    assert blocked["decision"] == "block" and blocked["golden_set_hash"] == summary["golden_set_hash"]
    row = next(r for r in blocked["metrics"] if r["metric"] == "doc_ndcg@10")
    assert row["delta"] < 0 and row["ci_high"] is not None and row["ci_low"] < -0.03
    assert any("doc_ndcg@10" in reason for reason in blocked["reasons"])


def test_offline_drafts_from_served_queries_cite_the_chunk_that_served_them(
    workshop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from tasks.serve import query_log

    settings = Settings()
    store = open_store(settings, "workshop")
    table = store.at()
    spec = embedding.embed_spec(settings)
    asked = [
        "how hot should the soldering iron be for lead-free solder",
        "how hot should the soldering iron be for lead-free solder?",  # asked twice: one draft
        "when do I replace a worn bicycle chain",
        "how much honey does a colony need for winter",
    ]
    entries = []
    for i, question in enumerate(asked):
        hits = search(table, question, spec, "hybrid", k=3)
        entries.append(
            query_log.LoggedQuery(
                query_id=f"s{i}",
                at=datetime.now(UTC),
                table="workshop",
                version=table.version,
                mode="hybrid",
                k=3,
                question=question,
                retrieved_ids=[h.chunk_id for h in hits],
                scores=[h.score for h in hits],
                top1_similarity=0.6,
                best_similarity=0.6,
                latency_ms=9.0,
                answer=None,
                status=200,
                vector=embedding.embed_texts([question], spec, role="query")[0],
            )
        )
    gone = entries[-1]
    entries.append(query_log.LoggedQuery(**{**gone.__dict__, "query_id": "s9", "retrieved_ids": ["deleted#0"]}))
    compost = "what may go on the compost heap"  # served with an answer its evidence does not support
    hits = search(table, compost, spec, "hybrid", k=3)
    entries.append(
        query_log.LoggedQuery(
            **{**gone.__dict__, "query_id": "s8", "question": compost, "retrieved_ids": [h.chunk_id for h in hits],
               "answer": "Penguins migrate across Antarctic glaciers.",
               "vector": embedding.embed_texts([compost], spec, role="passage")[0]}
        )
    )  # fmt: skip
    query_log.append(store, settings.query_log_table, entries, len(entries[0].vector))

    out = tmp_path / "served.jsonl"
    code, output, summary = generate(out, "--from-queries", "--hours", "1")
    assert code == 0, output
    drafts = read_golden_set(out).questions
    assert summary["llm_calls"] == 0 and summary["kept"] == len(drafts) == 3
    assert summary["dropped"] == {
        "no retrieved chunk left in this version": 1,
        "near-duplicate question": 1,
        "answer not supported (lexical floor)": 1,
    }
    assert "e.g. answer not supported (lexical floor): served-s8: 0.00 of its content words" in flat(output)
    for draft in drafts:
        assert draft.status == "draft" and draft.provenance and "served-query" in draft.provenance["method"]
        (ev,) = draft.evidence
        assert normalize_ws(ev.passage) in normalize_ws(PAGES[ev.doc_id])
    by_question = {d.question: d for d in drafts}
    assert by_question["when do I replace a worn bicycle chain"].evidence[0].doc_id == "bikes/chain-care.md"
    assert summary["documents_covered"] == 3


def test_generation_uses_the_evaluations_key_and_writes_nothing_when_every_call_fails(
    workshop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "keyed.jsonl"
    monkeypatch.setenv("RAGOPS_LLM_MAX_RETRIES", "1")
    with FakeLLM(api_key="sk-workshop-secret") as llm:
        use_llm(monkeypatch, llm)
        monkeypatch.setenv("RAGOPS_LLM_API_KEY", "sk-workshop-secret")
        code, output, summary = generate(out, "--n", "4")
        assert code == 0 and summary["kept"] == 4, output
        assert set(llm.authorization) == {"Bearer sk-workshop-secret"}
    with FakeLLM(fail_with=500) as broken:
        use_llm(monkeypatch, broken)
        code, output, _ = generate(tmp_path / "none.jsonl", "--n", "4")
        calls = broken.calls(kind="generate")
    assert code == 2 and not (tmp_path / "none.jsonl").exists()
    assert "no item passed the checks" in flat(output) and "LLM call failed" in flat(output)
    assert calls and all(len(tries) == 2 for tries in calls.values())  # bounded: one try and one retry per call
    assert "sk-workshop-secret" not in output
