"""Evaluation, gate and promotion specification, end to end on real LanceDB, model, ragas, GX and Prefect."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from evaluations.promotion import NothingToRollBackError, rollback
from flows.evaluate import evaluate
from flows.ingest import ingest
from flows.promote import promote
from tasks.settings import Settings
from tasks.store import lancedb_store
from tasks.store.backends import open_store

from .conftest import REPO, SAMPLE

# 30 answerable questions: enough that the cross-fitted mode choice and a paired bootstrap are not decided by one
ANSWERABLE_IDS = [f"q{i:03d}" for i in range(1, 26)] + ["q029", "q047", "q049", "q054", "q056"]
UNANSWERABLE_IDS = [f"q{i:03d}" for i in range(57, 69)]  # all twelve: abstention is gated on ≥ 10 paired questions
GOLDEN_IDS = ANSWERABLE_IDS + UNANSWERABLE_IDS
DISTRACTORS = ["tutorial/appetite.txt", "library/tty.html"]


@pytest.fixture(scope="module")
def ingested(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A corpus of the evidence documents of 30 golden questions plus distractors, ingested once."""
    root = tmp_path_factory.mktemp("evaluation")
    lines = [
        line
        for line in (REPO / "datasets/golden/python-docs.jsonl").read_text().splitlines()
        if json.loads(line).get("id") in GOLDEN_IDS
    ]
    (root / "golden.jsonl").write_text("\n".join(lines) + "\n")
    docs = {ev["doc_id"] for line in lines for ev in json.loads(line)["evidence"]} | set(DISTRACTORS)
    for rel in docs:
        (root / "corpus" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / rel, root / "corpus" / rel)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGOPS_LANCEDB_URI", str(root / "db"))
        mp.setenv("RAGOPS_DASK_WORKERS", "1")
        ingest(str(root / "corpus"))
    yield root


@pytest.fixture
def env(ingested: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A private copy of the ingested table, the golden subset and a reports folder."""
    shutil.copytree(ingested / "db", tmp_path / "db")
    point_at(monkeypatch, ingested, tmp_path)
    return Settings()


def point_at(mp: pytest.MonkeyPatch, ingested: Path, root: Path) -> None:
    """Settings for an evaluation of the table under `root`: the golden subset, the default policy, no LLM."""
    mp.setenv("RAGOPS_LANCEDB_URI", str(root / "db"))
    mp.setenv("RAGOPS_GOLDEN_SET", str(ingested / "golden.jsonl"))
    mp.setenv("RAGOPS_POLICY", str(REPO / "evaluations/policies/default.yaml"))
    mp.setenv("RAGOPS_REPORTS_DIR", str(root / "reports"))
    mp.delenv("RAGOPS_LLM_BASE_URL", raising=False)
    mp.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture(scope="module")
def first_promotion(ingested: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The ingested table with its first version promoted, once for the tests that start from there."""
    root = tmp_path_factory.mktemp("promoted")
    shutil.copytree(ingested / "db", root / "db")
    with pytest.MonkeyPatch.context() as mp:
        point_at(mp, ingested, root)
        summary = promote()
    assert summary["action"] == "promote", summary["reasons"]
    return root / "db", summary


@pytest.fixture
def promoted(first_promotion: tuple[Path, dict[str, Any]], env: Settings, tmp_path: Path) -> dict[str, Any]:
    """`env`'s table replaced by a copy of the promoted one; the first promotion's summary."""
    db, summary = first_promotion
    shutil.rmtree(tmp_path / "db")
    shutil.copytree(db, tmp_path / "db")
    return summary


def table(settings: Settings):
    return lancedb.connect(settings.lancedb_uri).open_table(settings.table)


def log(settings: Settings) -> list[dict]:
    return open_store(settings).log_records(settings.promotions_table)


def degrade(settings: Settings, change) -> int:
    """A new version whose rows are changed by `change(vectors) -> vectors` (a broken model, bad data)."""
    tbl = table(settings)
    data = tbl.to_arrow()
    dim = data.schema.field("vector").type.list_size
    vectors = data.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    new = pa.FixedSizeListArray.from_arrays(pa.array(change(vectors).astype(np.float32).reshape(-1)), dim)
    data = data.set_column(data.schema.get_field_index("vector"), data.schema.field("vector"), new)
    tbl.merge_insert("chunk_id").when_matched_update_all().execute(data)
    return tbl.version


def metric(summary: dict, name: str) -> float | None:
    return next(row["candidate"] for row in summary["metrics"] if row["metric"] == name)


def count_extractive_answers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...]]]:
    """Every question and contexts the offline extractive answerer answers, in order."""
    from tasks.serve.answering import ExtractiveAnswerer

    answered: list[tuple[str, tuple[str, ...]]] = []
    answer = ExtractiveAnswerer.answer

    def counting(self: ExtractiveAnswerer, question: str, contexts: list[str]) -> str:
        answered.append((question, tuple(contexts)))
        return answer(self, question, contexts)

    monkeypatch.setattr(ExtractiveAnswerer, "answer", counting)
    return answered


