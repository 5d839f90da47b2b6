"""`ragops report` (the latest decision, or the history), `search` (a version's top chunks) and `queries` (what
was served)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli import output
from flows.cli.decisions import print_decision
from flows.cli.options import JsonFlag, TableOpt, UriOpt, VersionOpt, settings_for
from flows.cli.tables import open_version, store_for

if TYPE_CHECKING:
    from tasks.settings import Settings

commands = typer.Typer()
QUERY_FIELDS = ("query_id", "at", "version", "mode", "k", "question", "retrieved_ids", "top1_similarity",
                "best_similarity", "latency_ms", "answer")  # fmt: skip


@commands.command()
def report(
    open_browser: Annotated[bool, typer.Option("--open", help="Open the HTML report in a browser.")] = False,
    history: Annotated[bool, typer.Option("--history", help="The table's recent decisions and rollbacks.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="How many entries of the history.")] = 20,
    table: TableOpt = None,
    store_uri: UriOpt = None,
    json_flag: JsonFlag = False,
) -> None:
    """Print the latest evaluation's decision and where production is now; --history for the timeline."""
    from evaluations.report import decision_history, production_story

    settings = settings_for(table=table, store_uri=store_uri)
    records, current = promotion_log(settings)
    story = production_story(records, current)
    where = {"table": settings.table, "production_version": current, "production": story}
    if history:
        rows = decision_history(records, primary_metric(settings), limit)[::-1]  # newest first
        if not rows:
            output.fail(f"no decision recorded for table {settings.table!r} yet")
        if json_flag:
            output.print_json({**where, "decisions": rows})
            return
        output.print_table(history_table(settings.table, rows))
        output.say(story)
        return
    latest = Path(settings.reports_dir) / "latest.json"
    if not latest.is_file():
        output.fail(f"no evaluation report under {latest.parent}: run `ragops evaluate` first")
    result = json.loads(latest.read_text())
    if json_flag:
        output.print_json({**where, "decision": result})
    else:
        print_decision(result)
        output.say(story)
    if open_browser:
        import webbrowser

        webbrowser.open(Path(result["report_html"]).resolve().as_uri())


def promotion_log(settings: Settings) -> tuple[list[dict[str, Any]], int | None]:
    """The table's promotion log, oldest first, and the version production points at (none without a table)."""
    from tasks.store.interface import PRODUCTION_TAG

    store = store_for(settings)
    if not store.exists():
        return [], None
    return store.log_records(settings.promotions_table), store.tagged(PRODUCTION_TAG)


def primary_metric(settings: Settings) -> str:
    """The policy's primary metric: records from an older ragops carry none of their own ("" without a policy)."""
    from evaluations.gate import load_policy
    from tasks.errors import RagopsError

    try:
        return load_policy(settings.policy)[0].primary_metric
    except RagopsError:
        return ""


def history_table(table: str, rows: list[dict[str, Any]]) -> Table:
    """Decisions, rollbacks and maintenance moves, newest first, with the primary metric and its interval."""
    columns = ("at", "action", "version", "verdict", "primary metric", "value", "CI of delta", "golden", "policy")
    grid = output.new_table(*columns, title=f"decisions of {table} (last {len(rows)}, newest first)")
    for row in rows:
        moved = row["action"] in ("rollback", "maintain")
        ci = f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" if row["ci_low"] is not None else ""
        value = "" if row["value"] is None or moved else f"{row['value']:.4f}"
        verdict = f"from v{row['previous_version']}" if moved else str(row["verdict"])
        grid.add_row(
            str(row["at"])[:19], row["action"], str(row["version"]), escape(verdict), escape(row["metric"] or ""),
            value, escape(ci), row["golden_hash"], row["policy_hash"],
        )  # fmt: skip
    return grid


@commands.command()
def search(
    query: Annotated[str, typer.Argument(help="The question or keywords.")],
    mode: Annotated[str, typer.Option(help="vector, fulltext or hybrid.")] = "hybrid",
    k: Annotated[int, typer.Option(min=1, max=1000, help="How many chunks.")] = 5,
    version: VersionOpt = None,
    table: TableOpt = None,
    store_uri: UriOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
) -> None:
    """Retrieve the top-k chunks for QUERY from a table version."""
    from tasks.serve import retrieval
    from tasks.serve.query_model import version_spec

    settings = settings_for(table=table, store_uri=store_uri)
    at = open_version(settings, version)
    with output.exit_on(ValueError):
        spec, ann = version_spec(settings, at.version), retrieval.AnnQuery.from_settings(settings)
        hits = retrieval.search(at, query, spec, mode=mode, k=k, ann=ann)  # type: ignore[arg-type]
    if json_out:
        output.print_json([hit.__dict__ for hit in hits])
        return
    grid = output.new_table("rank", "score", "doc_id", "section", "text", title=f"{mode} search, version {at.version}")
    for hit in hits:
        text = hit.text[:160].replace("\n", " ")
        grid.add_row(str(hit.rank), f"{hit.score:.3f}", escape(hit.doc_id), escape(hit.section or ""), escape(text))
    output.print_table(grid)


