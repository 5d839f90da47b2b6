"""`ragops versions`: a table's versions, what retention keeps and why, sizes; `--show N`: what produced version N.

Read with Lance alone (tasks/store/version_info.py, maintenance.py), so the command answers in about a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli import output
from flows.cli.options import JsonFlag, TableOpt, UriOpt, settings_for
from flows.cli.tables import dataset_at, store_for

if TYPE_CHECKING:
    from tasks.settings import Settings

commands = typer.Typer()
DECISION_FIELDS = ("at", "action", "version", "previous_version", "mode", "run_id", "trigger")


@commands.command()
def versions(
    table: TableOpt = None,
    store_uri: UriOpt = None,
    show: Annotated[
        str | None, typer.Option("--show", help="What produced this version (number or tag): run, trigger, sources.")
    ] = None,
    json_flag: JsonFlag = False,
) -> None:
    """List the table's versions: tags, whether retention keeps each and why, size on disk and fragments."""
    from tasks.store import maintenance
    from tasks.store.maintenance_report import mb
    from tasks.store.retention import brief

    settings = settings_for(table=table, store_uri=store_uri)
    dataset = dataset_at(settings)
    if show is not None:
        show_version(settings, dataset, show, json_flag)
        return
    measured = maintenance.measure(dataset)
    decided = maintenance.plan(settings, dataset)
    if json_flag:
        rows = [
            {
                "version": v.version,
                "timestamp": str(v.timestamp),
                "tags": v.tags,
                "kept_because": [brief(r) for r in decided.kept.get(v.version, [])],
                "bytes": v.bytes,
                "own_bytes": v.unique_bytes,
                "fragments": v.fragments,
                "rows": v.rows,
            }
            for v in measured.storage.versions
        ]
        output.print_json({"table": settings.table, "versions": rows})
        return
    title = f"{settings.table} at {store_for(settings).location}"
    output.print_table(versions_table(title, measured, decided.kept))
    storage = measured.storage
    output.say(
        f"{mb(storage.bytes)} on disk in {storage.files} files; `ragops maintain` would remove "
        f"{len(decided.removed)} versions and delete {len(decided.deleted_tags)} tags "
        f"(frees {mb(measured.reclaimable(decided.removed))} before compaction). MB: what a version references; "
        "own MB: what only it references. `ragops maintain --dry-run` gives every reason in full.",
        soft_wrap=True,
    )


def versions_table(title: str, measured: Any, kept: dict[int, list[Any]]) -> Table:
    """One row per version: time, every tag in full, why retention keeps it, MB, own MB, fragments, rows."""
    from tasks.store.retention import brief

    sizes = ("MB", "own MB", "frags", "rows")
    grid = output.new_table("version", "time (UTC)", "tags", "kept because", *sizes, title=title, right=sizes)
    for v in measured.storage.versions:
        why = kept.get(v.version)
        because = ", ".join(dict.fromkeys(brief(r) for r in why)) if why else "[yellow]removed next[/yellow]"
        grid.add_row(
            str(v.version),
            str(v.timestamp)[5:16],
            escape(", ".join(v.tags)),
            because,
            f"{v.bytes / 1e6:.2f}",
            f"{v.unique_bytes / 1e6:.2f}",
            "" if v.fragments is None else str(v.fragments),
            "" if v.rows is None else str(v.rows),
        )
    return grid


def show_version(settings: Settings, latest: Any, ref: str, json_flag: bool) -> None:
    """`ragops versions --show N`: what produced version N (of the dataset `latest`), its sources, and the decisions
    that name it."""
    from tasks.store import lance_reads, version_info

    at = dataset_at(settings, ref)
    version = int(at.version)
    info = version_info.describe_version(latest, version)
    info["table"] = settings.table
    info["sources"] = version_info.sources_report(at)
    records = lance_reads.log_records(settings, settings.promotions_table, settings.table)
    info["decisions"] = [{k: r.get(k) for k in DECISION_FIELDS} for r in records if r.get("version") == version]
    if json_flag:
        output.print_json(info)
        return
    output.say(f"{settings.table} version {version}: {info['operation']} ({info['operation_means']})")
    output.say(f"tags: {', '.join(info['tags']) or 'none'}")
    for label, value in lineage_lines(info):
        output.say(f"{label}: {value}")
    for s in info["sources"]:
        prefix = f", ids prefixed {s['prefix']!r}" if s["prefix"] else ""
        output.say(f"source {s['name']}: {s['location']}, {s['documents']} documents, {s['chunks']} chunks{prefix}")
    for d in info["decisions"]:
        output.say(f"decision: {d['action']} at {d['at']} (run {d['run_id']}, {d['trigger']})")
    if not info["decisions"]:
        output.say("decisions: none name this version")


def lineage_lines(info: dict[str, Any]) -> list[tuple[str, str]]:
    """The lineage of a version as label/value lines: the run that wrote its data, its trigger, sources, settings."""
    from evaluations.lineage_report import chunking_text, source_text, trigger_text

    lineage = info["lineage"]
    if lineage is None:
        return [("lineage", "not recorded (written before ragops kept lineage)")]
    own = "this version" if info["written_by_this_version"] else f"version {lineage.get('data_version')}"
    settings_used = lineage.get("settings") or {}
    return [
        ("data written by", f"{lineage.get('flow')} run {lineage.get('run_id')} at {own}, {lineage.get('at')}"),
        ("flow run", lineage.get("flow_run_url") or "no link (the run used a temporary Prefect server)"),
        ("trigger", trigger_text(lineage.get("trigger") or {})),
        ("what it did", lineage.get("event", "")),
        ("sources then", "; ".join(source_text(s) for s in lineage.get("sources", []))),
        ("embedding model", settings_used.get("embedding_model", "")),
        ("chunking", chunking_text(settings_used)),
        ("ragops", lineage.get("ragops_version", "")),
        ("code revision", lineage.get("code_revision") or "not run from a checkout"),
        ("recorded in", info["lineage_recorded_in"]),
    ]
