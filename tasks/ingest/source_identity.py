"""Which source of a table a location is: known, moved (`--as NAME`), new (`--new-source NAME`), or an error.

A table records its sources (tasks/store/lineage.py). Deletion sync is scoped by the source's name, not its location,
so a corpus that moved (a new checkout, a CI workspace, a renamed mount) is synced in full once the move is declared;
an undeclared location is never guessed at: the `unknown_source` setting says what runs without input do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.embed.models import ModelEntry
from tasks.errors import BadSourceError, UnknownSourceError
from tasks.store.lineage import ID_SEPARATOR, NAME, SourceEntry, derive_name, now_iso

SHOWN_SOURCES = 5  # sources an error line names


@dataclass(frozen=True)
class ResolvedSource:
    """The source a run ingests, as the registry will record it."""

    entry: SourceEntry  # with this run's location and pipeline
    moved_from: str | None = None  # the location it had, when this run moves it
    added: bool = False  # a source the table did not hold

    @property
    def relocated(self) -> bool:
        """True when this run moves the source: every file is read and its rows take the new location."""
        return self.moved_from is not None

    def describe(self) -> str:
        """One line for the log and the summary."""
        if self.added:
            return f"new source {self.entry.name!r} at {self.entry.location}"
        if self.moved_from is not None:
            return f"source {self.entry.name!r} moved from {self.moved_from} to {self.entry.location}"
        return f"source {self.entry.name!r} at {self.entry.location}"


def resolve_source(
    sources: dict[str, SourceEntry],
    location: str,
    pipeline: dict[str, Any],
    *,
    table: str,
    source_name: str | None = None,
    as_source: str | None = None,
    new_source: str | None = None,
    unknown: str = "error",
) -> ResolvedSource:
    """Decide which source `location` is, from the table's registry and what the run was told (see the module)."""
    for given in (source_name, as_source, new_source):
        if given is not None and not NAME.match(given):
            raise BadSourceError(
                f"source name {given!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
    if as_source and new_source:
        raise BadSourceError("give --as NAME (a moved source) or --new-source NAME (a new one), not both")
    known = next((e for e in sources.values() if e.location == location), None)
    if known is not None:
        for given, flag in ((as_source, "--as"), (new_source, "--new-source"), (source_name, "--source-name")):
            if given is not None and (flag == "--new-source" or given != known.name):
                raise BadSourceError(
                    f"{location} is already source {known.name!r} of table {table!r}: drop {flag} {given}"
                )
        return ResolvedSource(dataclasses.replace(known, location=location, pipeline=pipeline))
    if not sources:  # the table's first source: its ids stay plain relative paths
        if as_source:
            raise BadSourceError(f"table {table!r} has no sources yet, so none can have moved: drop --as {as_source}")
        name = new_source or source_name or derive_name(location, set())
        return ResolvedSource(SourceEntry(name, location, "", pipeline, now_iso()), added=True)
    if as_source or (unknown == "move" and not new_source and not source_name):
        name = as_source or _only_source(sources, location, table)
        if name not in sources:
            raise BadSourceError(f"table {table!r} has no source {name!r} to move; its sources: {_listed(sources)}")
        old = sources[name]
        moved = dataclasses.replace(
            old, location=location, pipeline=pipeline, moved_from=(*old.moved_from, old.location)
        )
        return ResolvedSource(moved, moved_from=old.location)
    given_name = new_source or source_name
    if given_name is None and unknown != "new":
        raise UnknownSourceError(
            f"table {table!r} has no source at {location}; its sources: {_listed(sources)}. Rerun with "
            "--as NAME (this location is source NAME, moved: synced, deletions included) or --new-source NAME "
            "(added beside them), or set RAGOPS_UNKNOWN_SOURCE=move or new for runs without input"
        )
    name = given_name or derive_name(location, set(sources))
    if name in sources:
        raise BadSourceError(
            f"table {table!r} already has a source {name!r} (at {sources[name].location}): "
            f"--as {name} moves it here; another name adds this location beside it"
        )
    return ResolvedSource(SourceEntry(name, location, f"{name}{ID_SEPARATOR}", pipeline, now_iso()), added=True)


def check_namespace(resolved: ResolvedSource, documents: pa.Table) -> None:
    """Refuse a new source whose id namespace (`<name>::`) is taken by stored documents of another source."""
    prefix = resolved.entry.prefix
    if not resolved.added or not prefix or documents.num_rows == 0:
        return
    clash = documents.filter(pc.starts_with(documents.column("doc_id"), prefix))
    if clash.num_rows:
        raise BadSourceError(
            f"{clash.num_rows} stored document id(s) already start with {prefix!r} "
            f"(e.g. {clash.column('doc_id')[0].as_py()!r}): choose another name for the new source"
        )


def _only_source(sources: dict[str, SourceEntry], location: str, table: str) -> str:
    if len(sources) != 1:
        raise UnknownSourceError(
            f"table {table!r} has no source at {location} and RAGOPS_UNKNOWN_SOURCE=move needs a table with one "
            f"source; it has {len(sources)}: {_listed(sources)}. Rerun with --as NAME or --new-source NAME"
        )
    return next(iter(sources))


def _listed(sources: dict[str, SourceEntry]) -> str:
    shown = [f"{e.name} ({e.location})" for e in list(sources.values())[:SHOWN_SOURCES]]
    more = len(sources) - SHOWN_SOURCES
    return ", ".join(shown) + (f" and {more} more (`ragops sources`)" if more > 0 else "")


def pipeline_settings(settings: Any, model: ModelEntry, extractor: str) -> dict[str, Any]:
    """The settings a source's rows were made with, as the registry and lineage record them (`model`'s id is what
    the rows hold; the whole entry is what readers embed questions with)."""
    return {
        "embedding_model": model.model_id,
        "embedding": model.model_dump(),
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "extractor_version": extractor,
        "include": list(settings.include),
        "exclude": list(settings.exclude),
        "max_file_bytes": settings.max_file_bytes,
        "max_doc_chars": settings.max_doc_chars,
    }
