"""Locks that serialise the writers of a table: the commit of an ingest run, and changes of `production`.

On a local store a lock is an flock on a file beside the table: it excludes other processes and threads on the
machine, and the kernel releases it when its holder dies. On an object store (s3://, gs://, az://) the writers can be
on different machines, so the lock is a Prefect global concurrency limit of 1 slot, held on a lease that the holder
renews and that lapses if it dies (the server's lease service frees the slot). Every writer must then talk to the
same Prefect server (PREFECT_API_URL): without one, Prefect starts a temporary server per process, whose locks
exclude nothing across processes and whose leases never lapse (no lease service runs there), so object-store writes
are refused (`require_shared_lock_server`).

Lance's own commit conflict detection does not suffice to do without the lock: an ingest's commit adds new fragments
and deletes rows of the documents it replaced, and two such commits that touch disjoint fragments rebase onto each
other without a conflict, so a document both runs wrote would be stored twice; and a promotion moves a tag of the
chunk table and appends a record to the promotion log, two tables no single Lance commit covers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.errors import SettingsError, StoreConflictError
from tasks.settings import Settings

log = logging.getLogger(__name__)

LEASE_S = 60  # the shortest lease a Prefect server grants: a killed holder's slot frees this long after its death
_REACHED: set[str] = set()  # Prefect APIs this process has found healthy (checked once each)


def require_shared_lock_server(location: str) -> None:
    """Refuse to write the store at `location` when it is an object store and no shared Prefect server holds its
    locks (PREFECT_API_URL unset, or not answering); a local store needs none."""
    if "://" not in location or location.startswith("file://"):
        return
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value() or "").rstrip("/")
    advice = (
        "every writer of an object store must share one Prefect server for the table's commit and promotion locks: "
        "start one (`ragops server start`, or `prefect server start` on a machine every writer reaches) and set "
        "PREFECT_API_URL to its API (http://HOST:4200/api) in the environment of every ragops process"
    )
    if not api:
        raise SettingsError(
            f"refusing to write {location}: PREFECT_API_URL is not set, so the locks would live in a temporary "
            f"Prefect server of this process alone and exclude no other writer; {advice}"
        )
    if api in _REACHED:
        return
    if not _healthy(api):
        raise SettingsError(f"refusing to write {location}: the Prefect API at {api} does not answer; {advice}")
    _REACHED.add(api)


def _healthy(api: str, timeout_s: float = 10.0) -> bool:
    """True when the Prefect API answers its health check (with the API key, for Prefect Cloud)."""
    import urllib.error
    import urllib.request

    key = os.environ.get("PREFECT_API_KEY", "")
    try:
        request = urllib.request.Request(f"{api}/health", headers={"Authorization": f"Bearer {key}"} if key else {})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):  # refused, timed out, not a URL, an HTTP error status
        return False


def lock_name(settings: Settings, purpose: str) -> str:
    """The global concurrency limit's name for one table and purpose (the URI is part of it: two stores, two locks)."""
    where = re.sub(r"[^A-Za-z0-9]+", "-", settings.lancedb_uri).strip("-")[-80:]
    return f"ragops-{purpose}-{where}-{settings.table}"


@contextmanager
def table_lock(settings: Settings, purpose: str, exclusive: bool = True) -> Iterator[None]:
    """Hold `purpose`'s lock on the table: exclusive to write, shared (local stores only) to read consistently."""
    if settings.is_local_store:
        path = Path(settings.lancedb_uri.removeprefix("file://")) / f"{settings.table}.{purpose}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:  # closing the file releases the lock, also when the holder dies
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        return
    if not exclusive:  # readers of an object store take no lock: a tag and its log record may be a moment apart
        yield
        return
    require_shared_lock_server(settings.lancedb_uri)
    with global_slot(lock_name(settings, purpose), settings.lock_timeout_s):
        yield


@contextmanager
def global_slot(name: str, timeout_s: float | None) -> Iterator[None]:
    """One slot of a Prefect global concurrency limit, created with 1 slot if it does not exist yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            limit = None
        if limit is None:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                log.info("created the global concurrency limit %s (1 slot)", name)
            except ObjectAlreadyExists:  # another writer created it a moment ago
                pass
        elif limit.limit != 1 or not limit.active:
            raise StoreConflictError(
                f"the global concurrency limit {name!r} must be active with 1 slot to serve as a lock "
                f"(it has {limit.limit}, active={limit.active}); fix it in the Prefect UI or delete it"
            )
    try:
        with concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=True, lease_duration=LEASE_S):
            yield
    except TimeoutError as exc:
        raise StoreConflictError(
            f"waited {timeout_s:.0f} s for the lock {name!r}: another run holds it (see Concurrency in the Prefect UI)"
        ) from exc
