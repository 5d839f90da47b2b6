"""The options several `ragops` commands share, declared once, and how an option reaches the settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from tasks.settings import Settings

TableOpt = Annotated[str | None, typer.Option("--table", help="Table name (RAGOPS_TABLE).")]
UriOpt = Annotated[str | None, typer.Option("--lancedb-uri", help="LanceDB URI (RAGOPS_LANCEDB_URI).")]
GoldenOpt = Annotated[str | None, typer.Option("--golden-set", help="Golden-set JSONL (RAGOPS_GOLDEN_SET).")]
PolicyOpt = Annotated[str | None, typer.Option("--policy", help="Gate policy YAML (RAGOPS_POLICY).")]
VersionOpt = Annotated[str | None, typer.Option("--version", help="Version number or tag (default: latest).")]
JsonOpt = Annotated[
    Path | None,
    typer.Option("--json", help="Also write the summary as JSON here (-: print only the JSON, to stdout)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's flow and task logs.")]
DraftsOpt = Annotated[
    bool, typer.Option("--allow-drafts", help="Judge by a golden set that still holds unreviewed generated drafts.")
]


ENV_NAMES = {"store_uri": "RAGOPS_LANCEDB_URI"}  # an option whose setting has another name


def apply_overrides(**values: Any) -> None:
    """Command-line options win over the environment: pass them to the settings object through RAGOPS_*."""
    for name, value in values.items():
        if value is not None:
            os.environ[ENV_NAMES.get(name, f"RAGOPS_{name.upper()}")] = str(value)


def settings_for(**overrides: Any) -> Settings:
    """The settings, with these command-line options applied."""
    from tasks.settings import Settings

    apply_overrides(**overrides)
    return Settings()
