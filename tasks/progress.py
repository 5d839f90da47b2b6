"""Progress reporting that works the same in the CLI (rich bars) and in Prefect (log lines)."""

from __future__ import annotations

import time
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


class StageClock:
    """Seconds spent in each named stage of a run, for summaries and benchmarks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block and add it to `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)
