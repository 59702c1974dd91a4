"""Every script under benchmarks/ runs to the end in its smoke mode (a tiny model, a few examples or
steps) and writes its keys, so that no benchmark can break unseen. Figures are never asserted:
these runs are too small to mean anything, and speed is the benchmarks' own business."""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from glue_fixtures import write_task

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SST2_TRAIN = ROOT.parent / "shared" / "glue_data" / "SST-2" / "train.tsv"

# Each script and the test that runs it in its smoke mode; modules without a command line run inside
# the script named.
SMOKE_RUNS = {
    "bench_speed.py": "test_bench_speed_smoke_writes_every_key",
    "compiled_figures.py": "bench_speed.py",
    "host_costs.py": "bench_speed.py",
    "workload.py": "bench_speed.py",
    "engine_figures.py": "test_gpu_check.py::test_dry_run_exercises_every_part_but_the_cuda_calls",
    "gpu_table.py": "test_gpu_check.py::test_dry_run_exercises_every_part_but_the_cuda_calls",
    "gpu_costs.py": "test_gpu_check.py::test_dry_run_exercises_every_part_but_the_cuda_calls",
    "gpu_check.sh": "test_gpu_check.py::test_dry_run_exercises_every_part_but_the_cuda_calls",
    "gpu_prepare.sh": "test_gpu_prepare_builds_the_folder_a_gpu_run_reads",
    "cosee_weights.py": "test_cosee.py::test_cosee_trains_through_run_glue_and_its_rule_evaluates",
    "methods.py": "test_choice.py::test_the_benchmark_keeps_each_evaluation_and_reuses_it_instead_of_training",
    "real_model.py": "test_real_model_and_eval_throughput_smoke",
    "eval_throughput.py": "test_real_model_and_eval_throughput_smoke",
    "trec.sh": "test_trec_smoke_trains_evaluates_and_predicts",
    "ecosystem_check.py": "test_ecosystem.py::test_ecosystem_check_smoke",
    "ort_figures.py": "test_ort_figures_smoke_writes_every_key",
    "serve_load.py": "test_serve_load_smoke_writes_every_key",
}

BENCH_SPEED_KEYS = [
    "realized_over_ideal_bs1", "realized_over_ideal_bs32", "realized_over_ideal_bs64", "realized_over_ideal_bs256",
    "throughput_vs_classic", "sweep_cost_ratio", "train_step_ratio", "train_memory_ratio", "occupancy_bs64",
    "occupancy_bs256", "rows_over_exit_layer_sum", "distinct_shapes", "declared_shapes", "host_reads_per_layer_call",
    "compiled_matches_eager", "recompiles_after_warmup", "ops_per_layer_call_eager", "ops_per_layer_call_compiled",
    "predicted_gpu_realized_over_ideal_bs1", "predicted_gpu_realized_over_ideal_bs64",
    "predicted_gpu_realized_over_ideal_bs256"]