def test_first_candidate_is_judged_on_minimums_and_promoted(env: Settings) -> None:
    summary = promote()

    assert summary["decision"] == "promote" and summary["action"] == "promote", summary["reasons"]
    assert summary["first_promotion"] and summary["production_version"] is None
    assert lancedb_store.tagged_version(table(env), "production") == summary["candidate_version"]
    records = log(env)
    assert [(r["action"], r["version"], r["mode"]) for r in records] == [
        ("promote", summary["candidate_version"], summary["mode"])
    ]
    assert records[0]["policy_hash"] == summary["policy_hash"] and records[0]["run_id"] == summary["run_id"]
    # offline metrics are numbers; LLM metrics are reported missing, with the reason
    assert 0 < metric(summary, "semantic_similarity") <= 1
    assert metric(summary, "chunk_recall@10") >= 0.5
    assert metric(summary, "faithfulness") is None
    assert summary["missing"]["faithfulness"].startswith("no LLM endpoint configured")
    assert set(summary["mode_sweep"]) == {"vector", "fulltext", "hybrid", "hybrid@0.7"}
    assert all(q["success"] for q in summary["quality"])
    page = Path(summary["report_html"]).read_text()
    assert "PROMOTE" in page and "<script" not in page and "data:image/png;base64," in page
    assert json.loads(Path(summary["report_json"]).read_text())["decision"] == "promote"
    assert len(summary["per_question"]) == len(GOLDEN_IDS)

    from prefect.artifacts import Artifact

    markdown = Artifact.get("evaluation-chunks")
    questions = Artifact.get("evaluation-questions-chunks")
    assert markdown is not None and f"version {summary['candidate_version']}" in str(markdown.data)
    assert questions is not None and "q012" in str(questions.data)


def test_a_better_candidate_is_promoted_under_the_default_policy_and_rollback_is_reported(env: Settings) -> None:
    good = table(env).version
    tbl = table(env)  # a worse version: three documents that answer golden questions are missing
    tbl.delete("doc_id IN ('library/tomllib.html', 'faq/general.md', 'tutorial/venv.txt')")
    worse = tbl.version
    first = promote(version=str(worse))
    assert first["action"] == "promote", first["reasons"]

    better = promote(version=str(good))

    assert better["action"] == "promote", better["reasons"]
    assert better["production_version"] == worse
    rows = {row["metric"]: row for row in better["metrics"]}
    # three of 30 questions gain and none loses: the interval starts at 0 (a resample may hold none of the three)
    assert 0 <= rows["chunk_ndcg@10"]["ci_low"] < rows["chunk_ndcg@10"]["delta"] < rows["chunk_ndcg@10"]["ci_high"]
    assert better["verdict"] == ("better" if rows["chunk_ndcg@10"]["ci_low"] > 0 else "equivalent")
    assert rows["chunk_ndcg@10"]["scored"] == rows["chunk_ndcg@10"]["asked"] == len(ANSWERABLE_IDS)
    assert rows["abstention"]["asked"] == len(UNANSWERABLE_IDS)
    assert lancedb_store.tagged_version(table(env), "production") == good
    improved = [c for c in better["question_diff"] if c["change"] == "improved"]
    assert improved and all(c["production"]["top"] and c["candidate"]["top"] for c in improved)
    record = log(env)[-1]
    assert record["golden_hash"] == better["golden_set_hash"] and len(record["golden_hash"]) == 64
    assert json.loads(record["details"])["verdict"] == better["verdict"]
    assert json.loads(record["details"])["primary"]["ci_low"] == rows["chunk_ndcg@10"]["ci_low"]

    assert rollback(open_store(env), env, run_id="t", trigger="test") == (good, worse)
    assert lancedb_store.tagged_version(table(env), "production") == worse
    again = evaluate(version=str(good))

    assert again["production_version"] == worse
    assert again["production_now"].startswith(f"production is version {worse}: rolled back from version {good}")
    page = Path(again["report_html"]).read_text()
    assert "Questions that changed" in page and f"rolled back from version {good}" in page
    assert "<h2>History</h2><table>" in page and "rollback" in page


