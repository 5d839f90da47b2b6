"""Removing one of a table's sources: which documents go, and what the version records of it (the remove-source
flow commits, indexes and tags it as a candidate like an ingest)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tasks.embed import models
from tasks.errors import BadSourceError
from tasks.ingest.formats import EXTRACTOR_VERSION
from tasks.ingest.run_lineage import run_lineage
from tasks.ingest.source_identity import pipeline_settings
from tasks.ingest.steps import read_table_state
from tasks.settings import Settings
from tasks.store.backends import open_store
from tasks.store.lineage import SourceChange, legacy_sources, now_iso, read_sources


@dataclass
class SourceRemoval:
    """A source's documents to delete, and the registry change and lineage that go with them."""

    name: str
    doc_ids: pa.Array
    chunks: int
    event: str  # what the version's lineage and the log say
    change: SourceChange
    kept_sources: dict[str, str]  # the sources the table keeps: name → location

    @property
    def documents(self) -> int:
        """How many documents go."""
        return len(self.doc_ids)


def plan_removal(settings: Settings, name: str, run_id: str, trigger: str | None) -> SourceRemoval:
    """What removing source `name` deletes; BadSourceError when the table has no such source, or only that one (the
    candidate would be empty)."""
    state = read_table_state.fn(settings)
    if state.version is None:
        raise BadSourceError(f"no table {settings.table!r} at {open_store(settings).location}: nothing to remove")
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
    docs = state.documents.filter(pc.is_in(state.documents.column("source"), value_set=pa.array(known[name].scope)))
    chunks = int(pc.sum(docs.column("chunks")).as_py() or 0)
    event = f"source {name!r} removed ({docs.num_rows} documents, {chunks} chunks)"
    model = models.from_record(settings, state.model_entry, state.model_id)  # the rows' model, whatever settings say
    pipeline = pipeline_settings(settings, model, EXTRACTOR_VERSION)
    change = SourceChange(
        lineage=run_lineage(run_id, "remove-source", settings, pipeline, trigger, None, event),
        remove=name,
        seed=tuple(known.values()) if not registry else (),
    )
    kept = {n: e.location for n, e in known.items() if n != name}
    return SourceRemoval(name, docs.column("doc_id").combine_chunks(), chunks, event, change, kept)
