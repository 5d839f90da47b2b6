"""Table maintenance over simulated nightly runs (BENCHMARKS.md §12): bytes on disk, fragments, versions and hybrid
query latency of a table maintained weekly, against the same table never maintained and a freshly ingested one.

    python benchmarks/maintenance.py [--nights 60] [--every 7]

The bundled sample is copied to a corpus folder and ingested once into store A; that version is promoted, and the
store is copied to B (maintained) and to F (never changed again: the fresh table, the latency reference). Each
night 1 % of the documents (PDFs aside) change: a paragraph appended or replaced in Markdown and text files, a <p>
added at the end of an HTML page's main content (where the extractor reads; one before </body> would fall outside
it). The corpus is then ingested into A and into B and each night's version promoted in both, as if the gate passed.
Every `--every` nights the `maintain` flow runs on B with retention mapped to simulated days: candidates of the last
7 nights count as younger than 7 days (RAGOPS_RETAIN_CANDIDATE_DAYS = now - start of night n-6, in days), untagged
versions are all old (RAGOPS_RETAIN_UNTAGGED_HOURS=0), rollback depth by default (5 promotions). After each night:
bytes on disk, fragments of the latest and of the production version, versions, and hybrid p95 on A's production,
B's production and F, interleaved question by question so that machine load hits them equally.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RESULTS, ROOT, SAMPLE, percentile, write_result

BYTES_BAR = 2.0  # bytes on disk of the maintained table ≤ 2 × the clean ingest's
P95_BAR = 1.10  # hybrid p95 of the maintained table ≤ 1.10 × the fresh table's
SEED = 16
RETENTION_VARS = ("RAGOPS_RETAIN_CANDIDATE_DAYS", "RAGOPS_RETAIN_UNTAGGED_HOURS")


def cpu_flags() -> str:
    flags = Path("/proc/cpuinfo").read_text().split("flags\t\t: ", 1)[1].split("\n", 1)[0].split()
    wanted = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"]
    return " ".join(f for f in wanted if f in flags)


def new_paragraph(rng: random.Random, words: list[str], night: int) -> str:
    """A paragraph of the document's own words, so the change reads like the document."""
    sentences = []
    for _ in range(rng.randint(2, 4)):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(8, 18)))
        sentences.append(sentence[:1].upper() + sentence[1:] + ".")
    return f"Revised on night {night}: " + " ".join(sentences)


def change_document(path: Path, rng: random.Random, night: int) -> str:
    """Change one file as an editor would; returns what was done."""
    text = path.read_text(encoding="utf-8")
    words = re.findall(r"[A-Za-z][a-z]{2,12}", re.sub(r"<[^>]+>", " ", text)) or ["change"]
    paragraph = new_paragraph(rng, words, night)
    if path.suffix in (".html", ".htm"):
        end = text.find('class="sphinxsidebar"')
        end = end if end > 0 else text.find("</body>")
        last = text.rfind("</p>", 0, end) if end > 0 else -1
        if last > 0:  # after the last paragraph of the main content
            at = last + len("</p>")
            path.write_text(f"{text[:at]}\n<p>{paragraph}</p>{text[at:]}", encoding="utf-8")
            return "html: paragraph added to the main content"
        at = end if end > 0 else len(text)
        path.write_text(f"{text[:at]}<p>{paragraph}</p>\n{text[at:]}", encoding="utf-8")
        return "html: paragraph added before </body>"
    blocks = text.split("\n\n")
    prose = [i for i, b in enumerate(blocks) if i > 0 and len(b) > 80 and not b.lstrip().startswith(("#", "```", "  "))]
    if prose and rng.random() < 0.5:
        blocks[rng.choice(prose)] = paragraph
        path.write_text("\n\n".join(blocks), encoding="utf-8")
        return "text: paragraph replaced"
    path.write_text(text.rstrip("\n") + f"\n\n{paragraph}\n", encoding="utf-8")
    return "text: paragraph appended"


