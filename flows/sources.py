"""Remove-source flow: every document of one of a table's sources out, as a new candidate version to gate."""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks.ingest.source_removal import plan_removal
from tasks.ingest.steps import commit, emit_version_asset, maintain_indexes, tag_candidate
from tasks.run_names import namer
from tasks.settings import Settings


@flow(name="remove-source", flow_run_name=namer("remove-source"))
def remove_source(name: str, table: str | None = None, trigger: str | None = None) -> dict[str, Any]:
    """Delete every row of source `name` and drop it from the table's registry, in one new version tagged
    `candidate-<run id>`; production moves only when the gate promotes it. The table's only source cannot be removed
    (the candidate would be empty)."""
    settings = Settings().model_copy(update={"table": table} if table else {})
    run_id = str(flow_run.id or uuid.uuid4())
    removal = plan_removal(settings, name, run_id, trigger)
    result = commit(settings, [], removal.doc_ids, run_id, 0, removal.change)
    assert result is not None  # a registry change always commits
    indexed = maintain_indexes(settings)
    tag, version = tag_candidate(settings, run_id, indexed or result.version)
    emit_version_asset(settings, version, run_id, removal.kept_sources, removal.event)
    get_run_logger().info("%s: %s; version %d tagged %s", settings.table, removal.event, version, tag)
    return {
        "table": settings.table,
        "source": name,
        "documents_removed": removal.documents,
        "chunks_removed": result.deleted,
        "version": version,
        "candidate_tag": tag,
        "run_id": run_id,
    }
