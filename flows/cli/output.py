"""What `ragops` prints: the two consoles, the one `error:` line, tables that never cut a name, and JSON.

Table cells fold instead of ending in "…"; off a terminal (a pipe, a file, a CI log) a table is rendered as wide
as its content and a line is never wrapped, so a metric name, a tag, a path or a URL is always printed whole.
NO_COLOR (any non-empty value) turns every ANSI style off, bold included. Results go to stdout; progress, notes
and errors to stderr.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

WIDEST = 4096  # off a terminal a table grows to fit its content up to this many columns, then folds


def make_console(stderr: bool = False) -> Console:
    """A console that honours NO_COLOR (no ANSI style at all) and colours only a terminal."""
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(stderr=stderr, color_system=None if plain else "auto")


console = make_console(stderr=True)  # progress bars, notes, errors
out = make_console()  # results


def error(message: str) -> None:
    """The one line a failed command ends with (text printed as is: paths may hold rich markup)."""
    console.print("[red]error:[/red] " + escape(message), highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print the `error:` line and end the command with `code`."""
    error(message)
    raise typer.Exit(code)


@contextmanager
def exit_on(*errors: type[Exception]) -> Iterator[None]:
    """A ragops error (or one of `errors`) inside ends the command: its `error:` line, exit 2."""
    from tasks.errors import RagopsError

    caught: tuple[type[Exception], ...] = (RagopsError, *errors)
    try:
        yield
    except caught as exc:
        error(str(exc))
        raise typer.Exit(2) from exc


def explain(exc: BaseException) -> str:
    """What an unexpected failure means for the user, and what to do next."""
    text = f"{type(exc).__name__}: {exc}".strip()
    if "ephemeral Prefect API server" in text:
        return (
            "Prefect's temporary server did not start in time on this busy machine: keep one running with "
            f"`ragops server start` (or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS). {text}"
        )
    dask = os.environ.get("RAGOPS_DASK_ADDRESS", "")
    if dask and dask in text:
        return (
            f"the Dask scheduler at {dask} cannot be reached: check --dask-address / RAGOPS_DASK_ADDRESS, or leave it "
            f"empty for a local cluster. {text}"
        )
    api = os.environ.get("PREFECT_API_URL", "")
    if api and ("Failed to reach API" in text or "ConnectError" in text):
        return f"the Prefect API at {api} cannot be reached: `ragops server start`, or unset PREFECT_API_URL. {text}"
    return text


def interactive() -> bool:
    """True when results go to a terminal; a pipe, a file or a CI log is not one, even with FORCE_COLOR set."""
    try:
        return bool(out.file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def say(text: str, *, markup: bool = False, soft_wrap: bool = False) -> None:
    """One line of results; off a terminal never wrapped. Text is literal unless `markup` (then escape values)."""
    out.print(text, markup=markup, highlight=False, soft_wrap=soft_wrap or not interactive())


def new_table(*columns: str, title: str | None = None, right: Iterable[str] = ()) -> Table:
    """A table with these columns (those in `right` right-aligned) whose cells fold rather than cut."""
    grid = Table(title=None if title is None else escape(title))
    aligned = set(right)
    for column in columns:
        grid.add_column(column, justify="right" if column in aligned else "left", overflow="fold")
    return grid


def pairs_table(title: str, rows: Iterable[tuple[str, object]], *, right: bool = True) -> Table:
    """A headerless label/value table (labels bold); every text is printed as is."""
    grid = Table(title=escape(title), show_header=False)
    grid.add_column(style="bold", overflow="fold")
    grid.add_column(justify="right" if right else "left", overflow="fold")
    for name, value in rows:
        grid.add_row(escape(name), escape(str(value)))
    return grid


def print_table(grid: Table) -> None:
    """Print a table: on a terminal at its width; elsewhere as wide as its content and title, nothing wrapped."""
    if interactive():
        out.print(grid)
        return
    if isinstance(grid.title, str):  # a title wraps at the table's width: make room for it
        grid.min_width = min(out.render_str(grid.title).cell_len, WIDEST)
    needed = Measurement.get(out, out.options.update_width(WIDEST), grid).maximum
    width = out.width
    out.width = max(needed, width)  # Console.print(width=...) cannot exceed the console's own width
    try:
        out.print(grid)
    finally:
        out.width = width


def print_json(data: Any) -> None:
    """One JSON document on stdout: what `--json` prints."""
    out.print_json(json.dumps(data, default=str))


def to_stdout(target: Path | None) -> bool:
    """True for `--json -`: the JSON goes to stdout, in place of the tables and lines."""
    return target is not None and str(target) == "-"


def write_json(target: Path | None, data: Any) -> None:
    """`--json PATH`: write the result there (`-`: print it to stdout); pydantic models as themselves."""
    if target is None:
        return
    pydantic = hasattr(data, "model_dump_json")
    text = data.model_dump_json(indent=2) if pydantic else json.dumps(data, indent=2, default=str)
    if to_stdout(target):
        out.print_json(text)
    else:
        target.write_text(text)


def show(data: Any, json_target: Path | None, render: Callable[[], None]) -> None:
    """Print a result for a person with `render`, and as JSON where `--json` says (`-`: only the JSON)."""
    if not to_stdout(json_target):
        render()
    write_json(json_target, data)