def use_store(uri: Path) -> None:
    os.environ["RAGOPS_LANCEDB_URI"] = str(uri)
    os.environ["RAGOPS_TABLE"] = "chunks"


def settings_for(uri: Path) -> Any:
    from tasks.settings import Settings

    return Settings(lancedb_uri=str(uri), table="chunks")


def ingest_and_promote(uri: Path, corpus: Path, night: int) -> dict[str, Any]:
    """Ingest the corpus into the store and promote the new version, as if the gate passed."""
    from evaluations.promotion import record_decision
    from flows.ingest import ingest
    from tasks.store.backends import open_store
    from tasks.store.interface import PRODUCTION_TAG

    use_store(uri)
    start = time.perf_counter()
    summary = ingest(source=str(corpus), table="chunks")
    seconds = time.perf_counter() - start
    settings = settings_for(uri)
    store = open_store(settings)
    production = store.tagged(PRODUCTION_TAG)
    action = "unchanged"
    if summary.table_version is not None:
        action = record_decision(
            store,
            settings,
            version=summary.table_version,
            production_version=production,
            mode="hybrid",
            decision={"decision": "promote", "reasons": []},
            metrics={},
            policy_hash="",
            run_id=f"benchmark-night-{night}",
            trigger="benchmark",
            report="",
        )
    return {
        "ingest_s": round(seconds, 2),
        "version": summary.table_version,
        "promotion": action,
        "docs_changed": summary.docs_changed,
        "chunks_embedded": summary.chunks_embedded,
        "chunks_written": summary.chunks_written,
    }


def storage(uri: Path) -> dict[str, Any]:
    """Bytes on disk, fragments of the latest and of the production version, versions."""
    from tasks.store.maintenance import measure, open_table_dataset

    dataset = open_table_dataset(settings_for(uri))
    measured = measure(dataset).storage
    production = next(v for v in measured.versions if "production" in v.tags)
    fragments = production.fragments
    if fragments is None:
        fragments = len(dataset.checkout_version(production.version).get_fragments())
    return {
        "bytes": measured.bytes,
        "files": measured.files,
        "fragments": measured.fragments,
        "production_fragments": fragments,
        "versions": len(measured.versions),
        "latest_version": int(dataset.latest_version),
        "production_version": production.version,
        "candidate_tags": sum(t.startswith("candidate-") for v in measured.versions for t in v.tags),
    }


def query_latency(stores: dict[str, Path], questions: list[str], vectors: Any, spec: Any, passes: int = 3) -> Any:
    """Hybrid p50/p95 ms on each store's production, interleaved question by question; 1 warm-up pass."""
    from tasks.serve.retrieval import search
    from tasks.store.backends import open_store

    tables = {name: open_store(settings_for(uri), "chunks").at("production") for name, uri in stores.items()}
    times: dict[str, list[float]] = {name: [] for name in tables}
    for p in range(passes + 1):
        for question, vector in zip(questions, vectors, strict=True):
            for name, table in tables.items():
                start = time.perf_counter()
                search(table, question, spec, mode="hybrid", k=10, query_vector=vector)
                if p:
                    times[name].append((time.perf_counter() - start) * 1000)
    return {
        name: {"p50_ms": round(percentile(t, 50), 2), "p95_ms": round(percentile(t, 95), 2)}
        for name, t in times.items()
    }


