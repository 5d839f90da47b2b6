"""The `ragops` command line: ingest, evaluate, promote, serve and monitor a table; search and list versions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.cli_options import (
    DraftsOpt,
    GoldenOpt,
    JsonOpt,
    PolicyOpt,
    TableOpt,
    UriOpt,
    VerboseOpt,
    VersionOpt,
)
from flows.cli_sources import show_version, sources_app

app = typer.Typer(
    help="ragops: RAG ingestion and evaluation on Prefect, Dask and LanceDB.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback's locals may hold settings, secrets included
)
console = Console(stderr=True)
out = Console()
app.add_typer(sources_app, name="sources")


def _apply_overrides(**values: Any) -> None:
    """Command-line options win over the environment: pass them to the settings object through RAGOPS_*."""
    for name, value in values.items():
        if value is not None:
            os.environ[f"RAGOPS_{name.upper()}"] = str(value)


_verbose = False


def _quiet_prefect(verbose: bool) -> None:
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
    console.print(f"[dim]{escape(_choose_prefect_api())}[/dim]", highlight=False, soft_wrap=True)


def _choose_prefect_api() -> str:
    """Point Prefect at the running local server unless PREFECT_API_URL is set; describe the API used."""
    from tasks.local_server import EPHEMERAL_STARTUP_TIMEOUT_S, running
    from tasks.settings import Settings

    if os.environ.get("PREFECT_API_URL"):
        return f"Prefect API: {os.environ['PREFECT_API_URL']} (PREFECT_API_URL)"
    state = running(Path(Settings().prefect_home))
    if state is not None:
        os.environ["PREFECT_API_URL"] = state.api_url
        return f"Prefect API: {state.api_url} (local server; UI {state.url})"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S))
    return "Prefect API: a temporary server for this command (`ragops server start` keeps one, with the UI)"


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="Folder, file, BEIR corpus.jsonl or fsspec URL (s3://bucket/prefix).")],
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
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
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON here.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's flow and task logs.")] = False,
) -> None:
    """Load, chunk, embed and write SOURCE into the table as a new candidate version.

    SOURCE must be one of the table's sources (`ragops sources`), or its first; a new location needs --as NAME (the
    source moved) or --new-source NAME (another source), or the RAGOPS_UNKNOWN_SOURCE setting."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri, dask_address=dask_address, device=device)
    _quiet_prefect(verbose)
    from flows.ingest import ingest as ingest_flow

    summary = _with_progress(
        ingest_flow,
        source=source,
        sync=sync,
        verify=verify or None,
        source_name=source_name,
        as_source=as_source,
        new_source=new_source,
        trigger="cli",
    )
    _print_summary(summary)
    if json_out:
        json_out.write_text(summary.model_dump_json(indent=2))


def _with_progress(flow_fn: Any, **kwargs: Any) -> Any:
    """Run a flow in-process with rich progress bars; ragops errors exit 2 with their message."""
    from tasks.errors import RagopsError
    from tasks.progress import progress_hook

    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        bars: dict[str, Any] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total or None)
            progress.update(bars[stage], completed=done, total=total or None)

        try:
            with progress_hook(on_progress):
                return flow_fn(**kwargs)
        except RagopsError as exc:
            progress.stop()
            _error(str(exc))
            raise typer.Exit(2) from exc
        except Exception as exc:
            if _verbose:
                raise
            progress.stop()
            _error(_explain(exc) + " (add -v for the traceback)")
            raise typer.Exit(2) from exc


def _error(message: str) -> None:
    """The one line a failed command ends with (text printed as is: paths may hold rich markup)."""
    console.print("[red]error:[/red] " + escape(message), highlight=False, soft_wrap=True)


def _explain(exc: BaseException) -> str:
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


def _print_summary(summary: Any) -> None:
    grid = Table(title=escape(f"ingest {summary.source} → {summary.table}"), show_header=False)
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    for name, value in summary.report_rows():
        grid.add_row(escape(name), escape(str(value)))
    out.print(grid)
    if summary.chunks_embedded == 0 and summary.table_version is None:
        out.print("nothing changed: 0 embedded, no new version written")
    shown, more = summary.quarantine_shown()  # a bounded list: the quarantine table holds every record
    for q in shown:
        out.print(f"[yellow]quarantined[/yellow] {escape(q['location'])}: {escape(q['reason'])}", highlight=False)
    if more:
        out.print(f"[yellow]quarantined[/yellow] {escape(more)}", highlight=False)


def _golden_preflight(golden_set: str | None, version: str | None, allow_drafts: bool, coverage: bool = True) -> None:
    """Refuse an unusable golden set before any flow starts: drafts not allowed, written for another corpus."""
    from evaluations.golden import check_coverage, golden_notes, read_golden_set
    from tasks.errors import RagopsError
    from tasks.settings import Settings
    from tasks.store import lancedb_store

    settings = Settings().model_copy(update={"golden_set": golden_set} if golden_set else {})
    try:
        golden = read_golden_set(settings.golden_set)
        golden_notes(golden, settings.table, allow_drafts)
        db = lancedb_store.connect(settings)
        if coverage and lancedb_store.table_exists(db, settings.table):
            table = lancedb_store.open_table(db, settings.table, version)
            check_coverage(table, golden, settings.table, settings.golden_min_doc_coverage)
    except RagopsError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc


