"""Which embedding model an ingest uses, and whether it switches the table to another one.

A table keeps its model: an ingest without `--model` embeds with the model its latest version records, so a table
switched to another model stays on it (RAGOPS_EMBEDDING_MODEL only chooses the model of a new table). An ingest
with another model is a model switch: it re-embeds every chunk of the table into one new candidate version, which
the gate then judges against production like any other (tasks/ingest/run_commit.py removes the rows of documents it
could not re-embed, so no version mixes two models)."""

from __future__ import annotations

from prefect import get_run_logger

from tasks.embed import models
from tasks.errors import SettingsError
from tasks.ingest.steps import TableState
from tasks.settings import Settings
from tasks.store.lineage import SourceEntry


def table_model(settings: Settings, state: TableState, requested: str | None) -> Settings:
    """`settings` embedding with the model asked for, else the table's own (a new table: RAGOPS_EMBEDDING_MODEL)."""
    if requested:
        return settings.model_copy(update={"embedding_model": requested})
    if not state.model_id:
        return settings
    entry = models.from_record(settings, state.model_entry, state.model_id)
    return models.with_entry(settings, entry)


def switch_from(settings: Settings, state: TableState, known: dict[str, SourceEntry], source: str) -> str | None:
    """The model id the table's rows hold when this run embeds with another one (a switch), else None. A switch
    re-embeds the whole table, so the table must have one source, the one this run ingests."""
    new = models.resolve(settings).model_id
    if not state.model_id or state.model_id == new:
        return None
    others = sorted(name for name in known if name != source)
    if others:
        raise SettingsError(
            f"table {settings.table!r} was embedded with {state.model_id!r}; switching it to {new!r} re-embeds every "
            f"chunk, but this run ingests only source {source!r} and the table also holds {', '.join(others)}: "
            "switch a table with one source, or ingest with --model into a new table"
        )
    get_run_logger().info(
        "model switch on table %s: %s -> %s; every chunk is re-embedded into the new version",
        settings.table,
        state.model_id,
        new,
    )
    return state.model_id
