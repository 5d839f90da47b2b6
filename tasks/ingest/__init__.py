"""Ingestion: find documents (sources), read their text (formats), cut chunks (chunking), and run the work on
Dask (cluster, partitions, steps); the embedding model itself is tasks/embed/, shared with serving."""