def test_a_candidate_from_a_broken_model_is_blocked(env: Settings, promoted: dict[str, Any]) -> None:
    first = promoted
    rng = np.random.default_rng(0)

    def random_unit(vectors: np.ndarray) -> np.ndarray:
        noise = rng.normal(size=vectors.shape)
        return noise / np.linalg.norm(noise, axis=1, keepdims=True)

    broken = degrade(env, random_unit)
    summary = promote(version=str(broken))

    assert summary["decision"] == "block" and summary["action"] == "block"
    assert summary["production_version"] == first["candidate_version"]
    assert any(r.startswith("chunk_ndcg@10") or r.startswith("doc_ndcg@10") for r in summary["reasons"])
    assert lancedb_store.tagged_version(table(env), "production") == first["candidate_version"]
    assert [r["action"] for r in log(env)] == ["promote", "block"]


def test_a_data_quality_failure_blocks(env: Settings, promoted: dict[str, Any]) -> None:
    not_unit = degrade(env, lambda v: v * 2.0)  # same ranking, but vectors are no longer unit-norm

    summary = evaluate(version=str(not_unit))

    assert summary["decision"] == "block"
    assert any("vector_norm" in r for r in summary["reasons"])
    failed = [q for q in summary["quality"] if not q["success"]]
    assert [q["column"] for q in failed] == ["vector_norm"]


