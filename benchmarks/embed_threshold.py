"""Where a local Dask cluster starts to pay off: embed N chunks in the flow process vs on a fresh local cluster.

Both paths are timed as the ingest flow meets them, each in a fresh process: in-process = load the model, embed the
N chunks with every core; cluster = start the local cluster (its workers load the model), embed N chunks in batches
over it, close it. The crossover sets `RAGOPS_EMBED_LOCAL_MAX_CHUNKS`' default.

    python benchmarks/embed_threshold.py [--sizes 256 700 2000 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, machine, sample_chunks, write_result

CHILD = r"""
import json, math, os, sys, time
if __name__ == "__main__":
    texts = json.load(open(sys.argv[2]))
    started = time.perf_counter()
    from tasks.embed import embedding
    from tasks.settings import Settings
    settings = Settings()
    if sys.argv[1] == "local":
        spec = embedding.embed_spec(settings, threads=os.cpu_count() or 1)
        embedding.embed_texts(texts, spec, role="passage")
    else:
        from distributed import Client
        from tasks.ingest.cluster import start_local_cluster
        cluster = start_local_cluster(settings)
        with Client(cluster.address()) as client:
            spec = embedding.embed_spec(settings, cluster.threads)
            size = max(1, math.ceil(len(texts) / cluster.workers))
            batches = [texts[i : i + size] for i in range(0, len(texts), size)]
            client.gather(client.map(embedding.embed_texts, batches, spec=spec, role="passage", pure=False))
        cluster.close()
    print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def run(path: str, texts_file: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, path, str(texts_file)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 700, 2000, 5000])
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    texts = [c.text for c in sample_chunks()]
    rows = []
    for size in options.sizes:
        batch = (texts * (size // len(texts) + 1))[:size]
        texts_file = ROOT / "benchmarks" / "results" / f".threshold-{size}.json"
        texts_file.write_text(json.dumps(batch))
        try:
            local = [round(run("local", texts_file), 2) for _ in range(options.repeats)]
            cluster = [round(run("cluster", texts_file), 2) for _ in range(options.repeats)]
        finally:
            texts_file.unlink()
        row = {
            "chunks": size,
            "in_process_s": statistics.median(local),
            "cluster_s": statistics.median(cluster),
            "runs": {"in_process": local, "cluster": cluster},
        }
        row["cluster_over_in_process"] = round(row["cluster_s"] / row["in_process_s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_result("embed_threshold", {"cores": machine()["cores"], "repeats": options.repeats, "sizes": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
