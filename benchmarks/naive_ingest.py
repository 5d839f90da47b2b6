"""The baseline for the ingest benchmark: a naive single-process script, load → chunk → encode → `table.add`.

It uses the same chunker and the same embedding model and backend as the flow, so the difference between the two
is what orchestration costs (Prefect, Dask, hashing, the merge commit, indexes), not a different model.
Usage: python benchmarks/naive_ingest.py FOLDER LANCEDB_URI
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(folder: str, uri: str) -> int:
    import lancedb
    import pyarrow as pa

    from tasks.embed import embedding
    from tasks.ingest.chunking import ChunkingConfig, TokenizerCounter, chunk_document
    from tasks.schemas import Document
    from tasks.settings import Settings

    settings = Settings()
    spec = embedding.embed_spec(settings, threads=os.cpu_count() or 1)
    model = embedding.load_model(spec)
    counter = TokenizerCounter(model.tokenizer)
    config = ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap, embedding.max_content_tokens(spec))
    chunks = []
    for path in sorted(Path(folder).glob("*.md")):
        doc = Document(path.name, path.read_text(encoding="utf-8"), path.stem, folder, str(path), "md")
        chunks += chunk_document(doc, config, counter)
    vectors = model.encode([c.text for c in chunks], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    data = pa.table(
        {
            "chunk_id": [c.chunk_id for c in chunks],
            "doc_id": [c.doc_id for c in chunks],
            "text": [c.text for c in chunks],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
        }
    )
    table = lancedb.connect(uri).create_table("chunks", schema=data.schema)
    table.add(data)
    print(f"{len(chunks)} chunks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
