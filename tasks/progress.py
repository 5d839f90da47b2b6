"""Progress reporting that works the same in the CLI (rich bars) and in Prefect (log lines)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressHook = Callable[[str, int, int], None]  # (stage, done, total)
_hooks: list[ProgressHook] = []


@contextmanager
def progress_hook(hook: ProgressHook) -> Iterator[None]:
    """Send progress of work started inside this block to `hook`."""
    _hooks.append(hook)
    try:
        yield
    finally:
        _hooks.remove(hook)


def report_progress(stage: str, done: int, total: int) -> None:
    """Tell every listener how far `stage` has come."""
    for hook in list(_hooks):
        hook(stage, done, total)
