"""The gate's operating characteristics, small: candidates of known effect built on a real promoted table, scored by
the evaluate flow's `score_table` and judged by `judge` on many subsamples of the golden set (benchmarks/gate_trials.py;
the full study is benchmarks/gate_calibration.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.gate_trials import run_trials, true_delta
from evaluations.evaluation_tasks import score_table
from evaluations.gate import load_policy
from evaluations.golden import Evidence, GoldenQuestion
from evaluations.judgement import prepare
from evaluations.scoring import VersionScores, reference_chunks
from flows.ingest import ingest
from tasks.settings import Settings
from tasks.store import lancedb_store
from tasks.store.backends import open_store
from tasks.store.sql import in_list

from .conftest import REPO, copy_small_corpus
from .own_corpus import write_own_corpus

# (question, document, a sentence of it, verbatim): sixteen answerable questions on the workshop handbook
ITEMS = [
    ("How often should a bicycle chain be fully degreased?", "bikes/chain-care.md",
     "degrease it fully once a month by running it through a clip-on scrubber filled with a citrus solvent"),
    ("How long should a chain dry before new lubricant goes on?", "bikes/chain-care.md",
     "Let the chain dry for at least an hour before you add new lubricant."),
    ("At what elongation should an eleven-speed chain be replaced?", "bikes/chain-care.md",
     "Replace the chain when a wear gauge shows 0.5 percent elongation on an eleven-speed drivetrain"),
    ("When are rim brake pads worn out?", "bikes/brakes.md",
     "Rim brake pads are worn out when the grooves in their rubber are no longer visible."),
    ("Can mineral oil and DOT brake fluid be mixed?", "bikes/brakes.md",
     "mineral oil and DOT fluid destroy each other's seals, so never mix them"),
    ("Why do hydraulic brakes feel spongy?", "bikes/brakes.md",
     "Hydraulic brakes feel spongy when air has entered the hose."),
    ("What should be mixed with green material in a compost heap?", "garden/compost.md",
     "Mix green material, such as grass clippings and vegetable peelings, with brown material"),
    ("How hot does the centre of a working compost heap get?", "garden/compost.md",
     "A working heap reaches between 55 and 65 degrees Celsius in its centre within a few days of turning"),
    ("How often should the compost heap be turned?", "garden/compost.md",
     "Turn the heap every two weeks with a fork to let air in."),
    ("How often are the hives inspected in spring and early summer?", "garden/bees.md",
     "Inspect each hive every seven to nine days from April to July, when colonies prepare to swarm."),
    ("How much honey does a colony need for the winter?", "garden/bees.md",
     "Leave each colony at least eighteen kilograms of honey for the winter"),
    ("What does finding eggs in a hive prove?", "garden/bees.md",
     "Look for eggs, which prove the queen was present within the last three days"),
    ("Which sharpening stones are used to hone chisels?", "workshop/woodworking.md",
     "Hone them on the 1000-grit stone, then the 6000-grit stone, and strop them on leather"),
    ("How long should clamps stay on after a glue-up?", "workshop/woodworking.md",
     "Leave the clamps on for at least one hour, and do not stress the joint for a full day."),
    ("What temperature should the soldering iron be for lead-free solder?", "workshop/soldering.md",
     "Set the iron to 350 degrees Celsius for leaded solder and 380 degrees for lead-free solder."),
    ("What does a good solder joint look like?", "workshop/soldering.md",
     "A good joint is shiny and shaped like a small volcano; a dull, balled joint is cold and must be reheated."),
]  # fmt: skip
QUESTIONS = [
    GoldenQuestion(
        id=f"w{i:02d}", question=q, kind="factoid", reference_answer=p, evidence=[Evidence(doc_id=d, passage=p)]
    )
    for i, (q, d, p) in enumerate(ITEMS, start=1)
]
TRIALS = 100


@pytest.fixture(scope="module")
def promoted(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """The workshop handbook ingested and tagged production; a second folder of unrelated documents beside it."""
    root = tmp_path_factory.mktemp("calibration")
    write_own_corpus(root / "handbook")
    copy_small_corpus(root / "unrelated")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGOPS_LANCEDB_URI", str(root / "db"))
        mp.setenv("RAGOPS_DASK_WORKERS", "1")
        mp.delenv("RAGOPS_LLM_BASE_URL", raising=False)
        ingest(str(root / "handbook"))
        settings = Settings()
        table = lancedb_store.open_table(lancedb_store.connect(settings), settings.table)
        lancedb_store.tag_version(table, lancedb_store.PRODUCTION_TAG, table.version)
        yield root, int(table.version)


@pytest.fixture
def settings(promoted: tuple[Path, int], monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", str(promoted[0] / "db"))
    monkeypatch.setenv("RAGOPS_DASK_WORKERS", "1")
    monkeypatch.delenv("RAGOPS_LLM_BASE_URL", raising=False)
    return Settings()


def latest(settings: Settings):  # type: ignore[no-untyped-def]
    return lancedb_store.open_table(lancedb_store.connect(settings), settings.table)


def restore(settings: Settings, version: int) -> int:
    table = latest(settings)
    table.checkout(version)
    table.restore()
    return int(latest(settings).version)


def promotion_rate(settings: Settings, candidate: int, production: int) -> tuple[float, float, list[str]]:
    """Score both versions once, judge on TRIALS subsamples of 70 %: (promotion rate, true Δ, a block's reasons)."""
    policy, _ = load_policy(REPO / "evaluations/policies/default.yaml")
    store = open_store(settings)
    prep = prepare(QUESTIONS, [store.at(v) for v in (candidate, production)])

    def scored(version: int) -> VersionScores:
        return score_table(
            settings, version, prep.questions, policy.modes, policy.primary_metric, False, prep.ideal_units
        )

    cand, prod = scored(candidate), scored(production)
    same = store.at(candidate).same_rows(store.at(production))
    outcome = run_trials(
        policy,
        cand,
        prod,
        prep,
        trials=TRIALS,
        share=0.7,
        seed=5,
        unchanged=f"version {candidate} holds the same chunks and vectors as production" if same else None,
    )
    return outcome.rate, true_delta(cand, prod, policy.primary_metric), outcome.example_block


@pytest.mark.slow
def test_identical_candidate_is_always_blocked(settings: Settings, promoted: tuple[Path, int]) -> None:
    production = promoted[1]
    candidate = restore(settings, production)  # a new version with production's rows
    rate, delta, reasons = promotion_rate(settings, candidate, production)
    assert delta == 0
    assert rate == 0
    assert any(r.startswith("nothing to promote") for r in reasons), reasons


@pytest.mark.slow
def test_candidate_without_the_evidence_of_half_the_questions_is_blocked(
    settings: Settings, promoted: tuple[Path, int]
) -> None:
    production = promoted[1]
    restore(settings, production)
    refs = reference_chunks(open_store(settings).at(), QUESTIONS[::2])
    lost = sorted({r.chunk_id for chunks in refs.values() for r in chunks})
    latest(settings).delete(in_list("chunk_id", lost))
    rate, delta, _ = promotion_rate(settings, int(latest(settings).version), production)
    assert delta < -0.1
    assert rate <= 0.05, (rate, delta)


@pytest.mark.slow
def test_candidate_with_unrelated_documents_added_is_promoted(settings: Settings, promoted: tuple[Path, int]) -> None:
    production = promoted[1]
    restore(settings, production)
    ingest(str(promoted[0] / "unrelated"), new_source="unrelated")  # another source: the handbook's documents stay
    candidate = int(latest(settings).version)
    assert lancedb_store.doc_ids(latest(settings)) > lancedb_store.doc_ids(
        lancedb_store.open_table(lancedb_store.connect(settings), settings.table, production)
    )
    rate, delta, reasons = promotion_rate(settings, candidate, production)
    assert abs(delta) < 0.03, delta
    assert rate >= 0.9, (rate, delta, reasons)
