"""Mutation testing of the modules that decide (mutmut 3), one module at a time, against its fast unit tests only.

Each module runs in a scratch folder of its own, `mutants/<module>/`: links to the packages, the tests and
pyproject.toml, and a generated setup.cfg naming the one file to mutate and the test files that judge it. mutmut
copies everything under that folder's own `mutants/` and mutates only the copy, so an interrupted run leaves the
working tree as it was. The per-module counts are merged into benchmarks/results/mutation.json and printed.

    python benchmarks/mutation.py evaluations/ir_metrics.py [--tests tests/test_x.py ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "mutation.json"
SCRATCH = ROOT / "mutants"
MUTMUT = Path(sys.executable).with_name("mutmut")  # the one installed beside this Python
LINKED = ("evaluations", "tasks", "flows", "tests", "datasets", "pyproject.toml")
ALSO_COPY = ("datasets/golden",)  # data the fast tests read through REPO (the bundled golden set), copied by mutmut

GOLDEN_UNIT_TESTS = (
    "write_read_round_trip_and_hand_edit",
    "header_must_be_on_the_first_line",
    "item_validation_names_line_and_field",
    "beir_folder_loads_document_judgements",
    "beir_folder_without_qrels_lists_what_it_found",
    "coverage_error",
)
# The fast unit tests that judge each module (file globs, or FILE::TEST node ids; no Prefect server, no model).
# Globs that match nothing yet are skipped. test_golden_units.py tests four modules: golden.py and gate.py take only
# their own tests of it, by node id. test_gate_verdicts.py judges scoring.py too (stale passages, merged overlaps,
# abstention); test_gate_calibration.py and test_gate_journey.py are slow (real ingest, Prefect) and not listed.
TESTS: dict[str, list[str]] = {
    "evaluations/gate.py": [
        "tests/test_gate.py",
        "tests/test_gate_verdicts.py",
        "tests/test_gate_mutants.py",
        "tests/test_golden_units.py::test_document_level_policy_keeps_only_doc_metrics",
    ],
    "evaluations/scoring.py": ["tests/test_scoring*.py", "tests/test_score_version.py", "tests/test_gate_verdicts.py"],
    "evaluations/ir_metrics.py": ["tests/test_ir_reference.py", "tests/test_ir_metrics*.py"],
    "evaluations/golden_checks.py": ["tests/test_golden_checks*.py", "tests/test_golden_units.py"],
    "evaluations/golden.py": [
        *(f"tests/test_golden_units.py::test_{name}" for name in GOLDEN_UNIT_TESTS),
        "tests/test_golden_file*.py",
    ],
    "tasks/ingest/source_identity.py": ["tests/test_source_identity.py"],
    "tasks/store/lineage.py": ["tests/test_source_identity.py"],
    "tasks/store/production.py": ["tests/test_store_seam.py", "tests/test_retention.py"],
    "evaluations/review.py": ["tests/test_review.py"],
}
# Where each mutant's tests run: a fork of the process that ran the stats (fast), or of a clean fork server where the
# tests open LanceDB (Rust, threaded): a connection inherited through fork crashed the child (SIGSEGV, counted as
# neither killed nor survived). The fork server costs several times the CPU.
ISOLATION = {
    "evaluations/golden.py": "forkserver",
    "evaluations/scoring.py": "forkserver",
    "tasks/store/production.py": "forkserver",
}
KILLED = {"killed", "timeout", "caught by type check"}  # a timeout is a mutant the tests noticed (it hung)


def test_files(module: str, override: list[str] | None) -> list[str]:
    """The test files that judge `module`, relative to the root, in order and without repeats."""
    found: list[str] = []
    for pattern in override or TESTS.get(module, []):
        files, _, test = pattern.partition("::")
        for path in sorted(ROOT.glob(files)):
            rel = path.relative_to(ROOT).as_posix() + (f"::{test}" if test else "")
            if rel not in found:
                found.append(rel)
    if not found:
        raise SystemExit(f"error: no test file for {module}: pass --tests, or add it to TESTS in {__file__}")
    return found


def scratch(module: str) -> Path:
    """The module's scratch folder: mutants/evaluations.gate for evaluations/gate.py."""
    return SCRATCH / module.removesuffix(".py").replace("/", ".")


