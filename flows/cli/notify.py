"""`ragops server notify`: post to a Slack-compatible webhook when the gate blocks a candidate or a flow run fails.

The webhook URL is a secret: it goes into the Prefect block, and nowhere on the terminal, in JSON or in an error.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.markup import escape

from flows.cli import output
from flows.cli.options import JsonFlag
from flows.cli.server import server_app
from tasks.notifications import BLOCK_NAME

URL_ENV = "RAGOPS_NOTIFY_WEBHOOK_URL"
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--webhook-url",
        help=f"Incoming webhook URL (Slack or any endpoint taking JSON {{'text': ...}}); else {URL_ENV}.",
        show_default=False,
    ),
]
NameOpt = Annotated[str, typer.Option("--name", help="Name of the Prefect webhook block that holds the URL.")]
RemoveOpt = Annotated[bool, typer.Option("--remove", help="Remove the block and both automations instead.")]


@server_app.command("notify")
def server_notify(
    webhook_url: UrlOpt = None,
    name: NameOpt = BLOCK_NAME,
    remove: RemoveOpt = False,
    json_flag: JsonFlag = False,
) -> None:
    """Notify a webhook when the gate blocks a candidate and when a flow run fails or crashes (Prefect automations)."""
    from tasks.errors import RagopsError
    from tasks.notifications import install_notifications, remove_notifications

    url = (webhook_url or os.environ.get(URL_ENV) or "").strip()
    if not url and not remove:
        output.fail(f"give the webhook URL: --webhook-url URL, or set {URL_ENV}")
    api = report_to_a_server()
    try:
        result = remove_notifications(name=name) if remove else install_notifications(url, name=name)
    except RagopsError as exc:
        output.fail(redact(str(exc), url))
    except Exception as exc:  # one `error:` line, the URL never in it
        output.fail(redact(output.explain(exc), url))
    if json_flag:
        output.print_json({"api_url": api, "removed" if remove else "installed": result})
    else:
        output.say(describe(result, removed=remove), soft_wrap=True)


def report_to_a_server() -> str:
    """The Prefect API the automations go to: PREFECT_API_URL, else the local server; exit 2 when there is none."""
    from flows.cli.flow_runs import choose_prefect_api
    from tasks.quiet import quiet

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    quiet(False)
    where = choose_prefect_api()
    api = os.environ.get("PREFECT_API_URL")
    if not api:  # a temporary server would forget the automations when this command ends
        output.fail("no Prefect server to install notifications on: `ragops server start`, or set PREFECT_API_URL")
    output.console.print(f"[dim]{escape(where)}[/dim]", highlight=False, soft_wrap=True)
    return api


def describe(result: dict[str, Any], *, removed: bool) -> str:
    """One line saying what was installed or removed."""
    names = " and ".join(repr(a["name"]) for a in result["automations"])
    if removed:
        if not result["block"] and not result["automations"]:
            return "no notifications were installed"
        block = f"webhook block {result['block']['name']}" if result["block"] else "no webhook block"
        return f"notifications removed: {block}, automations {names or '(none)'}"
    return (
        f"notifications installed: webhook block {result['block']['name']}, automations {names} "
        "(a gate that blocks a candidate; a flow run that fails or crashes)"
    )


def redact(text: str, url: str) -> str:
    """The text without the webhook URL (an error may quote what it was given)."""
    return text.replace(url, "<webhook URL>") if url else text
