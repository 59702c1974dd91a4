"""Why PABEE fine-tuning collapsed on a real model, and the three answers: heads that start at the
label prior, heads that read the mean of the tokens, and a warning when a model collapses anyway."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from pabee.data import glue
import run_glue
from conftest import KINDS, varied_batch
from pabee.scoring.evaluation import collapse
from modeling_pabee_bert import BertForSequenceClassificationWithPabee
from pabee.early_exit.rules import PatienceRule
from pabee.modeling.losses import layer_loss, pabee_loss, training_loss
from test_modeling import make

ROOT = Path(__file__).resolve().parents[1]
HEADS = ["classifiers.0", "classifiers.1", "classifiers.2", "classifier"]  # a 4-layer model's heads, as saved
TRAIN = ["--do_train", "--do_lower_case", "--per_gpu_train_batch_size", "16", "--per_gpu_eval_batch_size", "16",
         "--learning_rate", "3e-3", "--num_train_epochs", "3", "--logging_steps", "100", "--save_steps", "100",
         "--seed", "7"]


def glue_args(world, out, task, model, *extra):
    return ["--model_type", "bert", "--model_name_or_path", str(model), "--task_name", task,
            "--data_dir", str(world / "glue" / task), "--output_dir", str(out), *extra]


# --- the mechanism: a bias moves by about the learning rate per AdamW step ----------------------

def offset_regression(n=64, offset=20.0, seed=0):
    """Inputs whose label is offset +- 1, the sign given by one token: the signal is easy, the
    offset far from where zero-bias heads start."""
    ids, mask = varied_batch(n, seed=seed)
    sign = (ids[:, 1] % 2) * 2 - 1
    return ids, mask, offset + sign.float()


def train_heads(model, ids, mask, labels, steps, lr):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, output_all_layer_logits=True).all_layer_logits[..., 0]


def test_zero_bias_heads_cannot_reach_the_label_mean_so_the_backbone_must():
    """With zero biases and a label mean far from 0, after k AdamW steps every head's bias has
    moved at most about k * lr: the offset has to come from the shared pooler and the backbone,
    which all heads pull on at once. Started at the label mean, the heads fit the signal."""
    ids, mask, labels = offset_regression()
    steps, lr = 30, 1e-3
    torch.manual_seed(0)
    zero = make("bert", num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    prior = make("bert", num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    prior.init_head_bias(labels, range(4))
    assert all(float(c.bias.detach()) == pytest.approx(float(labels.mean())) for c in map(prior.exit_head, range(4)))
    zero_out = train_heads(zero, ids, mask, labels, steps, lr)
    prior_out = train_heads(prior, ids, mask, labels, steps, lr)
    assert max(abs(float(c.bias)) for c in map(zero.exit_head, range(4))) <= steps * lr * 1.01
    zero_mse = float(((zero_out - labels[:, None]) ** 2).mean())
    prior_mse = float(((prior_out - labels[:, None]) ** 2).mean())
    assert zero_mse > 10 * prior_mse, (zero_mse, prior_mse)
    assert prior_mse < 1.0, "started at the mean, the heads learn the +-1 signal"


def test_classification_heads_start_at_the_log_class_frequencies():
    model = make("bert", num_labels=3)
    model.init_head_bias(torch.tensor([0, 0, 0, 2]), [1, 3])
    expected = torch.tensor([4.0, 1.0, 2.0]).div(7).log()
    for i in (1, 3):
        torch.testing.assert_close(model.exit_head(i).bias, expected)
    assert torch.equal(model.exit_head(0).bias, torch.zeros(3)), "layers not named keep their bias"


def test_label_prior_applies_only_to_heads_the_checkpoint_lacked(world, tmp_path):
    out = tmp_path / "out"
    assert run_glue.main(glue_args(world, out, "STS-B", world / "bert", *TRAIN, "--max_steps", "1",
                                   "--learning_rate", "0", "--head_bias_init", "label_prior")) == 0
    mean = float(sum(glue.read_split(glue.TASKS["sts-b"], world / "glue" / "STS-B" / "train.tsv", "train")["label"])
                 / 400)
    saved = load_file(out / "model.safetensors")
    assert all(float(saved[f"{head}.bias"]) == pytest.approx(mean, abs=1e-5) for head in HEADS)
    # Continuing from a fine-tuned model: its heads are loaded, none is reset.
    saved["classifiers.2.bias"] = torch.tensor([-3.0])
    save_file(saved, out / "model.safetensors")
    again = tmp_path / "again"
    assert run_glue.main(glue_args(world, again, "STS-B", out, *TRAIN, "--max_steps", "1", "--learning_rate", "0",
                                   "--head_bias_init", "label_prior")) == 0
    assert float(load_file(again / "model.safetensors")["classifiers.2.bias"]) == -3.0


# --- what trains the heads ---------------------------------------------------------------------

def test_last_regime_trains_only_the_last_head():
    model = make("bert", num_labels=3, exit_training="last", hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0).train()
    ids, mask = varied_batch(8, seed=2)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_all_layer_logits=True)
    assert out.all_layer_logits.shape == (8, 1, 3)
    model.config.exit_training = "pabee"
    every = model(input_ids=ids, attention_mask=mask, labels=labels, output_all_layer_logits=True).all_layer_logits
    torch.testing.assert_close(out.loss, layer_loss(every[:, -1], labels))
    torch.testing.assert_close(training_loss(every, labels), pabee_loss(every, labels))
    out.loss.backward()
    assert all(model.exit_head(i).weight.grad is None for i in range(3))
    assert model.classifier.weight.grad.abs().sum() > 0


def test_run_glue_last_regime_leaves_internal_heads_as_they_were(world, tmp_path):
    start = tmp_path / "start"
    assert run_glue.main(glue_args(world, start, "SST-2", world / "bert", *TRAIN, "--max_steps", "2")) == 0
    out = tmp_path / "vanilla"
    assert run_glue.main(glue_args(world, out, "SST-2", start, *TRAIN, "--max_steps", "5",
                                   "--exit_training", "last")) == 0
    assert json.loads((out / "config.json").read_text())["exit_training"] == "last"
    before, after = load_file(start / "model.safetensors"), load_file(out / "model.safetensors")
    for i in range(3):
        for part in ("weight", "bias"):
            assert torch.equal(before[f"classifiers.{i}.{part}"], after[f"classifiers.{i}.{part}"])
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert not torch.equal(before["bert.pooler.dense.weight"], after["bert.pooler.dense.weight"])


# --- heads on the mean of the tokens -----------------------------------------------------------

def test_mean_pooling_is_the_masked_mean_through_the_pooler():
    model = make("bert", num_labels=2, exit_pooling="mean")
    ids, mask = varied_batch(6, seed=5)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_all_layer_logits=True)
        states = model.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1:]
        for i, h in enumerate(states):
            m = mask.unsqueeze(-1).float()
            mean = (h * m).sum(1) / m.sum(1)
            expected = model.exit_head(i)(torch.tanh(model.bert.pooler.dense(mean)))
            torch.testing.assert_close(out.all_layer_logits[:, i], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_exit_pooling_is_saved_and_loaded(kind, tmp_path):
    model = make(kind, exit_pooling="mean")
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["exit_pooling"] == "mean"
    loaded = type(model).from_pretrained(tmp_path).eval()
    ids, mask = varied_batch(5, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask, exit_rule=PatienceRule(1)).logits,
                                   model(input_ids=ids, attention_mask=mask, exit_rule=PatienceRule(1)).logits)
    with pytest.raises(ValueError, match="exit_pooling must be one of first, mean"):
        make(kind, exit_pooling="max")


def test_run_glue_trains_and_evaluates_with_mean_pooling(world, tmp_path):
    out = tmp_path / "out"
    assert run_glue.main(glue_args(world, out, "SST-2", world / "bert", *TRAIN, "--do_eval", "--exit_pooling", "mean",
                                   "--patience", "0,1,2", "--timed_inference")) == 0
    assert json.loads((out / "config.json").read_text())["exit_pooling"] == "mean"
    rows = json.loads((out / "eval_results.json").read_text())
    assert rows[0]["acc"] >= 0.85, rows
    # Evaluating later reads the pooling from the saved config.
    again = tmp_path / "again"
    assert run_glue.main(glue_args(world, again, "SST-2", out, "--do_eval", "--patience", "0,1,2")) == 0
    assert [r["acc"] for r in json.loads((again / "eval_results.json").read_text())] == [r["acc"] for r in rows]


# --- a collapse does not pass unnoticed ---------------------------------------------------------

def collapsed_bert(folder, world):
    """A PABEE BERT whose last head answers class 1 whatever the input."""
    model = BertForSequenceClassificationWithPabee.from_pretrained(world / "bert", num_labels=2)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0]))
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((world / "bert" / name).read_bytes())
    return folder


def test_collapse_warning_fires_on_a_collapsed_model_and_not_on_a_good_one(world, tmp_path, caplog):
    collapsed = collapsed_bert(tmp_path / "collapsed", world)
    with caplog.at_level(logging.WARNING, logger="pabee"):
        assert run_glue.main(glue_args(world, tmp_path / "out1", "SST-2", collapsed, *TRAIN, "--do_eval",
                                       "--max_steps", "1", "--learning_rate", "0")) == 0
    warnings = [r.getMessage() for r in caplog.records if "collapsed" in r.getMessage()]
    assert len(warnings) == 1 and "predicts class 1 for 100.0% of the 60 dev examples" in warnings[0]
    assert "--head_bias_init label_prior" in warnings[0] and "\n" not in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pabee"):
        assert run_glue.main(glue_args(world, tmp_path / "out2", "SST-2", world / "bert", *TRAIN, "--do_eval")) == 0
    assert not [r for r in caplog.records if "collapsed" in r.getMessage()]
    assert json.loads((tmp_path / "out2" / "eval_results.json").read_text())[0]["acc"] >= 0.85


def test_collapse_signs_for_regression():
    task = glue.TASKS["sts-b"]
    labels = torch.linspace(0, 5, 100).numpy()
    assert "Pearson" in collapse(task, labels * 0 + 2.5 + 1e-4 * labels, labels)  # no spread
    assert "Pearson" in collapse(task, labels[::-1].copy(), labels)  # spread, but no correlation
    assert collapse(task, labels * 0.9 + 0.3, labels) is None


# --- exits whose answers ignore the input say so, and are never the chosen exit -----------------

def with_constant_heads(source, folder, layers):
    """A copy of the model in `source` whose heads of the first `layers` layers answer class 1 whatever the input."""
    model = BertForSequenceClassificationWithPabee.from_pretrained(source)
    with torch.no_grad():
        for head in map(model.exit_head, range(layers)):
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.0, 5.0]))
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


def test_settings_and_heads_that_ignore_the_input_are_named_and_never_chosen(world, tmp_path, caplog):
    from pabee.scoring.default_exit import chosen_exit

    trained = tmp_path / "trained"
    assert run_glue.main(glue_args(world, trained, "SST-2", world / "bert", *TRAIN)) == 0
    broken, out = with_constant_heads(trained, tmp_path / "broken", 2), tmp_path / "eval"
    with caplog.at_level(logging.WARNING, logger="pabee"):
        assert run_glue.main(glue_args(world, out, "SST-2", broken, "--do_eval", "--patience", "0,1,2,3")) == 0
    lines = [r.getMessage() for r in caplog.records if "ignore the input" in r.getMessage()]
    rows = {(r["criterion"], r["setting"]): r for r in json.loads((out / "pabee_results.json").read_text())}
    assert len(lines) == 1 and "\n" not in lines[0], lines
    for key in (("patience", 1), ("layer", 1), ("layer", 2)):  # heads 1 and 2 agree at once: patience 1 is their answer
        assert "predicts class 1 for 100.0%" in rows[key]["ignores_input"]
        assert f"{key[0]} {key[1]} ({rows[key]['acc']:.4f})" in lines[0]
    assert "ignores_input" not in rows["layer", 4] and rows["layer", 4]["acc"] >= 0.85
    assert f"full depth acc {rows['layer', 4]['acc']:.4f}" in lines[0]
    exits, why = chosen_exit(out)
    assert exits.settings != (1,) and "skipped patience 1: their answers ignore the input" in why, why
    # predict.py says so of a large input answered at such an exit, and not at full depth
    lines = [row.split("\t")[0] for row in (world / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:]] * 2
    assert len(lines) >= 100
    for patience, warned in ((1, True), (0, False)):
        proc = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--model_dir", str(broken), "--input", "-",
                               "--patience", str(patience)], input="\n".join(lines) + "\n", capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        warning = [line for line in proc.stderr.splitlines() if "warning" in line]
        assert bool(warning) == warned, proc.stderr
        if warned:
            assert warning == [f"predict.py: warning: {len(lines)} of the {len(lines)} answers (100.0%) are 1: at "
                               "this exit the model may ignore its input; compare full depth (--patience 0) on "
                               "labelled data"]


def results_folder(folder, rows):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"patience": 1}))
    (folder / "pabee_results.json").write_text(json.dumps(
        [{"checkpoint": "final", "task": "sst-2", "n": 100, "mean_exit_layer": 4 / speed_up, "speed_up": speed_up,
          "original_speed_up": 1 - 1 / speed_up, "acc": acc, "criterion": criterion, "setting": setting, **extra}
         for criterion, setting, speed_up, acc, extra in rows]))
    return folder


def test_the_chosen_exit_skips_settings_that_ignore_the_input_even_within_tolerance(tmp_path):
    """On an unbalanced-looking dev set an exit answering one class can score within a point of
    full depth: it is still never chosen; where full depth itself ignores the input, nothing is."""
    from pabee.scoring.default_exit import chosen_exit

    ignoring = {"ignores_input": "it predicts class 1 for 100.0% of the 100 dev examples"}
    rows = [("layer", 4, 1.0, 0.52, {}), ("patience", 1, 2.0, 0.52, ignoring), ("patience", 2, 1.5, 0.515, {}),
            ("patience", 3, 1.2, 0.52, {})]
    exits, why = chosen_exit(results_folder(tmp_path / "a", rows))
    assert (exits.criterion, exits.settings) == ("patience", (2,)) and "skipped patience 1" in why
    exits, why = chosen_exit(results_folder(tmp_path / "b", rows[:2]))
    assert exits.settings == (0,) and why.startswith("full depth: no other setting") and "skipped patience 1" in why
    rows[0] = ("layer", 4, 1.0, 0.52, ignoring)
    exits, why = chosen_exit(results_folder(tmp_path / "c", rows))
    assert exits.settings == (0,) and "ignore the input even there" in why
    exits, why = chosen_exit(results_folder(tmp_path / "d", [r[:4] + ({},) for r in rows]))
    assert exits.settings == (1,) and "skipped" not in why  # without the sign, as before: the fastest within a point


def test_a_checkpoint_that_declares_its_pooling_is_followed_unless_the_flag_says_otherwise(world, tmp_path, caplog):
    """A sentence-transformers folder (all-MiniLM-L6-v2 is one) declares how its embeddings read
    the tokens; a plain folder declares nothing and keeps the first token, as the originals."""
    import shutil

    from pabee.modeling.backbones import BACKBONES, load_model

    folder = tmp_path / "st"
    shutil.copytree(world / "bert", folder)
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x.Transformer"},
                                                     {"idx": 1, "name": "1", "path": "1_Pool",
                                                      "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pool").mkdir()
    (folder / "1_Pool" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": False,
                                                               "pooling_mode_mean_tokens": True}))
    task, cpu, bert = glue.TASKS["sst-2"], torch.device("cpu"), BACKBONES["bert"]
    with caplog.at_level(logging.INFO, logger="pabee"):
        assert load_model(bert, folder, task, cpu)[0].config.exit_pooling == "mean"
    assert any("declares mean pooling (1_Pool/config.json)" in r.getMessage() for r in caplog.records)
    assert load_model(bert, folder, task, cpu, exit_pooling="first")[0].config.exit_pooling == "first"
    assert load_model(bert, world / "bert", task, cpu)[0].config.exit_pooling == "first"
    (folder / "1_Pool" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert load_model(bert, folder, task, cpu)[0].config.exit_pooling == "first"