def prepare(module: str, tests: list[str]) -> Path:
    """A fresh scratch folder for one module: links to the sources and tests, and mutmut's setup.cfg."""
    work = scratch(module)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in LINKED:
        (work / name).symlink_to(os.path.relpath(ROOT / name, work))
    lines = [
        "[mutmut]",
        "source_paths =\n    evaluations\n    tasks\n    flows",
        f"only_mutate = {module}",
        "pytest_add_cli_args_test_selection =\n" + "\n".join(f"    {t}" for t in tests),
        "pytest_add_cli_args = -p no:cacheprovider",
        "also_copy =\n" + "\n".join(f"    {path}" for path in ALSO_COPY),
        "use_git_change_detection = false",  # every run starts fresh: nothing to carry over
        f"process_isolation = {ISOLATION.get(module, 'fork')}",
    ]
    (work / "setup.cfg").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return work


def mutmut(work: Path, *args: str, log: Path) -> str:
    """Run mutmut in `work`; its output goes to `log` and is returned."""
    command = [str(MUTMUT), *args]
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out.write(done.stdout)
    if done.returncode != 0:
        raise SystemExit(
            f"error: mutmut {' '.join(args)} failed (exit {done.returncode}); see {log}\n{done.stdout[-3000:]}"
        )
    return done.stdout


def statuses(results_output: str) -> dict[str, str]:
    """Mutant name → status, from `mutmut results --all=true`."""
    found = {}
    for line in results_output.splitlines():
        match = re.match(r"\s+(\S+__mutmut_\d+): (.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def run_module(module: str, tests: list[str], jobs: int | None) -> dict[str, Any]:
    """Mutate one module against its tests; the counts, score and survivors."""
    work = prepare(module, tests)
    log = work / "mutmut.log"
    start = time.perf_counter()
    mutmut(work, "run", *(["--max-children", str(jobs)] if jobs else []), log=log)
    seconds = time.perf_counter() - start
    by_mutant = statuses(mutmut(work, "results", "--all=true", log=log))
    counts: dict[str, int] = {}
    for status in by_mutant.values():
        counts[status] = counts.get(status, 0) + 1
    total = len(by_mutant)
    killed = sum(n for status, n in counts.items() if status in KILLED)
    return {
        "tests": tests,
        "total": total,
        "killed": counts.get("killed", 0),
        "timeout": counts.get("timeout", 0),
        "survived": counts.get("survived", 0),
        "no_tests": counts.get("no tests", 0),
        "other": {s: n for s, n in counts.items() if s not in KILLED | {"survived", "no tests"}},
        "score": round(killed / total, 4) if total else None,
        "seconds": round(seconds, 1),
        "not_killed": sorted(name for name, status in by_mutant.items() if status not in KILLED),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit([module, *(t.partition("::")[0] for t in tests)]),
    }


def git_commit(paths: list[str]) -> str:
    """The checkout's commit, with `+dirty` when the mutated module or its tests differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True, text=True
    ).stdout
    return head.strip() + ("+dirty" if dirty.strip() else "")


def table(modules: dict[str, dict[str, Any]]) -> str:
    """The per-module scores as a text table."""
    head = ("total", "killed", "timeout", "survived", "no tests", "other", "score", "time")
    rows = [f"{'module':32} " + " ".join(f"{h:>{max(len(h), 6)}}" for h in head)]
    for name, m in modules.items():
        score = f"{m['score']:.1%}" if m["score"] is not None else "-"
        rows.append(
            f"{name:32} {m['total']:>6} {m['killed']:>6} {m['timeout']:>7} {m['survived']:>8} {m['no_tests']:>8} "
            f"{sum(m['other'].values()):>6} {score:>6} {m['seconds']:>5.0f}s"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(TESTS), help="files to mutate (default: all of TESTS)")
    parser.add_argument("--tests", nargs="+", help="test files (globs) instead of the module's own list")
    parser.add_argument("--jobs", type=int, help="parallel mutant runs (mutmut's default: one per core)")
    args = parser.parse_args()

    saved = json.loads(RESULT.read_text(encoding="utf-8")) if RESULT.is_file() else {}
    modules: dict[str, Any] = saved.get("modules", {})
    ran: dict[str, Any] = {}
    for module in args.modules:
        if not (ROOT / module).is_file():
            raise SystemExit(f"error: {module} is not a file of this repository")
        tests = test_files(module, args.tests)
        print(f"mutating {module} against {' '.join(tests)} …", flush=True)
        ran[module] = modules[module] = run_module(module, tests, args.jobs)
        print(table({module: ran[module]}).splitlines()[1], flush=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    payload = {"tool": f"mutmut {version('mutmut')}", "score": "(killed + timeout) / total", "modules": modules}
    RESULT.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(ran))
    for module, m in ran.items():
        if m["not_killed"]:
            where = scratch(module).relative_to(ROOT)
            print(f"\n{module}: not killed ({len(m['not_killed'])}); `cd {where} && {MUTMUT} show NAME`:")
            print("  " + "\n  ".join(m["not_killed"]))


if __name__ == "__main__":
    main()
