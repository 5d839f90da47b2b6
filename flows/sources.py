"""Remove-source flow: every document of one of a table's sources out, as a new candidate version to gate."""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.ingest import run_lineage
from tasks.embed import embedding
from tasks.errors import BadSourceError
from tasks.ingest.formats import EXTRACTOR_VERSION
from tasks.ingest.source_identity import pipeline_settings
from tasks.ingest.steps import commit, emit_version_asset, maintain_indexes, read_table_state, tag_candidate
from tasks.settings import Settings
from tasks.store.lineage import SourceChange, legacy_sources, now_iso, read_sources


@flow(name="remove-source")
def remove_source(name: str, table: str | None = None, trigger: str | None = None) -> dict[str, Any]:
    """Delete every row of source `name` and drop it from the table's registry, in one new version tagged
    `candidate-<run id>`; production moves only when the gate promotes it. The table's only source cannot be removed
    (the candidate would be empty)."""
    settings = Settings().model_copy(update={"table": table} if table else {})
    run_id = str(flow_run.id or uuid.uuid4())
    state = read_table_state.fn(settings)
    if state.version is None:
        raise BadSourceError(f"no table {settings.table!r} at {settings.lancedb_uri}: nothing to remove")
    registry = read_sources(state.metadata)
    known = registry or legacy_sources(state.documents, now_iso())
    if name not in known:
        listed = ", ".join(known) or "none"
        raise BadSourceError(f"table {settings.table!r} has no source {name!r}; its sources: {listed}")
    if len(known) == 1:
        raise BadSourceError(
            f"{name!r} is the only source of table {settings.table!r}: the candidate would be empty "
            "(use another RAGOPS_TABLE to start over)"
        )
    entry = known[name]
    docs = state.documents.filter(pc.is_in(state.documents.column("source"), value_set=pa.array(entry.scope)))
    chunks = int(pc.sum(docs.column("chunks")).as_py() or 0)
    event = f"source {name!r} removed ({docs.num_rows} documents, {chunks} chunks)"
    pipeline = pipeline_settings(settings, embedding.model_name(settings), EXTRACTOR_VERSION)
    change = SourceChange(
        lineage=run_lineage(run_id, "remove-source", settings, pipeline, trigger, None, event),
        remove=name,
        seed=tuple(known.values()) if not registry else (),
    )
    result = commit(settings, [], docs.column("doc_id").combine_chunks(), run_id, 0, change)
    assert result is not None  # a registry change always commits
    indexed = maintain_indexes(settings)
    tag, version = tag_candidate(settings, run_id, indexed or result.version)
    emit_version_asset(settings, version, run_id, {n: e.location for n, e in known.items() if n != name}, event)
    get_run_logger().info("%s: %s; version %d tagged %s", settings.table, event, version, tag)
    return {
        "table": settings.table,
        "source": name,
        "documents_removed": docs.num_rows,
        "chunks_removed": result.deleted,
        "version": version,
        "candidate_tag": tag,
        "run_id": run_id,
    }
