"""Open the table a command works on, or end it with the standard `no table …` error line.

Every command reaches the chunk table through the storage seam (tasks/store/interface.py); the quick reads of
`ragops versions` and `ragops sources` go through tasks/store/version_info.py, which reads with Lance alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flows.cli import output

if TYPE_CHECKING:
    from tasks.settings import Settings
    from tasks.store.interface import Store, TableVersion

INGEST_FIRST = "run `ragops ingest` first"


def store_for(settings: Settings) -> Store:
    """The settings' store, whether or not its chunk table exists yet."""
    from tasks.store.backends import open_store

    return open_store(settings)


def require_store(settings: Settings, hint: str = INGEST_FIRST) -> Store:
    """The settings' store; exit 2 with `no table T at URI: hint` when its chunk table does not exist."""
    store = store_for(settings)
    with output.exit_on():
        store.require(hint)
    return store


def open_version(settings: Settings, version: int | str | None, hint: str = INGEST_FIRST) -> TableVersion:
    """The chunk table at a version number or tag (latest when None); exit 2 when the table or version is absent."""
    store = require_store(settings, hint)
    with output.exit_on():
        return store.at(version)


def dataset_at(settings: Settings, version: int | str | None = None) -> Any:
    """The chunk table's Lance dataset at a version (latest when None), for the quick reads; exit 2 when absent."""
    from tasks.store import version_info

    with output.exit_on():
        return version_info.dataset_at(settings, settings.table, version)
