"""Write the extracted text of every sample document to a folder, for curating golden questions by hand.

Usage: python datasets/tools/dump_texts.py OUT_DIR   (one OUT_DIR/<doc_id>.txt per document)
The texts are exactly what ingestion sees, so an evidence passage copied from them matches the chunks.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tasks.ingest.formats import extract
from tasks.ingest.sources import discover
from tasks.schemas import Document
from tasks.settings import Settings

SAMPLE = Path(__file__).resolve().parents[1] / "python-docs"


def main(out: str) -> int:
    settings = Settings()
    found = discover(str(SAMPLE), settings)
    for item in found.items:
        doc = extract(item, found.fs, settings, found.source)
        if isinstance(doc, Document):
            dest = Path(out) / f"{doc.doc_id}.txt"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(f"TITLE: {doc.title}\n\n{doc.text}\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
