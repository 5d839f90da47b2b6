"""Storage: the only package that opens LanceDB or Lance.

Everything above it goes through the seam in `interface` (`open_store(settings)` → `Store`, `.at(version)` →
`TableVersion`), implemented on LanceDB by `lance_backend` over `lancedb_store`; the ingest write path calls
`fragments` (distributed writes) and `lance_reads` (fast reads with Lance alone); `production` is the one module that
moves the `production` tag and writes the promotion log; `maintenance` keeps the table small and fast."""
