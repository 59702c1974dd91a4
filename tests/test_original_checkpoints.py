"""Checkpoints written by the original PABEE code (pytorch_model.bin) and by transformers' research
port (model.safetensors) name the last layer's head `classifiers.{L-1}`, where this project saves it
as `classifier`. Built here with those key names from a model in today's layout, they load through
every public path (the modeling classes' from_pretrained, the project's loader, load_state_dict,
transformers' Auto classes with the folder's own code) and answer, exit and train exactly as the same
weights in today's layout; a checkpoint with exit heads but no last head is refused, never random."""

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from conftest import TINY_CONFIGS, varied_batch
from modeling_pabee_albert import AlbertForSequenceClassificationWithPabee
from modeling_pabee_bert import BertForSequenceClassificationWithPabee
from pabee.base.errors import UsageError
from pabee.modeling.backbones import BACKBONES, backbone_of_folder, load_model, load_tokenizer
from pabee.modeling.saved_folder import save_folder

CLASSES = {"bert": BertForSequenceClassificationWithPabee, "albert": AlbertForSequenceClassificationWithPabee}
LAYERS = 4
# Where each wrote its weights: the original code on transformers 2 (torch.save), the port on transformers 4.
LAYOUTS = {"original": "pytorch_model.bin", "research port": "model.safetensors"}
THRESHOLD = 0.05  # regression heads agree within this (patience counts agreements)


def todays_model(kind, num_labels):
    torch.manual_seed(3)
    model = CLASSES[kind](TINY_CONFIGS[kind](num_labels=num_labels, layers=LAYERS)).eval()
    with torch.no_grad():  # heads near one another, apart enough that examples leave at several layers
        shared = torch.randn_like(model.classifier.weight)
        for i in range(LAYERS):
            model.exit_head(i).weight.copy_(shared + 0.5 * torch.randn_like(shared))
    return model


def old_names(state, layers=LAYERS):
    """today's state dict with the last head named as the original code and the research port name it."""
    return {(f"classifiers.{layers - 1}." + k.removeprefix("classifier.") if k.startswith("classifier.") else k): v
            for k, v in state.items()}


