"""Which backend serves a store: `open_store(settings)` is how everything above tasks/store/ opens the chunk table.

LanceDB (local folders and s3://, gs://, az:// URIs) is the one backend today; a second one is chosen here by its URI
scheme (docs/ARCHITECTURE.md, "A new storage backend")."""

from __future__ import annotations

from tasks.settings import Settings
from tasks.store.interface import Store
from tasks.store.lance_backend import LanceStore


def open_store(settings: Settings, table: str | None = None) -> Store:
    """The store for settings' URI (and `table`, default settings.table)."""
    return LanceStore(settings, table or settings.table)
