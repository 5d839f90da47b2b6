"""SQL literals for Lance filters: strings, `IN` lists and timestamps, quoted once here."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: Iterable[str]) -> str:
    """`column IN ('a', 'b')` with proper quoting."""
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"


def sql_timestamp(value: datetime) -> str:
    """A Lance SQL literal for this instant (UTC)."""
    return f"TIMESTAMP '{value.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}'"