def summarise(report: dict[str, Any], night: int, candidate_days: float) -> dict[str, Any]:
    tags = report["tags"]
    return {
        "night": night,
        "retain_candidate_days": round(candidate_days, 6),
        "bytes_before": report["bytes_before"],
        "bytes_after": report["bytes_after"],
        "bytes_reclaimed": report["bytes_reclaimed"],
        "fragments_before": report["fragments_before"],
        "fragments_after": report["fragments_after"],
        "fragments_rewritten": report["fragments_rewritten"],
        "versions_before": report["versions_before"],
        "versions_after": report["versions_after"],
        "versions_removed": len(report["versions_removed"]),
        "tags_deleted": sum(t["action"] != "kept" for t in tags),
        "candidate_tags_kept": sum(t["action"] == "kept" and t["tag"].startswith("candidate-") for t in tags),
        "compacted_version": report["compacted_version"],
        "indexed_version": report.get("indexed_version"),
        "production_moved": report["production_moved"],
        "production_note": report.get("production_note", ""),
        "index_actions": report["index_actions"],
        "seconds": round(report["seconds"], 2),
    }


def golden_questions() -> list[str]:
    questions = []
    for line in (ROOT / "datasets" / "golden" / "python-docs.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        if "question" in record:
            questions.append(record["question"])
    return questions


def plot(rows: list[dict[str, Any]], size: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nights = [r["night"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 10), sharex=True)
    axes[0].plot(nights, [r["a"]["bytes"] / size for r in rows], label="A: never maintained")
    axes[0].plot(nights, [r["b"]["bytes"] / size for r in rows], label="B: maintained")
    axes[0].axhline(BYTES_BAR, linestyle="--", color="grey", label=f"bar {BYTES_BAR}× S")
    axes[0].set_ylabel("bytes on disk ÷ S")
    axes[1].plot(nights, [r["a"]["fragments"] for r in rows], label="A")
    axes[1].plot(nights, [r["b"]["fragments"] for r in rows], label="B")
    axes[1].set_ylabel("fragments (latest version)")
    for name, label in (("a", "A production"), ("b", "B production"), ("fresh", "fresh table F")):
        axes[2].plot(nights, [r["latency"][name]["p95_ms"] for r in rows], label=label)
    axes[2].set_ylabel("hybrid p95 (ms)")
    axes[2].set_xlabel("night")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("Table maintenance over nightly runs (benchmarks/maintenance.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=60)
    parser.add_argument("--every", type=int, default=7, help="maintenance interval in nights")
    parser.add_argument("--work", default="", help="working folder (default: a temporary one, removed after)")
    args = parser.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ragops-maintenance-"))
    work.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("PREFECT_API_URL"):  # the flows' temporary server keeps its database here, not in ~
        os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    for name in RETENTION_VARS:
        os.environ.pop(name, None)

    from flows.maintain import maintain
    from tasks.embed.embedding import embed_spec, embed_texts
    from tasks.settings import Settings

    corpus, store_a, store_b, fresh = work / "corpus", work / "a", work / "b", work / "fresh"
    started = time.perf_counter()
    try:
        shutil.copytree(SAMPLE, corpus)
        documents = sorted(p for p in corpus.rglob("*") if p.is_file())
        editable = [p for p in documents if p.suffix != ".pdf"]
        per_night = max(1, round(0.01 * len(documents)))
        spec = embed_spec(Settings())
        questions = golden_questions()
        vectors = embed_texts(questions, spec, role="query")

        night_start = {0: datetime.now(UTC)}
        clean = ingest_and_promote(store_a, corpus, 0)
        clean_storage = storage(store_a)
        size = clean_storage["bytes"]
        shutil.copytree(store_a, store_b)
        shutil.copytree(store_a, fresh)
        stores = {"a": store_a, "b": store_b, "fresh": fresh}
        print(
            f"clean ingest: {len(documents)} documents, {clean['chunks_written']} chunks, {clean['ingest_s']} s; "
            f"S = {size / 1e6:.2f} MB, {clean_storage['fragments']} fragments, {clean_storage['versions']} versions",
            flush=True,
        )
        rows = [
            {
                "night": 0,
                "a": clean_storage,
                "b": storage(store_b),
                "latency": query_latency(stores, questions, vectors, spec),
            }
        ]
        reports = []
        rng = random.Random(SEED)
        for night in range(1, args.nights + 1):
            night_start[night] = datetime.now(UTC)
            chosen = rng.sample(editable, per_night)
            changes = {str(p.relative_to(corpus)): change_document(p, rng, night) for p in chosen}
            ingest_a = ingest_and_promote(store_a, corpus, night)
            ingest_b = ingest_and_promote(store_b, corpus, night)
            summary = None
            if night % args.every == 0:
                days = (datetime.now(UTC) - night_start[max(night - 6, 0)]).total_seconds() / 86400
                os.environ["RAGOPS_RETAIN_CANDIDATE_DAYS"] = repr(days)
                os.environ["RAGOPS_RETAIN_UNTAGGED_HOURS"] = "0"
                use_store(store_b)
                try:
                    summary = summarise(maintain(dry_run=False), night, days)
                finally:
                    for name in RETENTION_VARS:
                        os.environ.pop(name, None)
                reports.append(summary)
            row = {
                "night": night,
                "changed": changes,
                "a": {**storage(store_a), **ingest_a},
                "b": {**storage(store_b), **ingest_b},
                "maintained": summary is not None,
                "latency": query_latency(stores, questions, vectors, spec),
            }
            rows.append(row)
            lat = row["latency"]
            line = (
                f"night {night:2d}: A {row['a']['bytes'] / size:.2f}×S {row['a']['fragments']} frag "
                f"{row['a']['versions']} ver | B {row['b']['bytes'] / size:.2f}×S {row['b']['fragments']} frag "
                f"{row['b']['versions']} ver | p95 A {lat['a']['p95_ms']} B {lat['b']['p95_ms']} "
                f"F {lat['fresh']['p95_ms']} ms | ingest {ingest_a['ingest_s']}+{ingest_b['ingest_s']} s"
            )
            if summary:
                line += (
                    f" | maintain {summary['seconds']} s: -{summary['versions_removed']} ver, "
                    f"-{summary['tags_deleted']} tags, "
                    f"{summary['fragments_before']}→{summary['fragments_after']} frag, "
                    f"{summary['bytes_reclaimed'] / 1e6:.1f} MB freed, production moved {summary['production_moved']}"
                )
            print(line, flush=True)
            (work / "progress.json").write_text(json.dumps({"rows": rows, "reports": reports}, default=str))

        last = rows[-1]
        b_ratios = [r["b"]["bytes"] / size for r in rows]
        fresh_p95 = last["latency"]["fresh"]["p95_ms"]
        bars = {
            "max_bytes_b_over_s": round(max(b_ratios), 3),
            "max_bytes_b_night": rows[b_ratios.index(max(b_ratios))]["night"],
            "final_bytes_b_over_s": round(b_ratios[-1], 3),
            "final_bytes_a_over_s": round(last["a"]["bytes"] / size, 3),
            "p95_b_over_fresh": round(last["latency"]["b"]["p95_ms"] / fresh_p95, 3),
            "p95_a_over_fresh": round(last["latency"]["a"]["p95_ms"] / fresh_p95, 3),
            "bytes_bar": BYTES_BAR,
            "p95_bar": P95_BAR,
        }
        bars["bytes_met"] = bars["max_bytes_b_over_s"] <= BYTES_BAR
        bars["p95_met"] = bars["p95_b_over_fresh"] <= P95_BAR
        plot_path = RESULTS / "maintenance.png"
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(rows, size, plot_path)
        write_result(
            "maintenance",
            {
                "cpu_flags": cpu_flags(),
                "nights": args.nights,
                "every": args.every,
                "documents": len(documents),
                "changed_per_night": per_night,
                "questions": len(questions),
                "passes": 3,
                "clean_ingest": {**clean, **clean_storage},
                "S_bytes": size,
                "rows": rows,
                "maintenance": reports,
                "bars": bars,
                "plot": str(plot_path.relative_to(ROOT)),
                "seconds": round(time.perf_counter() - started, 1),
            },
        )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
