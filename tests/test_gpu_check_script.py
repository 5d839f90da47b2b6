"""benchmarks/gpu_embedding_check.py, the H200 sweep, without a GPU: its time budget and summary on fake configs (fast),
and the whole script end to end on the CPU (tiny: fp32, a few passages), as the device machine would run it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_embedding_check.py"
PATHS = ("plain_encode", "stage", "forward_ceiling")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_embedding_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_budget_skips_the_runs_that_would_pass_it_and_keeps_what_finished() -> None:
    script = load_script()

    def run(seconds: float):
        return lambda warm: None if warm else time.sleep(seconds)

    configs = [
        script.Config("plain_encode", 64, "float16", run(0.3), 100, warm_passages=100),
        script.Config("stage", 64, "float16", run(0.3), 100, warm_passages=100),
    ]
    checkpoints: list[int] = []
    # Warm-ups take ~0 s, so round 1 runs both (0.6 s of the 0.8 s budget; the second starts with ~0.5 s left);
    # in rounds 2 and 3 each needs ~0.33 s with under 0.2 s left: skipped, with reasons.
    script.run_sweep(configs, script.Clock("cpu", 0.8), 3, lambda: checkpoints.append(1))
    assert [len(c.times) for c in configs] == [1, 1]
    assert all(len(c.skipped) == 2 and "round 2" in c.skipped[0] for c in configs)
    assert len(checkpoints) == 4  # after the warm-ups and after each round

    summary = script.summarize(configs, [64])
    assert summary["baseline_batch"] == 64
    assert summary["stage"]["x_plain_fp16_best"] == pytest.approx(configs[0].times[0] / configs[1].times[0], rel=1e-2)
    assert summary["forward_ceiling"] == {"skipped": "no config of this path finished a timed round"}

    spent = script.Clock("cpu", 0.0)
    fresh = [script.Config("stage", 64, "float16", run(0.0), 100)]
    script.run_sweep(fresh, spent, 3, lambda: None)
    assert fresh[0].warm_s is None and fresh[0].times == []
    assert fresh[0].skipped[0].startswith("warm-up: time budget spent")


def test_ready_command_runs_from_the_prepared_folder_and_writes_under_out() -> None:
    script = load_script()
    command = script.READY_COMMAND
    assert len(command) < 2000  # the device tool's limit on one command
    assert "--model-dir build/gpu_check/model $OUT/" in command and "timeout 580" in command
    assert script.READY_CALL["carry"] == ["build/gpu_check"] and script.READY_CALL["timeout_s"] == 600
    assert script.parse(["o.json", "--batches", "128,64,64"]).batches == [64, 128]


@pytest.mark.slow
def test_cpu_smoke_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    args = ["--device", "cpu", "--passages", "8", "--batches", "4,8", "--rounds", "2", "--threads", "1"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["complete"] and result["ok"] and result["skipped"] == []
    assert result["note"].startswith("CPU smoke test")
    rows = {(r["path"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {(p, b) for p in PATHS for b in (4, 8)} | {("plain_encode_fp32_reference", 64)}
    assert all(r["rounds"] == 2 and r["passages_per_s"] > 0 and r["dtype"] == "float32" for r in rows.values())
    assert rows[("stage", 8)]["token_budget"] == 8 * 256
    summary = result["summary"]
    assert summary["forward_ceiling"]["fraction_of_ceiling"] == 1.0
    for path in (*PATHS, "plain_encode_fp32_reference"):
        assert summary[path]["passages_per_s"] > 0 and summary[path]["fraction_of_ceiling"] > 0
        assert summary[path]["x_plain_fp16_best"] > 0 and summary[path]["x_plain_fp16_b4"] > 0
    assert result["min_cosine_fp16_vs_fp32"] > 0.999 and result["min_cosine_ceiling_vs_fp32"] > 0.999
    assert result["ready_command"].endswith("$OUT/gpu_embedding_h200.json")
