"""The options several `ragops` commands share (flows/cli.py and its command groups)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TableOpt = Annotated[str | None, typer.Option("--table", help="Table name (RAGOPS_TABLE).")]
UriOpt = Annotated[str | None, typer.Option("--lancedb-uri", help="LanceDB URI (RAGOPS_LANCEDB_URI).")]
GoldenOpt = Annotated[str | None, typer.Option("--golden-set", help="Golden-set JSONL (RAGOPS_GOLDEN_SET).")]
PolicyOpt = Annotated[str | None, typer.Option("--policy", help="Gate policy YAML (RAGOPS_POLICY).")]
VersionOpt = Annotated[str | None, typer.Option("--version", help="Version number or tag (default: latest).")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON here.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's flow and task logs.")]
DraftsOpt = Annotated[
    bool, typer.Option("--allow-drafts", help="Judge by a golden set that still holds unreviewed generated drafts.")
]
