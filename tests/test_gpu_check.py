"""benchmarks/gpu_check.sh in its dry run: every part that needs no CUDA runs on the CPU (the exit
engine's launch logs and the GPU prediction, the per-call cost table measured through the same code
a GPU runs, the report that puts measurement beside prediction); the CUDA steps are listed as
skipped. Without --dry_run and without CUDA it refuses in one line."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "glue_data" / "SST-2" / "train.tsv"


def gpu_check(out, *args):
    env = {**os.environ, "OUT": str(out), "PYTHON": os.environ.get("PYTHON", str(Path(os.sys.executable)))}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_without_cuda_it_refuses_in_one_line(tmp_path):
    proc = gpu_check(tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "sees no CUDA device" in proc.stderr and "--dry_run" in proc.stderr


@pytest.mark.skipif(not SST2.is_file(), reason="needs ../shared's SST-2 train sentences")
def test_dry_run_exercises_every_part_but_the_cuda_calls(tmp_path):
    proc = gpu_check(tmp_path, "--dry_run")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    summary = (tmp_path / "summary.md").read_text()
    for step in ("finetune", "infer_bs1", "torchrun", "predict", "cuda_tests"):
        assert f"| {step}" in summary and "skipped (dry run: CUDA)" in summary
    for step in ("bench", "table", "report"):
        assert any(line.startswith(f"| {step}") and "|    0 |" in line for line in summary.splitlines()), step
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    table = json.loads((tmp_path / "gpu_table.json").read_text())["table"]
    assert set(table["gpu_us"]) == {"eager", "graph"} and table["gpu_us"]["graph"]["8x32"] > 0
    for size in (1, 64, 256):
        for source in ("predicted_default_table", "predicted_measured_table"):
            assert report[source][f"predicted_gpu_realized_over_ideal_bs{size}"] > 0
            assert report[source][f"predicted_gpu_eager_realized_over_ideal_bs{size}"] > 0
