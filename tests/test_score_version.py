"""`score_version` and `reference_chunks` end to end on a tiny real LanceDB table, with the embedding, the search,
the answerer and the answer metrics replaced by scripted stand-ins, so each mode's ranking is known and every
expected value is worked out by hand in the comment beside it (k = 2; L3 = log2(3))."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
import pytest

import evaluations.scoring as scoring
from evaluations.golden import GoldenQuestion
from evaluations.scoring import QuestionResult, ReferenceChunk, VersionScores, reference_chunks, score_version
from tasks.embed.embedding import EmbedSpec
from tasks.schemas import chunk_schema
from tasks.serve.retrieval import AnnQuery, SearchHit
from tasks.settings import Settings
from tasks.store.backends import open_store
from tasks.store.interface import TableVersion

L3 = math.log2(3)
K = 2
SPEC = EmbedSpec(model_path="nowhere", model_name="stub", device="cpu", batch_size=1)
ANN = AnnQuery(nprobes=7)

PA = "The cache is flushed when the interpreter exits."
PB = "Locks are released in the reverse order of acquisition."
PC = "Workers restart after every hundred tasks by default."
TEXTS = {
    "a#0": f"Intro. {PA}",  # holds q1's p0
    "a#1": "A filler paragraph about gardens, roses and the weather.",
    "b#0": f"{PB} Then more.",  # holds q1's p1
    "c#0": PC,  # holds q2's p0
    "d#0": "Another document that nobody cites at all.",
}


def table_of(tmp_path: Path, chunks: dict[str, str]) -> TableVersion:
    """One version of a chunk table with the project's schema (2-dim vectors); doc id = the chunk id before '#'."""
    ids = list(chunks)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    columns = {
        "chunk_id": ids,
        "doc_id": [cid.split("#")[0] for cid in ids],
        "text": [chunks[cid] for cid in ids],
        "vector": [[0.6, 0.8]] * len(ids),
        "n_tokens": [5] * len(ids),
        "position": [int(cid.split("#")[1]) for cid in ids],
        "content_hash": ["h"] * len(ids),
        "doc_hash": ["d"] * len(ids),
        "source": ["src"] * len(ids),
        "title": [None] * len(ids),
        "section": [None] * len(ids),
        "metadata": [None] * len(ids),
        "embedding_model": ["stub"] * len(ids),
        "ingested_at": [now] * len(ids),
        "source_meta": [None] * len(ids),
    }
    data = pa.table(columns, schema=chunk_schema(2))
    lancedb.connect(tmp_path / "db").create_table("chunks", data=data)
    return open_store(Settings(_env_file=None, lancedb_uri=str(tmp_path / "db"), table="chunks")).at()  # type: ignore[call-arg]


def q1() -> GoldenQuestion:
    return GoldenQuestion(
        id="q1",
        question="What happens at exit and to locks?",
        kind="multi_document",
        reference_answer="The cache is flushed; locks are released in reverse order.",
        evidence=[{"doc_id": "a", "passage": PA, "relevance": 2}, {"doc_id": "b", "passage": PB, "relevance": 1}],
    )


def q2() -> GoldenQuestion:
    return GoldenQuestion(
        id="q2",
        question="When do workers restart?",
        kind="factoid",
        reference_answer="After every hundred tasks.",
        evidence=[{"doc_id": "c", "passage": PC, "relevance": 2}],
    )


def q3() -> GoldenQuestion:
    return GoldenQuestion(
        id="q3", question="Who wrote the manual?", kind="unanswerable", reference_answer="Not in the corpus."
    )


# mode (with its fusion weight) → question → the chunk ids the search returns, best first
SCRIPT: dict[str, dict[str, list[str]]] = {
    "vector": {
        "What happens at exit and to locks?": ["a#1", "a#0", "b#0"],
        "When do workers restart?": ["c#0"],
        "Who wrote the manual?": ["d#0"],
    },
    "fulltext": {
        "What happens at exit and to locks?": ["a#0", "b#0"],
        "When do workers restart?": ["d#0", "c#0"],
        "Who wrote the manual?": ["a#0"],
    },
    "hybrid@0.5": {
        "What happens at exit and to locks?": ["d#0"],
        "When do workers restart?": [],
        "Who wrote the manual?": [],
    },
}