def _print_decision(result: dict[str, Any], json_out: Path | None) -> None:
    from evaluations.lineage_report import change_lines
    from evaluations.report import needs_llm

    color = "green" if result["decision"] == "promote" else "red"
    verdict = f", {result['primary_metric']} {result['verdict']}" if result.get("verdict") else ""
    out.print(
        f"[bold {color}]{result['decision'].upper()}[/bold {color}] {result['table']} version "
        f"{result['candidate_version']} (production: {result['production_version']}, mode {result['mode']}{verdict})"
    )
    for reason in result["reasons"]:
        out.print(f"  - {reason}", markup=False, highlight=False)
    for note in result.get("notes", []):
        out.print(f"  note: {note}", markup=False, highlight=False)
    for line in change_lines(result):
        out.print(f"  {line}", markup=False, highlight=False)
    grid = Table(show_header=True)
    ci_column = f"{result.get('confidence', 0.95):.0%} CI of delta"
    for column in ("metric", "candidate", "production", "delta (paired)", ci_column, "coverage"):
        grid.add_column(column, justify="left" if column == "metric" else "right")
    llm_only = [row["metric"] for row in result["metrics"] if needs_llm(row)]
    for row in result["metrics"]:
        if row["metric"] in llm_only:
            continue
        values = [row["candidate"], row["production"], row["delta"]]
        cells = ["missing" if v is None else f"{v:.4f}" for v in values]
        if result["production_version"] is None:
            cells[1:] = ["–", "–"]  # nothing to compare with yet
        ci = f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" if row.get("ci_low") is not None else ""
        coverage = f"{row['scored']}/{row['asked']}" if row.get("asked") else ""
        grid.add_row(row["metric"], *cells, ci, coverage)
    out.print(grid)
    if llm_only:
        out.print(f"needs an LLM endpoint (RAGOPS_LLM_BASE_URL, RAGOPS_LLM_MODEL): {', '.join(llm_only)}")
    missing = {m: why for m, why in result.get("missing", {}).items() if m not in llm_only}
    for metric, why in missing.items():
        out.print(f"missing {metric}: {why}", markup=False, highlight=False)
    diff = result.get("question_diff") or []
    if diff:
        regressed = sum(1 for c in diff if c["change"] == "regressed")
        out.print(f"questions changed: {regressed} regressed, {len(diff) - regressed} improved (see the report)")
    out.print(f"answers: {result['answerer']}", markup=False, highlight=False)
    out.print(f"report: {result['report_html']}", markup=False, highlight=False)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, default=str))


