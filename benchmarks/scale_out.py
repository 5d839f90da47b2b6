"""Scale-out benchmarks of the partitioned ingest (BENCHMARKS.md §11), each against a baseline in the same run.

    python benchmarks/scale_out.py rss --chunks 20000 200000 1000000 [--baseline /tmp/before]
    python benchmarks/scale_out.py extract --workers 1 2 4
    python benchmarks/scale_out.py nochange-s3 --files 100000
    python benchmarks/scale_out.py real [--baseline /tmp/before] [--docs 20000]

`rss`: peak RSS of the flow process (ru_maxrss of the process that runs the flow; the Dask scheduler and workers are
separate processes) over synthetic Markdown corpora, embedded by benchmarks/hash_embedding.py (a cheap deterministic
stand-in, benchmark only) on an external 2-worker cluster. `--baseline` runs the same on another checkout (the code
before partitioned ingestion), up to 200k chunks. `extract`: docs/s of the build stage with 1, 2 and 4 worker
processes (hash embedding, so the figure is reading, extraction and chunking). `nochange-s3`: a no-change nightly
run over F files on a local S3 server (moto), against reading every object as the old plan did. `real`: the real
model end to end, this checkout against `--baseline`, on the bundled sample and a corpus of `--docs` passages.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.cli_latency import start_server
from benchmarks.common import ROOT, SAMPLE, write_result

WORDS = ["".join(random.Random(i).choice("abcdefghijklmnoprstuvwy") for _ in range(3 + i % 7)) for i in range(5000)]

RUN_INGEST = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
if {hash_embedding!r}:
    sys.path.insert(0, {bench!r})
    import hash_embedding
    hash_embedding.install()
from flows.ingest import ingest
started = time.perf_counter()
summary = ingest({source!r})
print("RESULT " + json.dumps({{
    "seconds": time.perf_counter() - started,
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "summary": summary.model_dump(mode="json", exclude={{"quarantined"}}),
}}))
"""


