"""Prefect tasks and the plain functions they wrap: loading, chunking, embedding, storage, retrieval."""

import os

# Lance (Rust) logs deprecation notices about score columns on every hybrid query; keep its log to errors.
os.environ.setdefault("LANCE_LOG", "error")
