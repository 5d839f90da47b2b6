"""End-to-end ingestion: the flow against a naive script, incremental re-ingestion, and scaling with corpus size.

Corpora are Markdown documents cut from the sections of the bundled sample (real text, up to 1,500 characters each);
sizes beyond the sample's 841 sections reuse them as revisions changed in every sentence, so no chunk text repeats.
Every run is a fresh process, start-up included: `ragops ingest` against a running Prefect server (as a
deployment would run) and `benchmarks/naive_ingest.py`. Runs alternate to spread machine noise; medians.

Usage: python benchmarks/ingest.py [--docs 2000] [--repeats 3] [--incremental-repeats 3] [--scaling 500,2000,8000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, Cli, sample_documents, write_result

sys.path.insert(0, str(ROOT))
from tests.processes import start_prefect_server, stop


def make_corpus(folder: Path, n: int) -> int:
    """Write `n` Markdown documents cut from the sample's sections; returns their total characters.

    Beyond the sample's own sections, documents are marked revisions of earlier ones, changed in every sentence.
    """
    from tasks.ingest.chunking import split_sections

    sections = [
        (doc.title, s.path, s.text[:1500])
        for doc in sample_documents()
        for s in split_sections(doc.text)
        if len(s.text) >= 300
    ]
    folder.mkdir(parents=True)
    total = 0
    for i in range(n):
        title, path, text = sections[i % len(sections)]
        copy = i // len(sections)
        if copy:  # a later revision of the page: every sentence differs, so no chunk repeats another's text
            text = text.replace(". ", f". [r{copy}] ")
        body = f"# {title}: {path}\n\n{text}\n"
        (folder / f"doc-{i:05d}.md").write_text(body, encoding="utf-8")
        total += len(body)
    return total


def edit_documents(folder: Path, fraction: float, round_: int) -> int:
    """Change one paragraph in `fraction` of the documents (another set each round); returns how many."""
    files = sorted(folder.glob("*.md"))
    count = max(1, int(len(files) * fraction))
    for path in files[round_ * count : (round_ + 1) * count]:
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("\n\n", f"\n\nEdited in round {round_}: this paragraph changed.\n\n", 1))
    return count


class Runner:
    """Fresh processes against one Prefect server: the flow through `ragops ingest`, and the naive script."""

    def __init__(self, work: Path, api: str) -> None:
        self.work = work
        self.cli = Cli(api)
        self.runs = 0

    def flow(self, corpus: Path, uri: Path) -> dict[str, Any]:
        self.runs += 1
        out = self.work / f"summary-{self.runs}.json"
        wall = self.cli.run("ingest", str(corpus), "--json", str(out), RAGOPS_LANCEDB_URI=str(uri))
        summary = json.loads(out.read_text())
        return {"wall_s": wall, "flow_s": summary["seconds"], **_counts(summary)}

    def naive(self, corpus: Path, uri: Path) -> float:
        return self.cli.run_script(
            [sys.executable, str(ROOT / "benchmarks" / "naive_ingest.py"), str(corpus), str(uri)]
        )


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ["docs_seen", "chunks_written", "chunks_embedded", "chunks_reused", "stage_seconds", "embed_backend"]
    return {k: summary[k] for k in keys} | {"workers": len(summary["embed_workers"])}


def new_hashes(uri: Path, before: int, after: int) -> int:
    """Chunks in version `after` whose content was not in version `before`: what had to be embedded."""
    import lancedb

    table = lancedb.connect(str(uri)).open_table("chunks")
    hashes = []
    for version in (before, after):
        table.checkout(version)
        hashes.append(set(table.to_lance().to_table(columns=["content_hash"]).column("content_hash").to_pylist()))
    return len(hashes[1] - hashes[0])


def latest_version(uri: Path) -> int:
    import lancedb

    return int(lancedb.connect(str(uri)).open_table("chunks").version)


def scaling_plot(points: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs, seconds = zip(*sorted(points), strict=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(docs, seconds, "o-", label="ragops ingest (wall, start-up included)")
    slope = seconds[0] / docs[0]
    ax.plot([0, docs[-1]], [0, slope * docs[-1]], "--", color="grey", label="linear from the smallest run")
    ax.set_xlabel("documents")
    ax.set_ylabel("seconds")
    ax.set_title("Ingest time against corpus size (2 CPU cores)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--incremental-repeats", type=int, default=3)
    parser.add_argument("--scaling", default="500,2000,8000")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ragops-bench-ingest-"))
    server, api = start_prefect_server(work / "prefect-home", dict(os.environ))
    try:
        runner = Runner(work, api)
        corpus = work / f"corpus-{args.docs}"
        chars = make_corpus(corpus, args.docs)

        flows, naives = [], []
        for i in range(args.repeats):
            naives.append(runner.naive(corpus, work / f"naive-{i}"))
            flows.append(runner.flow(corpus, work / f"flow-{i}"))
            print(f"repeat {i}: naive {naives[-1]} s, flow {flows[-1]['wall_s']} s", flush=True)
        flow_s = statistics.median(f["wall_s"] for f in flows)
        naive_s = statistics.median(naives)

        # incremental: 1 % of the documents change, against the last full table
        uri = work / f"flow-{args.repeats - 1}"
        incremental = []
        for round_ in range(args.incremental_repeats):
            changed = edit_documents(corpus, 0.01, round_)
            before = latest_version(uri)
            run = runner.flow(corpus, uri)
            run["docs_changed"] = changed
            run["new_chunk_contents"] = new_hashes(uri, before, latest_version(uri))
            incremental.append(run)
            print(f"incremental {round_}: {run['wall_s']} s, {run['chunks_embedded']} embedded", flush=True)
        incremental_s = statistics.median(r["wall_s"] for r in incremental)

        scaling = {args.docs: flow_s}
        for n in (int(x) for x in args.scaling.split(",")):
            if n in scaling:
                continue
            folder = work / f"corpus-{n}"
            make_corpus(folder, n)
            run = runner.flow(folder, work / f"scale-{n}")
            scaling[n] = run["wall_s"]
            print(f"scaling {n}: {run['wall_s']} s ({run['chunks_written']} chunks)", flush=True)
            shutil.rmtree(folder)
        points = sorted(scaling.items())
        per_doc = [s / n for n, s in points]
        plot = RESULTS / "ingest_scaling.png"
        scaling_plot(points, plot)
    finally:
        stop([server])
        shutil.rmtree(work, ignore_errors=True)

    write_result(
        "ingest",
        {
            "docs": args.docs,
            "corpus_chars": chars,
            "repeats": args.repeats,
            "naive_s": naives,
            "flow_runs": flows,
            "naive_median_s": naive_s,
            "flow_median_s": flow_s,
            "flow_over_naive": round(flow_s / naive_s, 3),
            "incremental_runs": incremental,
            "incremental_median_s": incremental_s,
            "incremental_over_full": round(incremental_s / flow_s, 4),
            "unchanged_chunks_embedded": sum(r["chunks_embedded"] - r["new_chunk_contents"] for r in incremental),
            "scaling_s": {str(n): s for n, s in points},
            "scaling_s_per_doc": {str(n): round(s / n, 4) for n, s in points},
            "scaling_no_worse_than_linear": all(b <= a * 1.1 for a, b in pairwise(per_doc)),
            "scaling_plot": str(plot.relative_to(ROOT)),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
