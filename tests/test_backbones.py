"""The backbones beyond the paper's (RoBERTa, DistilBERT, ELECTRA, DeBERTa-v2/v3, ModernBERT):
their checkpoints load as transformers saves them, a PABEE checkpoint loads back into
transformers' own classifier, run_glue trains, sweeps and resumes with each, and docs/backbones.md's
table says what the registry holds. Parity with transformers' classifier at full depth and
batch == one-at-a-time exits are in test_modeling, for every backbone."""

import json
import logging
import re
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from pabee.data import glue
import run_glue
from pabee.modeling.backbones import BACKBONES, load_model, log_new_parameters
from conftest import CLASSIC, KINDS, TINY_CONFIGS, TRANSFORMERS_CLASSES, varied_batch

MODERN = [kind for kind in KINDS if kind not in CLASSIC]
BACKBONES_DOC = Path(__file__).resolve().parents[1] / "docs" / "backbones.md"


def transformers_class(kind, which):
    return getattr(transformers, TRANSFORMERS_CLASSES[kind][which])


def internal_head_keys(layers):
    return sorted(f"classifiers.{i}.{p}" for i in range(layers - 1) for p in ("weight", "bias"))


def full_depth_logits(model, ids, mask):
    model.set_patience(0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    assert out.exit_layers.tolist() == [model.num_layers] * len(ids)
    return out.logits


@pytest.mark.parametrize("kind", MODERN)
def test_a_sequence_classifier_checkpoint_loads_with_only_the_internal_heads_new(kind, tmp_path):
    theirs = transformers_class(kind, 1)(TINY_CONFIGS[kind](num_labels=3)).eval()
    theirs.save_pretrained(tmp_path / "theirs")
    ours, info = BACKBONES[kind].load_model_class().from_pretrained(tmp_path / "theirs", output_loading_info=True)
    assert sorted(info["missing_keys"]) == internal_head_keys(4) and not info["unexpected_keys"]
    ids, mask = varied_batch(12)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(full_depth_logits(ours.eval(), ids, mask), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", MODERN)
def test_a_pabee_checkpoint_is_transformers_full_depth_classifier(kind, tmp_path):
    """The last PABEE head carries transformers' names: AutoModelForSequenceClassification on a PABEE
    checkpoint gives the full-depth model, the internal heads left over."""
    ours = BACKBONES[kind].load_model_class()(TINY_CONFIGS[kind](num_labels=2)).eval()
    ours.save_pretrained(tmp_path / "ours")
    theirs, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "ours", output_loading_info=True)
    assert type(theirs) is transformers_class(kind, 1)
    assert not info["missing_keys"] and sorted(info["unexpected_keys"]) == internal_head_keys(4)
    ids, mask = varied_batch(12)
    with torch.no_grad():
        expected = theirs.eval()(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(full_depth_logits(ours, ids, mask), expected, rtol=0, atol=1e-5)
    loaded = type(ours).from_pretrained(tmp_path / "ours").eval()
    ours.set_patience(1)
    loaded.set_patience(1)
    with torch.no_grad():
        a, b = ours(input_ids=ids, attention_mask=mask), loaded(input_ids=ids, attention_mask=mask)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.exit_layers, b.exit_layers)


@pytest.mark.parametrize("kind", KINDS)
def test_a_plain_backbone_loads_with_only_heads_new_said_in_one_info_line(kind, world, caplog):
    with caplog.at_level(logging.INFO):
        model, info = load_model(BACKBONES[kind], str(world / kind), glue.TASKS["sst-2"], "cpu")
        log_new_parameters(str(world / kind), info)
    assert info["new_heads"] == [0, 1, 2, 3]
    assert set(info["missing_keys"]) == set(info["new_head_parameters"]) and not info["unexpected_keys"]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("4 classifier heads are new (layers 1,2,3,4)" in r.getMessage() for r in caplog.records)


def test_modernbert_pools_as_its_config_says_unless_told():
    cls = BACKBONES["modernbert"].load_model_class()
    assert cls(TINY_CONFIGS["modernbert"](classifier_pooling="mean")).config.exit_pooling == "mean"
    assert cls(TINY_CONFIGS["modernbert"](classifier_pooling="cls")).config.exit_pooling == "first"
    assert cls(TINY_CONFIGS["modernbert"](classifier_pooling="mean", exit_pooling="first")).config.exit_pooling == "first"


TRAIN = ["--do_train", "--do_eval", "--max_seq_length", "64", "--per_gpu_train_batch_size", "16",
         "--per_gpu_eval_batch_size", "16", "--learning_rate", "3e-3", "--num_train_epochs", "2",
         "--logging_steps", "10", "--save_steps", "25", "--seed", "7", "--patience", "0,1,2", "--exit_pooling", "mean"]


def run(world, kind, model, output_dir, *extra):
    return run_glue.main(["--model_type", kind, "--model_name_or_path", str(model), "--task_name", "SST-2",
                          "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(output_dir), *TRAIN, *extra])


@pytest.mark.parametrize("kind", MODERN)
def test_run_glue_trains_sweeps_and_resumes_bitwise(kind, world, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(world, kind, world / kind, full, "--exit_criterion", "entropy", "--exit_thresholds", "0.1,0.6") == 0
    rows = json.loads((full / "eval_results.json").read_text())
    assert [(r["criterion"], r["setting"]) for r in rows] == [("entropy", 0.1), ("entropy", 0.6)]
    capsys.readouterr()
    assert run(world, kind, world / kind, tmp_path / "patience") == 0
    rows = json.loads((tmp_path / "patience" / "eval_results.json").read_text())
    assert [r["patience"] for r in rows] == [0, 1, 2] and rows[0]["acc"] >= 0.8, rows
    # heads on the token mean: transformers' own class reads it only for ModernBERT (classifier_pooling mean)
    expected = kind if kind == "modernbert" else f"pabee-{kind}"
    assert json.loads((full / "config.json").read_text())["model_type"] == expected
    assert run(world, kind, full / "checkpoint-25", part, "--exit_criterion", "entropy",
               "--exit_thresholds", "0.1,0.6") == 0
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    def metrics(folder):
        return [(r["setting"], r["acc"], r["mean_exit_layer"]) for r in json.loads((folder / "eval_results.json").read_text())]
    assert metrics(part) == metrics(full)


def test_docs_backbone_table_is_the_registry():
    text = BACKBONES_DOC.read_text().split("# Backbones")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([\w-]+)` \| `([^`]+)` \| ([^|]+) \|", text, flags=re.M)
    assert [(name, checkpoint, head.strip()) for name, checkpoint, head in rows] == [
        (b.name, b.default_checkpoint, b.head) for b in BACKBONES.values()]
