"""Prefect tasks and the plain functions they wrap: loading, chunking, embedding, storage, retrieval."""