class Stubs:
    """Records what the stand-in embedding, search, answerer, answer metrics and progress callback received."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        script: dict[str, dict[str, Any]] = SCRIPT,
        texts: dict[str, str] = TEXTS,
    ) -> None:
        self.script, self.texts = script, texts
        self.embedded: list[tuple[list[str], EmbedSpec]] = []
        self.searched: list[dict[str, Any]] = []
        self.metric_calls: list[tuple[list[str], list[str | None], dict[str, list[ReferenceChunk]]]] = []
        self.progress: list[tuple[str, int, int]] = []
        self.tables: set[int] = set()
        monkeypatch.setattr(scoring, "embed_texts", self.embed)
        monkeypatch.setattr(scoring, "search", self.search)

    def embed(self, texts: list[str], spec: EmbedSpec, role: str = "") -> list[tuple[str, str]]:
        assert role == "query", role  # golden questions are queries
        self.embedded.append((list(texts), spec))
        return [("vector of", texts[0])]

    def search(
        self,
        table: Any,
        query: str,
        spec: EmbedSpec,
        mode: str = "vector",
        k: int = 10,
        fusion_weight: float | None = None,
        ann: AnnQuery | None = None,
        query_vector: Any = None,
        similarity: bool = False,
    ) -> list[SearchHit]:
        self.tables.add(id(table))
        self.searched.append(
            {"mode": mode, "weight": fusion_weight, "query": query, "k": k, "similarity": similarity, "ann": ann}
        )
        assert (spec, query_vector) == (SPEC, ("vector of", query))  # the question's own vector, never re-embedded
        scripted: Any = self.script[mode if fusion_weight is None else f"{mode}@{fusion_weight}"][query]
        if isinstance(scripted, Exception):
            raise scripted
        ids = scripted[:k]
        # score 1/(rank + 2), similarity 1/(rank + 5) when asked for, except d#0's (None: not computed)
        return [
            SearchHit(
                cid,
                cid.split("#")[0],
                "",
                "",
                self.texts[cid],
                1 / (rank + 2),
                rank,
                1 / (rank + 5) if similarity and cid != "d#0" else None,
            )
            for rank, cid in enumerate(ids, start=1)
        ]

    def answer_metrics(self, results: list[QuestionResult], refs: dict[str, list[ReferenceChunk]]) -> dict[str, str]:
        self.metric_calls.append(([r.id for r in results], [r.answer for r in results], refs))
        for r in results:
            r.scores["answer_overlap"] = {"q1": 0.25, "q2": 0.5}.get(r.id, 0.0)
        return {"faithfulness": "no judge configured"}

    def on_progress(self, stage: str, done: int, total: int) -> None:
        self.progress.append((stage, done, total))


ANSWERS = {
    "What happens at exit and to locks?": "The cache is flushed at exit.",
    "When do workers restart?": "I don't know.",
    "Who wrote the manual?": "The passages do not mention it.",
}


class Answerer:
    """Answers q1, declines q2 (answerable) and q3 (unanswerable); records each question and its contexts."""

    name = "stub-answerer"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def answer(self, question: str, contexts: list[str]) -> str:
        self.calls.append((question, contexts))
        return ANSWERS[question]


class Failing:
    name = "down"

    def answer(self, question: str, contexts: list[str]) -> str:
        raise RuntimeError("endpoint down " + "x" * 400)


@pytest.fixture
def table(tmp_path: Path) -> Any:
    return table_of(tmp_path, TEXTS)


def run(
    table: Any,
    stubs: Stubs,
    questions: list[GoldenQuestion],
    answerer: Any = None,
    modes: tuple[str, ...] = ("vector", "fulltext", "hybrid@0.5"),
    primary: str = "chunk_ndcg@2",
    **kwargs: Any,
) -> VersionScores:
    return score_version(
        table,
        7,
        questions,
        SPEC,
        list(modes),
        K,
        primary,
        answerer or Answerer(),
        stubs.answer_metrics,
        stubs.on_progress,
        1,
        ANN,
        **kwargs,
    )


# per question and mode, the IR scores worked out by hand (relevant docs: q1 {a: 2, b: 1}, q2 {c: 2}; passages:
# q1 p0 (grade 2) in a#0 and p1 (grade 1) in b#0, q2 p0 (grade 2) in c#0)
VECTOR_Q1 = {
    # top 2 chunks a#1, a#0 hold one document; the document ranking tops up through the search: a, b
    "doc_hit_rate@2": 1.0,
    "doc_recall@2": 1.0,  # 2 of 2
    "doc_mrr@2": 1.0,
    "doc_ndcg@2": 1.0,  # (2 + 1/L3) / (2 + 1/L3)
    "chunk_hit_rate@2": 1.0,
    "chunk_recall@2": 0.5,  # p0 of p0, p1
    "chunk_mrr@2": 0.5,  # first passage at rank 2
    "chunk_ndcg@2": (2 / L3) / (2 + 1 / L3),  # p0 at rank 2; ideal: a#0 then b#0
}
PERFECT = dict.fromkeys(VECTOR_Q1, 1.0)
ZERO = dict.fromkeys(VECTOR_Q1, 0.0)
FULLTEXT_Q2 = {
    # d#0, c#0: the relevant document and passage at rank 2
    "doc_hit_rate@2": 1.0,
    "doc_recall@2": 1.0,
    "doc_mrr@2": 0.5,
    "doc_ndcg@2": (2 / L3) / 2,
    "chunk_hit_rate@2": 1.0,
    "chunk_recall@2": 1.0,
    "chunk_mrr@2": 0.5,
    "chunk_ndcg@2": (2 / L3) / 2,
}
IR = {
    "vector": {"q1": VECTOR_Q1, "q2": PERFECT},  # q2: c#0 at rank 1
    "fulltext": {"q1": PERFECT, "q2": FULLTEXT_Q2},  # q1: a#0, b#0
    "hybrid@0.5": {"q1": ZERO, "q2": ZERO},  # q1: d#0 only; q2: nothing
}


def approx(expected: Any) -> Any:
    return pytest.approx(expected, rel=1e-9, abs=1e-12)


def assert_nested_close(actual: Any, expected: Any) -> None:
    """Equal dicts, in the same key order, with floats equal up to rounding at the leaves."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), (actual, expected)
        for key in expected:
            assert_nested_close(actual[key], expected[key])
    else:
        assert actual == approx(expected)


