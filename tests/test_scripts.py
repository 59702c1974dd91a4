import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLASSIC

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["finetune_bert.sh", "finetune_albert.sh", "patience_infer_bert.sh", "patience_infer_albert.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("args", [[], ["MRPC"], ["MRPC", "--max_steps", "10"], ["MRPC", "0"], ["MRPC", "5x"]])
def test_missing_or_bad_positional_arguments_print_usage(script, args):
    proc = subprocess.run(["bash", str(ROOT / script), *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"usage: {script} TASK STEPS") and len(proc.stderr.strip().splitlines()) == 1
    assert "STEPS: " in proc.stderr and "positive integer" in proc.stderr


@pytest.mark.parametrize("model", CLASSIC)
def test_finetune_then_patience_infer_with_environment_overrides(model, world, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "GLUE_DIR": str(world / "glue"), "OUTPUT_DIR": str(out), "PYTHON": sys.executable,
           "MODEL_NAME_OR_PATH": str(world / model)}
    quick = ["--max_steps", "6", "--per_gpu_train_batch_size", "8", "--learning_rate", "1e-3"]
    train = subprocess.run(["bash", str(ROOT / f"finetune_{model}.sh"), "SST-2", "3", *quick],
                           capture_output=True, text=True, env=env)
    assert train.returncode == 0, train.stderr[-2000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    logged = [json.loads(l)["step"] for l in train.stdout.splitlines() if l.startswith("{")]
    assert logged == [3, 6]
    env.pop("MODEL_NAME_OR_PATH")
    env["PATIENCE"] = "1,2"
    infer = subprocess.run(["bash", str(ROOT / f"patience_infer_{model}.sh"), "SST-2", "3",
                            "--per_gpu_eval_batch_size", "4"], capture_output=True, text=True, env=env)
    assert infer.returncode == 0, infer.stderr[-2000:]
    rows = json.loads((out / "eval_results.json").read_text())
    assert [(r["checkpoint"], r["patience"]) for r in rows] == [("final", 0)] + [  # fine-tuning's row is kept
        (c, p) for c in ("final", "checkpoint-3", "checkpoint-6") for p in (1, 2)]
    assert "*** Patience = 2 Avg. Inference Layers = " in infer.stdout
    blocks = [l for l in infer.stdout.splitlines() if l.startswith("***")]
    assert [b for b in blocks if b.startswith("***** ")] == [
        f"***** Eval results {c} (sst-2) *****" for c in ("final", "checkpoint-3", "checkpoint-6")]
    assert all(blocks[i].startswith("***** ") for i in (0, 3, 6)), "a header before each block of two lines"


def test_hub_default_offline_fails_at_once_and_names_the_variable(world, tmp_path):
    env = {**os.environ, "GLUE_DIR": str(world / "glue"), "OUTPUT_DIR": str(tmp_path / "run"),
           "PYTHON": sys.executable, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("MODEL_NAME_OR_PATH", None)
    proc = subprocess.run(["bash", str(ROOT / "finetune_bert.sh"), "SST-2", "5"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "run_glue.py: error: --model_name_or_path bert-base-uncased must come from the hub, but HF_HUB_OFFLINE is "
        "set and it is not in the local cache (the script's default: set MODEL_NAME_OR_PATH to a model folder): "
        "give a local model folder"]
    assert not (tmp_path / "run").exists()
    named = subprocess.run([sys.executable, str(ROOT / "run_glue.py"), "--model_type", "bert", "--model_name_or_path",
                            "bert-base-uncased", "--task_name", "SST-2", "--data_dir", str(world / "glue" / "SST-2"),
                            "--output_dir", str(tmp_path / "run"), "--do_train"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert named.returncode == 2 and "MODEL_NAME_OR_PATH" not in named.stderr
    assert "HF_HUB_OFFLINE is set" in named.stderr and len(named.stderr.strip().splitlines()) == 1


def test_script_and_demo_outputs_are_ignored_by_git():
    proc = subprocess.run(["git", "check-ignore", "output/bert/MRPC/x", "demo_output/x"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.stdout.split() == ["output/bert/MRPC/x", "demo_output/x"]
