"""Per-table configuration kept as Prefect Variables (editable under Variables in the UI): the golden set a table
is judged by. An evaluation started by an event (`on-ingest`) reads it, so a table ingested from a user's folder is
scored on that user's golden set, not on the sample's.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)


def golden_variable(table: str) -> str:
    """The Variable naming `table`'s golden set: `ragops-golden-set-<table>` (other characters become `-`)."""
    return "ragops-golden-set-" + re.sub(r"[^A-Za-z0-9_-]", "-", table)


def remember_golden_set(table: str, path: str) -> str | None:
    """Record `path` (made absolute when local) as `table`'s golden set; the Variable's name, or None without an
    API to keep it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.variables import Variable

    if not PREFECT_API_URL.value():
        return None
    value = path if "://" in path else str(Path(path).resolve())
    Variable.set(golden_variable(table), value, tags=["ragops"], overwrite=True)
    return golden_variable(table)


def configured_golden_set(table: str) -> str | None:
    """The golden set recorded for `table`, or None (no API, no Variable, or the API unreachable: logged)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.variables import Variable

    if not PREFECT_API_URL.value():
        return None
    try:
        value = Variable.get(golden_variable(table))
    except Exception as exc:  # fall back to the configured set, and say so
        log.warning("could not read the Variable %s: %s", golden_variable(table), type(exc).__name__)
        return None
    return str(value) if value else None
