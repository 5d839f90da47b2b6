"""Small corpora with golden sets of their own, for the tests that run deployments on a real Prefect server: the
workshop handbook (tests/own_corpus.py) with its sixteen questions, and a slice of the bundled sample with the
questions of the bundled golden set that cite it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from evaluations.golden import read_golden_set, write_golden_set

from .conftest import REPO, SAMPLE, SMALL_DOCS
from .own_corpus import write_own_corpus
from .test_gate_calibration import QUESTIONS

BUNDLED_GOLDEN = REPO / "datasets" / "golden" / "python-docs.jsonl"
# Questions of the bundled set whose documents are small (the PDF is one of SMALL_DOCS already): fourteen, enough
# for the gate's paired bootstrap (min_questions 10).
SAMPLE_QUESTIONS = ("q016", "q021", "q023", "q029", "q035", "q036", "q039", "q047", "q049", "q050", "q052", "q053",
                    "q054", "q056")  # fmt: skip


def write_workshop(root: Path, table: str) -> tuple[Path, Path]:
    """The workshop handbook under `root/handbook` and its golden set, written for `table`: (corpus, golden set)."""
    corpus = write_own_corpus(root / "handbook")
    golden = root / f"{table}-golden.jsonl"
    header = {"format": 1, "version": 1, "corpus": {"source": str(corpus), "table": table, "documents": 6},
              "written_by": "hand, tests/test_gate_calibration.py"}  # fmt: skip
    write_golden_set(golden, QUESTIONS, header)
    return corpus, golden


def write_sample_slice(root: Path) -> tuple[Path, Path]:
    """SMALL_DOCS and the documents SAMPLE_QUESTIONS cite, copied from the sample under `root/python-docs`, and a
    golden set of those questions (the bundled set's header and floors): (corpus, golden set)."""
    bundled = read_golden_set(BUNDLED_GOLDEN)
    questions = [q for q in bundled.questions if q.id in SAMPLE_QUESTIONS]
    assert len(questions) == len(SAMPLE_QUESTIONS)
    documents = sorted({*SMALL_DOCS, *(e.doc_id for q in questions for e in q.evidence)})
    corpus = root / "python-docs"
    for rel in documents:
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / rel, corpus / rel)
    header = json.loads(json.dumps(bundled.header))
    header["corpus"] = {**header.get("corpus", {}), "source": str(corpus), "documents": len(documents)}
    header.pop("sha256", None)
    golden = root / "python-docs-slice.jsonl"
    write_golden_set(golden, questions, header)
    return corpus, golden


def change_page(corpus: Path, n: int) -> None:
    """Append section `n` to the soldering page: the next ingest writes a new version."""
    page = corpus / "workshop" / "soldering.md"
    page.write_text(
        page.read_text(encoding="utf-8")
        + f"\n## Note {n}\n\nBench {n} keeps its own tip cleaner; return it to drawer {n} after the session.\n",
        encoding="utf-8",
    )
