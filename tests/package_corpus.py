"""A second real corpus that is not the bundled sample: the READMEs (long descriptions) of Python packages this
project pins in constraints.txt, read from their installed metadata. Nothing is downloaded."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

# Pinned in constraints.txt, Markdown READMEs of 4–7 k characters with headings.
PACKAGES = (
    "fsspec", "uvicorn", "pypdf", "starlette", "httpx", "urllib3", "platformdirs", "humanize", "attrs",
    "markdown-it-py",
)  # fmt: skip


def package_readme(name: str, max_chars: int = 6000) -> str:
    """The package's long description, cut at the last paragraph break before `max_chars`."""
    body = metadata.distribution(name).metadata.get_payload() or ""
    if len(body) <= max_chars:
        return body
    cut = body.rfind("\n\n", 0, max_chars)
    return body[: cut if cut > 0 else max_chars]


def write_package_corpus(root: Path, packages: tuple[str, ...] = PACKAGES, max_chars: int = 6000) -> Path:
    """Write each package's README as `<name>.md` under `root`; returns it."""
    root.mkdir(parents=True, exist_ok=True)
    for name in packages:
        (root / f"{name}.md").write_text(package_readme(name, max_chars), encoding="utf-8")
    return root
