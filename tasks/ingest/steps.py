"""Prefect tasks of the ingest flow: each wraps plain functions from the modules beside it.

Tasks use NO_CACHE on purpose: idempotence comes from the content hashes stored in the table, which survive a reset
Prefect database and are shared by every machine that writes the table.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks import events, markdown
from tasks.embed import embedding
from tasks.ingest.partitions import BuildContext, Partition, PartitionResult, Prepared, prepare_partition
from tasks.ingest.partitions import write_partition as write_partition_rows
from tasks.ingest.sources import SourceFile, list_source
from tasks.schemas import QUARANTINE_SCHEMA, IngestSummary, Quarantined
from tasks.settings import Settings
from tasks.store import fragments, lance_reads, lineage, version_info
from tasks.store.backends import open_store
from tasks.store.interface import CANDIDATE_PREFIX


@dataclass
class Listing:
    """The files under a source, listed with their metadata (nothing read), and what was skipped."""

    source: str
    files: list[SourceFile]
    quarantined: list[Quarantined]


@dataclass
class TableState:
    """What the table holds, per document, at the version a run plans against."""

    documents: pa.Table  # doc_id, doc_hash, source, source_meta, chunks
    version: int | None
    schema: pa.Schema | None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)  # the table's: source registry, lineage
    model_entry: dict[str, Any] | None = None  # the embedding model entry the version's lineage records
    model_id: str | None = None  # the model id its rows hold (None: no rows)


@task(name="list-source", cache_policy=NO_CACHE)
def list_documents(source: str, settings: Settings, id_prefix: str = "") -> Listing:
    """List the source's files with their size and mtime or ETag; no file is read."""
    _, canonical, files, quarantined = list_source(source, settings, id_prefix)
    get_run_logger().info("listed %d files under %s (%d skipped)", len(files), canonical, len(quarantined))
    return Listing(canonical, files, quarantined)


@task(name="read-table-state", cache_policy=NO_CACHE)
def read_table_state(settings: Settings) -> TableState:
    """Per document, the stored hash, source and file metadata, as Arrow, read with Lance alone."""
    return table_state(settings)


def table_state(settings: Settings) -> TableState:
    """The table's latest version as a run plans against it (empty when there is no table yet)."""
    dataset = lance_reads.open_dataset(settings, settings.table)
    if dataset is None:
        return TableState(fragments.stored_documents_empty(), None, None)
    entry, model_id = version_info.recorded_model(dataset)
    return TableState(
        fragments.stored_documents(dataset),
        int(dataset.version),
        dataset.schema,
        lineage.table_metadata(dataset),
        entry,
        model_id,
    )


@task(name="prepare-table", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)  # concurrent creators conflict
def prepare_table(settings: Settings, switch: bool = False) -> TableState:
    """Create the table on the first run (or add columns a newer ragops needs), before workers write into it
    (`switch`: the run re-embeds the table with another model)."""
    spec = embedding.embed_spec(settings)
    dim = embedding.model_dimension(spec)
    open_store(settings).create_chunk_table(dim, spec.model_name, switch)
    return table_state(settings)