def test_an_identical_candidate_is_blocked_and_not_called_better(
    env: Settings, promoted: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = promoted
    with pytest.raises(NothingToRollBackError):
        rollback(open_store(env), env, run_id="t", trigger="test")

    same = degrade(env, lambda v: v)  # a new version with identical content
    answered = count_extractive_answers(monkeypatch)
    second = promote(version=str(same))

    assert second["action"] == "block"
    assert second["reasons"] == [
        f"nothing to promote: version {same} holds the same chunks and vectors as production version "
        f"{first['candidate_version']}"
    ]
    assert second["verdict"] == "equivalent"  # the mode sweep alone does not make it look better
    deltas = {row["metric"]: row["delta"] for row in second["metrics"] if row["delta"] is not None}
    assert all(abs(d) < 1e-9 for m, d in deltas.items() if m.startswith(("doc_", "chunk_"))), deltas
    assert all(abs(d) < 0.02 for d in deltas.values()), deltas
    assert lancedb_store.tagged_version(table(env), "production") == first["candidate_version"]
    assert [(r["action"], r["version"]) for r in log(env)] == [
        ("promote", first["candidate_version"]),
        ("block", same),
    ]
    # the offline answerer answered no question twice with the same chunks: production, retrieving mostly the
    # candidate's chunks, reused their answers
    questions = len(second["per_question"])
    assert len(answered) == len(set(answered)) and questions <= len(answered) < 2 * questions


def test_a_perfect_retrieval_scores_one_on_the_non_llm_context_metrics(env: Settings) -> None:
    """ragas' non-LLM context metrics with the containment measure: a chunk that holds its passage counts."""
    from evaluations.golden import load_golden_set
    from evaluations.ragas_metrics import score_answers
    from evaluations.scoring import QuestionResult, reference_chunks
    from tasks.embed import embedding

    questions = [q for q in load_golden_set(env.golden_set) if q.answerable]
    references = reference_chunks(open_store(env).at(), questions)
    results = [
        QuestionResult(q.id, q.kind, q.question, [
            {"chunk_id": r.chunk_id, "doc_id": "", "text": r.text} for r in references[q.id]
        ], "an answer", {})
        for q in questions
    ]  # fmt: skip

    missing = score_answers(results, references, {q.id: q for q in questions}, embedding.embed_spec(env))

    assert all(references[q.id] for q in questions)  # every passage is held by a chunk of this version
    for name in ("non_llm_context_precision_with_reference", "id_based_context_recall"):
        assert name not in missing
        assert [r.scores[name] for r in results] == pytest.approx([1.0] * len(results)), name


def golden_subset(env: Settings, path: Path, answerable: int, unanswerable: int) -> Path:
    """The first questions of each kind of the test's golden set (LLM runs cost a call per question and metric)."""
    rows = [json.loads(x) for x in Path(env.golden_set).read_text().splitlines()]
    keep = [q for q in rows if q["kind"] != "unanswerable"][:answerable]
    keep += [q for q in rows if q["kind"] == "unanswerable"][:unanswerable]
    path.write_text("".join(json.dumps(q) + "\n" for q in keep))
    return path


def count_retrievals(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[int, str, float | None], int]:
    """(table version, mode, fusion weight) → how many questions were retrieved (top-up searches not counted)."""
    from evaluations import scoring

    counted: dict[tuple[int, str, float | None], int] = {}
    search = scoring.search

    def counting(table: Any, query: str, spec: Any, mode: str = "vector", *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("similarity"):  # a question's own retrieval; the document ranking's top-ups ask without
            key = (table.version, mode, kwargs.get("fusion_weight"))
            counted[key] = counted.get(key, 0) + 1
        return search(table, query, spec, mode, *args, **kwargs)

    monkeypatch.setattr(scoring, "search", counting)
    return counted


def test_llm_answers_and_llm_judged_metrics_through_a_local_endpoint(
    env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from .fake_llm import ANSWER, FakeLLM

    golden = golden_subset(env, tmp_path / "golden.jsonl", 8, 2)
    with FakeLLM() as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake-model")
        monkeypatch.setenv("RAGOPS_LLM_API_KEY", "sk-test-key")
        summary = evaluate(golden_set=str(golden))

    assert summary["answerer"] == "LLM fake-model"
    assert all(q["answer"] == ANSWER for q in summary["per_question"])
    for name in ("faithfulness", "answer_relevancy", "llm_context_precision_with_reference", "factual_correctness"):
        value = metric(summary, name)
        assert value is not None and -1 <= value <= 1, (name, summary["missing"].get(name))
    assert summary["missing"] == {}
    assert {r["model"] for r in llm.requests} == {"fake-model"}
    assert set(llm.authorization) == {"Bearer sk-test-key"}
    assert len(llm.requests) > 2 * 10  # answers plus ragas judgements


def test_an_llm_endpoint_that_fails_leaves_metrics_missing_and_a_required_one_blocks(
    env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from .fake_llm import FakeLLM

    policy = tmp_path / "strict.yaml"
    policy.write_text(
        (REPO / "evaluations/policies/default.yaml").read_text().replace("required: [", "required: [faithfulness, ")
    )
    golden = golden_subset(env, tmp_path / "golden.jsonl", 8, 2)
    with FakeLLM(fail_with=500) as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake-model")
        monkeypatch.setenv("RAGOPS_LLM_MAX_RETRIES", "1")
        summary = evaluate(golden_set=str(golden), policy=str(policy))

    assert summary["decision"] == "block"
    assert "faithfulness is required but was not computed" in summary["reasons"]
    assert all(q["answer"] is None and "answer" in q["errors"] for q in summary["per_question"])
    for name in ("faithfulness", "semantic_similarity", "rouge_score"):
        assert metric(summary, name) is None
        assert summary["missing"][name].startswith("no answer")
    assert metric(summary, "chunk_recall@10") is not None  # retrieval metrics need no LLM
    assert len(llm.requests) == 2 * 10  # one retry per answer, then it is given up


def test_aa_calibration_measures_the_judges_noise_and_widens_the_tolerance(
    env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from .fake_llm import FakeLLM

    lancedb_store.tag_version(table(env), "production", table(env).version)
    subset = golden_subset(env, tmp_path / "golden.jsonl", 10, 0)  # the 10 paired questions a gated metric needs
    policy = tmp_path / "judged.yaml"  # one mode and k = 5: fewer judge calls per run
    # gated on LLM context precision: five judged contexts per question make its mean fine-grained, so two noisy
    # runs practically never tie (faithfulness here is one verdict per question: two runs can tie by chance)
    policy.write_text(
        "primary_metric: chunk_ndcg@5\nmodes: [hybrid]\ngated: [llm_context_precision_with_reference, chunk_ndcg@5]\n"
    )
    monkeypatch.setenv("RAGOPS_EVAL_K", "5")
    retrieved = count_retrievals(monkeypatch)
    with FakeLLM(verdict_noise=0.3, seed=1) as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake-model")
        summary = evaluate(golden_set=str(subset), policy=str(policy), repeat=2)  # the fewest runs with a spread

    calibration = summary["calibration"]
    assert calibration["repeats"] == 2 and len(calibration["runs"]) == 2
    # candidate and production are one version: its 10 questions retrieved once, answered three times
    assert retrieved == {(summary["candidate_version"], "hybrid", None): 10}
    assert llm.count(kind="answer") == 3 * 10
    judged = "llm_context_precision_with_reference"
    assert calibration["floors"][judged] > 0  # the judge is noisy: identical runs differ
    assert calibration["floors"]["chunk_ndcg@5"] == 0 and calibration["floors"]["doc_ndcg@5"] == 0
    floor = calibration["floors"][judged]
    widened = [n for n in summary["notes"] if n.startswith(f"{judged}: tolerance widened")]
    capped = [r for r in summary["reasons"] if r.startswith(f"{judged}: the A/A noise floor")]
    # the policy's 0.02 absolute / 0.02 bootstrap, widened only when below the floor, up to max_widening 0.05
    assert bool(widened) == (0.02 < floor <= 0.05), (floor, summary["notes"])
    assert bool(capped) == (floor > 0.05), (floor, summary["reasons"])
    comparison = next(r for r in summary["metrics"] if r["metric"] == judged)
    assert comparison["production"] == calibration["runs"][0][judged]
    assert any(r.startswith("nothing to promote") for r in summary["reasons"])  # production against itself


def test_repeat_retrieves_production_once_per_mode_and_answers_and_judges_it_each_run(
    env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from evaluations import evaluation_tasks

    from .fake_llm import FakeLLM

    # given: production on one version, a candidate on a later one, an LLM answering and judging
    production = table(env).version
    lancedb_store.tag_version(table(env), "production", production)
    candidate = degrade(env, lambda v: v * 1.0)
    subset = golden_subset(env, tmp_path / "golden.jsonl", 4, 1)
    policy = tmp_path / "two-modes.yaml"
    policy.write_text("primary_metric: chunk_ndcg@5\nmodes: [vector, hybrid]\n")
    monkeypatch.setenv("RAGOPS_EVAL_K", "5")
    retrieved = count_retrievals(monkeypatch)
    answered: list[tuple[int, int, int]] = []  # per answering: version, answer requests, judge requests
    answer_table = evaluation_tasks.answer_table

    def counting_answers(settings: Settings, retrieval: Any, *args: Any, **kwargs: Any) -> Any:
        before = (llm.count(kind="answer"), llm.count(kind="judge"))
        scores = answer_table(settings, retrieval, *args, **kwargs)
        answered.append((retrieval.version, llm.count(kind="answer") - before[0], llm.count(kind="judge") - before[1]))
        return scores

    monkeypatch.setattr(evaluation_tasks, "answer_table", counting_answers)

    # when: production is scored three times
    with FakeLLM() as llm:
        monkeypatch.setenv("RAGOPS_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("RAGOPS_LLM_MODEL", "fake-model")
        summary = evaluate(golden_set=str(subset), policy=str(policy), repeat=3)

    # then: each version's questions retrieved once per mode; the candidate answered once, production three times,
    # every answering asking all 5 questions and as many judgements as the others
    assert (summary["candidate_version"], summary["production_version"]) == (candidate, production)
    assert retrieved == {(v, mode, None): 5 for v in (candidate, production) for mode in ("vector", "hybrid")}
    assert [(version, answers) for version, answers, _ in answered] == [(candidate, 5)] + [(production, 5)] * 3
    judged = [judge for _, _, judge in answered]
    assert judged[0] > 0 and judged == judged[:1] * 4, judged
    assert summary["calibration"]["repeats"] == 3 and len(summary["calibration"]["runs"]) == 3
    assert llm.count(kind="answer") == 4 * 5


def test_without_an_llm_one_version_is_retrieved_and_answered_once_for_both_sides_and_every_run(
    env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from evaluations import evaluation_tasks

    # given: production is the latest version; no LLM (nothing after retrieval varies between runs)
    lancedb_store.tag_version(table(env), "production", table(env).version)
    subset = golden_subset(env, tmp_path / "golden.jsonl", 6, 2)
    policy = tmp_path / "two-modes.yaml"
    policy.write_text("primary_metric: chunk_ndcg@10\nmodes: [vector, hybrid]\n")
    retrieved = count_retrievals(monkeypatch)
    answered = count_extractive_answers(monkeypatch)
    answerings: list[int] = []
    answer_table = evaluation_tasks.answer_table
    monkeypatch.setattr(
        evaluation_tasks,
        "answer_table",
        lambda s, r, *a, **k: answerings.append(r.version) or answer_table(s, r, *a, **k),
    )

    # when: production is scored three times
    summary = evaluate(golden_set=str(subset), policy=str(policy), repeat=3)

    # then: the version's 8 questions retrieved once per mode and answered once; the three runs are that answering
    version = summary["candidate_version"]
    assert summary["production_version"] == version
    assert retrieved == {(version, "vector", None): 8, (version, "hybrid", None): 8}
    assert answerings == [version] and len(answered) == 8
    calibration = summary["calibration"]
    assert calibration["repeats"] == 3 and calibration["runs"][0] == calibration["runs"][1] == calibration["runs"][2]
    assert all(floor == 0 for floor in calibration["floors"].values()), calibration["floors"]
    assert all(row["production"] == row["candidate"] for row in summary["metrics"]), summary["metrics"]


def test_a_policy_allowing_more_empty_documents_than_the_table_holds_is_refused_before_scoring(
    env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from evaluations import evaluation_tasks
    from evaluations.gate import BadPolicyError

    # given: a policy whose quality limit allows more empty documents than the candidate holds
    documents = len(lancedb_store.doc_ids(table(env)))
    policy = tmp_path / "loose.yaml"
    policy.write_text(
        f"primary_metric: chunk_ndcg@10\nmodes: [vector]\nquality:\n  max_empty_documents: {documents + 1}\n"
    )
    scored: list[int] = []
    retrieve = evaluation_tasks.retrieve_table
    monkeypatch.setattr(
        evaluation_tasks, "retrieve_table", lambda s, v, *a, **k: scored.append(v) or retrieve(s, v, *a, **k)
    )

    # when / then: refused with the field, the limit and the count, before any version is scored
    with pytest.raises(BadPolicyError) as refused:
        evaluate(policy=str(policy))
    message = str(refused.value)
    assert "quality.max_empty_documents" in message and f"more than the {documents} document(s)" in message
    assert scored == []


def test_maintenance_during_an_evaluation_keeps_the_old_candidate_it_judges(
    env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from evaluations import evaluation_tasks
    from tasks.store import maintenance

    # given: a candidate tagged long ago, production on a later version, and a newer version still
    candidate = table(env).version
    table(env).tags.create("candidate-old", candidate)
    production = degrade(env, lambda v: v * 1.0)
    lancedb_store.tag_version(table(env), "production", production)
    degrade(env, lambda v: v * 1.0)
    policy = tmp_path / "quick.yaml"
    policy.write_text("primary_metric: chunk_ndcg@10\nmodes: [vector]\nrequired: [chunk_ndcg@10]\n")
    subset = golden_subset(env, tmp_path / "golden.jsonl", 4, 0)

    # when: maintenance runs, a month later than the candidate's tag, as the evaluation starts scoring
    retained: list[Any] = []
    retrieve = evaluation_tasks.retrieve_table

    def retrieve_after_maintenance(settings: Settings, version: int, *args: Any, **kwargs: Any) -> Any:
        if not retained:
            retained.append(maintenance.apply_retention(settings, now=datetime.now(UTC) + timedelta(days=30)))
        return retrieve(settings, version, *args, **kwargs)

    monkeypatch.setattr(evaluation_tasks, "retrieve_table", retrieve_after_maintenance)
    summary = evaluate(version="candidate-old", golden_set=str(subset), policy=str(policy))

    # then: the evaluation judged both versions; maintenance kept them and the candidate's tag, saying why
    decided, result = retained[0]
    assert summary["candidate_version"] == candidate and summary["production_version"] == production
    assert candidate not in result.removed_versions and "candidate-old" not in result.deleted_tags
    assert decided.kept[candidate][0].startswith("read by the running evaluation")
    assert result.removed_versions  # it removed what nobody reads
    assert lancedb_store.tagged_version(table(env), "candidate-old") == candidate