def script(*args, env=None, timeout=300):
    command = [sys.executable, *map(str, args)] if str(args[0]).endswith(".py") else ["bash", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_every_benchmark_script_has_a_smoke_run_in_the_suite():
    scripts = {p.name for p in BENCHMARKS.iterdir() if p.suffix in (".py", ".sh")}
    assert scripts == set(SMOKE_RUNS), "a script under benchmarks/ without a smoke run (or one listed that is gone)"
    for name, where in SMOKE_RUNS.items():
        if where.endswith(".py") and "::" not in where:  # run inside another script
            assert where in SMOKE_RUNS and SMOKE_RUNS[where].startswith("test_"), name
            assert Path(name).stem in (BENCHMARKS / where).read_text() or name == "workload.py", name
            continue
        file, _, test = where.rpartition("::")
        source = (Path(__file__).parent / file).read_text() if file else Path(__file__).read_text()
        assert f"def {test}(" in source, f"{name}: {where} is no test"


def smoke_figures(name, keys, tmp_path):
    """The JSON and printed table of a benchmark's smoke run, which must hold every one of `keys`."""
    out = tmp_path / "figures.json"
    proc = script(BENCHMARKS / name, "--smoke", "--json", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert not [k for k in keys if k not in figures]
    return figures, proc.stdout


@pytest.mark.skipif(not SST2_TRAIN.is_file(), reason="needs ../shared's SST-2 sentences (the engine's stream)")
def test_bench_speed_smoke_writes_every_key(tmp_path):
    figures, printed = smoke_figures("bench_speed.py", BENCH_SPEED_KEYS, tmp_path)
    # what the benchmark checks of itself holds even on a narrow model: every exit rule's compiled step
    assert figures["compiled_matches_eager"] is True and figures["classic_same_predictions"] is True
    assert figures["sweep_same_answers"] is True and figures["rows_over_exit_layer_sum"] == 1.0
    assert "narrow" in figures["model"] and "| realized_over_ideal_bs1 |" in printed


ORT_KEYS = [f"{name}_{size}" for name in ("ort_realized_over_ideal", "ort_exit_over_torch_exit", "ort_exit_over_best_full",
                                           "ort_full_over_torch_full", "ort_cuts_over_plain", "ort_int8_over_fp32",
                                           "ort_exit_over_fused_full", "int8_exit_over_fused_int8_full",
                                           "ort_cuts_over_fused_full", "int8_cuts_over_fused_int8_full",
                                           "ideal_speed_up", "fused_int8_same_predictions")
            for size in ("bs1", "bs32")]


def test_ort_figures_smoke_writes_every_key(tmp_path):
    figures, printed = smoke_figures("ort_figures.py", ORT_KEYS, tmp_path)
    # what it checks of itself holds on any model: ONNX Runtime's engine answers as torch's
    assert figures["ort_same_exits_as_torch_bs1"] is True and figures["ort_same_predictions_as_torch_bs32"] is True
    assert "| ort_realized_over_ideal_bs1 |" in printed and "| ort_exit_over_fused_full_bs32 |" in printed
    # the peer is fused as a CPU user's deployment is: attention, GELU and layer norms
    assert {"Attention", "SkipLayerNormalization"} <= set(figures["fused_operators_bs1"])


SERVE_KEYS = ["serve_rate_over_full", "serve_rate_over_batching", "serve_p50_ratio", "ideal_speed_up",
              *(f"rate_{server}_{slo}ms" for server in ("exit", "full", "batching") for slo in (50, 100, 200))]


def test_serve_load_smoke_writes_every_key(tmp_path):
    """Three real servers on loopback under Poisson load; each answered every request it was sent."""
    figures, printed = smoke_figures("serve_load.py", SERVE_KEYS, tmp_path)
    assert "| sustained requests/s at p99 < |" in printed and len(figures["steps"]) == 2
    for row in figures["steps"]:
        assert all(row[name]["requests"] > 0 and row[name]["refused"] == 0 for name in ("exit", "full", "batching"))


def test_gpu_prepare_builds_the_folder_a_gpu_run_reads(world, tmp_path):
    glue = tmp_path / "glue"
    write_task(glue, "MRPC", n_train=20, n_dev=10, n_test=5)
    write_task(glue, "SST-2", n_train=20, n_dev=10, n_test=5)
    target = tmp_path / "gpu"
    proc = script(BENCHMARKS / "gpu_prepare.sh", "--no_wheels", glue,
                  env={"GPU_DIR": str(target), "MODEL_DIR": str(world / "bert")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in ("glue/MRPC/train.tsv", "glue/MRPC/dev.tsv", "glue/SST-2/dev.tsv", "model/config.json",
                 "model/model.safetensors", "model/tokenizer.json"):
        assert (target / path).is_file(), path
    from safetensors.torch import load_file
    import torch

    halved, whole = load_file(target / "model/model.safetensors"), load_file(world / "bert" / "model.safetensors")
    assert halved.keys() == whole.keys()
    assert all(torch.equal(halved[k], whole[k].half()) for k in whole if whole[k].is_floating_point())
    assert json.loads((target / "model/config.json").read_text())["dtype"] == "float32"
    again = script(BENCHMARKS / "gpu_prepare.sh", "--no_wheels", glue, env={"GPU_DIR": str(target)})
    assert again.returncode == 2 and "already exists" in again.stderr  # nothing overwritten


def test_real_model_and_eval_throughput_smoke(world, tmp_path):
    out = tmp_path / "real"
    proc = script(BENCHMARKS / "real_model.py", "--glue_dir", world / "glue", "--output_dir", out, "--tasks", "SST-2",
                  "--model_dir", world / "bert", "--steps_scale", "0.01")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "real_model.json").read_text())
    assert [r["method"] for r in results] == ["vanilla/prior", "pabee-first/prior", "pabee-mean/prior"]
    assert all({"full_depth", "patience_chosen", "speed_up", "layers"} <= r.keys() for r in results)
    assert (out / "real_model.md").is_file()
    figures = tmp_path / "throughput.json"
    proc = script(BENCHMARKS / "eval_throughput.py", "--model_dir", out / "SST-2" / "pabee-first-prior", "--rounds",
                  "1", "--sst2_dev", world / "glue" / "SST-2" / "dev.tsv", "--json", figures)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"run_glue_examples_per_s", "predict_examples_per_s", "mean_exit_layer"} <= json.loads(
        figures.read_text()).keys()


def test_trec_smoke_trains_evaluates_and_predicts(world, tmp_path):
    trec = tmp_path / "TREC"
    trec.mkdir()
    rng = random.Random(0)
    words = ["what", "who", "where", "how", "many", "city", "name", "year"]
    for name, n in (("train.csv", 60), ("test.csv", 20)):
        with open(trec / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([" ".join(rng.choices(words, k=5)) + " ?", rng.choice(["LOC", "HUM", "NUM"])]
                             for _ in range(n))
    out = tmp_path / "out"
    proc = script(BENCHMARKS / "trec.sh", trec, out, env={"STEPS": "2", "MODEL_DIR": str(world / "bert")})
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    for method in ("vanilla", "pabee"):
        assert (out / f"{method}-test" / "pabee_results.md").is_file()
    assert proc.stdout.count('"exit_layer"') == 5  # the five typed questions, answered
