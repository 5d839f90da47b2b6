"""Running a flow from the command line: which Prefect API it reports to, quiet logs, progress bars, UI links."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from flows.cli import output
from flows.cli.options import apply_overrides

if TYPE_CHECKING:
    from tasks.local_server import ServerState
    from tasks.settings import Settings

_verbose = False


def start_flow_command(verbose: bool, **overrides: Any) -> None:
    """The preamble of a command that runs a flow: apply the options, then quiet Prefect and name its API."""
    apply_overrides(**overrides)
    quiet_prefect(verbose)


def quiet_prefect(verbose: bool) -> None:
    """Report to the local Prefect server when one runs (else Prefect's temporary one), and say which, once.

    Unless `verbose`, third-party warnings and Prefect's own logs stay off the terminal (an error still ends the
    command in one `error:` line).
    """
    from tasks.quiet import quiet

    global _verbose
    _verbose = verbose
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    quiet(verbose)
    output.console.print(f"[dim]{escape(choose_prefect_api())}[/dim]", highlight=False, soft_wrap=True)


def choose_prefect_api() -> str:
    """Point Prefect at the running local server unless PREFECT_API_URL is set; describe the API used.

    Reporting to the local server (PREFECT_API_URL naming it counts), the command's reports get the URL under which
    that server serves them (RAGOPS_REPORTS_URL), unless the user set their own or the command writes its reports to
    another folder than the one served."""
    from tasks.local_server import EPHEMERAL_STARTUP_TIMEOUT_S, read_state, running
    from tasks.settings import Settings

    settings = Settings()
    home = Path(settings.prefect_home)
    if os.environ.get("PREFECT_API_URL"):
        recorded = read_state(home)
        if recorded is not None and recorded.api_url == os.environ["PREFECT_API_URL"]:
            use_served_reports(recorded, settings)
        return f"Prefect API: {os.environ['PREFECT_API_URL']} (PREFECT_API_URL)"
    state = running(home)
    if state is not None:
        os.environ["PREFECT_API_URL"] = state.api_url
        use_served_reports(state, settings)
        return f"Prefect API: {state.api_url} (local server; UI {state.url})"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S))
    return "Prefect API: a temporary server for this command (`ragops server start` keeps one, with the UI)"


def use_served_reports(state: ServerState, settings: Settings) -> None:
    """Set RAGOPS_REPORTS_URL to where the local server serves this command's reports folder, if it does and the
    user named no reports URL of their own (RAGOPS_REPORTS_URL, .env)."""
    from tasks.local_server import served_reports_url

    served = "" if settings.reports_url else served_reports_url(state, settings.reports_dir)
    if served:
        os.environ["RAGOPS_REPORTS_URL"] = served


def with_table(flow_fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The flow's arguments with `table` named (the configured table when none was given), so the run's parameters
    in the UI say which table it touched."""
    import inspect

    from tasks.settings import Settings

    takes_table = "table" in inspect.signature(getattr(flow_fn, "fn", flow_fn)).parameters
    return {**kwargs, "table": kwargs.get("table") or Settings().table} if takes_table else kwargs


def with_progress(flow_fn: Any, **kwargs: Any) -> Any:
    """Run a flow in-process with rich progress bars; ragops errors exit 2 with their message."""
    from tasks.errors import RagopsError
    from tasks.progress import progress_hook

    bar = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*bar, console=output.console, transient=False) as progress:
        bars: dict[str, Any] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total or None)
            progress.update(bars[stage], completed=done, total=total or None)

        try:
            with progress_hook(on_progress):
                return flow_fn(**with_table(flow_fn, kwargs))
        except RagopsError as exc:
            progress.stop()
            output.fail(str(exc))
        except Exception as exc:
            if _verbose:
                raise
            progress.stop()
            output.error(output.explain(exc) + " (add -v for the traceback)")
            raise typer.Exit(2) from exc


def artifact_key(table: str) -> str:
    """A table's name as a Prefect artifact key."""
    return "".join(ch if ch.isalnum() else "-" for ch in table.lower())


def print_ui_links(flow_run_id: str | None, artifact_keys: list[str]) -> None:
    """Where to look in the UI, when this command reported to the local Prefect server."""
    from tasks.local_server import running, ui_links
    from tasks.settings import Settings

    state = running(Path(Settings().prefect_home))
    if state is None or os.environ.get("PREFECT_API_URL") != state.api_url:
        return
    for what, url in ui_links(state, flow_run_id, artifact_keys):
        output.say(f"{what}: {url}", soft_wrap=True)  # a URL stays on one line
