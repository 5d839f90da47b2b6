"""What the pipeline hands on instead of reading twice: the golden set it validated (read again only when its file
changed) and the ingest's count of the source's documents (the quality check does not list and read the source)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.encoders import jsonable_encoder

import flows.evaluate
from evaluations import evaluation_tasks
from evaluations.golden import BadGoldenSetError
from flows.evaluate import GoldenRef, load_inputs
from tasks.settings import Settings

from .conftest import REPO

GOLDEN = REPO / "datasets" / "golden" / "python-docs.jsonl"


@pytest.fixture
def golden_copy(tmp_path: Path) -> Path:
    path = tmp_path / "golden.jsonl"
    shutil.copyfile(GOLDEN, path)
    return path


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every golden set flows/evaluate.py reads from now on."""
    seen: list[str] = []
    real = flows.evaluate.read_golden_set

    def counting(path: str | Path) -> Any:
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(flows.evaluate, "read_golden_set", counting)
    return seen


def test_a_golden_set_read_once_is_handed_on_without_reading_it_again(golden_copy: Path, reads: list[str]) -> None:
    ref = GoldenRef.read(str(golden_copy))

    first, again = ref.load(), ref.load()

    assert first is again and reads == [str(golden_copy)]
    assert ref.sha256 == first.sha256 and len(first.questions) > 10


def test_a_golden_set_edited_after_it_was_read_is_read_again(golden_copy: Path, reads: list[str]) -> None:
    ref = GoldenRef.read(str(golden_copy))
    lines = golden_copy.read_text().splitlines()
    golden_copy.write_text("\n".join(lines[:-1]) + "\n")  # one question fewer
    stat = golden_copy.stat()
    os.utime(golden_copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    edited = ref.load()

    assert reads == [str(golden_copy)] * 2
    assert len(edited.questions) == len(ref.load().questions) == len(GoldenRef.read(str(GOLDEN)).load().questions) - 1
    assert edited.sha256 != ref.sha256


def test_a_golden_set_that_came_as_parameters_is_read_where_it_is_used(golden_copy: Path, reads: list[str]) -> None:
    ref = GoldenRef.read(str(golden_copy))
    recorded = jsonable_encoder(ref)  # what a flow run's parameters keep of it

    assert recorded == {"path": str(golden_copy), "sha256": ref.sha256}
    assert GoldenRef.model_validate(recorded).load().sha256 == ref.sha256
    assert reads == [str(golden_copy)] * 2


def test_an_unusable_golden_set_fails_when_first_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "b"}\n')

    with pytest.raises(BadGoldenSetError, match=r"bad\.jsonl:1: field 'question'"):
        GoldenRef.read(str(bad))


def test_the_evaluation_uses_the_set_it_was_handed_and_reads_it_only_on_its_own(
    golden_copy: Path, tmp_path: Path, reads: list[str]
) -> None:
    settings = Settings(golden_set=str(golden_copy), table="chunks")
    ref = GoldenRef.read(str(golden_copy))

    handed = load_inputs(settings, allow_drafts=False, golden=ref)
    alone = load_inputs(settings, allow_drafts=False)
    other = tmp_path / "other.jsonl"
    shutil.copyfile(GOLDEN, other)
    configured = load_inputs(settings, allow_drafts=False, golden=GoldenRef.read(str(other)))

    assert handed.golden is ref.load()
    assert alone.golden.sha256 == handed.golden.sha256 and alone.golden is not handed.golden
    assert configured.golden.path == str(golden_copy)  # a set for another path is not the configured one
    assert reads == [str(golden_copy), str(golden_copy), str(other), str(golden_copy)]
    assert handed.policy.primary_metric and handed.policy_hash == alone.policy_hash


def test_the_quality_check_expects_the_documents_it_is_handed_without_listing_the_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected: list[Any] = []

    def not_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the source was listed and read again")

    def quality_results(settings: Settings, version: int, policy: Any, wanted: Any, rows: Any) -> list[Any]:
        expected.append(wanted)
        return []

    monkeypatch.setattr(evaluation_tasks, "discover", not_again)
    monkeypatch.setattr(evaluation_tasks, "quality_results", quality_results)
    monkeypatch.setattr(evaluation_tasks, "get_run_logger", lambda: logging.getLogger("test"))

    checked = evaluation_tasks.check_data_quality.fn(Settings(), 3, None, "datasets/x", 10, ["b.md", "a.md"])  # type: ignore[arg-type]

    assert checked == [] and expected == [{"a.md", "b.md"}]
    assert json.dumps(checked) == "[]"
