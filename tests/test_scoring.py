"""Per-question scoring, abstention, coverage, the per-question diff and the decision history (plain functions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluations.golden import GoldenQuestion
from evaluations.report import decision_history, production_story, question_diff, render_html
from evaluations.scoring import (
    ABSTENTION,
    QuestionResult,
    ReferenceChunk,
    VersionScores,
    abstention_scores,
    coverage_of,
    covers,
    declines,
    retrieval_scores,
)
from tasks.serve.retrieval import SearchHit

FIRST = "The first passage says that the cache is flushed at exit."
SECOND = "The second passage says that the lock is released afterwards."


def hit(doc_id: str, text: str, rank: int, chunk_id: str | None = None) -> SearchHit:
    return SearchHit(chunk_id or f"{doc_id}#{rank}", doc_id, "", "", text, 1.0 / rank, rank)


def two_passage_question() -> GoldenQuestion:
    return GoldenQuestion(
        id="q1",
        question="What happens at exit?",
        kind="multi_sentence",
        reference_answer="The cache is flushed and the lock released.",
        evidence=[{"doc_id": "a", "passage": FIRST}, {"doc_id": "a", "passage": SECOND}],
    )


def test_a_chunk_holding_two_passages_credits_both() -> None:
    question = two_passage_question()
    both = hit("a", f"Intro. {FIRST} {SECOND} Outro.", 1)
    references = [ReferenceChunk(both.chunk_id, both.text, frozenset({"p0", "p1"}))]

    scores = retrieval_scores(question, [both, hit("b", "unrelated text", 2)], 10, references)

    assert scores["chunk_recall@10"] == 1.0  # today's code found only the first passage: 0.5
    assert scores["chunk_ndcg@10"] == pytest.approx(1.0)
    assert scores["chunk_mrr@10"] == 1.0 and scores["chunk_hit_rate@10"] == 1.0


def test_passages_in_separate_chunks_are_credited_at_their_own_ranks() -> None:
    question = two_passage_question()
    first, second = hit("a", FIRST, 1), hit("a", SECOND, 3)
    references = [
        ReferenceChunk(first.chunk_id, FIRST, frozenset({"p0"})),
        ReferenceChunk("a#9", SECOND, frozenset({"p1"})),
    ]

    scores = retrieval_scores(question, [first, hit("b", "noise", 2), second], 10, references)

    assert scores["chunk_recall@10"] == 1.0
    assert scores["chunk_ndcg@10"] == pytest.approx((2 + 2 / 2) / (2 + 2 / 1.5849625007211563))


def test_document_metrics_top_up_to_k_distinct_documents() -> None:
    question = GoldenQuestion(
        id="q", question="Where?", kind="factoid", reference_answer="c", evidence=[{"doc_id": "c", "passage": FIRST}]
    )
    ranking = [hit("a", "x", i) for i in range(1, 6)] + [hit("b", "y", 6), hit("c", FIRST, 7)]
    asked: list[int] = []

    def fetch(n: int) -> list[SearchHit]:
        asked.append(n)
        return ranking[:n]

    scores = retrieval_scores(question, ranking[:2], 2, [], fetch)

    # 2 distinct documents: a then b; c is third, so not in the top 2 documents even though fetched
    assert scores["doc_hit_rate@2"] == 0.0 and asked == [10]
    scores = retrieval_scores(question, ranking[:3], 3, [], fetch)
    assert scores["doc_mrr@3"] == pytest.approx(1 / 3)

    # twelve chunks of one document before c: the first 5k = 10 chunks hold one document, so it fetches 4× more
    crowded = [hit("a", "x", i) for i in range(1, 13)] + [hit("c", FIRST, 13)]
    asked.clear()
    scores = retrieval_scores(question, crowded[:2], 2, [], lambda n: (asked.append(n), crowded[:n])[1])
    assert asked == [10, 40]
    assert scores["doc_hit_rate@2"] == 1.0 and scores["doc_mrr@2"] == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    ("answer", "declined"),
    [
        ("I don't know.", True),
        ("I do not know the answer to that.", True),
        ("The context does not contain that information.", True),
        ("This is not mentioned in the passages.", True),
        ("There is no information about macOS defaults.", True),
        ("Use str.removeprefix(), added in Python 3.9.", False),
        ("The documents say the lock is released at exit.", False),
    ],
)
def test_an_answer_that_declines_is_recognised(answer: str, declined: bool) -> None:
    assert declines(answer) is declined


def test_declining_is_right_only_for_unanswerable_questions() -> None:
    # unanswerable: abstention 1 when the answer declines; answerable: answer_rate 1 when it does not
    assert abstention_scores("I don't know.", answerable=False) == 1.0
    assert abstention_scores("It is 42.", answerable=False) == 0.0
    assert abstention_scores("It is 42.", answerable=True) == 1.0
    assert abstention_scores("The context does not mention it.", answerable=True) == 0.0
    assert abstention_scores(None, answerable=True) is None


def test_coverage_counts_the_questions_each_metric_applies_to() -> None:
    results = [
        QuestionResult("a", "factoid", "?", [], None, {"rouge_score": 0.5}),
        QuestionResult("b", "factoid", "?", [], None, {"rouge_score": None}),
        QuestionResult("u", "unanswerable", "?", [], None, {ABSTENTION: 1.0}),
    ]
    assert coverage_of(results, ["rouge_score", ABSTENTION]) == {"rouge_score": [1, 2], ABSTENTION: [1, 1]}


def version(number: int, scores: dict[str, float], answers: str) -> VersionScores:
    questions = [
        QuestionResult(
            qid,
            "factoid",
            f"question {qid}?",
            [{"doc_id": f"d-{qid}-{number}", "chunk_id": f"c{number}", "text": f"chunk of v{number}", "score": 1.0}],
            f"{answers} {qid}",
            {"chunk_ndcg@10": value},
            mode="vector",
        )
        for qid, value in scores.items()
    ]
    return VersionScores(number, "vector", "offline", questions, {}, {}, {"vector": {}})


def test_the_per_question_diff_shows_both_versions_side_by_side() -> None:
    production = version(3, {"q1": 1.0, "q2": 0.5, "q3": 0.7}, "old")
    candidate = version(4, {"q1": 0.4, "q2": 0.9, "q3": 0.71}, "new")

    diff = question_diff(candidate, production, "chunk_ndcg@10", tolerance=0.02)

    assert [(c["id"], c["change"]) for c in diff] == [("q1", "regressed"), ("q2", "improved")]  # q3 within tolerance
    assert diff[0]["production"]["answer"] == "old q1" and diff[0]["candidate"]["answer"] == "new q1"
    assert diff[0]["production"]["top"][0]["text"] == "chunk of v3"
    assert diff[0]["candidate"]["top"][0]["doc_id"] == "d-q1-4"


def records() -> list[dict]:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    details = {"verdict": "better", "primary_metric": "chunk_ndcg@10",
               "primary": {"candidate": 0.7, "production": 0.6, "ci_low": 0.02, "ci_high": 0.15}}  # fmt: skip
    base = {"table": "chunks", "mode": "vector", "run_id": "r", "reasons": "[]", "metrics": "{}",
            "policy_hash": "p" * 64, "report": "", "golden_hash": "g" * 64}  # fmt: skip
    return [
        {**base, "action": "promote", "version": 3, "previous_version": None, "trigger": "cli", "at": t0,
         "metrics": json.dumps({"chunk_ndcg@10": 0.6}), "details": None, "golden_hash": None},
        {**base, "action": "promote", "version": 5, "previous_version": 3, "trigger": "cli",
         "at": t0 + timedelta(days=1), "details": json.dumps(details)},
        {**base, "action": "rollback", "version": 3, "previous_version": 5, "trigger": "cli",
         "at": t0 + timedelta(days=2), "details": "{}"},
    ]  # fmt: skip


def test_history_shows_decisions_and_rollbacks_and_where_production_is_now() -> None:
    history = decision_history(records(), "chunk_ndcg@10")

    assert [(r["action"], r["version"]) for r in history] == [("promote", 3), ("promote", 5), ("rollback", 3)]
    assert history[0]["value"] == 0.6 and history[0]["verdict"] == "not recorded"  # a record from an older ragops
    assert (history[1]["verdict"], history[1]["ci_low"], history[1]["golden_hash"]) == ("better", 0.02, "g" * 12)
    assert production_story(records(), 3) == (
        "production is version 3: rolled back from version 5 on 2026-11-03 00:00 UTC (cli)"
    )
    assert production_story([], None) == "no version has been promoted to production yet"


def test_the_html_report_has_the_diff_and_the_history(tmp_path: Path) -> None:
    production = version(3, {"q1": 1.0, "q2": 0.5}, "old")
    candidate = version(4, {"q1": 0.4, "q2": 0.9}, "new")
    summary = {
        "decision": "block", "table": "chunks", "candidate_version": 4, "production_version": 3, "verdict": "worse",
        "policy_hash": "p" * 64, "golden_set_hash": "g" * 64, "run_id": "run", "reasons": ["r"], "notes": [],
        "metrics": [], "missing": {}, "production_now": production_story(records(), 3),
        "question_diff": question_diff(candidate, production, "chunk_ndcg@10", 0.02),
    }  # fmt: skip

    page = render_html(
        summary, candidate, production, [], decision_history(records(), "chunk_ndcg@10"), "chunk_ndcg@10"
    )

    assert "Questions that changed: 1 regressed, 1 improved" in page
    assert page.index("production v3") < page.index("candidate v4")  # side by side, production first
    assert "rolled back from version 5" in page and "<h2>History</h2><table>" in page
    assert page.count("data:image/png;base64,") >= 3  # distributions, modes, history


def test_the_prefect_artifact_shows_each_changed_question_side_by_side() -> None:
    from evaluations.report import summary_markdown

    production = version(3, {"q1": 1.0}, "old")
    candidate = version(4, {"q1": 0.2}, "new | with a pipe")
    summary = {"decision": "block", "table": "chunks", "candidate_version": 4, "production_version": 3,
               "mode": "vector", "answerer": "offline", "report_html": "r.html", "reasons": [], "metrics": [],
               "missing": {}, "question_diff": question_diff(candidate, production, "chunk_ndcg@10", 0.02)}  # fmt: skip

    markdown = summary_markdown(summary)

    assert "**regressed: q1** question q1? (chunk_ndcg@10 1.0000 → 0.2000)" in markdown
    assert "| production v3 (vector) | candidate v4 (vector) |" in markdown
    assert "| answer: old q1 | answer: new \\| with a pipe q1 |" in markdown  # a cell never breaks the table
    assert "| `d-q1-3` chunk of v3 | `d-q1-4` chunk of v4 |" in markdown


def _covers_by_longest_match(chunk_text: str, passage: str) -> bool:
    """`covers` without its shortcuts: the substring test, then the longest common run (the reference)."""
    from difflib import SequenceMatcher

    chunk, wanted = " ".join(chunk_text.split()), " ".join(passage.split())
    if wanted in chunk:
        return True
    match = SequenceMatcher(None, chunk, wanted, autojunk=False).find_longest_match(0, len(chunk), 0, len(wanted))
    return match.size >= max(30, len(wanted) // 2)


@settings(max_examples=400, deadline=None)
@given(
    words=st.lists(
        st.sampled_from(["venv", "module", "the", "pip", "install", "a", "python", "env", "x"]), max_size=60
    ),
    start=st.integers(0, 60),
    length=st.integers(0, 60),
    cut=st.integers(0, 80),
    noise=st.text(alphabet="abc ", max_size=40),
)
def test_covers_agrees_with_the_plain_longest_match(
    words: list[str], start: int, length: int, cut: int, noise: str
) -> None:
    # a chunk, and a passage taken from it (cut at a boundary, or with words changed), or unrelated
    chunk = " ".join(words)
    passage = " ".join(words[start : start + length])
    for candidate in (passage, passage[cut:] + noise, noise + passage[:cut], noise, chunk + noise):
        assert covers(chunk, candidate) == _covers_by_longest_match(chunk, candidate), (chunk, candidate)
