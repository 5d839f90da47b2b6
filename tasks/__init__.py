"""Prefect tasks and the plain functions they wrap, by stage: ingest, store, serve; settings, errors and schemas are
shared by all of them."""

import os

# LanceDB (Rust) logs a deprecation notice about score columns on every hybrid query, from sub-queries it builds
# itself; keep its log to errors unless the user asks for more.
os.environ.setdefault("LANCEDB_LOG", "error")
