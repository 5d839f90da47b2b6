"""LLM endpoint failure specification: every way an OpenAI-compatible endpoint misbehaves leaves the LLM metrics
missing with the reason, after a bounded number of attempts with backoff, and a gate that requires one blocks."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaluations.golden import load_golden_set
from evaluations.ragas_metrics import LLM_METRICS, ragas_llm, score_answers
from evaluations.scoring import QuestionResult
from flows.evaluate import evaluate
from flows.ingest import ingest
from tasks.embed.embedding import embed_spec
from tasks.settings import Settings

from .conftest import REPO, SAMPLE
from .fake_llm import FAILURES, FakeLLM

GOLDEN_IDS = ["q012", "q016", "q054", "q058"]  # three answerable, one unanswerable
DISTRACTORS = ["tutorial/appetite.txt"]
TIMEOUT_S = 2.0  # the per-metric budget (2 × timeout) then covers a call with two 1 s Retry-After waits
MAX_RETRIES = 2
RETRY_AFTER_S = 1
RETRYABLE = {"timeout", "rate_limit", "server_error"}
REASON = {  # what the reason for a missing metric names
    "timeout": "Timeout",
    "rate_limit": "RateLimitError",
    "server_error": "InternalServerError",
    "malformed_json": "JSONDecodeError",
    "non_json": "OutputParser",
}
MIN_GAP_S = {"timeout": TIMEOUT_S, "rate_limit": 0.9 * RETRY_AFTER_S, "server_error": 0.3}  # OpenAI: 0.5 s × 2^n, -25%
CASES = [("answer", f) for f in FAILURES if f != "non_json"] + [("judge", f) for f in FAILURES]


def golden_corpus(root: Path, ids: list[str], distractors: list[str]) -> tuple[Path, Path]:
    """Write a golden subset and a corpus of its evidence documents plus distractors; returns (golden, corpus)."""
    lines = [
        line
        for line in (REPO / "datasets/golden/python-docs.jsonl").read_text().splitlines()
        if json.loads(line).get("id") in ids
    ]
    golden = root / "golden.jsonl"
    golden.write_text("\n".join(lines) + "\n")
    docs = {ev["doc_id"] for line in lines for ev in json.loads(line)["evidence"]} | set(distractors)
    for rel in docs:
        (root / "corpus" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / rel, root / "corpus" / rel)
    return golden, root / "corpus"


def strict_policy(path: Path) -> Path:
    """The default policy, one retrieval mode, with faithfulness required."""
    text = (REPO / "evaluations/policies/default.yaml").read_text()
    text = text.replace("required: [", "required: [faithfulness, ").replace(
        "modes: [vector, fulltext, hybrid, hybrid@0.7]", "modes: [vector]"
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def ingested(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three answerable golden questions, one unanswerable, their documents and a distractor, ingested once."""
    root = tmp_path_factory.mktemp("llm-faults")
    _, corpus = golden_corpus(root, GOLDEN_IDS, DISTRACTORS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGOPS_LANCEDB_URI", str(root / "db"))
        mp.setenv("RAGOPS_DASK_WORKERS", "1")
        ingest(str(corpus))
    yield root


@pytest.fixture
def env(ingested: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private copy of the table, a policy that requires faithfulness, a short LLM timeout and two retries."""
    shutil.copytree(ingested / "db", tmp_path / "db")
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(tmp_path / "db"))
    monkeypatch.setenv("RAGOPS_GOLDEN_SET", str(ingested / "golden.jsonl"))
    monkeypatch.setenv("RAGOPS_POLICY", str(strict_policy(tmp_path / "strict.yaml")))
    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake-model")
    monkeypatch.setenv("RAGOPS_LLM_TIMEOUT_S", str(TIMEOUT_S))
    monkeypatch.setenv("RAGOPS_LLM_MAX_RETRIES", str(MAX_RETRIES))
    for name in ("RAGOPS_LLM_API_KEY", "RAGOPS_LLM_API_KEY_BLOCK", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def metric(summary: dict, name: str) -> float | None:
    return next(row["candidate"] for row in summary["metrics"] if row["metric"] == name)


@pytest.mark.slow
@pytest.mark.parametrize(("scope", "failure"), CASES, ids=[f"{scope}-{failure}" for scope, failure in CASES])
def test_a_failing_endpoint_is_tried_a_bounded_number_of_times_and_leaves_llm_metrics_missing(
    env: None, monkeypatch: pytest.MonkeyPatch, scope: str, failure: str
) -> None:
    # given an endpoint that fails the answer prompts, or only the ragas judge prompts, in one way
    with FakeLLM(failure=failure, scope=scope, retry_after_s=RETRY_AFTER_S, answer_with_question=True) as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)

        # when a candidate is evaluated
        summary = evaluate()

    # then each call is tried at most max_retries + 1 times, by the client alone, with backoff in between
    calls = llm.calls(kind=scope)
    assert calls, llm.seen
    for attempts in calls.values():
        assert [a.retry_count for a in attempts] == list(range(len(attempts))), attempts  # no outer re-sends
        assert len(attempts) <= MAX_RETRIES + 1
        gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
        assert all(gap >= MIN_GAP_S.get(failure, 0.0) for gap in gaps), (failure, gaps)
    if failure not in RETRYABLE:  # a 200 that cannot be parsed is not asked again
        assert {len(attempts) for attempts in calls.values()} == {1}
    elif scope == "answer":  # every answer used all its attempts (a judgement may hit the per-metric budget first)
        assert {len(attempts) for attempts in calls.values()} == {MAX_RETRIES + 1}
    else:
        assert max(len(attempts) for attempts in calls.values()) > 1

    # and the LLM metrics are missing with the reason, never a number
    for name in LLM_METRICS:
        assert metric(summary, name) is None
        assert REASON[failure] in summary["missing"][name], summary["missing"][name]
        assert all(q["scores"].get(name) is None for q in summary["per_question"])
    if scope == "answer":
        assert all(q["answer"] is None and REASON[failure] in q["errors"]["answer"] for q in summary["per_question"])
        assert llm.count(kind="judge") == 0  # nothing to judge without answers
    else:
        assert all(q["answer"] is not None for q in summary["per_question"])
        assert metric(summary, "semantic_similarity") is not None  # offline metrics still computed

    # and the gate that requires faithfulness blocks
    assert summary["decision"] == "block"
    assert "faithfulness is required but was not computed" in summary["reasons"]


def test_a_rate_limited_judgement_is_retried_by_the_client_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # given an endpoint that rate-limits every ragas judgement, and a per-metric budget that allows every retry
    monkeypatch.delenv("RAGOPS_LLM_API_KEY", raising=False)
    question = next(q for q in load_golden_set(REPO / "datasets/golden/python-docs.jsonl") if q.id == "q012")
    result = QuestionResult(
        question.id,
        question.kind,
        question.question,
        [{"chunk_id": "c0", "text": ev.passage} for ev in question.evidence],
        "No, tomllib only reads TOML; writing needs a third-party package.",
        {},
    )
    with FakeLLM(failure="rate_limit", scope="judge", retry_after_s=RETRY_AFTER_S) as llm:
        settings = Settings(
            llm_base_url=llm.base_url, llm_model="fake-model", llm_max_retries=MAX_RETRIES, llm_timeout_s=5.0
        )

        # when the answer is scored
        missing = score_answers(
            [result], {}, {question.id: question}, embed_spec(settings), ragas_llm(settings), 4, timeout_s=60.0
        )

    # then each judgement is retried by the client, honouring Retry-After, up to max_retries + 1 attempts and never
    # again by ragas (a resend would restart the retry count). A judgement still in flight when another one of its
    # metric gives up is cancelled with fewer attempts: on a busy machine that happens (CI, 2026-11-30)
    calls = llm.calls(kind="judge")
    assert calls
    for attempts in calls.values():
        assert [a.retry_count for a in attempts] == list(range(len(attempts))), attempts
        assert len(attempts) <= MAX_RETRIES + 1, attempts
        gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
        assert all(gap >= 0.9 * RETRY_AFTER_S for gap in gaps), gaps
    assert max(len(attempts) for attempts in calls.values()) == MAX_RETRIES + 1
    assert {name: missing[name].split(":")[0] for name in LLM_METRICS} == dict.fromkeys(LLM_METRICS, "RateLimitError")
    assert all(result.scores[name] is None for name in LLM_METRICS)
