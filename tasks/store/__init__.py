"""Storage: the one module that talks to LanceDB (lancedb_store), fast reads with Lance alone (lance_reads), and
where production points (production)."""