@task(name="prepare-partition", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def prepare(part: Partition, ctx: BuildContext) -> Prepared:
    """Read, extract and chunk one partition (on a CPU worker)."""
    return prepare_partition(part, ctx)


@task(name="embed-and-write-partition", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_partition(prepared: Prepared, ctx: BuildContext) -> PartitionResult:
    """Embed one partition's new chunk texts and write its rows as uncommitted fragments (on an embedding worker)."""
    return write_partition_rows(prepared, ctx)


@task(name="build-partition", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def build_partition(part: Partition, ctx: BuildContext) -> PartitionResult:
    """Prepare, embed and write one partition on one worker: no hop of its chunk texts between workers and one task
    run instead of two (a cluster whose workers all do both)."""
    return write_partition_rows(prepare_partition(part, ctx), ctx)


@task(name="remove-dead-runs", cache_policy=NO_CACHE)
def remove_dead_runs(settings: Settings, run_id: str) -> int:
    """Remove files staged by runs that died before their commit."""
    cleanup = fragments.remove_orphans(settings, settings.table, run_id)
    if cleanup.runs:
        get_run_logger().warning(
            "removed %d staged file(s) of %d run(s) that died before committing: %s",
            cleanup.files,
            len(cleanup.runs),
            ", ".join(cleanup.runs),
        )
    return cleanup.files


@task(name="commit", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def commit(
    settings: Settings,
    staged: list[str],
    remove_doc_ids: pa.Array,
    run_id: str,
    kept: int,
    change: lineage.SourceChange | None = None,
) -> fragments.WriteResult | None:
    """The run's single commit: every staged fragment in, every stale row out, in one new version; then the source
    registry and the version's lineage in the table metadata."""
    result = fragments.commit_staged(settings, settings.table, staged, remove_doc_ids, run_id, change)
    if result is None:
        return None
    counts = fragments.merge_counts(result, kept)
    get_run_logger().info(
        "committed %s version %d: %d inserted, %d updated, %d deleted (read version %d)%s",
        settings.table,
        result.data_version or counts.version,
        counts.inserted,
        counts.updated,
        counts.deleted,
        result.read_version,
        f"; sources and lineage recorded in version {counts.version}" if change else "",
    )
    return counts


@task(name="compare-with-production", cache_policy=NO_CACHE)
def compare_with_production(settings: Settings, version: int) -> tuple[int | None, dict[str, dict[str, int]]]:
    """Per source, documents added, changed and deleted from production (an empty table before the first
    promotion) to `version`: what a reviewer reads before any metric."""
    return version_info.changes_since_production(settings, settings.table, version)


@task(name="tag-candidate", cache_policy=NO_CACHE)
def tag_candidate(settings: Settings, run_id: str, version: int) -> tuple[str, int]:
    """Tag the version this run made `candidate-<run id>` (never `production`): not simply the latest, which may
    be another run's."""
    tag = f"{CANDIDATE_PREFIX}{run_id}"
    open_store(settings).tag(tag, version)
    return tag, version


@task(name="maintain-indexes", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)  # concurrent runs conflict
def maintain_indexes(settings: Settings) -> int | None:
    """Create or refresh the ANN and full-text indexes as the table grows; the version made, if any."""
    actions, made = open_store(settings).maintain_indexes()
    for action in actions:
        get_run_logger().info(action)
    return made


@task(name="record-quarantine", cache_policy=NO_CACHE)
def record_quarantine(settings: Settings, run_id: str, source: str, records: list[Quarantined]) -> None:
    """Keep a lasting record of every skipped input (a JSONL file's bad lines one record per reason class)."""
    if records:
        rows = quarantine_rows(settings.table, run_id, source, records)
        open_store(settings).append_rows(settings.quarantine_table, rows)
        get_run_logger().warning(
            "quarantined %d input(s) in %d record(s); see table %r",
            sum(q.count for q in records),
            len(records),
            settings.quarantine_table,
        )


def quarantine_rows(table: str, run_id: str, source: str, records: list[Quarantined]) -> pa.Table:
    """A run's skipped inputs as rows of the quarantine table."""
    now = datetime.now(UTC)
    return pa.table(
        {
            "run_id": [run_id] * len(records),
            "table": [table] * len(records),
            "source": [source] * len(records),
            "location": [q.location for q in records],
            "doc_id": [q.doc_id for q in records],
            "reason": [q.reason for q in records],
            "detected_at": pa.array([now] * len(records), pa.timestamp("us", tz="UTC")),
        },
        schema=QUARANTINE_SCHEMA,
    )


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary(summary: IngestSummary) -> None:
    """A markdown artifact in the Prefect UI with the run's counts and skipped inputs."""
    create_markdown_artifact(
        key=f"ingest-{_artifact_key(summary.table)}",
        markdown=summary_markdown(summary),
        description=f"ingest of {summary.source} into {summary.table}",
    )


def announce_version(settings: Settings, summary: IngestSummary) -> bool:
    """Emit `ragops.version.created` when the run wrote a version (a run that changed nothing emits nothing); an
    ingest inside a pipeline says the pipeline judges the version (no triggered evaluation of the same version)."""
    if summary.table_version is None:
        return False
    from prefect.runtime import flow_run

    changes = {"added": summary.docs_new, "changed": summary.docs_changed, "deleted": summary.docs_deleted}
    return events.version_created(
        settings.model_copy(update={"table": summary.table}),
        summary.table_version,
        summary.run_id,
        "pipeline" if flow_run.parent_flow_run_id else "trigger",  # a pipeline judges the version it ingested
        tag=summary.candidate_tag,
        source=summary.source,
        production_version=summary.production_version,
        documents=changes,
        chunks_written=summary.chunks_written,
    )


def summary_markdown(summary: IngestSummary) -> str:
    """The summary as a markdown report."""
    lines = [
        f"# Ingest of {markdown.text(summary.source)} into {markdown.text(summary.table)}",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {markdown.cell(name)} | {markdown.cell(str(value))} |" for name, value in summary.report_rows()]
    if summary.quarantined:
        shown, more = summary.quarantine_shown()
        lines += ["", "## Quarantined", "", "| location | reason |", "|---|---|"]
        lines += [f"| {markdown.cell(q['location'])} | {markdown.cell(q['reason'])} |" for q in shown]
        lines += ["", markdown.text(more.capitalize() + ".")] if more else []
    return "\n".join(lines) + "\n"


def _artifact_key(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "table"


def asset_key(uri: str) -> str:
    """A Prefect asset key for a location: a lowercase scheme (`file://` for a path), characters Prefect refuses
    replaced by `-`, at most 512 characters."""
    key = uri if "://" in uri else f"file://{uri}"
    scheme, rest = key.split("://", 1)
    rest = re.sub(r"[\s#?&%\"'<>\[\]{}|\\^]", "-", rest)
    return f"{re.sub(r'[^a-z0-9]', '', scheme.lower()) or 'file'}://{rest}"[:512]


def emit_version_asset(settings: Settings, version: int, run_id: str, sources: dict[str, str], event: str) -> None:
    """Emit the version as a Prefect asset materialization: the table, materialized from its sources' locations.
    The open-source server records it as events (`prefect.asset.materialization.succeeded`, in the event feed);
    the asset lineage graph is a Prefect Cloud page."""
    from prefect.assets import Asset, AssetProperties, add_asset_metadata, materialize

    table_key = asset_key(open_store(settings).table_uri())
    asset = Asset(
        key=table_key,
        properties=AssetProperties(name=f"ragops table {settings.table}", description="the chunk table"),
    )

    def record() -> None:
        add_asset_metadata(table_key, {"version": version, "run_id": run_id, "event": event, "sources": sources})

    task_fn = materialize(
        asset, asset_deps=[asset_key(loc) for loc in sources.values()], name="record-version", cache_policy=NO_CACHE
    )(record)
    task_fn()
