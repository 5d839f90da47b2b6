"""Promotion under concurrency: promotions, blocks and rollbacks racing each other (threads and processes) while a
reader serves queries from `production` (real LanceDB, real embeddings). Readers only ever see whole versions, and
afterwards the promotion log replays to the tag."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluations import promotion
from tasks.embed import embedding
from tasks.errors import StoreConflictError
from tasks.schemas import Chunk, Document
from tasks.serve.retrieval import search
from tasks.settings import Settings
from tasks.store import fragments, lancedb_store
from tasks.store.backends import open_store
from tasks.store.interface import PRODUCTION_TAG
from tasks.store.production import ProductionState, production_state

from .conftest import REPO

VENV = [
    "Virtual environments isolate the packages of one project from those of another.",
    "Create one with python -m venv and activate it before installing packages.",
]
VENV_EDITED = [*VENV[:1], "Create one with `python -m venv .venv`.", "Activate it, then install with pip."]
TOML = ["The tomllib module parses TOML documents; it cannot write them."]
RELEASES = ["Python publishes a new major release every year, in October."]
# Each step is one commit, so one version: (documents to write, documents whose other chunks are dropped).
STEPS: list[tuple[dict[str, list[str]], list[str]]] = [
    ({"venv.md": VENV}, ["venv.md"]),
    ({"toml.md": TOML}, ["toml.md"]),
    ({"venv.md": VENV_EDITED}, ["venv.md"]),
    ({"releases.md": RELEASES}, ["releases.md"]),
    ({}, ["toml.md"]),
]
QUERY = "How do I keep the packages of two projects apart?"
ROUNDS = 30


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh local LanceDB folder (environment too, for worker processes)."""
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(tmp_path / "db"))
    monkeypatch.setenv("RAGOPS_TABLE", "chunks")
    return Settings()


def build_versions(settings: Settings) -> dict[int, frozenset[str]]:
    """Write STEPS with real embeddings; returns version → its chunk ids (five different sets)."""
    spec = embedding.embed_spec(settings)
    dim = embedding.embedding_dim(spec)
    model = embedding.model_name(settings)
    db = lancedb_store.connect(settings)
    lancedb_store.ensure_chunk_table(db, settings.table, dim, model)
    known: dict[int, frozenset[str]] = {}
    for docs, replaced in STEPS:
        chunks = [
            Chunk(doc_id, i, text, len(text.split())) for doc_id, texts in docs.items() for i, text in enumerate(texts)
        ]
        documents = {
            doc_id: Document(doc_id, "\n\n".join(texts), doc_id, "test", doc_id, "md") for doc_id, texts in docs.items()
        }
        vectors = (
            embedding.embed_texts([c.text for c in chunks], spec, role="passage")
            if chunks
            else np.zeros((0, dim), np.float32)
        )
        rows = fragments.chunk_rows(chunks, vectors, documents, {d: f"h-{d}" for d in docs}, model, dim)
        result = fragments.write_rows(settings, settings.table, rows, replaced)
        assert result is not None
        at_version = open_store(settings).at(result.version)
        known[result.version] = frozenset(at_version.rows(["chunk_id"]).column("chunk_id").to_pylist())
    assert len(set(known.values())) == len(STEPS)
    return known


def promote(
    settings: Settings, version: int, production_version: int | None, run_id: str = "test", mode: str = "vector"
) -> str:
    """A gate decision to promote `version` (served in `mode`), judged against `production_version`."""
    return promotion.record_decision(
        open_store(settings),
        settings,
        version=version,
        production_version=production_version,
        mode=mode,
        decision={"decision": "promote", "reasons": []},
        metrics={},
        policy_hash="",
        run_id=run_id,
        trigger="test",
        report="",
    )


def churn(settings: Settings, versions: list[int], rounds: int, seed: int, worker: str) -> dict[str, int]:
    """Promote, block or roll back at random, as concurrent promote flows and operators would; count what happened."""
    rng = random.Random(seed)
    store = open_store(settings)
    done: Counter[str] = Counter()
    for i in range(rounds):
        roll = rng.random()
        if roll < 0.3:
            try:
                promotion.rollback(store, settings, run_id=f"{worker}-{i}", trigger="test")
                done["rollback"] += 1
            except promotion.NothingToRollBackError:
                done["nothing to roll back"] += 1
            continue
        production = production_state(store, settings).version  # what the evaluation compared with
        time.sleep(rng.uniform(0, 0.005))  # the evaluation
        candidate = rng.choice([v for v in versions if v != production])
        if roll < 0.4:
            promotion.record_decision(
                store,
                settings,
                version=candidate,
                production_version=production,
                mode="vector",
                decision={"decision": "block", "reasons": ["worse"]},
                metrics={},
                policy_hash="",
                run_id=f"{worker}-{i}",
                trigger="test",
                report="",
            )
            done["block"] += 1
            continue
        try:
            promote(settings, candidate, production, run_id=f"{worker}-{i}")
            done["promote"] += 1
        except StoreConflictError:
            done["refused"] += 1
    return dict(done)


