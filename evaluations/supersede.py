"""One evaluation per table at a time, and only of its newest candidate: a burst of ingests is judged once.

The `on-ingest` deployment starts an evaluation for every new version. Runs of one table take turns on a Prefect
global concurrency limit (`ragops-evaluate-<store>-<table>`, under Concurrency in the UI); a run whose version is no
longer the table's newest candidate when its turn comes ends at once as Superseded, so five quick ingests give the
evaluation already running and one of the newest version, not five.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tasks.settings import Settings
from tasks.store.interface import CANDIDATE_PREFIX, Store
from tasks.store.locks import global_slot, lock_name


def newer_candidate(store: Store, version: int) -> int | None:
    """The newest version after `version` that an ingest tagged as a candidate, or None."""
    newer = [
        int(v["version"])
        for v in store.versions()
        if int(v["version"]) > version and any(str(t).startswith(CANDIDATE_PREFIX) for t in v.get("tags") or [])
    ]
    return max(newer) if newer else None


@contextmanager
def evaluation_turn(settings: Settings, enabled: bool) -> Iterator[None]:
    """Wait for this table's evaluation slot (when `enabled` and a Prefect API is configured), hold it throughout."""
    from prefect.settings import PREFECT_API_URL

    if not enabled or not PREFECT_API_URL.value():
        yield
        return
    with global_slot(lock_name(settings, "evaluate"), None):
        yield
