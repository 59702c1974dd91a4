import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KINDS

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["finetune_bert.sh", "finetune_albert.sh", "patience_infer_bert.sh", "patience_infer_albert.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("args", [[], ["MRPC"], ["MRPC", "--max_steps", "10"], ["MRPC", "0"], ["MRPC", "5x"]])
def test_missing_or_bad_positional_arguments_print_usage(script, args):
    proc = subprocess.run(["bash", str(ROOT / script), *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"usage: {script} TASK STEPS") and len(proc.stderr.strip().splitlines()) == 1
    assert "STEPS: " in proc.stderr and "positive integer" in proc.stderr


@pytest.mark.parametrize("model", KINDS)
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
    assert [(r["checkpoint"], r["patience"]) for r in rows] == [
        (c, p) for c in ("final", "checkpoint-3", "checkpoint-6") for p in (1, 2)]
    assert "*** Patience = 2 Avg. Inference Layers = " in infer.stdout
