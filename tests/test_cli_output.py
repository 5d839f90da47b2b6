"""What the command line prints is printed as is: paths, texts and messages holding rich markup stay literal."""

from __future__ import annotations

import pytest

from flows.cli import output


def test_an_error_line_prints_markup_literally(capsys: pytest.CaptureFixture[str]) -> None:
    output.error("source 'docs/a[/x]b.md' returns list[str] and [red]x[/red]")
    err = capsys.readouterr().err
    assert "error: source 'docs/a[/x]b.md' returns list[str] and [red]x[/red]" in " ".join(err.split())


def test_an_unexpected_failure_names_the_unreachable_dask_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGOPS_DASK_ADDRESS", "tcp://10.0.0.9:8786")
    text = output.explain(OSError("Timed out trying to connect to tcp://10.0.0.9:8786 after 30 s"))
    assert text.startswith("the Dask scheduler at tcp://10.0.0.9:8786 cannot be reached") and "OSError" in text
    monkeypatch.delenv("RAGOPS_DASK_ADDRESS")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    text = output.explain(RuntimeError("Failed to reach API at http://127.0.0.1:9/api/"))
    assert text.startswith("the Prefect API at http://127.0.0.1:9/api cannot be reached: `ragops server start`")
    assert output.explain(ValueError("plain")) == "ValueError: plain"
