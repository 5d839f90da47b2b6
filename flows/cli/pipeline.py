"""`ragops ingest`, `evaluate`, `promote` and `run`: the pipeline's steps, one command each, and all of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from flows.cli import output
from flows.cli.decisions import print_spread, show_decision
from flows.cli.flow_runs import artifact_key, print_ui_links, start_flow_command, with_progress
from flows.cli.options import DraftsOpt, GoldenOpt, JsonOpt, PolicyOpt, TableOpt, UriOpt, VerboseOpt, VersionOpt

commands = typer.Typer()


@commands.command()
def ingest(
    source: Annotated[str, typer.Argument(help="Folder, file, BEIR corpus.jsonl or fsspec URL (s3://bucket/prefix).")],
    table: TableOpt = None,
    store_uri: UriOpt = None,
    sync: Annotated[
        bool, typer.Option("--sync/--no-sync", help="Delete chunks of documents gone from the source.")
    ] = True,
    dask_address: Annotated[str | None, typer.Option(help="Existing Dask scheduler address.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Hash every file's bytes instead of trusting unchanged size and mtime/ETag."),
    ] = False,
    source_name: Annotated[
        str | None,
        typer.Option("--source-name", help="Name of the table's first source (default: SOURCE's last part)."),
    ] = None,
    as_source: Annotated[
        str | None,
        typer.Option("--as", help="SOURCE is the table's source NAME, moved here: sync it, deletions included."),
    ] = None,
    new_source: Annotated[
        str | None,
        typer.Option("--new-source", help="Add SOURCE to the table as a new source NAME, beside the others."),
    ] = None,
    golden_set: Annotated[
        str | None,
        typer.Option(
            "--golden-set",
            help="The golden set this table is judged by from now on (kept as the Prefect Variable "
            "ragops-golden-set-TABLE: evaluations the new version triggers use it).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Embedding model (`ragops models`). Another model than the table's re-embeds every chunk into one "
            "candidate version, which the gate judges against production. Default: the table's own model.",
        ),
    ] = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Load, chunk, embed and write SOURCE into the table as a new candidate version.

    SOURCE must be one of the table's sources (`ragops sources`), or its first; a new location needs --as NAME (the
    source moved) or --new-source NAME (another source), or the RAGOPS_UNKNOWN_SOURCE setting."""
    start_flow_command(verbose, table=table, store_uri=store_uri, dask_address=dask_address, device=device)
    from flows.ingest import ingest as ingest_flow

    if golden_set:
        from flows.cli.golden import remember_golden_set

        remember_golden_set(golden_set)
    summary = with_progress(
        ingest_flow,
        source=source,
        sync=sync,
        verify=verify or None,
        source_name=source_name,
        as_source=as_source,
        new_source=new_source,
        model=model,
        trigger="cli",
    )
    output.show(summary, json_out, lambda: print_ingest_summary(summary))


def print_ingest_summary(summary: Any) -> None:
    """An ingest's figures, and the files it quarantined (a bounded list: the quarantine table holds them all)."""
    output.print_table(output.pairs_table(f"ingest {summary.source} → {summary.table}", summary.report_rows()))
    if summary.chunks_embedded == 0 and summary.table_version is None:
        output.say("nothing changed: 0 embedded, no new version written")
    shown, more = summary.quarantine_shown()
    for q in shown:
        output.say(f"[yellow]quarantined[/yellow] {escape(q['location'])}: {escape(q['reason'])}", markup=True)
    if more:
        output.say(f"[yellow]quarantined[/yellow] {escape(more)}", markup=True)


def golden_preflight(golden_set: str | None, version: str | None, allow_drafts: bool, coverage: bool = True) -> None:
    """Refuse an unusable golden set before any flow starts: drafts not allowed, written for another corpus."""
    from evaluations.golden import check_coverage, golden_notes, read_golden_set
    from flows.cli.tables import store_for
    from flows.evaluate import evaluation_settings

    with output.exit_on():
        settings = evaluation_settings(None, golden_set, None)  # the table's own set, as the flow will choose
        golden = read_golden_set(settings.golden_set)
        golden_notes(golden, settings.table, allow_drafts)
        store = store_for(settings)
        if coverage and store.exists():
            check_coverage(store.at(version), golden, settings.table, settings.golden_min_doc_coverage)