@app.command()
def evaluate(
    version: VersionOpt = None,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
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
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    _quiet_prefect(verbose)
    if queries or qrels:
        _evaluate_beir(version, queries, qrels, policy, json_out)
        return
    from flows.evaluate import evaluate as evaluate_flow

    _golden_preflight(golden_set, version, allow_drafts)
    result = _with_progress(
        evaluate_flow, version=version, golden_set=golden_set, policy=policy, repeat=repeat, allow_drafts=allow_drafts
    )
    _print_decision(result, json_out)
    calibration = result.get("calibration") or {}
    if calibration.get("floors"):
        spread = ", ".join(f"{m} {v:.4f}" for m, v in calibration["floors"].items() if v) or "none (identical runs)"
        out.print(f"A/A spread over {calibration['repeats']} runs of production: {spread}")
    if fail_on_block and result["decision"] != "promote":
        raise typer.Exit(1)


def _evaluate_beir(
    version: str | None, queries: Path | None, qrels: Path | None, policy: str | None, json_out: Path | None
) -> None:
    from evaluations.beir import evaluate_beir, load_qrels, load_queries
    from evaluations.gate import load_policy
    from tasks.embed import embedding
    from tasks.errors import RagopsError
    from tasks.settings import Settings
    from tasks.store import lancedb_store

    settings = Settings()
    try:
        if not (queries and qrels):
            raise RagopsError("BEIR evaluation needs both --queries and --qrels")
        db = lancedb_store.connect(settings)
        if not lancedb_store.table_exists(db, settings.table):
            raise RagopsError(f"no table {settings.table!r} at {settings.lancedb_uri}: ingest the corpus.jsonl first")
        modes = load_policy(policy or settings.policy)[0].modes
        tbl = lancedb_store.open_table(db, settings.table, version)
        result = evaluate_beir(
            tbl, load_queries(queries), load_qrels(qrels), embedding.embed_spec(settings), modes, settings.eval_k
        )
    except RagopsError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    k = settings.eval_k
    grid = Table(title=f"BEIR evaluation of {settings.table} v{tbl.version}: {result['queries']} queries")
    for column in ("mode", f"nDCG@{k}", f"recall@{k}", f"MRR@{k}", f"hit rate@{k}"):
        grid.add_column(column)
    for mode, means in result["modes"].items():
        values = [means.get(f"doc_{m}@{k}") for m in ("ndcg", "recall", "mrr", "hit_rate")]
        grid.add_row(mode, *["missing" if v is None else f"{v:.4f}" for v in values])
    out.print(grid)
    if json_out:
        json_out.write_text(json.dumps({"table": settings.table, "version": tbl.version, **result}, indent=2))


@app.command()
def promote(
    version: VersionOpt = None,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    golden_set: GoldenOpt = None,
    policy: PolicyOpt = None,
    json_out: JsonOpt = None,
    allow_drafts: DraftsOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Evaluate a version and move `production` to it if the gate allows; exit 1 when blocked."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    _quiet_prefect(verbose)
    from flows.promote import promote as promote_flow

    _golden_preflight(golden_set, version, allow_drafts)
    result = _with_progress(
        promote_flow, version=version, golden_set=golden_set, policy=policy, trigger="cli", allow_drafts=allow_drafts
    )
    _print_decision(result, json_out)
    if result["action"] != "promote":
        raise typer.Exit(1)


@app.command()
def run(
    source: Annotated[str, typer.Argument(help="What to ingest.")] = "datasets/python-docs",
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    golden_set: GoldenOpt = None,
    policy: PolicyOpt = None,
    json_out: JsonOpt = None,
    allow_drafts: DraftsOpt = False,
    as_source: Annotated[str | None, typer.Option("--as", help="SOURCE is source NAME, moved (see ingest).")] = None,
    new_source: Annotated[str | None, typer.Option("--new-source", help="SOURCE is a new source NAME.")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """The whole pipeline: ingest SOURCE, evaluate the candidate, gate, promote."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    _quiet_prefect(verbose)
    from flows.promote import pipeline

    _golden_preflight(golden_set, None, allow_drafts, coverage=False)  # the candidate is not ingested yet
    result = _with_progress(
        pipeline,
        source=source,
        golden_set=golden_set,
        policy=policy,
        trigger="cli",
        allow_drafts=allow_drafts,
        as_source=as_source,
        new_source=new_source,
    )
    ingested = result["ingest"]
    out.print(
        f"ingest: {ingested['docs_seen']} docs seen, {ingested['chunks_embedded']} chunks embedded, "
        f"{ingested['docs_quarantined']} quarantined; gate: {result['action']}"
    )
    _print_decision(result, json_out)
    _print_ui_links(result.get("pipeline_run_id"), [f"evaluation-{_artifact_key(result['table'])}"])


def _artifact_key(table: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in table.lower())


def _print_ui_links(flow_run_id: str | None, artifact_keys: list[str]) -> None:
    """Where to look in the UI, when this command reported to the local Prefect server."""
    from tasks.local_server import running, ui_links
    from tasks.settings import Settings

    state = running(Path(Settings().prefect_home))
    if state is None or os.environ.get("PREFECT_API_URL") != state.api_url:
        return
    for what, url in ui_links(state, flow_run_id, artifact_keys):
        out.print(f"{what}: {url}", highlight=False, markup=False, soft_wrap=True)  # a URL stays on one line


@app.command()
def gate(
    deployment: Annotated[str, typer.Option(help="flow/deployment to run (promote/gate, pipeline/sample, ...).")] = (
        "promote/gate"
    ),
    version: VersionOpt = None,
    source: Annotated[str | None, typer.Option(help="Source parameter (pipeline: what to ingest).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the run to finish.")] = 3600,
    revision: Annotated[
        str | None,
        typer.Option(help="Revision CI was given (default: RAGOPS_REVISION, GITHUB_SHA, CI_COMMIT_SHA, ...)."),
    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """For CI: run the gate on the Prefect API (in-process without one); exit 0 promoted, 1 blocked, 2 error."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.ci_gate import INFRASTRUCTURE, GateInfrastructureError, run_gate
    from tasks.errors import RagopsError

    parameters: dict[str, Any] = {}
    if version is not None:
        parameters["version"] = version
    if source is not None:
        parameters["source"] = source
    if deployment.split("/", 1)[0] == "pipeline":  # the ingest it runs records the CI trigger and revision
        from tasks.provenance import ci_revision

        parameters["trigger"] = "ci"
        parameters["revision"] = revision or ci_revision()
    try:
        outcome = run_gate(deployment, parameters, timeout)
    except GateInfrastructureError as exc:
        console.print(f"[red]infrastructure error:[/red] {exc}")
        raise typer.Exit(INFRASTRUCTURE) from exc
    except RagopsError as exc:
        _error(str(exc))
        raise typer.Exit(INFRASTRUCTURE) from exc
    _print_decision(outcome.result, json_out)
    if outcome.run_url:
        out.print(f"flow run: {outcome.run_url}")
    raise typer.Exit(outcome.exit_code)


@app.command()
def rollback(table: TableOpt = None, lancedb_uri: UriOpt = None) -> None:
    """Move `production` back to the previously promoted version (logged)."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    from evaluations.promotion import rollback as rollback_production
    from tasks.errors import RagopsError
    from tasks.settings import Settings
    from tasks.store import lancedb_store

    settings = Settings()
    try:
        db = lancedb_store.connect(settings)
        if not lancedb_store.table_exists(db, settings.table):
            raise RagopsError(f"no table {settings.table!r} at {settings.lancedb_uri}")
        before, after = rollback_production(db, settings, run_id=f"cli-{os.getpid()}", trigger="cli")
    except RagopsError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    out.print(f"production: version {before} → {after}")


@app.command()
def report(
    open_browser: Annotated[bool, typer.Option("--open", help="Open the HTML report in a browser.")] = False,
    history: Annotated[bool, typer.Option("--history", help="The table's recent decisions and rollbacks.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="How many entries of the history.")] = 20,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
) -> None:
    """Print the latest evaluation's decision and where production is now; --history for the timeline."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    from evaluations.report import decision_history, production_story
    from tasks.settings import Settings
    from tasks.store import lancedb_store

    settings = Settings()
    db = lancedb_store.connect(settings)
    records, current = [], None
    if lancedb_store.table_exists(db, settings.table):
        records = lancedb_store.promotion_records(db, settings.promotions_table, settings.table)
        current = lancedb_store.tagged_version(db.open_table(settings.table), lancedb_store.PRODUCTION_TAG)
    if history:
        from evaluations.gate import load_policy
        from tasks.errors import RagopsError

        try:  # records from an older ragops carry no primary metric of their own: read it from their metrics
            primary = load_policy(settings.policy)[0].primary_metric
        except RagopsError:
            primary = ""
        rows = decision_history(records, primary, limit)
        if not rows:
            _error(f"no decision recorded for table {settings.table!r} yet")
            raise typer.Exit(2)
        grid = Table(title=f"decisions of {settings.table} (last {len(rows)}, newest first)")
        for column in (
            "at",
            "action",
            "version",
            "verdict",
            "primary metric",
            "value",
            "CI of delta",
            "golden",
            "policy",
        ):
            grid.add_column(column)
        for row in reversed(rows):
            ci = f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" if row["ci_low"] is not None else ""
            value = "" if row["value"] is None or row["action"] in ("rollback", "maintain") else f"{row['value']:.4f}"
            verdict = (
                f"from v{row['previous_version']}" if row["action"] in ("rollback", "maintain") else str(row["verdict"])
            )
            grid.add_row(
                str(row["at"])[:19], row["action"], str(row["version"]), verdict, row["metric"] or "", value, ci,
                row["golden_hash"], row["policy_hash"],
            )  # fmt: skip
        out.print(grid)
        out.print(production_story(records, current))
        return
    latest = Path(settings.reports_dir) / "latest.json"
    if not latest.is_file():
        _error(f"no evaluation report under {latest.parent}: run `ragops evaluate` first")
        raise typer.Exit(2)
    result = json.loads(latest.read_text())
    _print_decision(result, None)
    out.print(production_story(records, current), markup=False, highlight=False)
    if open_browser:
        import webbrowser

        webbrowser.open(Path(result["report_html"]).resolve().as_uri())


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The question or keywords.")],
    mode: Annotated[str, typer.Option(help="vector, fulltext or hybrid.")] = "hybrid",
    k: Annotated[int, typer.Option(min=1, max=1000, help="How many chunks.")] = 5,
    version: Annotated[str | None, typer.Option(help="Version number or tag (default: latest).")] = None,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
) -> None:
    """Retrieve the top-k chunks for QUERY from a table version."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    from tasks.embed import embedding
    from tasks.errors import RagopsError
    from tasks.serve import retrieval
    from tasks.settings import Settings
    from tasks.store import lancedb_store

    settings = Settings()
    try:
        db = lancedb_store.connect(settings)
        if not lancedb_store.table_exists(db, settings.table):
            raise RagopsError(f"no table {settings.table!r} at {settings.lancedb_uri}: run `ragops ingest` first")
        tbl = lancedb_store.open_table(db, settings.table, version)
        spec, ann = embedding.embed_spec(settings), retrieval.AnnQuery.from_settings(settings)
        hits = retrieval.search(tbl, query, spec, mode=mode, k=k, ann=ann)  # type: ignore[arg-type]
    except (RagopsError, ValueError) as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    if json_out:
        out.print_json(json.dumps([hit.__dict__ for hit in hits]))
        return
    grid = Table(title=f"{mode} search, version {tbl.version}")
    for column in ("rank", "score", "doc_id", "section", "text"):
        grid.add_column(column, overflow="fold")
    for hit in hits:
        text = hit.text[:160].replace("\n", " ")
        grid.add_row(str(hit.rank), f"{hit.score:.3f}", escape(hit.doc_id), escape(hit.section or ""), escape(text))
    out.print(grid)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (RAGOPS_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RAGOPS_SERVE_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (each loads the model).")] = 1,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Listen on a non-loopback address without RAGOPS_API_TOKEN all the same.")
    ] = False,
) -> None:
    """Serve queries from the `production` version over HTTP (POST /query, /health, /version, /metrics, /docs)."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri, serve_host=host, serve_port=port)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import uvicorn

    from tasks.serve.query_service import exposure_refusal
    from tasks.settings import Settings

    settings = Settings()
    token_set = bool(settings.api_token.get_secret_value())
    refusal = exposure_refusal(settings.serve_host, token_set, insecure)
    if refusal:
        _error(refusal)
        raise typer.Exit(2)
    auth = "bearer token required" if token_set else "no authentication (RAGOPS_API_TOKEN)"
    console.print(
        f"serving [bold]{settings.table}[/bold]@production from {settings.lancedb_uri} on "
        f"http://{settings.serve_host}:{settings.serve_port} ({auth}; OpenAPI at /docs)"
    )
    import tempfile

    # N workers share their metrics through one directory (prometheus_client's multiprocess mode), removed at exit
    with tempfile.TemporaryDirectory(prefix="ragops-metrics-") as metrics_dir:
        if workers > 1:
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        uvicorn.run(
            "tasks.serve.query_service:app_from_env",
            factory=True,
            host=settings.serve_host,
            port=settings.serve_port,
            workers=workers,
            log_level=log_level,
            # beyond this many connections and requests (per worker) uvicorn answers 503 at once instead of queueing
            limit_concurrency=settings.serve_limit_concurrency or None,
        )


@app.command()
def monitor(
    window_hours: Annotated[float | None, typer.Option(help="Hours of served queries to check.")] = None,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Check served queries against the promoted baseline (drift, no-good-answer rate); exit 1 on an alert."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    _quiet_prefect(verbose)
    from flows.monitor import monitor as monitor_flow
    from tasks.errors import MonitorAlertError, RagopsError

    try:
        state: Any = monitor_flow(window_hours=window_hours, return_state=True)
        outcome: Any = state.result(raise_on_failure=False)
    except RagopsError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    if isinstance(outcome, MonitorAlertError):
        summary = outcome.summary
    elif isinstance(outcome, BaseException):
        _error(str(outcome))
        raise typer.Exit(2)
    else:
        summary = outcome
    grid = Table(title=f"monitor {summary['table']} v{summary['version']}: {summary['queries']} queries served")
    for column in ("check", "value", "threshold", "p-value", "alert", "detail"):
        grid.add_column(column, overflow="fold")
    for check in summary["checks"]:
        value = "missing" if check["value"] is None else f"{check['value']:.4f}"
        p_value = "" if check["p_value"] is None else f"{check['p_value']:.3g}"
        alert = "[red]yes[/red]" if check["breached"] else "no"
        grid.add_row(check["name"], value, f"{check['threshold']:g}", p_value, alert, escape(check["detail"]))
    out.print(grid)
    out.print(f"report: {summary['report']}", markup=False, highlight=False)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2, default=str))
    if summary["breaches"]:
        raise typer.Exit(1)


@app.command()
def queries(
    hours: Annotated[float, typer.Option(help="Served in the last this many hours.")] = 24,
    below: Annotated[
        float | None, typer.Option(help="Only queries whose best chunk's cosine similarity is below this.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    export: Annotated[Path | None, typer.Option(help="Write them as golden-set drafts (JSONL) to review.")] = None,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
) -> None:
    """List served queries from the query log; export them as drafts for new evaluation cases."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    from datetime import UTC, datetime, timedelta

    from tasks.serve import query_log
    from tasks.settings import Settings
    from tasks.store import lancedb_store

    settings = Settings()
    db = lancedb_store.connect(settings)
    logged = query_log.recent_queries(db, settings, datetime.now(UTC) - timedelta(hours=hours))
    rows = [] if logged is None else [r for r in logged.to_pylist() if r["status"] == 200]
    if below is not None:
        rows = [r for r in rows if r["best_similarity"] is None or r["best_similarity"] < below]
    rows = sorted(rows, key=lambda r: r["at"], reverse=True)[:limit]
    grid = Table(title=f"{len(rows)} served queries of {settings.table}, last {hours:g} h")
    for column in ("served at", "version", "mode", "top-1 sim", "ms", "question"):
        grid.add_column(column, overflow="fold")
    for r in rows:
        sim = "–" if r["top1_similarity"] is None else f"{r['top1_similarity']:.3f}"
        at = r["at"].strftime("%Y-%m-%d %H:%M:%S")
        grid.add_row(at, str(r["version"]), r["mode"], sim, f"{r['latency_ms']:.0f}", escape(r["question"][:200]))
    out.print(grid)
    if export:
        drafts = query_log.review_drafts(rows, query_log.retrieved_texts(db, settings.table, rows, per_row=3))
        export.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in drafts), encoding="utf-8")
        out.print(f"{len(drafts)} drafts written to {export}")


@app.command()
def versions(
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    show: Annotated[
        str | None, typer.Option("--show", help="What produced this version (number or tag): run, trigger, sources.")
    ] = None,
    json_flag: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the table's versions: tags, whether retention keeps each and why, size on disk and fragments."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    from tasks.settings import Settings
    from tasks.store import maintenance
    from tasks.store.lance_reads import open_dataset
    from tasks.store.maintenance_report import mb
    from tasks.store.retention import brief

    settings = Settings()
    dataset = open_dataset(settings, settings.table)
    if dataset is None:
        _error(f"no table {settings.table!r} at {settings.lancedb_uri}")
        raise typer.Exit(2)
    if show is not None:
        show_version(settings, show, json_flag)
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
        out.print_json(json.dumps({"table": settings.table, "versions": rows}, default=str))
        return
    grid = Table(title=escape(f"{settings.table} at {settings.lancedb_uri}"))
    for column in ("version", "time (UTC)", "tags", "kept because", "MB", "own MB", "frags", "rows"):
        grid.add_column(column, justify="right" if column in ("MB", "own MB", "frags", "rows") else "left")
    cut = out.is_terminal  # piped output (CI logs, scripts) gets every tag in full
    for v in measured.storage.versions:
        why = decided.kept.get(v.version)
        kept = ", ".join(dict.fromkeys(brief(r) for r in why)) if why else "[yellow]removed next[/yellow]"
        grid.add_row(
            str(v.version),
            str(v.timestamp)[5:16],
            escape(", ".join(t if len(t) <= 20 or not cut else t[:18] + "…" for t in v.tags)),
            kept,
            f"{v.bytes / 1e6:.2f}",
            f"{v.unique_bytes / 1e6:.2f}",
            "" if v.fragments is None else str(v.fragments),
            "" if v.rows is None else str(v.rows),
        )
    out.print(grid)
    storage = measured.storage
    out.print(
        f"{mb(storage.bytes)} on disk in {storage.files} files; `ragops maintain` would remove "
        f"{len(decided.removed)} versions and delete {len(decided.deleted_tags)} tags "
        f"(frees {mb(measured.reclaimable(decided.removed))} before compaction). MB: what a version references; "
        "own MB: what only it references. `ragops maintain --dry-run` gives every reason in full.",
        soft_wrap=True,
    )


@app.command()
def maintain(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be done; change nothing.")] = False,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Compact the table, bring its indexes up to date, delete expired candidate tags and remove unkept versions."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    _quiet_prefect(verbose)
    from flows.maintain import maintain as maintain_flow
    from tasks.store.maintenance_report import MaintenanceReport

    report = MaintenanceReport.model_validate(_with_progress(maintain_flow, dry_run=dry_run))
    title = f"maintain {report.table}" + (" (dry run: nothing changed)" if report.dry_run else "")
    grid = Table(title=escape(title), show_header=False)
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    for name, value in report.rows():
        grid.add_row(name, escape(value))
    out.print(grid)
    tags = Table(title="tags")
    for column in ("tag", "version", "action", "reason"):
        tags.add_column(column)
    for t in report.tags:
        color = "green" if t["action"] == "kept" else "yellow"
        tags.add_row(escape(t["tag"]), str(t["version"]), f"[{color}]{t['action']}[/{color}]", escape(t["reason"]))
    out.print(tags)
    removed = ", ".join(str(v) for v in report.versions_removed) or "none"
    out.print(f"versions {'to remove' if report.dry_run else 'removed'}: {removed}", soft_wrap=True)
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))


server_app = typer.Typer(
    help="The local Prefect server and UI (with a worker) that every ragops command reports to while it runs.",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")
PortOpt = Annotated[int | None, typer.Option("--port", help="Port (RAGOPS_PREFECT_SERVER_PORT, default 4200).")]


@server_app.command("start")
def server_start(
    port: PortOpt = None,
    deploy: Annotated[bool, typer.Option("--deploy", help="Also deploy prefect.yaml's deployments to it.")] = False,
) -> None:
    """Start the local Prefect server, its UI and a process worker in the background (or reuse the running ones)."""
    from tasks import local_server
    from tasks.errors import RagopsError
    from tasks.settings import Settings

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    settings = Settings()
    home = Path(settings.prefect_home)
    try:
        if not local_server.running(home):
            console.print(f"starting the Prefect server (its database and logs under {home})…")
        state, started = local_server.start(home, port or settings.prefect_server_port)
        verb = "started" if started else "already running"
        out.print(f"Prefect server {verb}: UI {state.url}, API {state.api_url}", soft_wrap=True)
        if deploy:
            changed = local_server.deploy(state, Path.cwd())
            out.print("deployments " + ("deployed from prefect.yaml" if changed else "up to date"))
    except RagopsError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server and its worker."""
    from tasks import local_server
    from tasks.settings import Settings

    home = Path(Settings().prefect_home)
    out.print("Prefect server stopped" if local_server.stop(home) else f"no Prefect server recorded under {home}")


@server_app.command("status")
def server_status() -> None:
    """Say whether the local Prefect server runs, where, and which API ragops commands report to; exit 1 if not."""
    from tasks import local_server
    from tasks.settings import Settings

    home = Path(Settings().prefect_home)
    state = local_server.running(home)
    if state is None:
        out.print(f"no local Prefect server runs (home {home}): `ragops server start`")
        raise typer.Exit(1)
    worker = "running" if local_server.alive(state.worker_pid) else "not running (`ragops server start` restarts it)"
    out.print(f"Prefect server: UI {state.url}, API {state.api_url}, pid {state.pid}; worker {worker}", soft_wrap=True)
    if os.environ.get("PREFECT_API_URL") and os.environ["PREFECT_API_URL"] != state.api_url:
        out.print(f"note: PREFECT_API_URL={os.environ['PREFECT_API_URL']} wins over it for ragops commands")


golden_app = typer.Typer(
    help="Golden sets for your own corpus: generate drafts from a table version, review them, check them.",
    no_args_is_help=True,
)
app.add_typer(golden_app, name="golden")


@golden_app.command("generate")
def golden_generate(
    version: Annotated[str | None, typer.Option(help="Version number or tag to write from (default: latest).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, max=5000, help="How many questions to keep.")] = 60,
    out_path: Annotated[
        str | None, typer.Option("--out", help="Where to write (default datasets/golden/<table>.jsonl).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the stratified sampling.")] = 0,
    from_queries: Annotated[
        bool, typer.Option("--from-queries", help="Offline: draft cases from served queries (no LLM).")
    ] = False,
    hours: Annotated[float, typer.Option(help="With --from-queries: queries served in the last this many hours.")] = (
        168
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write verified draft questions from a table version through the LLM endpoint in RAGOPS_LLM_*."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    _quiet_prefect(verbose)
    from flows.golden import golden as golden_flow

    summary = _with_progress(
        golden_flow,
        version=version,
        n=n,
        out=out_path,
        seed=seed,
        from_queries_hours=hours if from_queries else None,
        force=force,
    )
    grid = Table(
        title=escape(f"golden set {summary['out']}: {summary['kept']} kept of {summary['requested']} requested")
    )
    grid.add_column("", style="bold")
    grid.add_column("")
    grid.add_row("method", escape(summary["method"]))
    grid.add_row("kinds", ", ".join(f"{k} {v}" for k, v in summary["kinds"].items()))
    grid.add_row("documents covered", str(summary["documents_covered"]))
    if summary.get("attempts") is not None:
        grid.add_row("attempts", str(summary["attempts"]))
    grid.add_row("LLM calls", str(summary["llm_calls"]))
    if summary.get("seconds_per_kept") is not None:
        grid.add_row("per kept item", f"{summary['seconds_per_kept']} s, {summary['llm_calls_per_kept']} LLM calls")
    for reason, count in summary["dropped"].items():
        grid.add_row(f"dropped: {reason}", str(count))
    out.print(grid)
    for reason, example in (summary.get("drop_examples") or {}).items():
        out.print(f"  e.g. {reason}: {example}", markup=False, highlight=False)
    out.print(f"every item is a draft: review them with `ragops golden review {summary['out']}`", markup=False)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2, default=str))


@golden_app.command("review")
def golden_review(
    file: Annotated[Path, typer.Argument(help="The golden-set JSONL to review.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here (default: FILE, replaced).")] = None,
) -> None:
    """Walk the draft items: accept, edit or reject each; reviewed items are written back.

    An item accepted or edited into one that fails the golden-set checks stays a draft, with the reasons printed.
    """
    from pydantic import ValidationError

    from evaluations.golden import GoldenQuestion, read_golden_set, write_golden_set
    from evaluations.golden_checks import item_failures
    from tasks.errors import RagopsError

    try:
        golden = read_golden_set(file)
    except RagopsError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    drafts = golden.drafts
    if not drafts:
        out.print(f"{file}: no draft to review ({len(golden.questions)} questions)", markup=False)
        return
    kept: list[GoldenQuestion] = []
    counts = {"accepted": 0, "edited": 0, "rejected": 0, "left as drafts": 0}
    stop = False
    for question in golden.questions:
        if not question.is_draft or stop:
            kept.append(question)
            counts["left as drafts"] += question.is_draft
            continue
        number = drafts.index(question.id) + 1
        out.rule(escape(f"draft {number}/{len(drafts)}: {question.id} ({question.kind})"))
        out.print(f"[bold]question:[/bold] {escape(question.question)}", highlight=False)
        out.print(f"[bold]answer:[/bold]   {escape(question.reference_answer)}", highlight=False)
        for ev in question.evidence:
            out.print(f"[bold]evidence[/bold] ({escape(ev.doc_id)}): {escape(ev.passage)}", highlight=False)
        choice = ""
        while choice not in ("a", "e", "r", "s", "q"):
            choice = typer.prompt("[a]ccept, [e]dit, [r]eject, [s]kip, [q]uit", default="a").strip().lower()[:1]
        if choice == "q":
            stop = True
            kept.append(question)
            counts["left as drafts"] += 1
            continue
        if choice == "s":
            kept.append(question)
            counts["left as drafts"] += 1
            continue
        if choice == "r":
            counts["rejected"] += 1
            continue
        data = question.model_dump(exclude_none=True)
        if choice == "e":
            data["question"] = typer.prompt("question", default=question.question)
            data["reference_answer"] = typer.prompt("reference answer", default=question.reference_answer)
            data["kind"] = typer.prompt("kind", default=question.kind)
        data["status"] = "reviewed"
        data["provenance"] = {**(question.provenance or {}), "reviewed": "edited" if choice == "e" else "accepted"}
        try:
            reviewed = GoldenQuestion.model_validate(data)
        except ValidationError as exc:
            out.print(f"[red]not valid, left as a draft:[/red] {escape(exc.errors()[0]['msg'])}")
            kept.append(question)
            counts["left as drafts"] += 1
            continue
        if failures := item_failures(reviewed, None):  # the evidence is unchanged: its citations were checked
            for failure in failures:
                out.print(f"[red]fails its checks, left as a draft:[/red] {escape(str(failure))}", highlight=False)
            kept.append(question)
            counts["left as drafts"] += 1
            continue
        kept.append(reviewed)
        counts["edited" if choice == "e" else "accepted"] += 1
    if not kept:
        _error("every question was rejected: nothing written")
        raise typer.Exit(2)
    header = {**golden.header, "version": (golden.version or 0) + 1}
    header.pop("sha256", None)
    target = out_file or file
    digest = write_golden_set(target, kept, header)
    out.print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; written to {target} (items {digest[:12]})")


@golden_app.command("check")
def golden_check(
    file: Annotated[str, typer.Argument(help="A golden-set JSONL, or a BEIR folder (queries.jsonl + qrels).")],
    source: Annotated[
        str | None, typer.Argument(help="Check every passage against the documents of this source.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Else check against this table version (default latest).")] = None,
    table: TableOpt = None,
    lancedb_uri: UriOpt = None,
) -> None:
    """Validate a golden set and run the golden-set checks on every item, its passages against SOURCE's documents
    or a table version; exit 1 when an item fails one."""
    _apply_overrides(table=table, lancedb_uri=lancedb_uri)
    from collections import Counter

    from evaluations.golden import coverage_error, read_golden_set, source_texts, version_texts
    from evaluations.golden_checks import item_failures
    from tasks.errors import RagopsError
    from tasks.settings import Settings
    from tasks.store import lancedb_store

    settings = Settings()
    try:
        golden = read_golden_set(file)
        where = f"source {source}"
        if source:
            texts = source_texts(source, settings)
        else:
            db = lancedb_store.connect(settings)
            if not lancedb_store.table_exists(db, settings.table):
                raise RagopsError(
                    f"no table {settings.table!r} at {settings.lancedb_uri}: give a SOURCE to check against"
                )
            tbl = lancedb_store.open_table(db, settings.table, version)
            texts = version_texts(tbl, golden.cited_docs)
            where = f"table {settings.table!r} version {tbl.version}"
            problem = coverage_error(
                golden, lancedb_store.doc_ids(tbl), settings.table, tbl.version, settings.golden_min_doc_coverage
            )
            if problem:
                raise RagopsError(problem)
    except RagopsError as exc:
        _error(str(exc))
        raise typer.Exit(2) from exc
    problems = [f"{q.id}: {failure}" for q in golden.questions for failure in item_failures(q, texts)]
    for problem in problems:
        out.print(problem, markup=False, highlight=False)
    kinds = dict(Counter(q.kind for q in golden.questions))
    found = sum(1 for doc in golden.cited_docs if doc in texts)
    out.print(
        f"{file}: {len(golden.questions)} questions {kinds}, {len(golden.drafts)} drafts, version {golden.version}, "
        f"items {golden.sha256[:12]}{' (edited since its header was written)' if golden.edited else ''}; cites "
        f"{len(golden.cited_docs)} documents, {found} in {where}; {len(problems)} problem(s)",
        markup=False,
        highlight=False,
    )
    if problems:
        raise typer.Exit(1)


def main() -> None:
    """The `ragops` entry point: an invalid setting ends in one `error:` line naming it (never its value)."""
    from tasks.errors import SettingsError

    try:
        app()
    except SettingsError as exc:
        _error(str(exc))
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
