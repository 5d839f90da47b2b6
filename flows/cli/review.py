"""`ragops review`: list the promotions waiting for a reviewer, and approve or reject one from a terminal or CI
(the same answer the form of the paused run takes in the Prefect UI)."""

from __future__ import annotations

import getpass
import os
from typing import Annotated, Any

import typer

from flows.cli import output
from flows.cli.options import JsonFlag, TableOpt, settings_for

commands = typer.Typer()


def waiting_reviews(table: str | None) -> list[dict[str, Any]]:
    """Paused `promote` runs (of `table` when given), newest first: id, name, table, since."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])),
            flow_run_filter=paused,
            sort=FlowRunSort.START_TIME_DESC,
            limit=200,
        )
    rows = [
        {
            "run_id": str(run.id),
            "name": run.name,
            "table": (run.parameters or {}).get("table") or run.name.removeprefix("promote-").rsplit("-v", 1)[0],
            "paused_since": run.state.timestamp.isoformat() if run.state else None,
        }
        for run in runs
    ]
    return [row for row in rows if table is None or row["table"] == table]


def pick(rows: list[dict[str, Any]], run_id: str | None, table: str | None) -> dict[str, Any]:
    """The one review meant: `run_id`, or the only one waiting (for `table`)."""
    if run_id:
        chosen = [row for row in rows if row["run_id"].startswith(run_id)]
        if len(chosen) != 1:
            output.fail(f"no promotion waiting for review has run id {run_id!r} (`ragops review --list`)")
        return chosen[0]
    if not rows:
        output.fail("no promotion is waiting for review" + (f" on table {table!r}" if table else ""))
    if len(rows) > 1:
        names = ", ".join(f"{row['name']} ({row['run_id'][:8]})" for row in rows)
        output.fail(f"{len(rows)} promotions wait for review: {names}; choose one with --run")
    return rows[0]


@commands.command()
def review(
    approve: Annotated[
        bool | None, typer.Option("--approve/--reject", help="Approve (promote) or reject the candidate.")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="Why (required to decide): kept in the log.")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="The paused promote run (id or its start).")] = None,
    reviewer: Annotated[
        str | None, typer.Option("--reviewer", help="Who decides (default: RAGOPS_REVIEWER, else the login name).")
    ] = None,
    table: TableOpt = None,
    list_only: Annotated[bool, typer.Option("--list", help="Only list the promotions waiting for review.")] = False,
    json_flag: JsonFlag = False,
) -> None:
    """Approve or reject a promotion waiting for review (the paused `promote` run); `--list` shows them."""
    from flows.cli.flow_runs import choose_prefect_api

    settings_for(table=table)
    choose_prefect_api()
    if not os.environ.get("PREFECT_API_URL"):
        output.fail("reviews wait on a Prefect server: start one (`ragops server start`) or set PREFECT_API_URL")
    rows = waiting_reviews(table)
    if list_only or approve is None:
        grid = output.new_table("run", "name", "table", "paused since")
        for row in rows:
            grid.add_row(row["run_id"], row["name"], row["table"], row["paused_since"] or "")
        output.print_json(rows) if json_flag else output.print_table(grid)
        return
    if not note or not note.strip():
        output.fail("a review needs a note (--note): it goes into the promotion log")
    chosen = pick(rows, run_id, table)
    answer = {
        "decision": "approve" if approve else "reject",
        "note": note.strip(),
        "reviewer": reviewer or os.environ.get("RAGOPS_REVIEWER") or getpass.getuser(),
    }
    resume(chosen["run_id"], answer)
    if json_flag:
        output.print_json({**chosen, **answer})
    else:
        output.say(f"{answer['decision']}d {chosen['name']} as {answer['reviewer']}: the run goes on and records it")


def resume(run_id: str, answer: dict[str, Any]) -> None:
    """Resume the paused run with the review as its input (validated by the server against the run's form)."""
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    with output.exit_on(RuntimeError, ValueError):
        resume_flow_run(UUID(run_id), run_input=answer)