@commands.command()
def evaluate(
    version: VersionOpt = None,
    table: TableOpt = None,
    store_uri: UriOpt = None,
    golden_set: GoldenOpt = None,
    policy: PolicyOpt = None,
    json_out: JsonOpt = None,
    fail_on_block: Annotated[bool, typer.Option(help="Exit 1 when the gate would block.")] = False,
    queries: Annotated[Path | None, typer.Option(help="BEIR queries.jsonl (with --qrels): IR metrics only.")] = None,
    qrels: Annotated[Path | None, typer.Option(help="BEIR qrels TSV (query-id, corpus-id, score).")] = None,
    repeat: Annotated[
        int | None,
        typer.Option(min=0, max=20, help="A/A calibration: score production N times (policy calibration.repeats)."),
    ] = None,
    allow_drafts: DraftsOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Score a version against production and show the gate's decision (moves no tag)."""
    start_flow_command(verbose, table=table, store_uri=store_uri)
    if queries or qrels:
        evaluate_beir(version, queries, qrels, policy, json_out)
        return
    from flows.evaluate import evaluate as evaluate_flow

    golden_preflight(golden_set, version, allow_drafts)
    result = with_progress(
        evaluate_flow, version=version, golden_set=golden_set, policy=policy, repeat=repeat, allow_drafts=allow_drafts
    )
    show_decision(result, json_out)
    if not output.to_stdout(json_out):
        print_spread(result)
    if fail_on_block and result["decision"] != "promote":
        raise typer.Exit(1)


def evaluate_beir(
    version: str | None, queries: Path | None, qrels: Path | None, policy: str | None, json_out: Path | None
) -> None:
    """`evaluate --queries --qrels`: document-level IR metrics of a version per retrieval mode."""
    from evaluations.beir import evaluate_beir as score_beir
    from evaluations.beir import load_qrels, load_queries
    from evaluations.gate import load_policy
    from flows.cli.tables import open_version
    from tasks.serve.query_model import version_spec
    from tasks.settings import Settings

    settings = Settings()
    if not (queries and qrels):
        output.fail("BEIR evaluation needs both --queries and --qrels")
    at = open_version(settings, version, hint="ingest the corpus.jsonl first")
    with output.exit_on():
        modes = load_policy(policy or settings.policy)[0].modes
        spec = version_spec(settings, at.version)
        result = score_beir(at, load_queries(queries), load_qrels(qrels), spec, modes, settings.eval_k)
    k = settings.eval_k
    title = f"BEIR evaluation of {settings.table} v{at.version}: {result['queries']} queries"
    grid = output.new_table("mode", f"nDCG@{k}", f"recall@{k}", f"MRR@{k}", f"hit rate@{k}", title=title)
    for mode, means in result["modes"].items():
        values = [means.get(f"doc_{m}@{k}") for m in ("ndcg", "recall", "mrr", "hit_rate")]
        grid.add_row(mode, *["missing" if v is None else f"{v:.4f}" for v in values])
    output.show({"table": settings.table, "version": at.version, **result}, json_out, lambda: output.print_table(grid))


@commands.command()
def promote(
    version: VersionOpt = None,
    table: TableOpt = None,
    store_uri: UriOpt = None,
    golden_set: GoldenOpt = None,
    policy: PolicyOpt = None,
    json_out: JsonOpt = None,
    allow_drafts: DraftsOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Evaluate a version and move `production` to it if the gate allows; exit 1 when blocked."""
    start_flow_command(verbose, table=table, store_uri=store_uri)
    from flows.promote import promote as promote_flow

    golden_preflight(golden_set, version, allow_drafts)
    result = with_progress(
        promote_flow, version=version, golden_set=golden_set, policy=policy, trigger="cli", allow_drafts=allow_drafts
    )
    show_decision(result, json_out)
    if result["action"] != "promote":
        raise typer.Exit(1)


@commands.command()
def run(
    source: Annotated[str, typer.Argument(help="What to ingest.")] = "datasets/python-docs",
    table: TableOpt = None,
    store_uri: UriOpt = None,
    golden_set: GoldenOpt = None,
    policy: PolicyOpt = None,
    json_out: JsonOpt = None,
    allow_drafts: DraftsOpt = False,
    as_source: Annotated[str | None, typer.Option("--as", help="SOURCE is source NAME, moved (see ingest).")] = None,
    new_source: Annotated[str | None, typer.Option("--new-source", help="SOURCE is a new source NAME.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Embedding model; another than the table's is a gated switch.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """The whole pipeline: ingest SOURCE, evaluate the candidate, gate, promote."""
    start_flow_command(verbose, table=table, store_uri=store_uri)
    from flows.promote import pipeline

    golden_preflight(golden_set, None, allow_drafts, coverage=False)  # the candidate is not ingested yet
    result = with_progress(
        pipeline,
        source=source,
        golden_set=golden_set,
        policy=policy,
        trigger="cli",
        allow_drafts=allow_drafts,
        as_source=as_source,
        new_source=new_source,
        model=model,
    )
    if output.to_stdout(json_out):
        output.write_json(json_out, result)
        return
    ingested = result["ingest"]
    output.say(
        f"ingest: {ingested['docs_seen']} docs seen, {ingested['chunks_embedded']} chunks embedded, "
        f"{ingested['docs_quarantined']} quarantined; gate: {result['action']}"
    )
    show_decision(result, json_out)
    print_ui_links(result.get("pipeline_run_id"), [f"evaluation-{artifact_key(result['table'])}"])
