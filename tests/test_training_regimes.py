"""The baselines' training regimes: two_stage (DeeBERT) and self_distill (FastBERT) train the
internal heads on a frozen model after a vanilla first stage; last leaves them untouched; a resume
lands in the right stage; --num_hidden_layers trains a k-layer model."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from pabee.data import glue
import run_glue
from pabee.fine_tuning.processes import set_seed
from pabee.modeling.backbones import BACKBONES, load_model
from pabee.modeling.losses import training_loss

STEPS = ["--do_train", "--do_eval", "--max_steps", "20", "--per_gpu_train_batch_size", "16", "--learning_rate", "3e-3",
         "--logging_steps", "5", "--save_steps", "1000", "--seed", "11", "--patience", "0,1,2"]


def run(world, out, *extra, model=None):
    return run_glue.main(["--model_type", "bert", "--model_name_or_path", str(model or world / "bert"), "--task_name",
                          "SST-2", "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(out), *STEPS,
                          *extra])


def weights(folder):
    return load_file(folder / "model.safetensors")


def internal(key, layers=4):
    return key.startswith("classifiers.") and int(key.split(".")[1]) < layers - 1


def logged(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_second_stage_losses_by_hand():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 4, 3), torch.randint(0, 3, (5,))
    own = sum(F.cross_entropy(logits[:, i], labels) for i in range(3))
    torch.testing.assert_close(training_loss(logits, labels, "internal"), own)
    t = 2.0
    teacher = F.softmax(logits[:, -1] / t, -1)
    kl = sum((teacher * (teacher.log() - F.log_softmax(logits[:, i] / t, -1))).sum(-1).mean() for i in range(3))
    torch.testing.assert_close(training_loss(logits, labels, "distill", t), kl * t * t)
    values = torch.randn(5, 4, 1)
    mse = sum(F.mse_loss(values[:, i, 0], values[:, -1, 0]) for i in range(3))
    torch.testing.assert_close(training_loss(values, torch.randn(5), "distill"), mse)


def test_two_stage_keeps_stage_one_and_trains_only_internal_heads(world, tmp_path, capsys):
    assert run(world, tmp_path / "last", "--exit_training", "last") == 0
    capsys.readouterr()
    assert run(world, tmp_path / "two", "--exit_training", "two_stage", "--second_stage_steps", "15") == 0
    logs = logged(capsys.readouterr().out)
    assert [(log["step"], log["stage"]) for log in logs] == [(5, 1), (10, 1), (15, 1), (20, 1), (25, 2), (30, 2),
                                                             (35, 2)]
    vanilla, two = weights(tmp_path / "last"), weights(tmp_path / "two")
    assert vanilla.keys() == two.keys()
    for key in vanilla:  # backbone, pooler and last head bitwise stage 1's; internal heads moved on
        assert torch.equal(vanilla[key], two[key]) != internal(key), key
    rows = {r["setting"]: r for r in json.loads((tmp_path / "two" / "eval_results.json").read_text())}
    base = {r["setting"]: r for r in json.loads((tmp_path / "last" / "eval_results.json").read_text())}
    assert rows[0]["acc"] == base[0]["acc"] and rows[0]["training"] == "two_stage" and base[0]["training"] == "last"
    assert json.loads((tmp_path / "two" / "config.json").read_text())["exit_training"] == "two_stage"


def test_last_leaves_internal_heads_at_their_initial_values(world, tmp_path):
    assert run(world, tmp_path / "last", "--exit_training", "last") == 0
    set_seed(11)  # as run_glue does before loading
    start, _ = load_model(BACKBONES["bert"], str(world / "bert"), glue.TASKS["sst-2"], "cpu")
    trained = weights(tmp_path / "last")
    for key, value in start.state_dict().items():
        assert torch.equal(trained[key], value) == internal(key), key


def test_self_distill_second_stage_loss_falls(world, tmp_path, capsys):
    assert run(world, tmp_path / "sd", "--exit_training", "self_distill", "--second_stage_steps", "40",
               "--distill_temperature", "2") == 0
    second = [log["loss"] for log in logged(capsys.readouterr().out) if log["stage"] == 2]
    assert len(second) == 8 and second[-1] < second[0] / 2, second
    assert json.loads((tmp_path / "sd" / "config.json").read_text())["distill_temperature"] == 2.0


def with_dropout(world, folder):
    """The tiny BERT with dropout on, so that a resume restoring the wrong random state shows."""
    folder.mkdir()
    for path in (world / "bert").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("regime,checkpoint", [("two_stage", 25), ("self_distill", 20), ("two_stage", 10)])
def test_resume_lands_in_the_right_stage(regime, checkpoint, world, tmp_path, capsys):
    saving = ["--exit_training", regime, "--second_stage_steps", "12", "--save_steps", "5"]
    assert run(world, tmp_path / "full", *saving, model=with_dropout(world, tmp_path / "dropout")) == 0
    uninterrupted = {log["step"]: log for log in logged(capsys.readouterr().out)}
    folder = tmp_path / "full" / f"checkpoint-{checkpoint}"
    assert json.loads((folder / "trainer_state.json").read_text())["stage"] == (2 if checkpoint > 20 else 1)
    assert run(world, tmp_path / "part", *saving, model=folder) == 0
    resumed = {log["step"]: log for log in logged(capsys.readouterr().out)}
    assert min(resumed) > checkpoint and all(resumed[s] == uninterrupted[s] for s in resumed)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_num_hidden_layers_fine_tunes_the_first_k(world, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pabee")
    assert run(world, tmp_path / "k2", "--exit_training", "last", "--num_hidden_layers", "2", "--exit_pooling", "mean") == 0
    assert json.loads((tmp_path / "k2" / "config.json").read_text())["num_hidden_layers"] == 2
    rows = json.loads((tmp_path / "k2" / "eval_results.json").read_text())
    assert rows[0]["mean_exit_layer"] == 2 and rows[0]["acc"] >= 0.7
    assert "parameters of layers 3 and up are left out" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "left out" in r.getMessage()]
    assert run(world, tmp_path / "k9", "--num_hidden_layers", "9") == 2
