"""A second real corpus that is not the bundled sample: the READMEs of ten Python packages this project pins
(tests/data/package-readmes, copied from their wheels' METADATA; see its NOTICE.md). Committed, not read from the venv:
wheels from some mirrors carry no description."""

from __future__ import annotations

import shutil
from pathlib import Path

DATA = Path(__file__).parent / "data" / "package-readmes"
PACKAGES = (
    "fsspec", "uvicorn", "pypdf", "starlette", "httpx", "urllib3", "platformdirs", "humanize", "attrs",
    "markdown-it-py",
)  # fmt: skip


def write_package_corpus(root: Path, packages: tuple[str, ...] = PACKAGES) -> Path:
    """Copy each package's README as `<name>.md` under `root`; returns it."""
    root.mkdir(parents=True, exist_ok=True)
    for name in packages:
        text = (DATA / f"{name}.md").read_text(encoding="utf-8")
        assert len(text) > 2000, f"{name}.md is too short to be the README"
        shutil.copyfile(DATA / f"{name}.md", root / f"{name}.md")
    return root
