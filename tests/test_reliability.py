import ast
import json
import os
import pickle
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel

import run_glue
from conftest import tiny_bert_config
from glue_fixtures import bert_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_FILES = {"config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json",
                    "training_args.json", "rng_state_0.safetensors", "rng_state_0.json", "tokenizer.json"}


@pytest.fixture(scope="module")
def dropout_bert(tmp_path_factory):
    """A tiny BERT with dropout on, so that exact resumption needs the RNG states too."""
    folder = tmp_path_factory.mktemp("dropout-bert")
    tokenizer = bert_tokenizer(folder)
    BertModel(tiny_bert_config(vocab_size=len(tokenizer), hidden_dropout_prob=0.2)).save_pretrained(folder)
    return folder


def train_argv(world, model, out, *extra):
    return ["--model_type", "bert", "--model_name_or_path", str(model), "--task_name", "SST-2", "--data_dir",
            str(world / "glue" / "SST-2"), "--output_dir", str(out), "--do_train", "--do_lower_case",
            "--per_gpu_train_batch_size", "16", "--learning_rate", "3e-3", "--num_train_epochs", "2",
            "--logging_steps", "1", "--save_steps", "4", "--seed", "5", *extra]


def weights(folder):
    return load_file(Path(folder) / "model.safetensors")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def complete(checkpoint):
    names = {p.name for p in checkpoint.iterdir()}
    return CHECKPOINT_FILES <= names and json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == int(
        checkpoint.name.split("-")[1])


def test_a_failing_save_leaves_no_checkpoint_that_looks_complete(world, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_save = torch.save

    def crash_on_second(obj, path, *a, **k):  # dies between the optimizer and the scheduler state
        if str(path).endswith("scheduler.pt"):
            raise KeyboardInterrupt("killed during save")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", crash_on_second)
    assert run_glue.main(train_argv(world, world / "bert", out)) == 130  # Ctrl-C outside a step: one line, exit 130
    assert not list(out.glob("checkpoint-*"))
    assert [p.name for p in out.glob(".checkpoint-*")] == [".checkpoint-4.tmp"]


def kill_at(world, model, out, step):
    """Starts training in a process of its own and SIGKILLs it once `step` is logged."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_glue.py"), *train_argv(world, model, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line)["step"] >= step:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(world, dropout_bert, tmp_path):
    reference = tmp_path / "reference"
    assert run_glue.main(train_argv(world, dropout_bert, reference)) == 0
    rng = random.Random(0)
    for kill_step in sorted(rng.sample(range(5, 49), 3)):
        out = tmp_path / f"killed-{kill_step}"
        kill_at(world, dropout_bert, out, kill_step)
        checkpoints = [p for p in out.glob("checkpoint-*")]
        assert checkpoints and all(complete(p) for p in checkpoints), kill_step
        last = max(checkpoints, key=lambda p: int(p.name.split("-")[1]))
        assert run_glue.main(train_argv(world, last, out, "--overwrite_output_dir")) == 0
        assert_same_weights(weights(reference), weights(out))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_saves_the_current_step_and_resumes(world, dropout_bert, tmp_path, signum):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_glue.py"), *train_argv(world, dropout_bert, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line)["step"] >= 6:
            proc.send_signal(signum)
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    step = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))  # the stop saves the last one
    stopped = [out / f"checkpoint-{step}"]
    assert step >= 6 and complete(stopped[0])
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"run_glue.py: stopped by {signal.Signals(signum).name} at step {step}")
    assert last.endswith(f"--model_name_or_path {stopped[0]} --output_dir {out} --overwrite_output_dir"), last
    assert "Traceback" not in err
    assert run_glue.main(train_argv(world, stopped[0], out, "--overwrite_output_dir")) == 0
    reference = tmp_path / "reference"
    assert run_glue.main(train_argv(world, dropout_bert, reference)) == 0
    assert_same_weights(weights(reference), weights(out))


def test_torchrun_two_processes_match_one_process(world, tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    common = ["--max_steps", "12", "--logging_steps", "3", "--save_steps", "6", "--do_eval", "--no_cuda"]
    one = subprocess.run([sys.executable, str(ROOT / "run_glue.py"),
                          *train_argv(world, world / "bert", single, *common)], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(29500 + os.getpid() % 1000), str(ROOT / "run_glue.py"),
                          *train_argv(world, world / "bert", double, *common, "--per_gpu_train_batch_size", "8")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    logs_one = [json.loads(l) for l in one.stdout.splitlines() if l.startswith("{")]
    logs_two = [json.loads(l) for l in two.stdout.splitlines() if l.startswith("{")]
    assert [l["step"] for l in logs_two] == [l["step"] for l in logs_one] == [3, 6, 9, 12]  # logged once
    for a, b in zip(logs_one, logs_two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    a, b = weights(single), weights(double)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)
    assert two.stdout.count("*** Patience = 0 ") == 1, "evaluation runs once"
    assert sorted(p.name for p in double.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    assert {p.name for p in (double / "checkpoint-6").iterdir()} >= {"rng_state_0.json", "rng_state_1.json"}


def test_no_pickle_on_any_load_path(world, tmp_path, monkeypatch):
    # The source: torch.load only with weights_only=True, no pickle-family imports.
    for path in [*ROOT.glob("*.py"), *ROOT.glob("pabee/**/*.py"), *ROOT.glob("benchmarks/*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "dill", "joblib", "cloudpickle"} & set(names), path
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load" and \
                    getattr(node.func.value, "id", "") == "torch":
                kwargs = {k.arg: k.value for k in node.keywords}
                assert isinstance(kwargs.get("weights_only"), ast.Constant) and kwargs["weights_only"].value is True, path
    # A run: train with checkpoints, resume, evaluate, predict, with pickle's loaders made to fail.
    out = tmp_path / "out"
    assert run_glue.main(train_argv(world, world / "bert", out, "--max_steps", "8")) == 0

    def refuse(*args, **kwargs):
        raise AssertionError("something unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    assert run_glue.main(train_argv(world, out / "checkpoint-4", out, "--max_steps", "8", "--overwrite_output_dir",
                                    "--do_eval", "--do_predict", "--eval_all_checkpoints")) == 0
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pkl"))
    assert (out / "model.safetensors").is_file() and json.loads((out / "eval_results.json").read_text())
