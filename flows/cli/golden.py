"""`ragops golden generate | review | check`: golden sets for your own corpus, from drafts to a set the gate trusts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from flows.cli import output
from flows.cli.flow_runs import start_flow_command, with_progress
from flows.cli.options import JsonOpt, TableOpt, UriOpt, VerboseOpt, settings_for

if TYPE_CHECKING:
    from evaluations.golden import GoldenQuestion, GoldenSet
    from tasks.settings import Settings

golden_app = typer.Typer(
    help="Golden sets for your own corpus: generate drafts from a table version, review them, check them.",
    no_args_is_help=True,
)
CHOICES = "[a]ccept, [e]dit, [r]eject, [s]kip, [q]uit"


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
    store_uri: UriOpt = None,
    json_out: JsonOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write verified draft questions from a table version through the LLM endpoint in RAGOPS_LLM_*."""
    start_flow_command(verbose, table=table, store_uri=store_uri)
    from flows.golden import golden as golden_flow

    summary = with_progress(
        golden_flow,
        version=version,
        n=n,
        out=out_path,
        seed=seed,
        from_queries_hours=hours if from_queries else None,
        force=force,
    )
    output.show(summary, json_out, lambda: print_generated(summary))


def print_generated(summary: dict[str, Any]) -> None:
    """What generation kept and dropped, and why, with the command that reviews the drafts."""
    rows: list[tuple[str, object]] = [
        ("method", summary["method"]),
        ("kinds", ", ".join(f"{k} {v}" for k, v in summary["kinds"].items())),
        ("documents covered", summary["documents_covered"]),
    ]
    if summary.get("attempts") is not None:
        rows.append(("attempts", summary["attempts"]))
    rows.append(("LLM calls", summary["llm_calls"]))
    if summary.get("seconds_per_kept") is not None:
        rows.append(("per kept item", f"{summary['seconds_per_kept']} s, {summary['llm_calls_per_kept']} LLM calls"))
    rows += [(f"dropped: {reason}", count) for reason, count in summary["dropped"].items()]
    title = f"golden set {summary['out']}: {summary['kept']} kept of {summary['requested']} requested"
    output.print_table(output.pairs_table(title, rows, right=False))
    for reason, example in (summary.get("drop_examples") or {}).items():
        output.say(f"  e.g. {reason}: {example}")
    output.say(f"every item is a draft: review them with `ragops golden review {summary['out']}`")


