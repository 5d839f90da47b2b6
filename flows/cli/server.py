"""`ragops server start | stop | status`: the local Prefect server and UI, with a worker, that commands report to,
and the read-only web server of the reports folder that evaluation artifacts link to."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli import output
from flows.cli.options import JsonFlag

server_app = typer.Typer(
    help="The local Prefect server and UI (with a worker) that every ragops command reports to while it runs.",
    no_args_is_help=True,
)
PortOpt = Annotated[int | None, typer.Option("--port", help="Port (RAGOPS_PREFECT_SERVER_PORT, default 4200).")]


def prefect_home() -> Path:
    """Where the local server keeps its database, logs and state (RAGOPS_PREFECT_HOME)."""
    from tasks.settings import Settings

    return Path(Settings().prefect_home)


@server_app.command("start")
def server_start(
    port: PortOpt = None,
    deploy: Annotated[bool, typer.Option("--deploy", help="Also deploy prefect.yaml's deployments to it.")] = False,
) -> None:
    """Start the local Prefect server, its UI, a process worker and a read-only web server of the reports folder in
    the background (or reuse the running ones)."""
    from tasks import local_server
    from tasks.settings import Settings

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    settings = Settings()
    home = Path(settings.prefect_home)
    with output.exit_on():
        if not local_server.running(home):
            output.console.print(f"starting the Prefect server (its database and logs under {home})…", markup=False)
        state, started = local_server.start(
            home, port or settings.prefect_server_port, settings.reports_dir, settings.reports_url
        )
        verb = "started" if started else "already running"
        output.say(f"Prefect server {verb}: UI {state.url}, API {state.api_url}", soft_wrap=True)
        if state.reports_url:
            output.say(f"reports: {state.reports_url} (the folder {state.reports_dir}, read-only)", soft_wrap=True)
            if not local_server.served_reports_url(state, settings.reports_dir):
                output.say(
                    f"note: it serves the reports folder it was started with, not {settings.reports_dir}: "
                    "`ragops server stop` and `start` to serve that one",
                    soft_wrap=True,
                )
        if deploy:
            changed = local_server.deploy(state, Path.cwd())
            output.say("deployments " + ("deployed from prefect.yaml" if changed else "up to date"))


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server, its worker and the reports' web server."""
    from tasks import local_server

    home = prefect_home()
    output.say("Prefect server stopped" if local_server.stop(home) else f"no Prefect server recorded under {home}")


@server_app.command("status")
def server_status(json_flag: JsonFlag = False) -> None:
    """Say whether the local Prefect server runs, where, and which API ragops commands report to; exit 1 if not."""
    status = server_state(prefect_home())
    if json_flag:
        output.print_json(status)
    elif not status["running"]:
        output.say(f"no local Prefect server runs (home {status['home']}): `ragops server start`")
    else:
        worker = "running" if status["worker_running"] else "not running (`ragops server start` restarts it)"
        output.say(
            f"Prefect server: UI {status['url']}, API {status['api_url']}, pid {status['pid']}; worker {worker}",
            soft_wrap=True,
        )
        if status["reports_url"]:
            served = "" if status["reports_running"] else " (not running: `ragops server start` restarts it)"
            output.say(f"reports: {status['reports_url']} (the folder {status['reports_dir']}){served}", soft_wrap=True)
        if status["prefect_api_url"] not in (None, status["api_url"]):
            output.say(f"note: PREFECT_API_URL={status['prefect_api_url']} wins over it for ragops commands")
    if not status["running"]:
        raise typer.Exit(1)


def server_state(home: Path) -> dict[str, Any]:
    """Whether the local server runs, its addresses and pids (the reports' web server's too), and the PREFECT_API_URL
    that wins over it if set."""
    from tasks import local_server

    state = local_server.running(home)
    return {
        "running": state is not None,
        "home": str(home),
        "url": state.url if state else None,
        "api_url": state.api_url if state else None,
        "pid": state.pid if state else None,
        "worker_pid": state.worker_pid if state else None,
        "worker_running": bool(state and local_server.alive(state.worker_pid)),
        "reports_url": (state.reports_url or None) if state else None,
        "reports_dir": (state.reports_dir or None) if state else None,
        "reports_pid": state.reports_pid if state else None,
        "reports_running": bool(state and local_server.alive(state.reports_pid)),
        "prefect_api_url": os.environ.get("PREFECT_API_URL") or None,
    }
