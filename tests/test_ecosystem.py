"""A folder run_glue.py saved, loaded where the ecosystem loads a classifier: transformers' Auto
classes and pipeline, in a process that has torch and transformers but not this project (its
cwd and sys.path elsewhere, HF_HUB_OFFLINE=1, no stdin: a user of another tool). Without
trust_remote_code a folder answers exactly as the project's full depth, or is refused (never a
random head); with it, the early-exit model answers as predict.py does, its exit from the config
and overridable as from_pretrained keywords."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import export
import run_glue
from conftest import KINDS, TRANSFORMERS_CLASSES
from pabee.deploy.model_card import write_card
from pabee.deploy.predictor import Predictor
from pabee.early_exit.rules import EntropyRule, PatienceRule
from pabee.modeling.backbones import backbone_of_folder, load_model, load_tokenizer
from pabee.modeling.remote_code import without_package_imports
from pabee.scoring.default_exit import chosen_exit

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--do_train", "--do_eval", "--do_lower_case", "--per_gpu_train_batch_size", "16", "--learning_rate", "3e-3",
         "--logging_steps", "100", "--save_steps", "1000", "--patience", "0,1,2,3", "--seed", "7"]
TEXTS = [("the movie was great and the plot fine", "it is great"), ("awful film", "a film"),
         ("a very quite story", "the plot is awful and the movie"), ("fine", "fine")]

# Run as its own process: what transformers alone makes of each folder. Inputs and answers as JSON.
OUTSIDE = r'''
import json, os, sys
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

job = json.load(open(sys.argv[1]))
report = {}
for name, folder in job["folders"].items():
    batch = {k: torch.tensor(v) for k, v in job["inputs"][name].items()}
    got = report[name] = {}
    try:
        plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        got["plain_class"] = type(plain).__name__
        with torch.no_grad():
            got["plain"] = plain(**batch).logits.tolist()
    except ValueError as e:
        got["refused"] = str(e)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        out = model(**batch)
    got.update(early_class=type(model).__name__, logits=out.logits.tolist(), exits=out.exit_layers.tolist(),
               output_type=type(out).__mro__[1].__name__)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    got["config"] = {k: getattr(config, k, None) for k in ("exit_criterion", "exit_setting", "patience", "exit_pooling")}
    other = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, patience=1,
                                                               exit_criterion="patience").eval()
    with torch.no_grad():
        got["exits_patience_1"] = other(**batch).exit_layers.tolist()
    other = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, exit_criterion="entropy",
                                                               exit_setting=0.68).eval()
    with torch.no_grad():
        got["exits_entropy"] = other(**batch).exit_layers.tolist()
    texts = [{"text": a, "text_pair": b} for a, b in job["texts"]]
    got["pipeline"] = pipeline("text-classification", model=folder, trust_remote_code=True, batch_size=8)(texts)
for name, folder in job["exports"].items():  # as a user feeds one: what its own tokenizer gives
    batch = AutoTokenizer.from_pretrained(folder)([a for a, _ in job["texts"]], [b for _, b in job["texts"]],
                                                  padding=True, return_tensors="pt")
    model, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    with torch.no_grad():
        logits = model.eval()(**batch).logits
    got = report["export " + name] = {"class": type(model).__name__, "layers": model.config.num_hidden_layers,
                                      "labels": model.config.id2label, "logits": logits.tolist(),
                                      "loading": {k: sorted(v) for k, v in info.items() if v}}
    if os.path.isfile(os.path.join(folder, "model.onnx")):
        import onnxruntime
        session = onnxruntime.InferenceSession(os.path.join(folder, "model.onnx"))
        got["onnx"] = session.run(None, {n: t.numpy() for n, t in batch.items()})[0].tolist()
json.dump({"report": report, "project_imported": any(m.split(".")[0] == "pabee" for m in sys.modules)},
          open(sys.argv[2], "w"))
'''


def train(world, out, kind, task, *extra):
    assert run_glue.main(["--model_type", kind, "--model_name_or_path", str(world / kind), "--task_name", task,
                          "--data_dir", str(world / "glue" / task), "--output_dir", str(out), *TRAIN, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    """A trained folder per backbone (heads where transformers' class reads), BERT trained long enough
    to exit early on RTE (named labels, a checkpoint evaluated too), BERT on STS-B (regression), and
    BERT with heads on the token mean."""
    root = tmp_path_factory.mktemp("ecosystem")
    made = {kind: train(world, root / kind, kind, "SST-2", "--max_steps", "6") for kind in KINDS if kind != "bert"}
    made["bert"] = train(world, root / "bert", "bert", "RTE", "--num_train_epochs", "3", "--save_steps", "50",
                         "--eval_all_checkpoints")
    made["bert-regression"] = train(world, root / "bert-regression", "bert", "STS-B", "--max_steps", "12",
                                    "--head_bias_init", "label_prior", "--regression_threshold", "0.2")
    made["bert-mean"] = train(world, root / "bert-mean", "bert", "SST-2", "--max_steps", "6", "--exit_pooling", "mean")
    return made


def encoded(folder):
    tokenizer = load_tokenizer(backbone_of_folder(folder), str(folder))
    return dict(tokenizer([a for a, _ in TEXTS], [b for _, b in TEXTS], padding=True, return_token_type_ids=True,
                          return_tensors="pt"))


EXPORT_LAYERS = {kind: 2 for kind in KINDS} | {"albert": 4}  # the tiny ALBERT's 2 layer groups: whole only
ONNX = ("bert", "distilbert")  # with and without token type inputs


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory):
    """export.py's plain model of each backbone's run (ONNX for two)."""
    root = tmp_path_factory.mktemp("exports")
    for kind, layers in EXPORT_LAYERS.items():
        assert export.main(["--model_dir", str(runs[kind]), "--output_dir", str(root / kind), "--layers", str(layers),
                            *(["--onnx"] if kind in ONNX else [])]) == 0
    return {kind: root / kind for kind in EXPORT_LAYERS}


@pytest.fixture(scope="module")
def outside(runs, exports, tmp_path_factory):
    """One process without the project loads every folder and every export."""
    where = tmp_path_factory.mktemp("outside")
    (where / "outside.py").write_text(OUTSIDE)
    job = {"folders": {k: str(v) for k, v in runs.items()}, "exports": {k: str(v) for k, v in exports.items()},
           "texts": TEXTS, "inputs": {k: {n: t.tolist() for n, t in encoded(v).items()} for k, v in runs.items()}}
    (where / "job.json").write_text(json.dumps(job))
    env = {"PATH": os.environ["PATH"], "HOME": str(where), "HF_HOME": str(where / "hf"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-I", str(where / "outside.py"), str(where / "job.json"),
                           str(where / "report.json")], cwd=where, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((where / "report.json").read_text())
    assert result["project_imported"] is False
    return result["report"]


def project_full_depth(folder, batch):
    model = load_model(backbone_of_folder(folder), str(folder), None, "cpu")[0].eval()
    with torch.no_grad():
        return model(**batch, exit_rule=PatienceRule(0)).logits


def predict_answers(folder):
    """predict.py's answers (label or value, probability, exit layer) for TEXTS, at its default exit."""
    predictor = Predictor.load(folder, chosen_exit(folder)[0], no_cuda=True)
    answers = []
    predictor.run([TEXTS], lambda batch, got: answers.extend(got), len(TEXTS))
    return answers


@pytest.mark.parametrize("name", KINDS + ["bert-mean", "bert-regression"])
def test_without_trust_remote_code_the_answer_is_full_depth_or_a_refusal(name, runs, outside):
    got = outside[name]
    if name == "bert-mean":  # transformers' BertForSequenceClassification reads [CLS]: it cannot answer so
        assert "plain" not in got and "trust_remote_code=True" in got["refused"]
        return
    assert got["plain_class"] == TRANSFORMERS_CLASSES[{"bert-regression": "bert"}.get(name, name)][1]
    ours = project_full_depth(runs[name], encoded(runs[name]))
    assert (torch.tensor(got["plain"]) - ours).abs().max().item() == 0.0


@pytest.mark.parametrize("name", KINDS + ["bert-mean", "bert-regression"])
def test_with_trust_remote_code_the_early_exit_model_answers_as_predict(name, runs, outside):
    got, folder = outside[name], runs[name]
    assert got["early_class"] == "PabeeForSequenceClassification" and got["output_type"] == "ModelOutput"
    settings, _ = chosen_exit(folder)
    config = got["config"]
    assert config["exit_criterion"] == settings.criterion
    assert (config["patience"] if settings.criterion == "patience" else config["exit_setting"]) == settings.settings[0]
    answers = predict_answers(folder)
    labels = json.loads((folder / "config.json").read_text())["id2label"]
    assert got["exits"] == [layer for _, _, layer in answers]
    if name == "bert-regression":  # predict.py's value is the logit, the pipeline's score too (no sigmoid)
        assert all(abs(row[0] - a[0]) < 1e-5 and abs(p["score"] - a[0]) < 1e-5
                   for row, p, a in zip(got["logits"], got["pipeline"], answers, strict=True))
    else:
        probabilities = torch.tensor(got["logits"]).softmax(-1)
        for row, (label, probability, _) in zip(probabilities, answers, strict=True):
            assert labels[str(int(row.argmax()))] == label and abs(float(row.max()) - probability) < 1e-5
        assert [p["label"] for p in got["pipeline"]] == [a[0] for a in answers]
        assert all(abs(p["score"] - a[1]) < 1e-5 for p, a in zip(got["pipeline"], answers, strict=True))
    model = load_model(backbone_of_folder(folder), str(folder), None, "cpu")[0].eval()
    with torch.no_grad():  # keyword overrides: as the project answers at those settings
        assert got["exits_patience_1"] == model(**encoded(folder), exit_rule=PatienceRule(1)).exit_layers.tolist()
        assert got["exits_entropy"] == model(**encoded(folder), exit_rule=EntropyRule(0.68)).exit_layers.tolist()


def test_the_trained_bert_exits_early_by_default_and_names_its_labels(runs, outside):
    got = outside["bert"]
    assert got["config"]["exit_criterion"] == "patience" and got["config"]["patience"] > 0
    assert min(got["exits"]) < 4 and {p["label"] for p in got["pipeline"]} <= {"entailment", "not_entailment"}


def project_layer(folder, layer):
    model = load_model(backbone_of_folder(folder), str(folder), None, "cpu")[0].eval()
    with torch.no_grad():
        return model(**encoded(folder), output_all_layer_logits=True).all_layer_logits[:, layer - 1]


@pytest.mark.parametrize("kind", KINDS)
def test_an_export_is_transformers_own_class_of_k_layers_answering_as_layer_k(kind, runs, outside):
    got, layers = outside["export " + kind], EXPORT_LAYERS[kind]
    assert got["class"] == TRANSFORMERS_CLASSES[kind][1] and got["layers"] == layers and not got["loading"]
    assert got["labels"] == json.loads((runs[kind] / "config.json").read_text())["id2label"]
    expected = project_layer(runs[kind], layers)
    assert (torch.tensor(got["logits"]) - expected).abs().max().item() == 0.0
    if kind in ONNX:  # ONNX Runtime, on rows of another shape than the export's example
        assert (torch.tensor(got["onnx"]) - expected).abs().max().item() < 1e-4


def test_export_prints_each_layers_metric_and_refuses_what_it_cannot_write(runs, tmp_path, capsys):
    out = tmp_path / "plain"
    assert export.main(["--model_dir", str(runs["bert-mean"]), "--output_dir", str(out)]) == 2
    said = capsys.readouterr().err
    assert "layer 1: acc" in said and "layer 4: acc" in said  # the run's own rows, to pick k from
    assert said.strip().splitlines()[-1].startswith("export.py: error:") and "mean of the tokens" in said
    assert "trust_remote_code=True" in said and not out.exists()
    for folder, extra, message in [(runs["albert"], ["--layers", "2"], "give --layers 1 or 3 or 4"),
                                   (runs["bert"], ["--layers", "5"], "give 1 to 4"),
                                   (runs["bert"], ["--layers", "0"], "give 1 to 4"),
                                   (tmp_path, [], "config.json")]:
        assert export.main(["--model_dir", str(folder), "--output_dir", str(out), *extra]) == 2
        assert message in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert export.main(["--model_dir", str(runs["bert"]), "--output_dir", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["mine.txt"]


def test_the_run_folder_has_a_model_card_made_of_its_own_results(runs):
    folder = runs["bert"]
    card = (folder / "README.md").read_text()
    head, _, body = card.removeprefix("---\n").partition("\n---\n")
    meta = {line[2:] for line in head.splitlines() if line.startswith("- ")}
    assert "library_name: transformers" in head and "pipeline_tag: text-classification" in head
    assert {"early-exit", "pabee", "bert", "nyu-mll/glue", "accuracy"} <= meta and "base_model" not in head  # a local base
    settings, why = chosen_exit(folder)
    assert f"`{settings.criterion}` at `{settings.settings[0]}` ({why})" in body
    assert f'pipeline("text-classification", model="{folder.name}", trust_remote_code=True)' in body
    table = (folder / "pabee_results.md").read_text()
    assert all(line in body for line in table.splitlines() if "| checkpoint-" not in line)  # the final model's rows
    figures = set(re.findall(r"\d+\.\d+", body))
    assert figures <= set(re.findall(r"\d+\.\d+", table + why + (folder / "training_args.json").read_text()))
    mean = (runs["bert-mean"] / "README.md").read_text()
    assert "transformers refuses this folder" in mean and "mean of the tokens" in mean


@pytest.mark.parametrize("statement", ["from pabee.data import glue", "from .engine import stream", "import pabee.data.glue",
                                       "from pabee.data.glue import Task as T"])
def test_the_saved_code_refuses_a_module_that_imports_the_package_otherwise(statement):
    """The joined file drops `from pabee.x.y import name` lines; any other way would leave a name
    undefined in it or change what it means."""
    kept = without_package_imports("import os\nfrom pabee.data.glue import Task\nx = Task\n", "m")
    assert kept == "import os\nx = Task\n"
    with pytest.raises(ValueError, match="m imports"):
        without_package_imports(f"{statement}\n", "m")


def test_a_card_written_before_the_package_moved_is_still_ours_to_rewrite_and_a_users_is_kept(runs, tmp_path):
    import shutil

    old_mark = "<!-- written by run_glue.py (pabee/card.py) from this folder's files; rewritten after each evaluation -->"
    folder = tmp_path / runs["bert"].name  # the card names its folder
    shutil.copytree(runs["bert"], folder, ignore=shutil.ignore_patterns("checkpoint-*", "onnx_cuts"))
    fresh = (folder / "README.md").read_text()
    (folder / "README.md").write_text(f"{old_mark}\nstale figures\n")
    write_card(folder, *chosen_exit(folder))
    assert (folder / "README.md").read_text() == fresh
    (folder / "README.md").write_text("a user's own card\n")
    write_card(folder, *chosen_exit(folder))
    assert (folder / "README.md").read_text() == "a user's own card\n"


@pytest.mark.parametrize("name", KINDS)
def test_a_run_folder_holds_two_files_of_code(name, runs):
    """The code a user reads before trust_remote_code=True: the config and one modeling file, which
    the folder's other answers above ran."""
    code = sorted(p.name for p in runs[name].glob("*.py"))
    assert code == ["configuration_pabee.py", "modeling_pabee.py"]
    assert "class PabeeForSequenceClassification(" in (runs[name] / "modeling_pabee.py").read_text()


def test_the_cards_load_lines_run_from_a_moved_copy_of_the_folder(runs, tmp_path):
    """The card's code, as a user copies it, beside a copy of the folder moved elsewhere (its old path
    gone from the card), in a process without this project."""
    import shutil

    folder = runs["bert"]
    moved = tmp_path / "elsewhere" / folder.name
    shutil.copytree(folder, moved, ignore=shutil.ignore_patterns("checkpoint-*", "onnx_cuts"))
    card = (moved / "README.md").read_text()
    code = card.split("```python\n")[1].split("```")[0]
    assert str(folder) not in card
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=moved.parent, capture_output=True, text=True, env=env,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'label'" in proc.stdout and "'score'" in proc.stdout


def test_ecosystem_check_smoke(runs, world, tmp_path):
    """benchmarks/ecosystem_check.py's smoke run (the real-model figures in docs/export.md are its own)."""
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ecosystem_check.py"), "--model_dir",
                           str(runs["bert"]), "--data_dir", str(world / "glue" / "RTE"), "--task", "RTE", "--layers", "2",
                           "--onnx", "--limit", "12", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["early_exit_rows"] == got["early_exit_same_labels"] == got["early_exit_same_exits"] == 12
    assert got["plain"] == "BertForSequenceClassification" and got["plain_max_logit_diff"] == 0.0
    assert got["export_layers"] == 2 and got["onnx_max_logit_diff"] < 1e-4
    assert got["export_metric"] == pytest.approx(got["run_layer_metric"])


def test_a_checkpoint_exports_with_its_own_layer_table(runs, tmp_path, capsys):
    checkpoint = runs["bert"] / "checkpoint-50"
    rows = [r for r in json.loads((runs["bert"] / "pabee_results.json").read_text())
            if r["checkpoint"] == "checkpoint-50" and r["criterion"] == "layer"]
    assert export.main(["--model_dir", str(checkpoint), "--output_dir", str(tmp_path / "plain"), "--layers", "3"]) == 0
    said = capsys.readouterr().err
    assert len(rows) == 4 and all(f"layer {r['setting']}: acc {r['acc']:.4f} on dev" in said for r in rows)