def synthetic_corpus(root: Path, chunks: int, per_file: int = 100, seed: int = 7) -> Path:
    """Markdown files of `per_file` sections each, one chunk per section at RAGOPS_CHUNK_TOKENS=64."""
    rng = random.Random(seed)
    files = max(1, chunks // per_file)
    for f in range(files):
        folder = root / f"d{f // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        sections = [f"# Document {f}\n"]
        for s in range(per_file):
            words = " ".join(rng.choice(WORDS) for _ in range(14))
            sections.append(f"## Section {f}.{s}\n\n{words} {f} {s}.\n")
        (folder / f"doc{f:06d}.md").write_text("\n".join(sections))
    return root


class Cluster:
    """`dask scheduler` and N `dask worker` processes, importing `repo`'s code."""

    def __init__(self, repo: Path, workers: int, env: dict[str, str], preload_hash: bool) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        env = {**env, "PYTHONPATH": f"{repo}:{ROOT / 'benchmarks'}"}
        dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
        self.procs.append(_spawn([*dask, "--port", str(port), "--no-dashboard"], repo, env))
        worker = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--nthreads", "1"]
        worker += ["--no-dashboard", "--memory-limit", "0"]
        if preload_hash:
            worker += ["--preload", "hash_embedding"]
        for _ in range(workers):
            self.procs.append(_spawn(worker, repo, env))
        from distributed import Client

        with Client(self.address, timeout=120) as client:
            client.wait_for_workers(workers, timeout=240)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _spawn(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(api_url: str, uri: Path | str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_")}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
        RAGOPS_LANCEDB_URI=str(uri),
        RAGOPS_TABLE="chunks",
    )
    env.update(extra or {})
    return env


def run_ingest(repo: Path, source: str, env: dict[str, str], hash_embedding: bool) -> dict[str, Any]:
    code = RUN_INGEST.format(
        repo=str(repo), bench=str(ROOT / "benchmarks"), hash_embedding=hash_embedding, source=source
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"ingest in {repo} failed: {done.stderr[-3000:]}")
    return dict(json.loads(line.removeprefix("RESULT ")))


def cpu_flags() -> str:
    flags = Path("/proc/cpuinfo").read_text().split("flags\t\t: ", 1)[1].split("\n", 1)[0].split()
    wanted = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"]
    return " ".join(f for f in wanted if f in flags)


def bench_rss(args: argparse.Namespace, api: str, work: Path) -> dict[str, Any]:
    rows = []
    checkouts = [("partitioned", ROOT)] + ([("before", Path(args.baseline))] if args.baseline else [])
    for chunks in args.chunks:
        corpus = synthetic_corpus(work / f"corpus-{chunks}", chunks)
        for label, repo in checkouts:
            if label == "before" and chunks > args.baseline_max:
                continue
            uri = work / f"db-{label}-{chunks}"
            extra = {"RAGOPS_CHUNK_TOKENS": "64", "RAGOPS_CHUNK_OVERLAP": "0", "RAGOPS_EMBED_LOCAL_MAX_CHUNKS": "0"}
            env = base_env(api, uri, extra)
            cluster = Cluster(repo, 2, env, preload_hash=True)
            try:
                env["RAGOPS_DASK_ADDRESS"] = cluster.address
                result = run_ingest(repo, str(corpus), env, hash_embedding=True)
            finally:
                cluster.close()
            s = result["summary"]
            row = {
                "code": label,
                "chunks": s["chunks_written"],
                "docs": s["docs_new"],
                "rss_mb": round(result["rss_mb"], 1),
                "seconds": round(result["seconds"], 1),
                "stage_seconds": s.get("stage_seconds", {}),
            }
            print(row, flush=True)
            rows.append(row)
            shutil.rmtree(uri, ignore_errors=True)
        shutil.rmtree(corpus, ignore_errors=True)
    plot_rss(rows)
    return {"rows": rows}


def plot_rss(rows: list[dict[str, Any]]) -> None:
    """Peak flow-process RSS against chunks, one line per code version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.common import RESULTS

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for code in dict.fromkeys(r["code"] for r in rows):
        mine = sorted((r for r in rows if r["code"] == code), key=lambda r: r["chunks"])
        ax.plot([r["chunks"] for r in mine], [r["rss_mb"] for r in mine], marker="o", label=code)
    ax.set_xscale("log")
    ax.set_xlabel("chunks ingested")
    ax.set_ylabel("flow process peak RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "scale_out_rss.png", dpi=120)


def bench_extract(args: argparse.Namespace, api: str, work: Path) -> dict[str, Any]:
    corpus = work / "sample-x5"
    for i in range(5):
        shutil.copytree(SAMPLE, corpus / f"copy{i}")
    rows = []
    for workers in args.workers:
        uri = work / f"db-extract-{workers}"
        env = base_env(api, uri, {"RAGOPS_EMBED_LOCAL_MAX_CHUNKS": "0", "RAGOPS_PARTITION_MB": "0.5"})
        cluster = Cluster(ROOT, workers, env, preload_hash=True)
        try:
            env["RAGOPS_DASK_ADDRESS"] = cluster.address
            result = run_ingest(ROOT, str(corpus), env, hash_embedding=True)
        finally:
            cluster.close()
        s = result["summary"]
        build = s["stage_seconds"]["build partitions"]
        docs = s["docs_new"] + s["docs_changed"]
        rows.append(
            {"workers": workers, "docs": docs, "build_s": round(build, 1), "docs_per_s": round(docs / build, 1)}
        )
        print(rows[-1], flush=True)
        shutil.rmtree(uri, ignore_errors=True)
    for row in rows:
        row["speedup"] = round(row["docs_per_s"] / rows[0]["docs_per_s"], 2)
    return {"rows": rows}


def bench_nochange_s3(args: argparse.Namespace, api: str, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.s3_server import start_s3_server

    server = start_s3_server(work)
    try:
        server.create_bucket("bench")
        client = server.client()
        rng = random.Random(3)
        total = 0
        started = time.perf_counter()
        for i in range(args.files):
            body = (f"# Note {i}\n\n" + " ".join(rng.choice(WORDS) for _ in range(120)) + "\n").encode()
            total += len(body)
            client.put_object(Bucket="bench", Key=f"docs/d{i // 1000:03d}/n{i:06d}.md", Body=body)
        upload_s = time.perf_counter() - started
        os.environ.update(server.env())
        # no ANN index: its build on the first ingest is not what this measures
        extra = {**server.env(), "RAGOPS_EMBED_LOCAL_MAX_CHUNKS": "0", "RAGOPS_ANN_INDEX_MIN_ROWS": "100000000"}
        env = base_env(api, "s3://bench/lancedb", extra)
        cluster = Cluster(ROOT, 2, env, preload_hash=True)
        try:
            env["RAGOPS_DASK_ADDRESS"] = cluster.address
            first = run_ingest(ROOT, "s3://bench/docs", env, hash_embedding=True)
            gets_before = server.object_gets()
            again = run_ingest(ROOT, "s3://bench/docs", env, hash_embedding=True)
            gets = [g for g in server.object_gets()[len(gets_before) :] if "/docs/" in g[1]]
        finally:
            cluster.close()
        from tasks.ingest.sources import discover
        from tasks.settings import Settings

        started = time.perf_counter()
        found = discover("s3://bench/docs", Settings())
        read_all_s = time.perf_counter() - started
        read_all_bytes = sum(item.size for item in found.items)
    finally:
        server.stop()
    s = again["summary"]
    return {
        "files": args.files,
        "source_bytes": total,
        "upload_s": round(upload_s, 1),
        "first_ingest_s": round(first["seconds"], 1),
        "no_change_s": round(again["seconds"], 1),
        "no_change_bytes_read": s["bytes_read"],
        "no_change_object_gets": len(gets),
        "no_change_files_unread": s["files_unread"],
        "no_change_version": s["table_version"],
        "read_everything_s": round(read_all_s, 1),
        "read_everything_bytes": read_all_bytes,
    }


def passages_corpus(path: Path, docs: int) -> Path:
    """A BEIR corpus.jsonl of real passages: the paragraphs of the bundled sample's text and Markdown pages."""
    paragraphs: list[str] = []
    for file in sorted(SAMPLE.rglob("*")):
        if file.suffix in (".txt", ".md"):
            paragraphs += [p.strip() for p in file.read_text(errors="ignore").split("\n\n") if len(p.strip()) > 200]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for i in range(docs):
            out.write(
                json.dumps({"_id": f"p{i}", "title": "", "text": paragraphs[i % len(paragraphs)] + f" ({i})"}) + "\n"
            )
    return path


def bench_real(args: argparse.Namespace, api: str, work: Path) -> dict[str, Any]:
    rows = []
    corpora = [
        ("sample", str(SAMPLE)),
        (f"{args.docs} passages", str(passages_corpus(work / "passages" / "corpus.jsonl", args.docs))),
    ][1 if args.no_sample else 0 :]
    checkouts = [("partitioned", ROOT)] + ([("before", Path(args.baseline))] if args.baseline else [])
    for name, source in corpora:
        for label, repo in checkouts:
            uri = work / f"db-real-{label}-{len(rows)}"
            result = run_ingest(repo, source, base_env(api, uri), hash_embedding=False)
            s = result["summary"]
            rows.append(
                {"corpus": name, "code": label, "chunks": s["chunks_written"], "seconds": round(result["seconds"], 1)}
            )
            print(rows[-1], flush=True)
            shutil.rmtree(uri, ignore_errors=True)
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["rss", "extract", "nochange-s3", "real"])
    parser.add_argument("--chunks", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--baseline", default="")
    parser.add_argument("--baseline-max", type=int, default=200_000)
    parser.add_argument("--no-sample", action="store_true", help="real: only the passages corpus")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragops-scale-"))
    port = _free_port()
    server = start_server(work / "prefect", port)
    api = f"http://127.0.0.1:{port}/api"
    try:
        bench = {"rss": bench_rss, "extract": bench_extract, "nochange-s3": bench_nochange_s3, "real": bench_real}
        data = bench[args.which](args, api, work)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    data["cpu_flags"] = cpu_flags()
    print(json.dumps(data, indent=2))
    write_result(f"scale_out_{args.which.replace('-', '_')}", data)


if __name__ == "__main__":
    main()
