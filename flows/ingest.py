"""Ingest flow: list → plan by metadata → build partitions on Dask (read, extract, chunk, embed, write fragments)
→ one atomic commit → indexes → tag candidate.

The flow process holds the listing, the plan, counts and fragment metadata; documents, chunks and vectors stay on
the workers, at most `partitions_in_flight` partitions at a time. Each step lives in tasks/ingest/.
"""

from __future__ import annotations

import uuid

from prefect import flow
from prefect.runtime import flow_run

from tasks.ingest.cluster import embedding_cluster
from tasks.ingest.partition_build import build_run
from tasks.ingest.run_commit import commit_run, index_and_tag, run_changes
from tasks.ingest.run_plan import SourceRequest, plan_run, start_run
from tasks.ingest.steps import announce_version, publish_summary
from tasks.ingest.summary import IngestResult, ingest_summary, log_summary
from tasks.run_names import namer

DEFAULT_SOURCE = "datasets/python-docs"


@flow(name="ingest", flow_run_name=namer("ingest"))
def ingest(
    source: str = DEFAULT_SOURCE,
    table: str | None = None,
    sync: bool | None = None,
    verify: bool | None = None,
    source_name: str | None = None,
    as_source: str | None = None,
    new_source: str | None = None,
    model: str | None = None,
    trigger: str | None = None,
    revision: str | None = None,
) -> IngestResult:
    """Bring the table in line with `source`, as one new version tagged `candidate-<run id>`.

    `source` must be one of the table's sources, or its first (named `source_name`, default: its last segment);
    `as_source` NAME: source NAME moved here; `new_source` NAME: a source beside the others; else the
    `unknown_source` setting decides. `model`: the embedding model (default: the table's own); another one than the
    table's re-embeds every chunk (a model switch). `trigger` and `revision` are recorded in the version's lineage.
    """
    run = start_run(str(flow_run.id or uuid.uuid4()), table, sync, verify, model)
    planned = plan_run(run, SourceRequest(source, source_name, as_source, new_source))
    with embedding_cluster(run.settings) as cluster:
        built = build_run(run, planned, cluster)
        changes = run_changes(planned, built, run.settings.sync_deletes)
        written = commit_run(run, planned, changes, trigger, revision)
        made = index_and_tag(run, planned, built, changes, written, cluster)
    summary = ingest_summary(run, planned, built, changes, written, made)
    publish_summary(summary)
    announce_version(run.settings, summary)
    log_summary(summary)
    return summary
