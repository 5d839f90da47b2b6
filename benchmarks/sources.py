"""What a second source costs on the bundled sample, and what a declared move costs.

In one process (Prefect's test server, in-process flows, the real model): ingest the sample into a fresh table,
time a no-change run; add a second source (the package READMEs of tests/data) and time the sample's no-change run
again, with two sources in the registry; list the sources; then copy the sample to a new folder and ingest it with
`--as` with one page removed (every file read and hashed, rows rewritten with the new location, the page deleted,
nothing embedded). Ratios are against the
baseline measured in the same run. Writes benchmarks/results/sources.json.

    python benchmarks/sources.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, SAMPLE, write_result
from benchmarks.maintenance import cpu_flags


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragops-bench-sources-"))
    os.environ["RAGOPS_LANCEDB_URI"] = str(work / "lancedb")
    os.environ["RAGOPS_TABLE"] = "chunks"

    from prefect.testing.utilities import prefect_test_harness

    from flows.ingest import ingest
    from tasks.settings import Settings
    from tasks.store import lineage, version_info
    from tasks.store.lance_reads import open_dataset
    from tests.package_corpus import write_package_corpus

    sample = work / "python-docs"
    shutil.copytree(SAMPLE, sample)
    packages = write_package_corpus(work / "packages")

    def no_change() -> list[float]:
        times = []
        for _ in range(args.repeats):
            seconds, summary = timed(lambda: ingest(source=str(sample)))
            assert summary.table_version is None, "a no-change run wrote a version"
            times.append(seconds)
        return times

    def listing() -> float:
        return timed(lambda: version_info.sources_report(open_dataset(Settings(), "chunks")))[0]

    with prefect_test_harness(server_startup_timeout=120):
        first_s, first = timed(lambda: ingest(source=str(sample)))
        one_versions = len(open_dataset(Settings(), "chunks").versions())
        one = no_change()
        one_list = statistics.median(listing() for _ in range(args.repeats))

        second_s, second = timed(lambda: ingest(source=str(packages), new_source="packages"))
        two = no_change()
        two_list = statistics.median(listing() for _ in range(args.repeats))
        metadata = lineage.table_metadata(open_dataset(Settings(), "chunks"))

        moved = work / "checkout-2" / "python-docs"
        shutil.copytree(sample, moved)
        removed_page = "library/tty.html"
        (moved / removed_page).unlink()  # the scenario: a copy of the sample with one page removed
        move_s, move = timed(lambda: ingest(source=str(moved), as_source="python-docs"))
        after = version_info.sources_report(open_dataset(Settings(), "chunks"))

    data = {
        "cpu_flags": cpu_flags(),
        "load_average_at_end": os.getloadavg(),
        "sample": {
            "documents": first.docs_new,
            "chunks": first.chunks_written,
            "first_ingest_s": round(first_s, 2),
            "versions_after_first_ingest": one_versions,
        },
        "no_change_one_source_s": [round(t, 3) for t in one],
        "second_source": {
            "documents": second.docs_new,
            "chunks": second.chunks_written,
            "ingest_s": round(second_s, 2),
            "table_version": second.table_version,
        },
        "no_change_two_sources_s": [round(t, 3) for t in two],
        "no_change_ratio_two_vs_one": round(statistics.median(two) / statistics.median(one), 3),
        "sources_listing_s": {"one": round(one_list, 3), "two": round(two_list, 3)},
        "metadata_bytes": {
            "registry": len(metadata.get(lineage.SOURCES_KEY, "")),
            "lineage": len(metadata.get(lineage.LINEAGE_KEY, "")),
        },
        "move": {
            "seconds": round(move_s, 2),
            "ratio_to_no_change": round(move_s / statistics.median(two), 2),
            "ratio_to_first_ingest": round(move_s / first_s, 3),
            "removed_page": removed_page,
            "docs_deleted": move.docs_deleted,
            "chunks_deleted": move.chunks_deleted,
            "docs_refreshed": move.docs_refreshed,
            "sources_after": [{k: r[k] for k in ("name", "location", "documents", "chunks")} for r in after],
            "chunks_embedded": move.chunks_embedded,
            "chunks_written": move.chunks_written,
            "bytes_read": move.bytes_read,
        },
        "note": "one process, Prefect's test server; the sample's table also holds the second source's rows from "
        "the second step on. Each run that commits writes one more version than before the registry (the table "
        "metadata commit after the data commit).",
    }
    write_result("sources", data)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
