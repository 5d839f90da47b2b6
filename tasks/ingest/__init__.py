"""Ingestion: find documents (sources), read their text (formats), cut chunks (chunking), embed them (embedding),
decide what a run must do (plan), and run it on Dask (cluster, partitions, steps)."""