def serve_queries(
    settings: Settings, known: dict[int, frozenset[str]], stop: threading.Event, seen: list[int], problems: list[str]
) -> None:
    """Reopen `production` and query it until stopped; record each version seen and anything that is not whole."""
    spec = embedding.embed_spec(settings)
    store = open_store(settings)
    while not stop.is_set():
        try:
            table = store.at(PRODUCTION_TAG)
            version = table.version
            ids = frozenset(table.rows(["chunk_id"]).column("chunk_id").to_pylist())
            rows = table.count()
            hits = {hit.chunk_id for hit in search(table, QUERY, spec, k=10)}
        except Exception as exc:  # any failure to serve is a finding
            problems.append(f"{type(exc).__name__}: {exc}")
            continue
        if known.get(version) != ids or rows != len(ids) or not hits <= ids or not hits:
            problems.append(f"version {version}: {rows} rows, ids {sorted(ids)}, hits {sorted(hits)}")
        seen.append(version)


def assert_log_agrees_with_tag(settings: Settings, done: Counter[str]) -> None:
    """The log is a serial history: each record starts where the one before left production, and it replays to
    the tag; every reported outcome is in it exactly once."""
    store = open_store(settings)
    tag = store.tagged(PRODUCTION_TAG)
    records = store.log_records(settings.promotions_table)
    stack: list[int] = []
    for i, record in enumerate(records):
        assert record["previous_version"] == (stack[-1] if stack else None), (i, record)
        if record["action"] == "promote":
            stack.append(record["version"])
        elif record["action"] == "rollback":
            stack.pop()
            assert stack[-1] == record["version"], (i, record)
    assert promotion.production_history(records) == stack
    assert stack[-1] == tag == production_state(store, settings).version
    assert Counter(r["action"] for r in records) == Counter(
        {"promote": done["promote"], "rollback": done["rollback"], "block": done["block"]}
    )


def run_with_reader(settings: Settings, known: dict[int, frozenset[str]], work: Any) -> tuple[Counter[str], list[int]]:
    """Run `work()` (returning outcome counts) while a reader serves queries from production; the reader must see
    only whole versions."""
    stop, seen, problems = threading.Event(), [], []
    reader = threading.Thread(target=serve_queries, args=(settings, known, stop, seen, problems))
    reader.start()
    try:
        done = work()
    finally:
        stop.set()
        reader.join()
    assert problems == []
    return done, seen


@pytest.mark.slow
def test_concurrent_promotions_and_rollbacks_in_threads_keep_the_log_and_tag_in_step(settings: Settings) -> None:
    # given five versions and a first promotion
    known = build_versions(settings)
    versions = sorted(known)
    promote(settings, versions[0], None)

    # when three threads promote, block and roll back at random while a reader queries production
    def work() -> Counter[str]:
        with ThreadPoolExecutor(3) as pool:
            outcomes = pool.map(lambda i: churn(settings, versions, ROUNDS, i, f"thread{i}"), range(3))
            return sum((Counter(o) for o in outcomes), Counter({"promote": 1}))

    done, seen = run_with_reader(settings, known, work)

    # then the reader saw production move, always to a whole version, and the log agrees with the tag
    assert len(set(seen)) > 1, seen
    assert done["promote"] > 1 and done["rollback"] > 0, done
    assert_log_agrees_with_tag(settings, done)


@pytest.mark.slow
def test_concurrent_promotions_and_rollbacks_in_processes_keep_the_log_and_tag_in_step(
    settings: Settings, tmp_path: Path
) -> None:
    # given five versions and a first promotion
    known = build_versions(settings)
    versions = sorted(known)
    promote(settings, versions[0], None)

    # when two processes promote, block and roll back at random (starting together) while a reader queries
    code = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from tasks.settings import Settings\n"
        "from tests.test_faults_promotion import churn\n"
        "folder, worker = Path(sys.argv[1]), sys.argv[2]\n"
        "(folder / worker).touch()\n"
        "while len(list(folder.iterdir())) < 2:\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps(churn(Settings(), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), worker)))\n"
    )
    barrier = tmp_path / "ready"
    barrier.mkdir()

    def work() -> Counter[str]:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(barrier), f"process{i}", json.dumps(versions), str(ROUNDS), str(i)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        done = Counter({"promote": 1})
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            done += Counter(json.loads(out.splitlines()[-1]))
        return done

    done, seen = run_with_reader(settings, known, work)

    # then the reader saw production move, always to a whole version, and the log agrees with the tag
    assert len(set(seen)) > 1, seen
    assert done["promote"] > 1 and done["rollback"] > 0, done
    assert_log_agrees_with_tag(settings, done)


def test_a_promotion_judged_against_a_production_that_has_since_moved_is_refused(settings: Settings) -> None:
    # given production at v2 after v1, and a candidate v3 evaluated against v2
    v1, v2, v3 = sorted(build_versions(settings))[:3]
    promote(settings, v1, None)
    promote(settings, v2, v1)
    store = open_store(settings)
    evaluated_against = production_state(store, settings).version

    # when production is rolled back while v3 is evaluated, and then the gate says promote v3
    promotion.rollback(store, settings, run_id="operator", trigger="test")
    with pytest.raises(StoreConflictError, match=f"moved from version {v2} to {v1}"):
        promote(settings, v3, evaluated_against)

    # then production stays where the rollback put it, the log has no promotion of v3, and the lock file next to
    # the table does not disturb LanceDB
    assert production_state(store, settings) == ProductionState(v1, "vector")
    records = store.log_records(settings.promotions_table)
    assert [(r["action"], r["version"]) for r in records] == [("promote", v1), ("promote", v2), ("rollback", v1)]
    assert sorted(lancedb_store.connect(settings).list_tables().tables) == ["chunks", "promotions"]
