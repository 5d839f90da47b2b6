"""The model a reader embeds questions with: the one the table version it reads was embedded with.

Production's model travels with its version: after a model switch is promoted, or rolled back, search, serving,
evaluation and the monitor embed queries with the model of the version they read, whatever RAGOPS_EMBEDDING_MODEL
says (which only chooses the model of new tables and of the answer-similarity judge)."""

from __future__ import annotations

from tasks.embed import embedding, models
from tasks.settings import Settings
from tasks.store import version_info


def version_entry(settings: Settings, version: int | str | None, table: str | None = None) -> models.ModelEntry:
    """The model entry a version of the table (default: settings.table) was embedded with."""
    dataset = version_info.dataset_at(settings, table or settings.table, version)
    recorded, model_id = version_info.recorded_model(dataset)
    return models.from_record(settings, recorded, model_id)


def version_spec(
    settings: Settings, version: int | str | None, table: str | None = None, threads: int = 0
) -> embedding.EmbedSpec:
    """The embedding recipe for questions asked of that version."""
    return embedding.embed_spec(settings, threads, entry=version_entry(settings, version, table))
