"""Prefect tasks of the golden flow: generate a golden set from a table version, publish what was kept and dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from evaluations.golden import BadGoldenSetError, write_golden_set
from evaluations.golden_generate import ChatClient, generate, served_query_drafts
from evaluations.golden_sampling import SourceChunk
from tasks import markdown as md
from tasks.embed import embedding
from tasks.errors import RagopsError
from tasks.progress import report_progress
from tasks.serve import query_log
from tasks.serve.answering import llm_api_key, llm_client
from tasks.serve.query_model import version_spec
from tasks.serve.retrieval import AnnQuery, search
from tasks.settings import Settings
from tasks.store import lineage
from tasks.store.backends import open_store
from tasks.store.interface import TableVersion

OFFLINE = (
    "`ragops golden generate` needs an LLM endpoint (RAGOPS_LLM_BASE_URL and RAGOPS_LLM_MODEL) to write questions "
    "and reference answers and to check that their citations support them; none is set. Offline you can: "
    "`ragops golden generate --from-queries` drafts cases from served queries (their evidence proposed by the "
    "retriever that served them, for you to confirm in `ragops golden review`), or write cases by hand "
    "(datasets/golden/README.md) and check them with `ragops golden check`"
)


def source_chunks(table: TableVersion) -> tuple[list[SourceChunk], np.ndarray, list[str]]:
    """A version's chunks, their vectors (unit norm) and the sources they were ingested from."""
    data = table.rows(["chunk_id", "doc_id", "section", "text", "position", "vector", "source"])
    columns = {name: data.column(name).to_pylist() for name in ("chunk_id", "doc_id", "section", "text", "position")}
    chunks = [
        SourceChunk(cid, did, section or "", text, int(pos))
        for cid, did, section, text, pos in zip(*columns.values(), strict=True)
    ]
    vectors = np.asarray(data.column("vector").to_pylist(), dtype=np.float32).reshape(len(chunks), -1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return chunks, vectors / np.where(norms == 0, 1, norms), sorted(set(data.column("source").to_pylist()))


@task(name="generate-golden-set", cache_policy=NO_CACHE)
def generate_golden_set(
    settings: Settings, version: int, n: int, out: str, seed: int, from_queries_hours: float | None
) -> dict[str, Any]:
    """Generate drafts from the version's chunks (or from served queries), verify them, and write the set."""
    logger = get_run_logger()
    store = open_store(settings)
    table = store.at(version)
    spec = version_spec(settings, version)  # drafts are compared with the chunk vectors of this version's model
    chunks, vectors, names = source_chunks(table)
    registry = lineage.read_sources(table.metadata())
    sources = [registry[n].location if n in registry else n for n in names]  # rows name their source; show where
    header: dict[str, Any] = {
        "format": 1,
        "version": 1,
        "corpus": {
            "table": settings.table,
            "table_version": version,
            "store": store.location,
            "source": sources[0] if len(sources) == 1 else sources,
            "documents": len({c.doc_id for c in chunks}),
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    provenance = {"table": settings.table, "table_version": version}

    def embed(texts: list[str]) -> np.ndarray:
        return embedding.embed_texts(texts, spec, role="query")

    if from_queries_hours is not None:
        logged = query_log.recent_queries(store, settings, datetime.now(UTC) - timedelta(hours=from_queries_hours))
        served = [] if logged is None else [r for r in logged.to_pylist() if r["status"] == 200]
        rows = [r for r in served if query_log.question_kept(r["question"])]  # not one hashed or left out
        by_id = {c.chunk_id: f"{c.doc_id}\0{c.text}" for c in chunks}
        kept, dropped, examples = served_query_drafts(rows, by_id, embed, provenance)
        if len(served) > len(rows):
            dropped["question not kept by the query log (RAGOPS_QUERY_LOG_QUESTIONS)"] = len(served) - len(rows)
        summary: dict[str, Any] = {
            "method": "served queries (offline)",
            "requested": len(served),
            "kept": len(kept),
            "dropped": dict(dropped.most_common()),
            "drop_examples": examples,
            "kinds": {"factoid": len(kept)} if kept else {},
            "documents_covered": len({ev.doc_id for q in kept for ev in q.evidence}),
            "llm_calls": 0,
        }
        header["generator"] = {"method": "served-queries", "hours": from_queries_hours}
    else:
        if not settings.llm_configured:
            raise RagopsError(OFFLINE)
        chat = ChatClient(llm_client(settings), settings.llm_model)
        ann = AnnQuery.from_settings(settings)

        def best_similarity(question: str) -> float:
            hits = search(table, question, spec, "vector", k=1, ann=ann, similarity=True)
            return float(hits[0].similarity) if hits and hits[0].similarity is not None else -1.0

        def progress(stage: str, done: int, total: int) -> None:
            report_progress(stage, done, total)
            if done == total or done % 10 == 0:
                logger.info("%s: %d/%d items", stage, done, total)

        result = generate(
            chunks,
            vectors,
            n,
            chat,
            seed=seed,
            best_similarity=best_similarity,
            no_answer_similarity=settings.monitor_low_similarity,
            embed=embed,
            concurrency=settings.llm_concurrency,
            provenance=provenance,
            progress=progress,
        )
        kept = result.kept
        summary = {"method": f"LLM {settings.llm_model}, one prompt per chunk", **result.summary()}
        key = llm_api_key(settings)
        if key:  # an endpoint may echo the key in an error message
            summary["drop_examples"] = {k: v.replace(key, "[redacted]") for k, v in summary["drop_examples"].items()}
        header["generator"] = {"method": "llm", "model": settings.llm_model, "seed": seed, "requested": n}
    header["counts"] = {k: summary[k] for k in ("requested", "kept", "dropped", "kinds")}
    if not kept:
        raise BadGoldenSetError(
            f"no item passed the checks, so nothing was written to {out}: dropped {summary['dropped']}"
        )
    summary["sha256"] = write_golden_set(out, kept, header)
    summary["out"] = out
    logger.info("golden set: %d kept, dropped %s; written to %s", len(kept), summary["dropped"], out)
    return summary


@task(name="publish-golden-set", cache_policy=NO_CACHE)
def publish_golden_set(settings: Settings, summary: dict[str, Any]) -> None:
    """A Prefect artifact: items kept and dropped by reason, kinds, documents covered."""
    key = "".join(ch if ch.isalnum() else "-" for ch in settings.table.lower())
    markdown = golden_markdown(settings.table, summary)
    create_markdown_artifact(key=f"golden-{key}", markdown=markdown, description="golden-set generation")
    rows = [{"reason": reason, "dropped": count} for reason, count in summary["dropped"].items()]
    if rows:
        create_table_artifact(key=f"golden-dropped-{key}", table=rows, description="items dropped, by reason")


def golden_markdown(table: str, summary: dict[str, Any]) -> str:
    """The generation's summary as Markdown (names, paths and reasons through tasks/markdown.py)."""
    out = summary["out"]
    kinds = ", ".join(f"{md.text(k)} {v}" for k, v in summary["kinds"].items()) or "none"
    lines = [
        f"## Golden set for {md.code(table)}: {summary['kept']} of {summary['requested']} kept",
        "",
        f"Written to {md.code(out)} (items SHA-256 {md.code(summary['sha256'][:12])}), every item a draft to review "
        f"with {md.code(f'ragops golden review {out}')}. Method: {md.text(summary['method'])}.",
        "",
        f"- kinds: {kinds}",
        f"- documents covered: {summary['documents_covered']}",
        f"- LLM calls: {summary['llm_calls']}",
    ]
    if summary.get("seconds_per_kept") is not None:
        lines.append(f"- per kept item: {summary['seconds_per_kept']} s, {summary['llm_calls_per_kept']} LLM calls")
    if summary["dropped"]:
        dropped = ", ".join(f"{md.text(reason)} {count}" for reason, count in summary["dropped"].items())
        lines.append(f"- dropped: {dropped}")
    return "\n".join(lines) + "\n"


def refuse_overwrite(out: str, force: bool) -> None:
    """A generated set never silently replaces a file (it may hold reviewed work)."""
    if Path(out).exists() and not force:
        raise BadGoldenSetError(f"{out} exists: choose another --out, or pass --force to replace it")