@golden_app.command("review")
def golden_review(
    file: Annotated[Path, typer.Argument(help="The golden-set JSONL to review.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here (default: FILE, replaced).")] = None,
) -> None:
    """Walk the draft items: accept, edit or reject each; reviewed items are written back.

    An item accepted or edited into one that fails the golden-set checks stays a draft, with the reasons printed.
    """
    from evaluations.golden import read_golden_set, write_golden_set

    with output.exit_on():
        golden = read_golden_set(file)
    if not golden.drafts:
        output.say(f"{file}: no draft to review ({len(golden.questions)} questions)")
        return
    kept, counts = review_drafts(golden)
    if not kept:
        output.fail("every question was rejected: nothing written")
    header = {**golden.header, "version": (golden.version or 0) + 1}
    header.pop("sha256", None)
    target = out_file or file
    digest = write_golden_set(target, kept, header)
    output.say(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; written to {target} (items {digest[:12]})")


def review_drafts(golden: GoldenSet) -> tuple[list[GoldenQuestion], dict[str, int]]:
    """Ask about each draft in turn; the questions to write back, and how many were accepted, edited, rejected."""
    kept: list[GoldenQuestion] = []
    counts = {"accepted": 0, "edited": 0, "rejected": 0, "left as drafts": 0}
    stop = False
    for question in golden.questions:
        if not question.is_draft or stop:
            kept.append(question)
            counts["left as drafts"] += question.is_draft
            continue
        show_draft(question, golden.drafts.index(question.id) + 1, len(golden.drafts))
        choice = ""
        while choice not in ("a", "e", "r", "s", "q"):
            choice = typer.prompt(CHOICES, default="a").strip().lower()[:1]
        stop = choice == "q"
        if choice == "r":
            counts["rejected"] += 1
            continue
        reviewed = reviewed_question(question, edit=choice == "e") if choice in ("a", "e") else None
        kept.append(reviewed or question)
        counts["left as drafts" if reviewed is None else "edited" if choice == "e" else "accepted"] += 1
    return kept, counts


def show_draft(question: GoldenQuestion, number: int, drafts: int) -> None:
    """A draft as the reviewer sees it: question, reference answer, evidence."""
    output.out.rule(escape(f"draft {number}/{drafts}: {question.id} ({question.kind})"))
    output.say(f"[bold]question:[/bold] {escape(question.question)}", markup=True)
    output.say(f"[bold]answer:[/bold]   {escape(question.reference_answer)}", markup=True)
    for ev in question.evidence:
        output.say(f"[bold]evidence[/bold] ({escape(ev.doc_id)}): {escape(ev.passage)}", markup=True)


def reviewed_question(question: GoldenQuestion, edit: bool) -> GoldenQuestion | None:
    """The draft accepted (or edited) as reviewed; None, with the reasons printed, when the result is not valid or
    fails its checks (the evidence is unchanged: its citations were checked)."""
    from pydantic import ValidationError

    from evaluations.golden import GoldenQuestion
    from evaluations.golden_checks import item_failures

    data = question.model_dump(exclude_none=True)
    if edit:
        data["question"] = typer.prompt("question", default=question.question)
        data["reference_answer"] = typer.prompt("reference answer", default=question.reference_answer)
        data["kind"] = typer.prompt("kind", default=question.kind)
    data["status"] = "reviewed"
    data["provenance"] = {**(question.provenance or {}), "reviewed": "edited" if edit else "accepted"}
    try:
        reviewed = GoldenQuestion.model_validate(data)
    except ValidationError as exc:
        output.say(f"[red]not valid, left as a draft:[/red] {escape(exc.errors()[0]['msg'])}", markup=True)
        return None
    failures = item_failures(reviewed, None)
    for failure in failures:
        output.say(f"[red]fails its checks, left as a draft:[/red] {escape(str(failure))}", markup=True)
    return None if failures else reviewed


@golden_app.command("check")
def golden_check(
    file: Annotated[str, typer.Argument(help="A golden-set JSONL, or a BEIR folder (queries.jsonl + qrels).")],
    source: Annotated[
        str | None, typer.Argument(help="Check every passage against the documents of this source.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Else check against this table version (default latest).")] = None,
    table: TableOpt = None,
    store_uri: UriOpt = None,
) -> None:
    """Validate a golden set and run the golden-set checks on every item, its passages against SOURCE's documents
    or a table version; exit 1 when an item fails one."""
    from evaluations.golden import read_golden_set
    from evaluations.golden_checks import item_failures

    settings = settings_for(table=table, store_uri=store_uri)
    with output.exit_on():
        golden = read_golden_set(file)
        texts, where = check_texts(golden, source, version, settings)
    problems = [f"{q.id}: {failure}" for q in golden.questions for failure in item_failures(q, texts)]
    for problem in problems:
        output.say(problem)
    kinds = dict(Counter(q.kind for q in golden.questions))
    found = sum(1 for doc in golden.cited_docs if doc in texts)
    output.say(
        f"{file}: {len(golden.questions)} questions {kinds}, {len(golden.drafts)} drafts, version {golden.version}, "
        f"items {golden.sha256[:12]}{' (edited since its header was written)' if golden.edited else ''}; cites "
        f"{len(golden.cited_docs)} documents, {found} in {where}; {len(problems)} problem(s)"
    )
    if problems:
        raise typer.Exit(1)


def check_texts(
    golden: GoldenSet, source: str | None, version: str | None, settings: Settings
) -> tuple[dict[str, str], str]:
    """doc_id → text of what the set is checked against (SOURCE's documents, else a table version), and its name."""
    from evaluations.golden import check_coverage, source_texts, version_texts
    from flows.cli.tables import open_version

    if source:
        return source_texts(source, settings), f"source {source}"
    at = open_version(settings, version, hint="give a SOURCE to check against")
    check_coverage(at, golden, settings.table, settings.golden_min_doc_coverage)
    return version_texts(at, golden.cited_docs), f"table {settings.table!r} version {at.version}"


def remember_golden_set(path: str) -> None:
    """Check the golden set, and record it as the table's (a Prefect Variable) before the ingest can trigger
    an evaluation; without a Prefect server it cannot be kept, and the command says so."""
    from evaluations.golden import read_golden_set
    from tasks.settings import Settings
    from tasks.table_config import remember_golden_set as remember

    table = Settings().table
    with output.exit_on():
        read_golden_set(path)  # an unusable set fails here, before anything is written
        variable = remember(table, path)
    if variable:
        output.console.print(
            f"golden set of {table}: {path} (Prefect Variable {variable})", markup=False, soft_wrap=True
        )
    else:
        output.console.print(
            "no Prefect server keeps the golden set (`ragops server start`); give it to evaluate", markup=False
        )