def write_old(model, folder, layout, state=None):
    """`model`'s weights (or `state`) as the original code or the port left them, beside its config
    without this project's fields."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in model.config_fields}
    config["architectures"] = [type(model).__name__]
    (folder / "config.json").write_text(json.dumps(config))
    state = old_names(model.state_dict()) if state is None else state
    if LAYOUTS[layout].endswith(".bin"):
        torch.save(state, folder / LAYOUTS[layout])
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, folder / LAYOUTS[layout], metadata={"format": "pt"})
    return folder


def answers(model, batch, num_labels):
    """Logits and exit layers at every patience, then the training loss (same seed, same dropout)."""
    ids, mask = batch
    got = []
    with torch.no_grad():
        for patience in range(LAYERS + 1):
            model.set_patience(patience, THRESHOLD if num_labels == 1 else None)
            out = model.eval()(input_ids=ids, attention_mask=mask)
            got.append((out.logits, out.exit_layers))
    torch.manual_seed(11)
    labels = torch.rand(len(ids)) * 5 if num_labels == 1 else torch.arange(len(ids)) % num_labels
    loss = model.train()(input_ids=ids, attention_mask=mask, labels=labels).loss
    model.eval()
    return got, loss


def assert_same(loaded, reference, num_labels):
    batch = varied_batch(16)
    (got, loss), (expected, expected_loss) = answers(loaded, batch, num_labels), answers(reference, batch, num_labels)
    exits = set()
    for (logits, layers), (want, want_layers) in zip(got, expected, strict=True):
        assert torch.equal(logits, want) and torch.equal(layers, want_layers)
        exits |= set(layers.tolist())
    assert torch.equal(loss, expected_loss)
    return exits


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("num_labels", [3, 1])
@pytest.mark.parametrize("kind", CLASSES)
def test_old_checkpoints_answer_as_today_through_every_loader(kind, num_labels, layout, tmp_path):
    reference = todays_model(kind, num_labels)
    folder = write_old(reference, tmp_path / "old", layout)
    loaded, info = CLASSES[kind].from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    exits = assert_same(loaded, reference, num_labels)
    assert len(exits) >= 2, f"the batch exits at one layer only ({exits}): the comparison would not see exits"
    project, info = load_model(BACKBONES[kind], str(folder), None, "cpu")
    assert not info["missing_keys"] and not info["unexpected_keys"] and info["new_heads"] == []
    assert_same(project, reference, num_labels)
    fresh = CLASSES[kind](reference.config)
    fresh.load_state_dict(old_names(reference.state_dict()))
    assert_same(fresh, reference, num_labels)
    loaded.save_pretrained(tmp_path / "saved")  # saved again: today's layout, the last head as `classifier`
    assert "classifier.weight" in load_file(tmp_path / "saved" / "model.safetensors")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", CLASSES)
def test_a_model_cut_to_fewer_layers_takes_that_layers_head(kind, layout, tmp_path):
    reference = todays_model(kind, 3)
    folder = write_old(reference, tmp_path / "old", layout)
    cut = CLASSES[kind].from_pretrained(folder, num_hidden_layers=2)
    assert torch.equal(cut.classifier.weight, reference.classifiers[1].weight)
    assert torch.equal(cut.classifiers[0].weight, reference.classifiers[0].weight)
    reference.save_pretrained(tmp_path / "today")  # today's layout cut the same way: layer 2's head, not the file's last
    today = CLASSES[kind].from_pretrained(tmp_path / "today", num_hidden_layers=2)
    assert torch.equal(today.classifier.weight, cut.classifier.weight)
    model, info = load_model(BACKBONES[kind], str(folder), None, "cpu", num_hidden_layers=2)
    assert torch.equal(model.classifier.bias, reference.classifiers[1].bias) and not info["unexpected_keys"]


@pytest.mark.parametrize("kind", CLASSES)
def test_the_auto_classes_with_the_folders_own_code_read_old_names(kind, world, tmp_path):
    """A run folder (its code saved beside it) whose weights carry the old names: transformers' Auto
    class, running the folder's code, answers as today's layout, at full depth and cut to 2 layers."""
    reference = todays_model(kind, 3)
    save_folder(reference, load_tokenizer(BACKBONES[kind], str(world / kind)), tmp_path / "run")
    weights = tmp_path / "run" / "model.safetensors"
    save_file(old_names(load_file(weights)), weights, metadata={"format": "pt"})
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run", trust_remote_code=True)
    assert type(auto).__module__.startswith("transformers_modules")  # the folder's code, not this package
    assert_same(auto, reference, 3)
    cut = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run", trust_remote_code=True,
                                                             num_hidden_layers=2)
    assert torch.equal(cut.classifier.weight, reference.classifiers[1].weight)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", CLASSES)
def test_exit_heads_without_a_last_head_are_refused(kind, layout, world, tmp_path):
    reference = todays_model(kind, 3)
    state = {k: v for k, v in old_names(reference.state_dict()).items() if not k.startswith(f"classifiers.{LAYERS - 1}.")}
    folder = write_old(reference, tmp_path / "old", layout, state)
    with pytest.raises(ValueError, match=rf"no head for layer {LAYERS}.*classifier\.weight.*classifiers\.{LAYERS - 1}"):
        CLASSES[kind].from_pretrained(folder)
    with pytest.raises(UsageError) as refused:
        load_model(BACKBONES[kind], str(folder), None, "cpu")
    assert "\n" not in str(refused.value) and f"classifiers.{LAYERS - 1}.weight" in str(refused.value)


@pytest.mark.parametrize("kind", CLASSES)
def test_a_plain_backbone_or_classifier_still_loads_with_new_internal_heads(kind, tmp_path, caplog):
    """No exit heads in the checkpoint: nothing is refused and nothing said beyond transformers' report."""
    plain_class = BertForSequenceClassification if kind == "bert" else None
    reference = todays_model(kind, 3)
    if plain_class is not None:
        plain = plain_class(reference.config)
        plain.save_pretrained(tmp_path / "plain")
        with caplog.at_level(logging.WARNING):
            model, info = CLASSES[kind].from_pretrained(tmp_path / "plain", output_loading_info=True)
        assert torch.equal(model.classifier.weight, plain.classifier.weight)
        assert info["missing_keys"] == {f"classifiers.{i}.{p}" for i in range(LAYERS - 1) for p in ("weight", "bias")}
        reports = [r.getMessage() for r in caplog.records if "LOAD REPORT" in r.getMessage()]
        assert reports and not any("last layer's head" in m for m in reports)  # transformers' own, as it was
    getattr(reference, reference.base_model_prefix).save_pretrained(tmp_path / "backbone")
    model, info = CLASSES[kind].from_pretrained(tmp_path / "backbone", num_labels=3, output_loading_info=True)
    assert {k.split(".")[0] for k in info["missing_keys"]} == {"classifiers", "classifier"}