@commands.command()
def queries(
    hours: Annotated[float, typer.Option(help="Served in the last this many hours.")] = 24,
    below: Annotated[
        float | None, typer.Option(help="Only queries whose best chunk's cosine similarity is below this.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    export: Annotated[Path | None, typer.Option(help="Write them as golden-set drafts (JSONL) to review.")] = None,
    table: TableOpt = None,
    store_uri: UriOpt = None,
    json_flag: JsonFlag = False,
) -> None:
    """List served queries from the query log; export them as drafts for new evaluation cases."""
    from tasks.serve import query_log

    settings = settings_for(table=table, store_uri=store_uri)
    store = store_for(settings)
    with output.exit_on():
        logged = query_log.recent_queries(store, settings, datetime.now(UTC) - timedelta(hours=hours))
    rows = [] if logged is None else [r for r in logged.to_pylist() if r["status"] == 200]
    if below is not None:
        rows = [r for r in rows if r["best_similarity"] is None or r["best_similarity"] < below]
    rows = sorted(rows, key=lambda r: r["at"], reverse=True)[:limit]
    if json_flag:
        served = [{field: r[field] for field in QUERY_FIELDS} for r in rows]
        output.print_json({"table": settings.table, "hours": hours, "queries": served})
    else:
        output.print_table(queries_table(settings.table, hours, rows))
    if export:
        drafts = query_log.review_drafts(rows, query_log.retrieved_texts(store, rows, per_row=3))
        export.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in drafts), encoding="utf-8")
        note = f"{len(drafts)} drafts written to {export}"
        if json_flag:  # stdout holds the JSON alone
            output.console.print(note, markup=False, soft_wrap=True)
        else:
            output.say(note)


def queries_table(table: str, hours: float, rows: list[dict[str, Any]]) -> Table:
    """Served queries, newest first: when, which version and mode, top-1 similarity, latency, the question."""
    columns = ("served at", "version", "mode", "top-1 sim", "ms", "question")
    grid = output.new_table(*columns, title=f"{len(rows)} served queries of {table}, last {hours:g} h")
    for r in rows:
        sim = "–" if r["top1_similarity"] is None else f"{r['top1_similarity']:.3f}"
        at = r["at"].strftime("%Y-%m-%d %H:%M:%S")
        grid.add_row(at, str(r["version"]), r["mode"], sim, f"{r['latency_ms']:.0f}", escape(r["question"][:200]))
    return grid


@commands.command()
def models(
    table: TableOpt = None,
    store_uri: UriOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """The embedding models ragops can use (built in and RAGOPS_EMBEDDING_MODELS), and which one each version of
    the table's production and latest version was embedded with."""
    from tasks.embed import models as model_entries
    from tasks.serve.query_model import version_entry
    from tasks.store.backends import open_store

    settings = settings_for(table=table, store_uri=store_uri)
    with output.exit_on():
        known = model_entries.entries(settings)
        configured = model_entries.resolve(settings).name if settings.embedding_model else model_entries.MINILM
        used: dict[str, list[str]] = {}
        store = open_store(settings)
        if store.exists():
            for ref in ("production", "latest"):
                try:
                    entry = version_entry(settings, ref)
                except Exception:  # no production yet
                    continue
                used.setdefault(entry.name, []).append(f"{settings.table} {ref}")
    rows = [
        {
            **entry.model_dump(),
            "model_id": entry.model_id,
            "default": name == configured,
            "used_by": used.get(name, []),
        }
        for name, entry in known.items()
    ]
    if json_out:
        output.print_json(rows)
        return
    grid = output.new_table("name", "kind", "dimension", "query prompt", "passage prompt", "default", "used by",
                            title="embedding models")  # fmt: skip
    for row in rows:
        grid.add_row(
            row["name"],
            row["kind"],
            str(row["dimension"] or "?"),
            repr(row["query_prompt"]),
            repr(row["passage_prompt"]),
            "yes" if row["default"] else "",
            ", ".join(row["used_by"]),
        )
    output.print_table(grid)