def test_the_mode_with_the_best_primary_mean_is_judged_and_only_its_results_are_answered(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubs, answerer = Stubs(monkeypatch), Answerer()
    scores = run(table, stubs, [q1(), q2(), q3()], answerer, llm_answers=True)

    # chunk_ndcg@2 means over q1, q2: vector (0.479624 + 1) / 2 = 0.739812, fulltext (1 + 0.630930) / 2 = 0.815465,
    # hybrid 0: fulltext
    assert scores.mode == "fulltext"
    assert (scores.version, scores.answerer) == (7, "stub-answerer")
    assert scores.sweep == {
        "vector": {
            "doc_hit_rate@2": 1.0,
            "doc_recall@2": 1.0,
            "doc_mrr@2": 1.0,
            "doc_ndcg@2": 1.0,
            "chunk_hit_rate@2": 1.0,
            "chunk_recall@2": 0.75,  # (0.5 + 1) / 2
            "chunk_mrr@2": 0.75,
            "chunk_ndcg@2": round(((2 / L3) / (2 + 1 / L3) + 1) / 2, 6),  # 0.739812
        },
        "fulltext": {
            "doc_hit_rate@2": 1.0,
            "doc_recall@2": 1.0,
            "doc_mrr@2": 0.75,  # (1 + 0.5) / 2
            "doc_ndcg@2": 0.815465,  # (1 + 1/L3) / 2 = (1 + 0.6309298) / 2
            "chunk_hit_rate@2": 1.0,
            "chunk_recall@2": 1.0,
            "chunk_mrr@2": 0.75,
            "chunk_ndcg@2": 0.815465,
        },
        "hybrid@0.5": dict.fromkeys(VECTOR_Q1, 0.0),
    }
    assert scores.sweep["vector"]["chunk_ndcg@2"] == 0.739812
    # every mode's per-question IR scores, answerable questions only
    assert_nested_close(
        scores.mode_scores,
        {
            mode: {name: {qid: by_q[qid][name] for qid in ("q1", "q2")} for name in VECTOR_Q1}
            for mode, by_q in IR.items()
        },
    )

    # the judged questions: fulltext's retrievals, IR scores, answers and the right-thing scores
    assert [r.id for r in scores.questions] == ["q1", "q2", "q3"]
    assert [r.mode for r in scores.questions] == ["fulltext"] * 3
    assert [(r.kind, r.question) for r in scores.questions] == [
        ("multi_document", "What happens at exit and to locks?"),
        ("factoid", "When do workers restart?"),
        ("unanswerable", "Who wrote the manual?"),
    ]
    r1, r2, r3 = scores.questions
    # scores rounded to 5 decimals: 1/3 → 0.33333, 1/4 → 0.25; similarities 1/6 → 0.16667, 1/7 → 0.14286
    assert r1.retrieved == [
        {"chunk_id": "a#0", "doc_id": "a", "score": 0.33333, "similarity": 0.16667, "text": TEXTS["a#0"]},
        {"chunk_id": "b#0", "doc_id": "b", "score": 0.25, "similarity": 0.14286, "text": TEXTS["b#0"]},
    ]
    assert r2.retrieved == [
        {"chunk_id": "d#0", "doc_id": "d", "score": 0.33333, "similarity": None, "text": TEXTS["d#0"]},
        {"chunk_id": "c#0", "doc_id": "c", "score": 0.25, "similarity": 0.14286, "text": TEXTS["c#0"]},
    ]
    assert r3.retrieved == [
        {"chunk_id": "a#0", "doc_id": "a", "score": 0.33333, "similarity": 0.16667, "text": TEXTS["a#0"]}
    ]
    assert r1.scores == approx({**PERFECT, "answer_rate": 1.0, "answer_overlap": 0.25})  # answered: right
    assert r2.scores == approx({**FULLTEXT_Q2, "answer_rate": 0.0, "answer_overlap": 0.5})  # declined: wrong
    assert r3.scores == {"abstention": 1.0}  # unanswerable declined: right; no IR score
    assert [r.answer for r in scores.questions] == [
        "The cache is flushed at exit.",
        "I don't know.",
        "The passages do not mention it.",
    ]
    assert [r.errors for r in scores.questions] == [{}, {}, {}]
    # only the judged mode is answered, each question once, with its retrieved texts
    assert answerer.calls == [
        ("What happens at exit and to locks?", [TEXTS["a#0"], TEXTS["b#0"]]),
        ("When do workers restart?", [TEXTS["d#0"], TEXTS["c#0"]]),
        ("Who wrote the manual?", [TEXTS["a#0"]]),
    ]
    # the answer metrics get the answerable questions after answering, and the reference chunks of the version
    refs = {
        "q1": [
            ReferenceChunk("a#0", TEXTS["a#0"], frozenset({"p0"})),
            ReferenceChunk("b#0", TEXTS["b#0"], frozenset({"p1"})),
        ],
        "q2": [ReferenceChunk("c#0", TEXTS["c#0"], frozenset({"p0"}))],
    }
    assert stubs.metric_calls == [(["q1", "q2"], ["The cache is flushed at exit.", "I don't know."], refs)]

    assert scores.means == {
        "abstention": 1.0,
        "answer_overlap": 0.375,  # (0.25 + 0.5) / 2
        "answer_rate": 0.5,  # (1 + 0) / 2
        "chunk_hit_rate@2": 1.0,
        "chunk_mrr@2": 0.75,
        "chunk_ndcg@2": 0.815465,
        "chunk_recall@2": 1.0,
        "doc_hit_rate@2": 1.0,
        "doc_mrr@2": 0.75,
        "doc_ndcg@2": 0.815465,
        "doc_recall@2": 1.0,
        "faithfulness": None,
    }
    assert list(scores.means) == sorted(scores.means)
    assert scores.missing == {"faithfulness": "no judge configured"}  # its own reason is kept
    # abstention applies to the one unanswerable question, everything else to the two answerable ones
    assert scores.coverage == {
        "abstention": [1, 1],
        "answer_overlap": [2, 2],
        "answer_rate": [2, 2],
        **{name: [2, 2] for name in VECTOR_Q1},
        "faithfulness": [0, 2],
    }
    assert scores.per_question("answer_rate") == {"q1": 1.0, "q2": 0.0}


def test_each_question_is_embedded_once_and_searched_per_mode_with_its_weight(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubs = Stubs(monkeypatch)
    run(table, stubs, [q1(), q2(), q3()], llm_answers=True)
    assert stubs.tables == {id(table)}
    assert stubs.embedded == [
        (["What happens at exit and to locks?"], SPEC),
        (["When do workers restart?"], SPEC),
        (["Who wrote the manual?"], SPEC),
    ]
    # per mode and question: the k chunks with similarities, then (answerable only) the document ranking's 5k = 10
    expected = []
    for mode, weight in (("vector", None), ("fulltext", None), ("hybrid", 0.5)):
        for q in (q1(), q2(), q3()):
            expected.append(
                {"mode": mode, "weight": weight, "query": q.question, "k": 2, "similarity": True, "ann": ANN}
            )
            if q.answerable:
                expected.append(
                    {"mode": mode, "weight": weight, "query": q.question, "k": 10, "similarity": False, "ann": ANN}
                )
    assert stubs.searched == expected


def test_progress_counts_every_retrieval_then_every_answer(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = Stubs(monkeypatch)
    run(table, stubs, [q1(), q2(), q3()])
    # 3 modes × 3 questions = 9 retrievals, then the 3 judged questions answered
    assert stubs.progress == [("retrieve", i, 9) for i in range(1, 10)] + [("answer", i, 3) for i in range(1, 4)]


def test_another_primary_metric_chooses_another_mode_and_ties_go_to_the_earlier_mode(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = [q1(), q2(), q3()]
    # doc_mrr@2: vector 1, fulltext 0.75, hybrid 0
    assert run(table, Stubs(monkeypatch), questions, primary="doc_mrr@2").mode == "vector"
    # doc_hit_rate@2: vector 1, fulltext 1, hybrid 0: the earlier of the two best
    assert run(table, Stubs(monkeypatch), questions, primary="doc_hit_rate@2").mode == "vector"
    reversed_modes = ("hybrid@0.5", "fulltext", "vector")
    scores = run(table, Stubs(monkeypatch), questions, modes=reversed_modes, primary="doc_hit_rate@2")
    assert scores.mode == "fulltext"
    assert [r.mode for r in scores.questions] == ["fulltext"] * 3
    assert list(scores.sweep) == ["hybrid@0.5", "fulltext", "vector"]


def test_the_judged_mode_is_the_one_answered_when_it_is_the_last(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs, answerer = Stubs(monkeypatch), Answerer()
    # chunk_recall@2: vector 0.75, hybrid 0, fulltext 1 (last)
    scores = run(
        table, stubs, [q1(), q2(), q3()], answerer, modes=("vector", "hybrid@0.5", "fulltext"), primary="chunk_recall@2"
    )
    assert scores.mode == "fulltext"
    assert [contexts for _, contexts in answerer.calls] == [
        [TEXTS["a#0"], TEXTS["b#0"]],
        [TEXTS["d#0"], TEXTS["c#0"]],
        [TEXTS["a#0"]],
    ]


def test_without_an_answerer_that_can_decline_abstention_and_answer_rate_are_missing(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = run(table, Stubs(monkeypatch), [q1(), q2(), q3()])  # llm_answers is False unless asked for
    assert [r.scores.get("abstention") for r in scores.questions] == [None, None, None]
    assert [r.scores.get("answer_rate") for r in scores.questions] == [None, None, None]
    assert scores.questions[2].scores == {}
    assert scores.missing == {
        "abstention": scoring.CANNOT_DECLINE,
        "answer_rate": scoring.CANNOT_DECLINE,
        "faithfulness": "no judge configured",
    }
    assert scoring.CANNOT_DECLINE.startswith("the extractive answerer never declines")
    assert (scores.means["abstention"], scores.means["answer_rate"]) == (None, None)
    assert (scores.coverage["abstention"], scores.coverage["answer_rate"]) == ([0, 1], [0, 2])
    assert scores.means["answer_overlap"] == 0.375


def test_a_golden_set_without_unanswerable_questions_has_no_abstention(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = run(table, Stubs(monkeypatch), [q1(), q2()], llm_answers=True)
    assert scores.missing == {
        "abstention": "the golden set has no unanswerable question",
        "faithfulness": "no judge configured",
    }
    assert scores.means["answer_rate"] == 0.5  # answered q1 (1), declined q2 (0)
    assert scores.means["abstention"] is None
    assert scores.coverage["abstention"] == [0, 0]
    # without an answerer that can decline, its reason comes first
    scores = run(table, Stubs(monkeypatch), [q1(), q2()], llm_answers=False)
    assert scores.missing["abstention"] == scoring.CANNOT_DECLINE


def test_documents_only_scores_document_retrieval_and_answers_nothing(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    judged = GoldenQuestion(
        id="j1",
        question="When do workers restart?",
        kind="factoid",
        reference_answer="-",
        judged_docs={"c": 1, "d": 2},
    )
    unjudged = GoldenQuestion(  # judged, but no document relevant: recall and nDCG are NaN, left out
        id="j2", question="Who wrote the manual?", kind="factoid", reference_answer="-", judged_docs={"a": 0}
    )
    stubs, answerer = Stubs(monkeypatch), Answerer()
    scores = run(table, stubs, [judged, unjudged], answerer, primary="doc_ndcg@2", documents_only=True)
    # j1 {c: 1, d: 2}: vector [c] → recall 1/2, nDCG 1/(2 + 1/L3); fulltext [d, c] → recall 1, nDCG 1
    # j2 ranks a (fulltext) or d (vector): hit 0, MRR 0, recall and nDCG NaN
    assert scores.mode == "fulltext"
    assert scores.sweep == {
        "vector": {
            "doc_hit_rate@2": 0.5,  # (1 + 0) / 2
            "doc_recall@2": 0.5,  # j1 only
            "doc_mrr@2": 0.5,
            "doc_ndcg@2": round(1 / (2 + 1 / L3), 6),  # 0.380094
        },
        "fulltext": {"doc_hit_rate@2": 0.5, "doc_recall@2": 1.0, "doc_mrr@2": 0.5, "doc_ndcg@2": 1.0},
        "hybrid@0.5": {"doc_hit_rate@2": 0.0, "doc_recall@2": 0.0, "doc_mrr@2": 0.0, "doc_ndcg@2": 0.0},
    }
    assert scores.sweep["vector"]["doc_ndcg@2"] == 0.380094
    assert scores.mode_scores["fulltext"] == {
        "doc_hit_rate@2": {"j1": 1.0, "j2": 0.0},
        "doc_recall@2": {"j1": 1.0},
        "doc_mrr@2": {"j1": 1.0, "j2": 0.0},
        "doc_ndcg@2": {"j1": 1.0},
    }
    assert answerer.calls == [] and stubs.metric_calls == []
    assert [r.answer for r in scores.questions] == [None, None]
    assert stubs.progress == [("retrieve", i, 6) for i in range(1, 7)]
    assert scores.missing == {}
    assert scores.means == {"doc_hit_rate@2": 0.5, "doc_mrr@2": 0.5, "doc_ndcg@2": 1.0, "doc_recall@2": 1.0}
    assert scores.coverage == {
        "doc_hit_rate@2": [2, 2],
        "doc_mrr@2": [2, 2],
        "doc_ndcg@2": [1, 2],
        "doc_recall@2": [1, 2],
    }


def test_an_answerer_that_fails_leaves_the_answer_missing_and_records_the_error(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubs = Stubs(monkeypatch)
    scores = run(table, stubs, [q1(), q3()], Failing(), llm_answers=True)
    assert scores.answerer == "down"
    assert [r.answer for r in scores.questions] == [None, None]
    message = "RuntimeError: endpoint down " + "x" * 272  # cut at 300 characters: 28 + 272
    assert [r.errors for r in scores.questions] == [{"answer": message}, {"answer": message}]
    assert len(message) == 300
    assert scores.questions[0].scores["answer_rate"] is None
    assert scores.questions[1].scores == {"abstention": None}
    assert scores.missing == {
        "abstention": "no question could be scored",
        "answer_rate": "no question could be scored",
        "faithfulness": "no judge configured",
    }
    assert (scores.coverage["abstention"], scores.coverage["answer_rate"]) == ([0, 1], [0, 1])
    assert stubs.metric_calls[0][:2] == (["q1"], [None])


def test_one_retrieval_answered_twice_searches_once_and_scores_like_a_full_scoring(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = [q1(), q2(), q3()]
    full = run(table, Stubs(monkeypatch), questions, llm_answers=True)
    stubs = Stubs(monkeypatch)
    retrieval = scoring.retrieve_modes(
        table, 7, questions, SPEC, ["vector", "fulltext", "hybrid@0.5"], K, "chunk_ndcg@2", stubs.on_progress, ANN
    )
    searched = len(stubs.searched)
    answerers = [Answerer(), Answerer()]
    runs = [
        scoring.answer_retrieval(retrieval, a, stubs.answer_metrics, stubs.on_progress, llm_answers=True)
        for a in answerers
    ]
    # answering searches nothing; each answering asks every question of the judged mode once
    assert len(stubs.searched) == searched
    assert [len(a.calls) for a in answerers] == [3, 3]
    assert len(stubs.metric_calls) == 2
    # each run scores as a full scoring does, on its own results: the retrieval is left unanswered
    for scores in runs:
        assert (scores.mode, scores.means, scores.missing, scores.coverage) == (
            full.mode,
            full.means,
            full.missing,
            full.coverage,
        )
        assert (scores.sweep, scores.mode_scores, scores.failed_modes) == (full.sweep, full.mode_scores, {})
        assert [(r.id, r.answer, r.scores, r.retrieved) for r in scores.questions] == [
            (r.id, r.answer, r.scores, r.retrieved) for r in full.questions
        ]
    assert runs[0].questions[0] is not runs[1].questions[0]
    assert runs[0].questions[0].scores is not runs[1].questions[0].scores
    assert [(r.answer, r.errors, "answer_overlap" in r.scores) for r in retrieval.judged] == [(None, {}, False)] * 3
    assert stubs.progress == [("retrieve", i, 9) for i in range(1, 10)] + [("answer", i, 3) for i in range(1, 4)] * 2


def test_remembered_answers_answer_each_question_and_contexts_once_and_a_failure_again() -> None:
    answerer = Answerer()
    remembered = scoring.RememberedAnswers(answerer)
    question = "What happens at exit and to locks?"
    assert remembered.name == "stub-answerer"
    first = remembered.answer(question, [TEXTS["a#0"], TEXTS["b#0"]])
    assert remembered.answer(question, [TEXTS["a#0"], TEXTS["b#0"]]) == first == ANSWERS[question]
    assert len(answerer.calls) == 1
    remembered.answer(question, [TEXTS["b#0"], TEXTS["a#0"]])  # other contexts (or another order): answered
    remembered.answer("When do workers restart?", [TEXTS["a#0"], TEXTS["b#0"]])  # another question: answered
    assert len(answerer.calls) == 3
    failing = scoring.RememberedAnswers(Failing())
    for _ in range(2):
        with pytest.raises(RuntimeError):
            failing.answer(question, [])
    assert failing.answers == {}


def test_ideal_units_of_another_version_change_the_chunk_ndcg_normaliser(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another version has one chunk holding both of q1's passages: ideal DCG (2 + 1) / 1 = 3
    units = {"q1": [frozenset({"p0", "p1"})]}
    scores = run(table, Stubs(monkeypatch), [q1(), q2(), q3()], ideal_units=units)
    assert scores.mode_scores["vector"]["chunk_ndcg@2"] == approx({"q1": (2 / L3) / 3, "q2": 1.0})
    assert scores.mode_scores["fulltext"]["chunk_ndcg@2"] == approx({"q1": (2 + 1 / L3) / 3, "q2": 1 / L3})
    # document nDCG keeps its own ideal; q2 (not in ideal_units) keeps its own
    assert scores.mode_scores["fulltext"]["doc_ndcg@2"] == approx({"q1": 1.0, "q2": 1 / L3})
    # fulltext (0.876977 + 0.630930) / 2 = 0.753953 beats vector (0.420620 + 1) / 2 = 0.710310... chosen
    assert scores.mode == "fulltext"
    assert scores.means["chunk_ndcg@2"] == round(((2 + 1 / L3) / 3 + 1 / L3) / 2, 6)


def test_a_mode_whose_retrieval_fails_is_recorded_and_judged_without(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = ValueError("no full-text index " + "y" * 400)
    script = {**SCRIPT, "fulltext": {**SCRIPT["fulltext"], "When do workers restart?": down}}
    stubs = Stubs(monkeypatch, script)
    scores = run(table, stubs, [q1(), q2(), q3()], llm_answers=True)
    # fulltext (the best otherwise) fails at q2: vector (0.739812) beats hybrid (0)
    assert scores.failed_modes == {"fulltext": "ValueError: no full-text index " + "y" * 269}  # 31 + 269 = 300
    assert scores.mode == "vector"
    assert scores.sweep["fulltext"] == dict.fromkeys(VECTOR_Q1)
    assert list(scores.mode_scores) == ["vector", "hybrid@0.5"]
    # fulltext's q1 counted (4), its q2 and q3 skipped (done = 6), then hybrid's three
    assert stubs.progress[:7] == [("retrieve", i, 9) for i in (1, 2, 3, 4, 7, 8, 9)]
    everywhere = {mode: dict.fromkeys(SCRIPT["vector"], down) for mode in SCRIPT}
    with pytest.raises(RuntimeError) as caught:
        run(table, Stubs(monkeypatch, everywhere), [q1(), q2(), q3()])
    reason = "ValueError: no full-text index " + "y" * 269
    failed = {"vector": reason, "fulltext": reason, "hybrid@0.5": reason}
    assert str(caught.value) == f"version 7: retrieval failed in every mode: {failed}"


def test_the_versions_own_chunks_set_the_chunk_ndcg_ideal_not_the_retrieved_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = {"m#0": f"{PA} {PB}", "m#1": PA, "m#2": PB}  # m#0 holds both passages, never retrieved
    question = GoldenQuestion(
        id="m",
        question="What happens at exit and to locks?",
        kind="multi_sentence",
        reference_answer="-",
        evidence=[{"doc_id": "m", "passage": PA, "relevance": 2}, {"doc_id": "m", "passage": PB, "relevance": 1}],
    )
    script = {"vector": {question.question: ["m#1", "m#2"]}}
    stubs = Stubs(monkeypatch, script, texts)
    scores = run(table_of(tmp_path, texts), stubs, [question], modes=("vector",))
    # DCG 2/1 + 1/L3 (p0 at rank 1, p1 at rank 2); ideal m#0 first: (2 + 1) / 1 = 3
    assert scores.mode_scores["vector"]["chunk_ndcg@2"] == approx({"m": (2 + 1 / L3) / 3})
    assert scores.mode_scores["vector"]["chunk_recall@2"] == {"m": 1.0}


def test_without_reference_chunks_the_ideal_comes_from_the_retrieved_chunks() -> None:
    hits = [SearchHit("m#0", "a", "", "", f"{PA} {PB}", 1.0, 1)]
    both = GoldenQuestion(
        id="both",
        question="What happens at exit?",
        kind="multi_sentence",
        reference_answer="-",
        evidence=[{"doc_id": "a", "passage": PA, "relevance": 2}, {"doc_id": "a", "passage": PB, "relevance": 1}],
    )
    # one chunk holding p0 and p1 at rank 1: DCG (2 + 1) / 1 = 3, and it is its own ideal
    assert scoring.retrieval_scores(both, hits, 2)["chunk_ndcg@2"] == 1.0
    # with the version's reference chunks holding one passage each the ideal is 2 + 1/L3, below the DCG: capped at 1
    refs = [ReferenceChunk("a#1", PA, frozenset({"p0"})), ReferenceChunk("a#2", PB, frozenset({"p1"}))]
    assert scoring.retrieval_scores(both, hits, 2, refs)["chunk_ndcg@2"] == 1.0


class Concurrent:
    """An answerer that takes a while and records how many of its calls ran at once."""

    name = "slow"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.most = 0

    def answer(self, question: str, contexts: list[str]) -> str:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return ANSWERS[question]


def test_questions_are_answered_one_at_a_time_unless_asked_otherwise(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubs, answerer = Stubs(monkeypatch), Concurrent()
    questions = [q1(), q2(), q3()]
    score_version(table, 7, questions, SPEC, ["fulltext"], K, "chunk_ndcg@2", answerer, stubs.answer_metrics)
    assert answerer.most == 1
    answerer = Concurrent()
    run(table, stubs, questions, answerer)  # answer_concurrency 1, given
    assert answerer.most == 1
    answerer = Concurrent()
    scores = score_version(
        table, 7, questions, SPEC, ["fulltext"], K, "chunk_ndcg@2", answerer, stubs.answer_metrics, None, 3
    )
    assert answerer.most > 1
    # answers stay with their questions, in the golden set's order
    assert [r.answer for r in scores.questions] == [ANSWERS[q.question] for q in questions]


def test_a_stale_passage_is_reported_with_its_index_document_and_first_80_characters() -> None:
    passage = "The  archive is copied\nevery evening to the cold storage bucket in another region, twice a week."
    question = GoldenQuestion(
        id="s",
        question="When is the archive copied?",
        kind="multi_document",
        reference_answer="-",
        evidence=[{"doc_id": "a", "passage": PA}, {"doc_id": "b", "passage": passage}],
    )
    texts = {"a": f"Intro. {PA}", "b": "The archive is copied every morning instead."}
    # p1's whitespace collapsed, then cut at 80 characters, as a repr
    first_80 = "The archive is copied every evening to the cold storage bucket in another region"
    assert len(first_80) == 80
    assert scoring.stale_passages([question], texts) == {"s": [f"p1 in b: '{first_80}'"]}


# --- reference_chunks on its own ----------------------------------------------------------------------------------

LONG = "Every evening the archive is copied to the cold storage bucket in another region."  # 81 characters


def test_reference_chunks_lists_the_chunks_holding_evidence_in_document_and_chunk_order(tmp_path: Path) -> None:
    chunks = {
        "z#1": f"{PA} {PB}",  # both of q1's passages in one chunk of another document than cited
        "b#1": f"Tail. {PB}",
        "a#1": f"{PA} Again.",
        "b#0": f"{PB} Then more.",
        "a#0": f"Intro. {PA}",
        "a#2": "Nothing relevant in this chunk.",
        "c#0": LONG[:40] + " and then something else entirely.",  # half of LONG (81 // 2 = 40), cut
        "c#1": LONG[:39] + " and then something else entirely.",  # 39 < 40: not held
    }
    table = table_of(tmp_path, chunks)
    multi = q1()
    cut = GoldenQuestion(
        id="cut",
        question="When is the archive copied?",
        kind="factoid",
        reference_answer="Every evening.",
        evidence=[{"doc_id": "c", "passage": LONG}],
    )
    lost = GoldenQuestion(
        id="lost",
        question="What does the missing document say?",
        kind="factoid",
        reference_answer="-",
        evidence=[{"doc_id": "gone", "passage": "A passage of a document the version lost."}],
    )
    refs = reference_chunks(table, [multi, cut, lost])
    assert refs == {
        # a before b, and a#0 before a#1 whatever the table's order; z holds both passages but is not cited
        "q1": [
            ReferenceChunk("a#0", chunks["a#0"], frozenset({"p0"})),
            ReferenceChunk("a#1", chunks["a#1"], frozenset({"p0"})),
            ReferenceChunk("b#0", chunks["b#0"], frozenset({"p1"})),
            ReferenceChunk("b#1", chunks["b#1"], frozenset({"p1"})),
        ],
        "cut": [ReferenceChunk("c#0", chunks["c#0"], frozenset({"p0"}))],
        "lost": [],
    }
    assert list(refs) == ["q1", "cut", "lost"]
    assert len(LONG) == 81


def test_reference_chunks_credit_every_passage_a_chunk_of_the_cited_document_holds(tmp_path: Path) -> None:
    chunks = {"a#0": f"{PA} {PB}", "a#1": "Nothing here at all, really."}
    table = table_of(tmp_path, chunks)
    both = GoldenQuestion(
        id="both",
        question="What happens at exit?",
        kind="multi_sentence",
        reference_answer="-",
        evidence=[{"doc_id": "a", "passage": PA}, {"doc_id": "a", "passage": PB}],
    )
    assert reference_chunks(table, [both]) == {"both": [ReferenceChunk("a#0", chunks["a#0"], frozenset({"p0", "p1"}))]}


def test_reference_chunks_of_questions_without_evidence_is_empty(tmp_path: Path) -> None:
    table = table_of(tmp_path, {"a#0": PA})
    judged = GoldenQuestion(
        id="j", question="Which document?", kind="factoid", reference_answer="-", judged_docs={"a": 1}
    )
    assert reference_chunks(table, [judged, q3()]) == {}
    assert reference_chunks(table, []) == {}