def test_other_files_of_old_checkpoints_load_too(tmp_path):
    """The original code's torch (before 1.6) wrote .bin files in its old format; hub checkpoints may
    be sharded and carry a variant."""
    reference = todays_model("bert", 3)
    folder = write_old(reference, tmp_path / "legacy", "original")
    torch.save(old_names(reference.state_dict()), folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert_same(BertForSequenceClassificationWithPabee.from_pretrained(folder), reference, 3)
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="20KB", variant="v2")
    for shard in (tmp_path / "sharded").glob("model*.safetensors"):
        save_file(old_names(load_file(shard)), shard, metadata={"format": "pt"})
    index = next((tmp_path / "sharded").glob("*.index.v2.json"))
    mapped = json.loads(index.read_text())
    mapped["weight_map"] = old_names(mapped["weight_map"])
    index.write_text(json.dumps(mapped))
    assert_same(BertForSequenceClassificationWithPabee.from_pretrained(tmp_path / "sharded", variant="v2"), reference, 3)


def test_a_partial_state_dict_and_other_label_counts(tmp_path, caplog):
    """load_state_dict(strict=False) of a part (transformers loads shards so) is never refused; a
    checkpoint of other labels is refused with transformers' report said, or loads with new heads when
    asked."""
    reference = todays_model("bert", 3)
    part = {k: v for k, v in reference.state_dict().items() if k.startswith("classifiers.0.")}
    model = BertForSequenceClassificationWithPabee(reference.config)
    model.load_state_dict(part, strict=False)
    assert torch.equal(model.classifiers[0].weight, reference.classifiers[0].weight)
    folder = write_old(reference, tmp_path / "old", "research port")
    with pytest.raises(RuntimeError, match="report"), caplog.at_level(logging.WARNING):
        BertForSequenceClassificationWithPabee.from_pretrained(folder, num_labels=2)
    assert any("LOAD REPORT" in r.getMessage() for r in caplog.records)  # the report it points to is said
    model, info = BertForSequenceClassificationWithPabee.from_pretrained(folder, num_labels=2, output_loading_info=True,
                                                                        ignore_mismatched_sizes=True)
    assert {k for k, *_ in info["mismatched_keys"]} >= {"classifiers.3.weight", "classifiers.3.bias"}
    assert model.classifier.weight.shape == (2, 32)


def test_roberta_cut_takes_that_layers_out_proj(tmp_path):
    """Backbones whose last head is classifier.out_proj (RoBERTa, ELECTRA) take classifiers.{k-1} there."""
    torch.manual_seed(0)
    model_class = BACKBONES["roberta"].load_model_class()
    reference = model_class(TINY_CONFIGS["roberta"](num_labels=3, layers=LAYERS)).eval()
    reference.save_pretrained(tmp_path / "today")
    cut = model_class.from_pretrained(tmp_path / "today", num_hidden_layers=2)
    assert torch.equal(cut.classifier.out_proj.weight, reference.classifiers[1].weight)
    assert torch.equal(cut.classifier.dense.weight, reference.classifier.dense.weight)


def test_a_run_folder_saved_before_the_package_moved_loads_in_the_project_and_through_its_own_code(tmp_path):
    """tests/saved_before_the_move: a pabee-bert folder (mean-pooled heads: transformers' own class
    cannot answer for it) saved by the version whose modules were flat, pabee/portable.py's code beside
    it. The project loads it through today's classes, transformers' Auto class through the folder's
    code; both answer alike at every patience, and the loss alike."""
    import shutil

    folder = shutil.copytree(Path(__file__).parent / "saved_before_the_move", tmp_path / "run")
    assert "(pabee/portable.py)" in (folder / "modeling_pabee.py").read_text()  # the old layout's copy
    project = load_model(backbone_of_folder(folder), str(folder), None, "cpu")[0]
    auto = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    assert type(auto).__module__.startswith("transformers_modules")  # the folder's code, not this package
    ids, mask = varied_batch(12)
    batch = (ids % project.config.vocab_size, mask)
    (got, loss), (expected, expected_loss) = answers(auto, batch, 2), answers(project, batch, 2)
    for (logits, layers), (want, want_layers) in zip(got, expected, strict=True):
        assert torch.equal(logits, want) and torch.equal(layers, want_layers)
    assert torch.equal(loss, expected_loss)
