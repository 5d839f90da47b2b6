"""Events, run names and run outcomes as a person and an automation read them (pure functions, no server)."""

from __future__ import annotations

from typing import Any

import pytest

from evaluations.outcome import decision_markdown, final_state
from tasks import events
from tasks.run_names import run_name
from tasks.settings import Settings


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("s3://AKIAEXAMPLE:s3cr3t@bucket/ragops/lancedb?region=eu", "s3://bucket/ragops/lancedb"),
        ("gs://bucket/db", "gs://bucket/db"),
        ("az://user:key@container:8080/db#frag", "az://container:8080/db"),
        (".ragops/lancedb", ".ragops/lancedb"),
        ("/data/lancedb", "/data/lancedb"),
    ],
)
def test_the_store_label_never_carries_credentials(uri: str, shown: str) -> None:
    assert events.public_uri(uri) == shown


def test_the_resource_names_the_table_and_the_store() -> None:
    settings = Settings(table="pg", lancedb_uri="s3://k:s@b/db")
    assert events.table_resource(settings, **{"ragops.verdict": "block"}) == {
        "prefect.resource.id": "ragops.table.pg",
        "prefect.resource.name": "pg",
        "ragops.table": "pg",
        "ragops.store": "s3://b/db",
        "ragops.verdict": "block",
    }


def decision(**changes: Any) -> dict[str, Any]:
    return {
        "table": "pg",
        "candidate_version": 12,
        "production_version": 11,
        "decision": "block",
        "action": "block",
        "verdict": "inconclusive",
        "reasons": ["chunk_ndcg@10 fell by 0.0412 (more than 0.02 absolute)", "second reason"],
        "primary_metric": "chunk_ndcg@10",
        "metrics": [
            {"metric": "doc_ndcg@10", "candidate": 0.9, "production": 0.9, "ci_low": 0.0, "ci_high": 0.0},
            {"metric": "chunk_ndcg@10", "candidate": 0.61, "production": 0.65, "ci_low": -0.07, "ci_high": 0.01},
        ],
        "run_id": "r-1",
        **changes,
    }


def test_the_gate_event_carries_the_primary_metric_its_interval_and_the_first_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(events, "emit", lambda name, settings, payload, **labels: sent.append(
        {"name": name, "payload": payload, "labels": labels}) or True)  # fmt: skip
    events.gate_decided(Settings(table="pg"), decision(), "block", "http://h/pg-v12.html")
    [event] = sent
    assert event["name"] == "ragops.gate.decided" and event["labels"] == {"ragops.verdict": "block"}
    assert event["payload"] == {
        "version": 12,
        "production_version": 11,
        "verdict": "block",
        "primary_metric": "chunk_ndcg@10",
        "value": 0.61,
        "production_value": 0.65,
        "ci_low": -0.07,
        "ci_high": 0.01,
        "interval": "inconclusive",
        "reason": "chunk_ndcg@10 fell by 0.0412 (more than 0.02 absolute)",
        "report_url": "http://h/pg-v12.html",
        "run_id": "r-1",
    }


def test_a_version_event_says_who_judges_it(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(events, "emit", lambda name, settings, payload, **labels: sent.append(
        {"name": name, "payload": payload, "labels": labels}) or True)  # fmt: skip
    events.version_created(Settings(table="pg"), 4, "run-9", "trigger", tag="candidate-run-9")
    payload = {"version": 4, "run_id": "run-9", "judged_by": "trigger", "tag": "candidate-run-9"}
    assert sent == [{"name": "ragops.version.created", "labels": {"ragops.judged-by": "trigger"}, "payload": payload}]


def test_an_event_that_cannot_be_sent_does_not_fail_what_it_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.events

    def broken(**_: Any) -> None:
        raise ConnectionError("the API is down")

    monkeypatch.setattr(prefect.events, "emit_event", broken)
    assert events.emit("ragops.version.created", Settings(table="pg"), {"version": 1}) is False


@pytest.mark.parametrize(
    ("kind", "table", "version", "name"),
    [
        ("ingest", "pg", None, "ingest-pg"),
        ("evaluate", "pg", 12, "evaluate-pg-v12"),
        ("evaluate", "pg", "12", "evaluate-pg-v12"),
        ("evaluate", "chunks", "production", "evaluate-chunks-production"),
        ("promote", "pg", "", "promote-pg"),
    ],
)
def test_runs_are_named_for_what_they_do(kind: str, table: str, version: Any, name: str) -> None:
    assert run_name(kind, table, version) == name


def test_a_blocked_candidate_ends_in_a_state_named_blocked_with_the_verdict_first() -> None:
    state = final_state(decision())
    assert state.is_completed() and state.name == "Blocked"
    assert state.message == (
        "pg v12: BLOCK against production v11: chunk_ndcg@10 fell by 0.0412 (more than 0.02 absolute)"
    )
    promoted = final_state(decision(decision="promote", action="promote", reasons=[]))
    assert (
        promoted.name == "Promoted" and promoted.message == "pg v12: PROMOTE against production v11: every check passed"
    )
    first = final_state(decision(decision="promote", action="promote", reasons=[], production_version=None))
    assert first.message == "pg v12: PROMOTE against no production yet: every check passed"
    would = final_state(decision(decision="promote", action="evaluated", reasons=[]))
    assert would.name == "Would promote" and "(gate only: nothing moved)" in str(would.message)


def test_nothing_changed_superseded_and_reviewed_runs_say_so() -> None:
    unchanged = final_state({"table": "pg", "candidate_version": 11, "decision": "unchanged", "action": "unchanged"})
    assert (unchanged.name, unchanged.message) == ("Nothing changed", "pg: nothing changed, version 11 is production")
    superseded = final_state({"table": "pg", "candidate_version": 3, "decision": "superseded",
                              "action": "superseded", "superseded_by": 5})  # fmt: skip
    assert superseded.name == "Superseded" and superseded.message.startswith("pg v3: superseded by v5")
    reviewed = decision(decision="promote", action="promote", reasons=[],
                        review={"kind": "approved borderline", "reviewer": "ana", "note": "fine"})  # fmt: skip
    assert final_state(reviewed).message == "pg v12: PROMOTE against production v11: approved borderline by ana"


def test_the_decision_artifact_escapes_mode_names_and_links_the_report() -> None:
    text = decision_markdown(decision(reasons=["mode hybrid@0.7 lost a capability"], report_url="http://h/r.html"))
    assert "hybrid\\@0.7" in text and "hybrid@0.7" not in text.replace("hybrid\\@0.7", "")
    assert "[Open the evaluation report](http://h/r.html)" in text
    no_url = decision_markdown(decision(report_html=".ragops/reports/pg-v12.html"))
    assert "`.ragops/reports/pg-v12.html`" in no_url and "](" not in no_url
