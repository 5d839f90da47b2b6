"""Rewrite BENCHMARKS.md from the JSON figures in benchmarks/results/ (written by the other benchmark scripts).

Usage: python benchmarks/report.py
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

from common import RESULTS, ROOT


def models_section(result: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    """§15, written by benchmarks/models.py (imported here only when its results exist: it loads the models)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.models import models_section as section

    return section(result)


BARS = {
    "cpu_embedding": "≥ 2× plain `encode` on 2 CPU cores",
    "gpu_embedding": "≥ 3× plain fp16 `encode` on one H100/H200",
    "ingest_overhead": "≤ 1.15× the naive script, start-up included",
    "incremental": "≤ 5 % of the full ingest, 0 unchanged chunks embedded",
    "query": "hybrid p95 < 50 ms at 100,000 chunks with ANN recall@10 ≥ 0.95",
    "evaluation": "60 golden questions in < 60 s on 2 cores, model load included",
    "scaling": "no worse than linear",
    "serving": "a short concurrent load on loopback: p50/p95 recorded, 0 errors",
    "maintenance_bytes": "bytes on disk ≤ 2× a clean ingest's over 60 nightly runs, maintained weekly",
    "maintenance_p95": "hybrid p95 after 60 nights ≤ 1.10× a freshly ingested table's",
    "gate_false_promotion": "promotes a true regression ≥ the tolerance in ≤ 5 % of trials",
    "gate_false_block": "blocks a neutral candidate or a true improvement ≥ 0.05 in ≤ 10 % of trials",
    "gate_identical": "blocks an identical candidate always",
}


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def cpu_section(r: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    base = r["baseline"]
    loads = ", ".join(f"{x:.2f}" for x in r["load_average_at_start"])
    loads_end = ", ".join(f"{x:.2f}" for x in r["load_average_at_end"])
    lines = [
        "## 1. CPU embedding throughput (`benchmarks/embedding_cpu.py`)",
        "",
        f"{r['passages']} real chunks of the sample (mean {r['mean_passage_chars']} characters, ~157 tokens), "
        f"{r['threads']} threads, one process; {r['machine']['cpu']}, CPU flags: {_flags(r['cpu_flags'])}; load "
        f"average (1, 5, 15 min) {loads} at the start, {loads_end} at the end. Baseline: {base['what']}, "
        f"{base['passages_per_s']} passages/s (median of its {base['runs']} runs, {base['passages_per_s_min']}–"
        f"{base['passages_per_s_max']}). Each backend is timed in {r['pairs']} interleaved pairs with the baseline, "
        "the order alternating within the pairs (baseline then backend, backend then baseline, ...), so that a "
        "drifting machine load hits both alike; **× plain encode is the median of the per-pair ratios** (backend "
        "passages/s ÷ baseline passages/s in the same pair), with their range; passages/s are medians over the "
        "pairs (under a drifting load their quotient need not equal the median ratio). 1-min load average after "
        "each backend's pairs: "
        + ", ".join(f"{name} {e['load_average_after'][0]:.1f}" for name, e in r["backends"].items())
        + f". Quality: all {r['corpus_chunks_for_quality']} sample chunks embedded with the backend, golden-set "
        "retrieval at k = 10 with that backend's query vectors, against fp32 PyTorch "
        f"(tolerance {r['quality_tolerance']}).",
        "",
        "| backend (project stage) | computes in | passages/s | baseline passages/s (same pairs) "
        "| × plain encode, per pair: median (min–max) | min cosine vs fp32 | golden Δ (worst) | load s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in r["backends"].items():
        deltas = e.get("golden_delta_vs_fp32")
        worst = f"{max(deltas.values(), key=abs):+.4f}" if deltas else "0 (fp32-exact vectors)"
        lines.append(
            f"| `{name}` | {e.get('precision', '')} | {e['passages_per_s']} | {e['baseline_passages_per_s']} "
            f"| {e['speedup_vs_plain_encode']:.2f}× ({e['speedup_min']:.2f}–{e['speedup_max']:.2f}) "
            f"| {e['min_cosine_vs_fp32']} | {worst} | {e['load_or_export_s']} |"
        )
    default = r["default_cpu_backend"]
    chosen_entry = r["backends"].get(default, {})
    speedup = chosen_entry.get("speedup_vs_plain_encode", 0)
    golden = r["backends"].get("torch", {}).get("golden", {})
    chosen = chosen_entry.get("golden", {})
    if golden and chosen:
        lines += [
            "",
            f"Golden-set retrieval (56 answerable questions: one question moves a hit rate or recall by 0.018), "
            f"fp32 PyTorch against the default `{default}`:",
            "",
        ]
        lines += ["| metric | fp32 | " + default + " |", "|---|---:|---:|"]
        lines += [f"| {m} | {golden[m]} | {chosen[m]} |" for m in golden]
    lines += [
        "",
        f"Default on CPU (`RAGOPS_EMBED_BACKEND=auto`): `{default}`; fastest within tolerance in this run: "
        f"`{r['fastest_within_tolerance']}`.",
        "",
    ]
    spread = f", range {chosen_entry['speedup_min']:.2f}–{chosen_entry['speedup_max']:.2f}" if chosen_entry else ""
    flags = r.get("cpu_flags") or []
    bf16 = any("bf16" in f or "amx" in f for f in flags)
    machine = "AVX512-BF16" if bf16 else "AVX2 only, no bf16: the earlier 2.23× was on an AVX512-BF16 machine"
    value = (
        f"{speedup:.2f}× ({default}; median of {r['pairs']} interleaved pairs{spread}; {machine}) "
        f"{verdict(speedup >= 2)}"
    )
    return lines, ("CPU embedding", BARS["cpu_embedding"], value)


def gpu_section(r: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    ratio = r["stage_vs_plain_fp16"]
    lines = [
        f"## 2. GPU embedding throughput ({r['gpu']}, `benchmarks/gpu_embedding_check.py`)",
        "",
        f"{r['chunks']} real chunks (~160 tokens) repeated to {r['throughput_texts']} passages, medians of 3 runs. "
        "Measured on a lent GPU machine in an earlier session (none was lent when this file was last written); "
        "the script runs with the device tool, see deployments/README.md.",
        "",
        "| path | passages/s | × plain fp16 encode |",
        "|---|---:|---:|",
        f"| ragops stage, fp16, token-budget batches | {r['stage_fp16_token_budget_passages_per_s']:.0f} | "
        f"{ratio:.2f}× |",
        f"| ragops stage, fp16, batches of 128 | {r['stage_fp16_batch128_passages_per_s']:.0f} | "
        f"{r['stage_fp16_batch128_passages_per_s'] / r['plain_encode_fp16_b64_passages_per_s']:.2f}× |",
        f"| plain `encode` fp16, batch 64 | {r['plain_encode_fp16_b64_passages_per_s']:.0f} | 1.00× |",
        f"| plain `encode` fp32, batch 64 | {r['plain_encode_fp32_b64_passages_per_s']:.0f} | "
        f"{r['plain_encode_fp32_b64_passages_per_s'] / r['plain_encode_fp16_b64_passages_per_s']:.2f}× |",
        "",
        f"fp16 against fp32: minimum cosine {r['min_cosine_fp16_vs_fp32']:.5f}.",
        "",
    ]
    note = f"{ratio:.2f}× ({r['gpu']}, earlier session) {verdict(ratio >= 3)}"
    return lines, ("GPU embedding", BARS["gpu_embedding"], note)


def ingest_sections(r: dict[str, Any]) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    last = r["flow_runs"][-1]
    full_flow_s = statistics.median(f["flow_s"] for f in r["flow_runs"])
    inc_flow_s = statistics.median(x["flow_s"] for x in r["incremental_runs"])
    flow_ratio = inc_flow_s / full_flow_s
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in last["stage_seconds"].items())
    startup = last["wall_s"] - last["flow_s"]
    inc = r["incremental_runs"]
    lines = [
        "## 3. End-to-end ingestion against a naive script (`benchmarks/ingest.py`)",
        "",
        f"{r['docs']} Markdown documents cut from the sample's sections ({r['corpus_chars']:,} characters, "
        f"{last['chunks_written']} chunks). Each run is a fresh process, start-up included; `ragops ingest` runs "
        "against a running Prefect server (as a deployment does) and embeds on a 2-process Dask cluster "
        f"(`{last['embed_backend']}`); the naive script (`benchmarks/naive_ingest.py`) loads, chunks with the same "
        "chunker, encodes with the same model and backend in one process, and calls `table.add`. "
        f"Medians of {r['repeats']} alternating runs.",
        "",
        "| run | wall s (median) | all runs |",
        "|---|---:|---|",
        f"| naive script | {r['naive_median_s']} | {', '.join(map(str, r['naive_s']))} |",
        f"| `ragops ingest` | {r['flow_median_s']} | {', '.join(str(f['wall_s']) for f in r['flow_runs'])} |",
        "",
        f"Ratio: **{r['flow_over_naive']}×**. Where the flow's time went (last run): process start, imports and "
        f"flow-run creation {startup:.1f} s; {stages}.",
        "",
        "## 4. Incremental re-ingestion, 1 % of documents changed",
        "",
        "| round | docs changed | wall s | chunks embedded | new chunk contents | vectors reused |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {i} | {x['docs_changed']} | {x['wall_s']} | {x['chunks_embedded']} | {x['new_chunk_contents']} "
        f"| {x['chunks_reused']} |"
        for i, x in enumerate(inc)
    ]
    lines += [
        "",
        f"Median {r['incremental_median_s']} s = **{r['incremental_over_full'] * 100:.1f} %** of the full ingest; "
        f"embeddings computed for unchanged chunks: **{r['unchanged_chunks_embedded']}** (chunks embedded minus "
        "chunk contents absent from the previous version, read back from LanceDB).",
        "",
        f"Inside the flow (Prefect's flow-run time, without the ~4 s every fresh Python process spends starting and "
        f"importing Prefect and LanceDB): {inc_flow_s:.2f} s against {full_flow_s:.1f} s = "
        f"**{flow_ratio * 100:.1f} %**.",
        "",
    ]
    scaling = ["## 7. Scaling", "", "| documents | wall s | s per document |", "|---:|---:|---:|"]
    scaling += [f"| {n} | {s} | {r['scaling_s_per_doc'][n]} |" for n, s in r["scaling_s"].items()]
    scaling += ["", f"![ingest time against corpus size]({r['scaling_plot']})", ""]
    rows = [
        (
            "Ingest overhead",
            BARS["ingest_overhead"],
            f"{r['flow_over_naive']}× {verdict(r['flow_over_naive'] <= 1.15)}",
        ),
        (
            "Incremental",
            BARS["incremental"],
            f"{r['incremental_over_full'] * 100:.1f} % wall, {flow_ratio * 100:.1f} % flow time, "
            f"{r['unchanged_chunks_embedded']} unchanged embedded "
            f"{verdict(r['incremental_over_full'] <= 0.05 and r['unchanged_chunks_embedded'] == 0)} on wall time",
        ),
        (
            "Scaling",
            BARS["scaling"],
            " → ".join(f"{v:.4f}" for v in r["scaling_s_per_doc"].values())
            + f" s/doc {verdict(r['scaling_no_worse_than_linear'])}",
        ),
    ]
    return lines, scaling, rows


def query_section(r: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    modes = r["modes"]
    lines = [
        "## 5. Query latency at 100,000 chunks (`benchmarks/query_latency.py`)",
        "",
        f"{r['rows']:,} rows: real sample chunk texts and noisy copies of their real embeddings; {r['queries']} "
        f"queries (golden questions and chunk sentences), through `tasks.serve.retrieval.search` with query embedding "
        f"included (embedding alone: p50 {r['query_embedding']['p50_ms']} ms). Indexes: {', '.join(r['indices'])}; "
        f"ANN index built in {r['ann_index_build_s']} s. Query settings: {r['default_ann']}.",
        "",
        "| mode | ANN p50 ms | ANN p95 ms | exact p50 ms | exact p95 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, m in modes.items():
        exact = m.get("exact", {})
        lines.append(
            f"| {mode} | {m['ann']['p50_ms']} | {m['ann']['p95_ms']} | {exact.get('p50_ms', '–')} "
            f"| {exact.get('p95_ms', '–')} |"
        )
    lines += ["", "ANN recall@10 against exact search (vector mode):", ""]
    lines += ["| nprobes | refine factor | recall@10 | p50 ms | p95 ms |", "|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {s['nprobes']} | {s['refine_factor'] or '–'} | {s['recall@10']} | {s['p50_ms']} | {s['p95_ms']} |"
        for s in r["ann_sweep"]
    ]
    p95, recall = modes["hybrid"]["ann"]["p95_ms"], r["default_ann_recall@10"]
    lines += ["", f"Default settings: recall@10 **{recall}**, hybrid p95 **{p95} ms**.", ""]
    ok = p95 < 50 and recall >= 0.95
    return lines, ("Query latency", BARS["query"], f"{p95} ms, recall {recall} {verdict(ok)}")


def eval_section(r: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    lines = [
        "## 6. Evaluation (`benchmarks/evaluation.py`)",
        "",
        f"`ragops evaluate` in a fresh process on the {r['questions']}-question golden set, offline metrics, "
        f"candidate and production both scored (mode sweep, answers, IR and ragas metrics, Great Expectations, "
        f"reports). Runs: {', '.join(str(x['wall_s']) for x in r['runs'])} s; median {r['median_s']} s = "
        f"{r['seconds_per_question']} s per question, {r['seconds_for_60_questions']} s for 60 questions.",
        "",
    ]
    ok = r["seconds_for_60_questions"] < 60
    return lines, ("Evaluation", BARS["evaluation"], f"{r['seconds_for_60_questions']} s {verdict(ok)}")


def serve_section(r: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    direct = r["direct"]
    lines = [
        "## 8. Serving (`benchmarks/serve_load.py`)",
        "",
        f"`ragops serve` (uvicorn, one process) on loopback over the bundled sample ({r['table_rows']:,} chunks, "
        f"version {r['version']}), {r['mode']} k={r['k']}, golden-set questions; latency at the client, query "
        f"embedding, metrics and the query log included ({r['queries_logged']:,} queries logged). Baseline: the "
        f"same search in the benchmark process, p50 {direct['p50_ms']} ms, p95 {direct['p95_ms']} ms. One client: "
        f"served p50 = **{r['served_over_direct_p50']}×** the direct p50.",
        "",
        "| clients | requests | errors | p50 ms | p95 ms | p99 ms | requests/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {x['concurrency']} | {x['requests']} | {x['errors']} | {x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} "
        f"| {x['throughput_rps']} |"
        for x in r["levels"]
    ]
    peak = max(x["throughput_rps"] for x in r["levels"])
    lines += [
        "",
        f"Throughput levels off at {peak} requests/s: the server's embedding and search already use both cores, "
        "which the load generator shares, so beyond one client the latency grows as clients ÷ throughput "
        "(queueing). More cores, `--workers` or replicas raise the ceiling.",
        "",
        f"![serving latency by concurrent clients]({r['plot']})",
        "",
    ]
    busiest = max(r["levels"], key=lambda x: x["concurrency"])
    value = (
        f"{busiest['concurrency']} clients: p50 {busiest['p50_ms']} ms, p95 {busiest['p95_ms']} ms, "
        f"{r['errors']} errors {verdict(r['errors'] == 0)}"
    )
    return lines, ("Serving", BARS["serving"], value)


def cli_section(r: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    before, after = r.get("before"), r["after"]
    lines = [
        "## 9. Quick commands (`benchmarks/cli_latency.py`)",
        "",
        f"Each command in a fresh process, as a user runs it, against a running local Prefect server; median of "
        f"{r['repeats']} runs after one warm-up. CPU flags: {', '.join(r['cpu_flags']) or 'none listed'}. Before: "
        "the same commands on the commit before issue 14, in the same script run.",
        "",
        "| command | bar | before (median s) | after (median s) | after runs (s) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, figures in after.items():
        was = before[name]["median_s"] if before else "–"
        runs = ", ".join(str(x) for x in figures["runs_s"])
        lines.append(f"| `{r['commands'][name]}` | ≤ {r['bars_s'][name]} | {was} | {figures['median_s']} | {runs} |")
    imports = ", ".join(f"`{m}` {s} s" for m, s in r["import_s"].items())
    lines += ["", f"Import time alone (median, fresh process): {imports}.", ""]
    met = [name for name, figures in after.items() if figures["median_s"] <= r["bars_s"][name]]
    value = ", ".join(f"{name} {figures['median_s']} s" for name, figures in after.items())
    return lines, ("Quick commands", "ingest ≤ 3 s, versions ≤ 1 s, search ≤ 2 s", f"{value} ({len(met)}/3 met)")


def threshold_section(r: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    lines = [
        "## 10. Where a local Dask cluster pays off (`benchmarks/embed_threshold.py`)",
        "",
        f"Embedding N sample chunks in a fresh process, {r['cores']} cores, median of {r['repeats']}: in the flow "
        "process (model load, every core) against a fresh local cluster (start, workers load the model, batches, "
        "close).",
        "",
        "| chunks | in process (s) | local cluster (s) | cluster ÷ in process |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {x['chunks']} | {x['in_process_s']} | {x['cluster_s']} | {x['cluster_over_in_process']} |"
        for x in r["sizes"]
    ]
    lines += [
        "",
        "The cluster's start costs a fixed few seconds and, on this machine, buys no throughput (one process already "
        "uses every core). The default `RAGOPS_EMBED_LOCAL_MAX_CHUNKS` is therefore 5,000 chunks, where that start "
        "is under a tenth of the embedding time; a configured scheduler (`RAGOPS_DASK_ADDRESS`) is always used.",
        "",
    ]
    last = r["sizes"][-1]
    value = f"{last['chunks']} chunks: cluster {last['cluster_over_in_process']}× in-process time"
    return lines, ("Local cluster threshold", "cluster where it pays off", value)


def scale_section(loaded: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """§11 from the four scale_out_* results (any may be missing)."""
    lines = ["## 11. Partitioned ingestion at scale (`benchmarks/scale_out.py`)", ""]
    rows: list[tuple[str, str, str]] = []
    if rss := loaded.get("scale_out_rss"):
        flags = rss.get("cpu_flags", "")
        lines += [
            "Peak RSS of the process that runs the flow (the Dask scheduler and 2 workers are separate processes), on "
            "synthetic Markdown corpora of 100 sections per file at `RAGOPS_CHUNK_TOKENS=64`, embedded by "
            "`benchmarks/hash_embedding.py`: a cheap deterministic stand-in for the model, benchmark only, never "
            f"selectable by a user (the tokenizer and chunker are the real ones). CPU flags: {flags}.",
            "",
            "| code | chunks | documents | peak RSS (MB) | wall (s) |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['code']} | {r['chunks']:,} | {r['docs']:,} | {r['rss_mb']} | {r['seconds']} |" for r in rss["rows"]
        ]
        lines += ["", "![peak RSS against chunks](benchmarks/results/scale_out_rss.png)", ""]
        mine = sorted((r for r in rss["rows"] if r["code"] == "partitioned"), key=lambda r: r["chunks"])
        if len(mine) > 1:
            growth = mine[-1]["rss_mb"] / mine[0]["rss_mb"] - 1
            rows.append(
                (
                    "Flow-process peak RSS",
                    "flat within 15 % from 20k to 1M chunks",
                    f"{mine[0]['rss_mb']} → {mine[-1]['rss_mb']} MB ({growth:+.0%}) from {mine[0]['chunks']:,} to "
                    f"{mine[-1]['chunks']:,} chunks ({verdict(growth <= 0.15)})",
                )
            )
    if ext := loaded.get("scale_out_extract"):
        lines += [
            "Read, extract and chunk throughput: the bundled sample copied 5 times (HTML, PDF, Markdown, text), "
            "hash embedding, 0.5 MiB partitions, N worker processes of 1 thread on this 2-core machine.",
            "",
            "| workers | documents | build stage (s) | docs/s | speed-up |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['workers']} | {r['docs']} | {r['build_s']} | {r['docs_per_s']} | {r['speedup']}× |"
            for r in ext["rows"]
        ]
        lines += [""]
        best = max(ext["rows"], key=lambda r: r["speedup"])
        rows.append(
            ("Extract and chunk on workers", "scales with workers", f"{best['speedup']}× with {best['workers']}")
        )
    if s3 := loaded.get("scale_out_nochange_s3"):
        ratio = s3["read_everything_s"] / max(s3["no_change_s"], 1e-9)
        lines += [
            f"No-change nightly run over {s3['files']:,} files on a local S3 server (moto), 2 workers: the run lists "
            "the bucket and compares ETags; the old plan read every object to hash it (timed here with the same "
            "`discover()` the old flow ran).",
            "",
            "| | wall (s) | bytes read | object GETs |",
            "|---|---:|---:|---:|",
            f"| no-change ingest (metadata) | {s3['no_change_s']} | {s3['no_change_bytes_read']:,} "
            f"| {s3['no_change_object_gets']} |",
            f"| read everything (before) | {s3['read_everything_s']} | {s3['read_everything_bytes']:,} "
            f"| {s3['files']:,} |",
            "",
            f"First ingest of the bucket: {s3['first_ingest_s']} s; upload: {s3['upload_s']} s.",
            "",
        ]
        rows.append(
            (
                "No-change run on S3",
                "no object read",
                f"{s3['no_change_object_gets']} GETs; {s3['no_change_s']} s against {s3['read_everything_s']} s "
                f"reading every object ({ratio:.1f}×)",
            )
        )
    if real := loaded.get("scale_out_real"):
        lines += [
            "The real model end to end (`ragops ingest` defaults, OpenVINO on the CPU), this code against the code "
            "before partitioned ingestion, in the same script run.",
            "",
            "| corpus | code | chunks | wall (s) |",
            "|---|---|---:|---:|",
        ]
        lines += [f"| {r['corpus']} | {r['code']} | {r['chunks']:,} | {r['seconds']} |" for r in real["rows"]]
        lines += [""]
    logged = RESULTS / "scale_out_nochange_s3.md"  # figures read from the S3 server's log when the run had no JSON
    if not loaded.get("scale_out_nochange_s3") and logged.exists():
        lines += [*logged.read_text().strip().splitlines(), ""]
    return lines, rows


def maintenance_section(r: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """§12 from maintenance.json."""
    size, bars = r["S_bytes"], r["bars"]
    clean = r["clean_ingest"]
    last = r["rows"][-1]["night"]
    lines = [
        f"## 12. Table maintenance over {r['nights']} nightly runs (`benchmarks/maintenance.py`)",
        "",
        f"The bundled sample ({r['documents']} documents: HTML, PDF, Markdown, text) ingested once "
        f"({clean['chunks_written']:,} chunks, S = {size / 1e6:.2f} MB on disk, {clean['fragments']} fragments, "
        f"{clean['versions']} versions) and promoted; the store copied to A (never maintained), B (maintained) and "
        f"F (never changed: the fresh table). Each night {r['changed_per_night']} documents (1 %, PDFs aside, "
        "seeded) change: a paragraph appended or replaced in Markdown and text, a paragraph added to the main "
        "content of an HTML page; the corpus is ingested into A and B and each night's version promoted in both, "
        f"as if the gate passed. Every {r['every']} nights `maintain` runs on B, retention mapped to simulated days: "
        "`RAGOPS_RETAIN_CANDIDATE_DAYS` = now − start of night n−6 (candidates of the last 7 nights are younger "
        "than 7 days), `RAGOPS_RETAIN_UNTAGGED_HOURS=0`, rollback depth 5 promotions (default). After each night: "
        f"bytes on disk, fragments, versions, and hybrid k = 10 latency of the {r['questions']} golden questions "
        f"(vectors embedded once) on A's and B's production and on F, {r['passes']} passes after a warm-up, "
        f"interleaved question by question. {r['machine']['cpu']}, {r['machine']['cores']} cores, CPU flags: "
        f"{r['cpu_flags']}.",
        "",
        "| night | bytes A (MB) | A ÷ S | bytes B (MB) | B ÷ S | fragments A / B | versions A / B "
        "| p95 A / B / fresh (ms) | p95 B ÷ fresh |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    shown = {1, 7, 14, 21, 28, 35, 42, 49, 56, last}
    for row in r["rows"]:
        if row["night"] not in shown:
            continue
        a, b, lat = row["a"], row["b"], row["latency"]
        mark = " (maintained)" if row.get("maintained") else ""
        lines.append(
            f"| {row['night']}{mark} | {a['bytes'] / 1e6:.2f} | {a['bytes'] / size:.2f}× | {b['bytes'] / 1e6:.2f} "
            f"| {b['bytes'] / size:.2f}× | {a['fragments']} / {b['fragments']} | {a['versions']} / {b['versions']} "
            f"| {lat['a']['p95_ms']} / {lat['b']['p95_ms']} / {lat['fresh']['p95_ms']} "
            f"| {lat['b']['p95_ms'] / lat['fresh']['p95_ms']:.2f}× |"
        )
    runs = r["maintenance"]
    if runs:
        seconds = sorted(m["seconds"] for m in runs)
        lines += [
            "",
            f"{len(runs)} maintenance runs on B: {seconds[0]}–{seconds[-1]} s each; per run "
            f"{min(m['versions_removed'] for m in runs)}–{max(m['versions_removed'] for m in runs)} versions removed, "
            f"{min(m['tags_deleted'] for m in runs)}–{max(m['tags_deleted'] for m in runs)} candidate tags deleted, "
            f"{min(m['bytes_reclaimed'] for m in runs) / 1e6:.1f}–{max(m['bytes_reclaimed'] for m in runs) / 1e6:.1f} "
            "MB reclaimed, fragments "
            + ", ".join(f"{m['fragments_before']}→{m['fragments_after']}" for m in runs)
            + f"; production followed the compaction in {sum(bool(m['production_moved']) for m in runs)} of "
            f"{len(runs)}.",
        ]
        stayed = [m for m in runs if not m["production_moved"]]
        lines += [f"Night {m['night']}: production {m.get('production_note', 'stayed')}." for m in stayed]
    lines += ["", f"![bytes, fragments and hybrid p95 by night]({r['plot']})", ""]
    week = r["rows"][-7:]
    ratio_b = statistics.median(x["latency"]["b"]["p95_ms"] / x["latency"]["fresh"]["p95_ms"] for x in week)
    ratio_a = statistics.median(x["latency"]["a"]["p95_ms"] / x["latency"]["fresh"]["p95_ms"] for x in week)
    lines += [
        f"Night {last}: B {bars['final_bytes_b_over_s']}× S (maximum {bars['max_bytes_b_over_s']}× S, night "
        f"{bars['max_bytes_b_night']}), A {bars['final_bytes_a_over_s']}× S; hybrid p95 B ÷ fresh "
        f"**{bars['p95_b_over_fresh']}×**, A ÷ fresh {bars['p95_a_over_fresh']}× (medians over the last "
        f"{len(week)} nights, against machine noise: B {ratio_b:.2f}×, A {ratio_a:.2f}×).",
        "",
    ]
    after = [x["latency"]["b"]["p95_ms"] / x["latency"]["fresh"]["p95_ms"] for x in r["rows"] if x.get("maintained")]
    if after:
        lines += [
            f"Right after each maintenance, p95 B ÷ fresh: median {statistics.median(after):.2f}× "
            f"(range {min(after):.2f}–{max(after):.2f}×, {len(after)} runs).",
            "",
        ]
    notes = RESULTS / "maintenance_notes.md"  # the analysis written after the run
    if notes.exists():
        lines += [*notes.read_text().strip().splitlines(), ""]
    rows = [
        (
            "Maintenance: bytes",
            BARS["maintenance_bytes"],
            f"max {bars['max_bytes_b_over_s']}× S, {bars['final_bytes_b_over_s']}× at night {last} (unmaintained "
            f"{bars['final_bytes_a_over_s']}×) {verdict(bars['max_bytes_b_over_s'] <= 2.0)}",
        ),
        (
            "Maintenance: latency",
            BARS["maintenance_p95"],
            f"{bars['p95_b_over_fresh']}× at night {last} (unmaintained {bars['p95_a_over_fresh']}×) "
            f"{verdict(bars['p95_b_over_fresh'] <= 1.10)}",
        ),
    ]
    return lines, rows


def gate_calibration_section(r: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """§13 from gate_calibration.json: the OC table of each run (after, before) and corpus, and the bars."""
    runs = r["runs"]
    lines = [
        "## 13. The gate's operating characteristics (`benchmarks/gate_calibration.py`)",
        "",
        "Candidates of a real promoted table whose true effect is known by construction (LanceDB operations on the "
        "production version: evidence chunks deleted or their vectors replaced by random unit vectors, a cited "
        "document deleted, the full-text index dropped; documents no question is about added by `ragops ingest`, "
        "uncited documents edited; cited passages edited, making the golden set stale). Candidate and production "
        "are scored once on the full golden set by the evaluate flow's `score_table` after `prepare`, with its "
        "Great Expectations and same-rows checks; the true Δ is the paired change of chunk_ndcg@10 on the full set, "
        "each version in its chosen mode. Each candidate is then judged by `judge` in "
        f"{next(iter(runs.values()))['trials']} trials, each on a random "
        f"{next(iter(runs.values()))['share']:.0%} of the questions with a fresh bootstrap seed, "
        'with the mode re-chosen inside the bootstrap (reselect) and with the chosen mode fixed. "better" is a '
        "worse candidate judged the other way round (production degraded, the candidate restored). Bars hold the "
        "reselect column; tolerance " + f"{r['tolerance']}.",
        "",
    ]
    rows: list[tuple[str, str, str]] = []
    order = {"fixed": 0, "after": 1, "before": 2}
    titles = {
        "fixed": "After the fixes this benchmark found (stale by content hash, failing modes, confidence 0.90)",
        "after": "After the first gate changes",
        "before": "Before the gate changes",
    }
    for label in sorted(runs, key=lambda name: order.get(name, 3)):
        run = runs[label]
        title = titles.get(label, label)
        took = f", {run['wall_s'] / 60:.0f} min" if run["wall_s"] else ""
        lines += [f"### {title} (commit {run['commit'] or '?'}{took})", ""]
        if label == "before":
            lines += ["That code has no mode re-selection in the bootstrap: both columns are the same.", ""]
        for corpus in run["corpora"]:
            lines += [
                f"**{corpus['corpus']}** ({corpus['golden_set']}, {corpus['questions']} questions, "
                f"{corpus['production_rows']:,} chunks; score_table median {corpus['score_table_s_median']} s)",
                "",
                "| scenario | true Δ | promoted, mode re-chosen | promoted, mode fixed | bar | main block reason |",
                "|---|---:|---:|---:|---|---|",
            ]
            for row in sorted(corpus["rows"], key=lambda x: (x["true_delta"] is None, x["true_delta"] or 0)):
                met = {None: "", True: " met", False: " **missed**"}[row["bar_met"]]
                reasons = row["block_reasons_reselect"] or row["block_reasons_fixed"]
                reason = next(iter(reasons), "") if row["promote_reselect"] < 1 else ""
                lines.append(
                    f"| {row['scenario']} | {_delta(row['true_delta'])} | {row['promote_reselect']:.0%} "
                    f"| {row['promote_fixed']:.0%} | {row['category']}{met} | {reason[:70]} |"
                )
            summary = corpus["summary"]["reselect"]
            lines += [
                "",
                f"False promotion of true regressions ≥ tolerance: max {_rate(summary['false_promotion_max'])} over "
                f"{summary['regression_scenarios']} scenarios; false block of neutral candidates and improvements "
                f"≥ 0.05: max {_rate(summary['false_block_max'])} over {summary['neutral_or_better_scenarios']}; "
                f"identical promoted {_rate(summary['identical_promoted'])}.",
                "",
            ]
    lines += ["![promotion rate against the true change of chunk_ndcg@10](benchmarks/results/gate_calibration.png)", ""]
    notes = RESULTS / "gate_calibration_notes.md"
    if notes.exists():
        lines += [*notes.read_text().strip().splitlines(), ""]
    after = runs.get("fixed") or runs.get("after")
    if after:
        corpora = after["corpora"]

        def worst(key: str) -> float | None:
            values = [c["summary"]["reselect"][key] for c in corpora if c["summary"]["reselect"][key] is not None]
            return max(values) if values else None

        promo, block, same = worst("false_promotion_max"), worst("false_block_max"), worst("identical_promoted")
        names = " and ".join(c["corpus"] for c in corpora)
        rows = [
            ("Gate: false promotion", BARS["gate_false_promotion"],
             f"max {_rate(promo)} ({names}) {verdict(promo is not None and promo <= 0.05)}"),
            ("Gate: false block", BARS["gate_false_block"],
             f"max {_rate(block)} ({names}) {verdict(block is not None and block <= 0.10)}"),
            ("Gate: identical", BARS["gate_identical"],
             f"promoted {_rate(same)} {verdict(same == 0)}"),
        ]  # fmt: skip
    return lines, rows


def _delta(value: float | None) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _flags(flags: str | list[str]) -> str:
    listed = flags.split() if isinstance(flags, str) else flags
    return ", ".join(listed) or "none listed"


def sources_section(r: dict[str, Any]) -> tuple[list[str], tuple[str, str, str]]:
    sample, second, move = r["sample"], r["second_source"], r["move"]
    one, two = statistics.median(r["no_change_one_source_s"]), statistics.median(r["no_change_two_sources_s"])
    lines = [
        "## 14. A second source, and a declared move (`benchmarks/sources.py`)",
        "",
        f"One process, Prefect's test server, the real model; CPU flags: {_flags(r['cpu_flags'])}; "
        f"load average at the end {', '.join(f'{x:.1f}' for x in r['load_average_at_end'])}. The sample "
        f"({sample['documents']} documents, {sample['chunks']} chunks) ingested in {sample['first_ingest_s']} s; "
        f"then the package READMEs added as a second source ({second['documents']} documents, {second['chunks']} "
        f"chunks, {second['ingest_s']} s). No-change runs of the sample are the median of "
        f"{len(r['no_change_one_source_s'])}.",
        "",
        "| | figure |",
        "|---|---:|",
        f"| sample no-change run, one source (s) | {one:.2f} |",
        f"| sample no-change run, two sources (s) | {two:.2f} |",
        f"| ratio, two sources / one | {r['no_change_ratio_two_vs_one']} |",
        f"| `sources` listing, one / two sources (s) | {r['sources_listing_s']['one']} / "
        f"{r['sources_listing_s']['two']} |",
        f"| registry / lineage in the table metadata (bytes) | {r['metadata_bytes']['registry']} / "
        f"{r['metadata_bytes']['lineage']} |",
        f"| move with one page removed (`--as`): seconds | {move['seconds']} |",
        f"| move: × a no-change run / × the first ingest | {move['ratio_to_no_change']} / "
        f"{move['ratio_to_first_ingest']} |",
        f"| move: documents deleted, refreshed; chunks embedded | {move['docs_deleted']}, {move['docs_refreshed']}; "
        f"{move['chunks_embedded']} |",
        "",
        r["note"],
        "",
    ]
    row = (
        "A second source; a move",
        "no-change run ≈ one source's; a move embeds nothing",
        f"{r['no_change_ratio_two_vs_one']}×; move {move['ratio_to_first_ingest']}× the first ingest, "
        f"{move['chunks_embedded']} embedded",
    )
    return lines, row


# result file → (section number, the function writing its section and summary row); ingest writes two sections
SINGLE_SECTIONS = {
    "embedding_cpu": (1, cpu_section),
    "gpu_embedding_h200": (2, gpu_section),
    "query_latency": (5, query_section),
    "evaluation": (6, eval_section),
    "serve_load": (8, serve_section),
    "cli_latency": (9, cli_section),
    "embed_threshold": (10, threshold_section),
    "sources": (14, sources_section),
    "models": (15, lambda result: models_section(result)),
}


def main() -> int:
    blocks: dict[int, list[str]] = {}
    rows: dict[int, list[tuple[str, str, str]]] = {}  # summary rows, by the section they head
    loaded = {name: load(name) for name in (*SINGLE_SECTIONS, "ingest")}
    for name, (number, section) in SINGLE_SECTIONS.items():
        if result := loaded[name]:
            blocks[number], row = section(result)
            rows[number] = [row]
    if ingest := loaded["ingest"]:
        blocks[3], blocks[7], rows[3] = ingest_sections(ingest)
    scale = {
        name: load(name) for name in ("scale_out_rss", "scale_out_extract", "scale_out_nochange_s3", "scale_out_real")
    }
    if any(scale.values()):
        blocks[11], rows[11] = scale_section(scale)
    if maintained := load("maintenance"):
        blocks[12], rows[12] = maintenance_section(maintained)
    if calibration := load("gate_calibration"):
        blocks[13], rows[13] = gate_calibration_section(calibration)
    summary = [row for n in sorted(rows) for row in rows[n]]
    sections = [line for n in sorted(blocks) for line in blocks[n]]
    cpu_runs = [loaded[name] for name in ("embedding_cpu", "ingest", "query_latency", "evaluation")]
    machine = next((r for r in cpu_runs if r), {}).get("machine")
    head = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/report.py` from the JSON in `benchmarks/results/`). Every speed figure "
        "is a ratio against a baseline measured in the same run, or a median of several runs.",
        "",
    ]
    if machine:
        head += [f"CPU figures: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, no GPU.", ""]
    head += ["| | bar | measured |", "|---|---|---|"]
    head += [f"| {name} | {bar} | {value} |" for name, bar, value in summary]
    head += [""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(head + sections), encoding="utf-8")
    print("\n".join(head))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
