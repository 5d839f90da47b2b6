"""The exceptions ragops raises on purpose, each saying what was wrong and what to do."""

from __future__ import annotations

from typing import Any


class RagopsError(Exception):
    """Base class for every error ragops raises on purpose."""


class BadSourceError(RagopsError):
    """The ingestion source as a whole cannot be used (missing, unreachable, not a supported kind)."""


class UnknownSourceError(BadSourceError):
    """The location ingested is not a source the table knows, and nothing said what it is (moved, or new)."""


class SettingsError(RagopsError):
    """A setting is invalid or inconsistent with the model or the stored table."""


class StoreConflictError(RagopsError):
    """A LanceDB commit kept conflicting with concurrent writers after every retry."""


class StoreWriteError(RagopsError):
    """The store's location cannot be written: disk full, read-only, or a file where its folder should be."""


class StoreSchemaError(RagopsError):
    """The stored table does not match what this pipeline writes (other model, other dimension)."""


class VersionNotFoundError(RagopsError):
    """A table version or tag that was asked for does not exist."""


class MonitorAlertError(RagopsError):
    """The monitor found a threshold crossed; `summary` holds every check."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


class VersionRemovedError(RagopsError):
    """A version the operation needs was removed by maintenance (retention)."""
