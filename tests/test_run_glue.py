import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pabee.data import glue
import run_glue
from conftest import KINDS
from glue_fixtures import write_task
from pabee.fine_tuning.processes import Runtime
from pabee.scoring.evaluation import EvalSet, run_inference

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--do_train", "--do_eval", "--do_lower_case", "--per_gpu_train_batch_size", "16",
         "--per_gpu_eval_batch_size", "16", "--learning_rate", "3e-3", "--num_train_epochs", "3",
         "--logging_steps", "10", "--save_steps", "25", "--seed", "7"]


def run(args, output_dir, model="bert", task="SST-2", world=None, extra=()):
    argv = ["--model_type", model, "--model_name_or_path", str(world / model), "--task_name", task,
            "--data_dir", str(world / "glue" / task), "--output_dir", str(output_dir), *args, *extra]
    return run_glue.main(argv)


def results(output_dir):
    return json.loads((Path(output_dir) / "eval_results.json").read_text())


@pytest.mark.parametrize("model", KINDS)
def test_end_to_end_learns_and_writes_everything(model, world, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(TRAIN, out, model=model, world=world, extra=["--patience", "0,1,2,3", "--do_predict",
                                                             "--evaluate_during_training"]) == 0
    stdout = capsys.readouterr().out
    logs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert [log["step"] for log in logs] == [10, 20, 30, 40, 50, 60, 70]
    assert all({"loss", "learning_rate", "eval_acc"} <= set(log) for log in logs)
    assert logs[-1]["loss"] < logs[0]["loss"]
    for p in range(4):
        assert f"*** Patience = {p} Avg. Inference Layers = " in stdout
    rows = results(out)
    assert [(r["checkpoint"], r["task"], r["patience"], r["n"]) for r in rows] == [
        ("final", "sst-2", p, 60) for p in range(4)]
    assert rows[0]["acc"] >= 0.85, rows  # chance is 0.5
    assert rows[0]["mean_exit_layer"] == 4 and rows[0]["speed_up"] == 1.0
    for r in rows:
        assert r["speed_up"] == pytest.approx(4 / r["mean_exit_layer"])
    assert any(r["mean_exit_layer"] < 4 for r in rows[1:])
    text = (out / "eval_results.txt").read_text()
    assert f"acc_patience_0 = {rows[0]['acc']}" in text and "mean_exit_layer_patience_3 = " in text
    for step in (25, 50, 75):
        ckpt = out / f"checkpoint-{step}"
        assert {"model.safetensors", "config.json", "tokenizer.json", "optimizer.pt", "scheduler.pt",
                "rng_state_0.safetensors", "training_args.json", "trainer_state.json"} <= {p.name for p in ckpt.iterdir()}
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    assert list((out / "runs").iterdir()), "TensorBoard events expected"
    for p in range(4):
        lines = (out / "predictions" / f"patience-{p}" / "SST-2.tsv").read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 31
        assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}


def logged(stdout):
    return {log["step"]: log for log in (json.loads(line) for line in stdout.splitlines() if line.startswith("{"))}


def test_resume_from_checkpoint_reaches_the_same_weights_and_logs(world, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(TRAIN, full, world=world) == 0
    uninterrupted = logged(capsys.readouterr().out)
    resumed_args = ["--model_type", "bert", "--model_name_or_path", str(full / "checkpoint-25"), "--task_name",
                    "SST-2", "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(part), *TRAIN]
    assert run_glue.main(resumed_args) == 0
    resumed = logged(capsys.readouterr().out)
    assert sorted(resumed) == [30, 40, 50, 60, 70]
    for step, log in resumed.items():  # step 30 averages steps 21-30, five of them before the checkpoint
        assert log == uninterrupted[step], step
    assert not (part / "checkpoint-25").exists() and (part / "checkpoint-50").exists()
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert results(full)[0]["acc"] == results(part)[0]["acc"]


def test_eval_only_uses_output_dir_and_all_checkpoints(world, tmp_path):
    out = tmp_path / "out"
    assert run(TRAIN, out, world=world) == 0
    argv = ["--model_type", "bert", "--model_name_or_path", "no-such-hub-model-needed", "--task_name", "sst2",
            "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(out), "--do_eval",
            "--eval_all_checkpoints", "--patience", "2,3", "--do_lower_case"]
    assert run_glue.main(argv) == 0
    rows = results(out)
    assert [(r["checkpoint"], r["patience"]) for r in rows] == [("final", 0)] + [
        (c, p) for c in ("final", "checkpoint-25", "checkpoint-50", "checkpoint-75") for p in (2, 3)]
    assert (out / "checkpoint-25" / "eval_results.txt").is_file()


def test_eval_results_json_and_txt_keep_earlier_rows_and_hold_the_same_rows(world, tmp_path):
    """Training evaluates patience 0; a later evaluation of 0 and 2 re-measures 0 and adds 2."""
    out = tmp_path / "out"
    assert run(TRAIN[:-8] + ["--max_steps", "4"], out, world=world) == 0
    first = results(out)
    assert run_glue.main(["--model_type", "bert", "--model_name_or_path", str(out), "--task_name", "SST-2",
                          "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(out), "--do_eval",
                          "--patience", "2", "--do_lower_case"]) == 0
    rows = results(out)
    assert [r["patience"] for r in rows] == [0, 2] and rows[0] == first[0]
    txt = dict(line.split(" = ") for line in (out / "eval_results.txt").read_text().splitlines())
    from_json = {f"{k}_patience_{r['setting']}": str(v) for r in rows for k, v in r.items()
                 if k not in ("checkpoint", "task", "criterion", "setting", "patience", "ignores_input",
                              "exits_per_layer")}  # the txt keeps the originals' keys
    assert txt == from_json


def test_regression_task_end_to_end(world, tmp_path):
    out = tmp_path / "out"
    extra = ["--patience", "0,1,2", "--regression_threshold", "0.5", "--num_train_epochs", "6", "--do_predict"]
    assert run(TRAIN, out, task="STS-B", world=world, extra=extra) == 0
    rows = results(out)
    assert {"pearson", "spearmanr", "corr"} <= set(rows[0])
    assert rows[0]["pearson"] > 0.6, rows
    assert any(r["mean_exit_layer"] < 4 for r in rows[1:]), "threshold 0.5 should let some examples exit"
    values = [float(line.split("\t")[1]) for line in
              (out / "predictions" / "patience-1" / "STS-B.tsv").read_text().splitlines()[1:]]
    assert len(values) == 30


def test_mnli_reports_matched_and_mismatched(world, tmp_path):
    out = tmp_path / "out"
    assert run(TRAIN, out, task="MNLI", world=world, extra=["--patience", "0,2", "--do_predict", "--num_train_epochs", "6"]) == 0
    rows = results(out)
    assert [(r["task"], r["patience"]) for r in rows] == [("mnli", 0), ("mnli", 2), ("mnli-mm", 0), ("mnli-mm", 2)]
    assert rows[0]["acc"] > 0.6  # chance is 1/3
    assert (Path(str(out) + "-MM") / "eval_results.txt").is_file()
    for name in ("MNLI-m.tsv", "MNLI-mm.tsv"):
        labels = {l.split("\t")[1] for l in (out / "predictions" / "patience-2" / name).read_text().splitlines()[1:]}
        assert labels <= {"contradiction", "entailment", "neutral"}


def test_rte_submission_uses_label_strings(world, tmp_path):
    out = tmp_path / "out"
    assert run(TRAIN[:-8] + ["--max_steps", "3"], out, task="RTE", world=world, extra=["--do_predict"]) == 0
    lines = (out / "predictions" / "patience-0" / "RTE.tsv").read_text().splitlines()
    assert {l.split("\t")[1] for l in lines[1:]} <= {"entailment", "not_entailment"}


def test_every_classic_flag_parses():
    argv = ["--data_dir", "d", "--model_type", "albert", "--model_name_or_path", "albert-base-v2",
            "--task_name", "STS-B", "--output_dir", "o", "--patience", "3,4,5,6,7,8", "--regression_threshold", "0.1",
            "--config_name", "c", "--tokenizer_name", "t", "--cache_dir", "cache", "--max_seq_length", "64",
            "--do_train", "--do_eval", "--evaluate_during_training", "--do_lower_case",
            "--per_gpu_train_batch_size", "4", "--per_gpu_eval_batch_size", "2", "--gradient_accumulation_steps", "3",
            "--learning_rate", "2e-5", "--weight_decay", "0.01", "--adam_epsilon", "1e-6", "--max_grad_norm", "0.5",
            "--num_train_epochs", "5", "--max_steps", "9", "--warmup_steps", "2", "--logging_steps", "7",
            "--save_steps", "8", "--eval_all_checkpoints", "--no_cuda", "--overwrite_output_dir",
            "--overwrite_cache", "--seed", "3", "--fp16", "--local_rank", "-1", "--do_predict"]
    settings = run_glue.parse_args(argv)
    exits, training = settings.exits, settings.training
    assert exits.settings == (3, 4, 5, 6, 7, 8) and glue.find_task(settings.data.task_name).name == "sts-b" \
        and exits.regression_threshold == 0.1
    assert (training.gradient_accumulation_steps, training.max_steps, training.warmup_steps, settings.seed) == (3, 9, 2, 3)
    assert settings.device.fp16 and settings.device.no_cuda and settings.do_predict and training.learning_rate == 2e-5
    assert run_glue.parse_args(argv[:-6] + ["--bf16"]).device.bf16


# --- bad input: one line, exit 2, nothing written --------------------------------------------

def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in Path(folder).rglob("*")}


def bad_data(world, tmp, change, task="SST-2"):
    """A copy of a task folder with files changed: change(name, text) -> new text or bytes, or
    None to leave the file out."""
    folder = tmp / "bad_glue"
    folder.mkdir()
    for src in (world / "glue" / task).glob("*.tsv"):
        new = change(src.name, src.read_text())
        if new is not None:
            (folder / src.name).write_bytes(new if isinstance(new, bytes) else new.encode())
    return {"--data_dir": str(folder), "--task_name": task}


def bad_model(world, tmp, change):
    """A copy of the tiny BERT folder, then change(folder) breaks it."""
    import shutil

    folder = tmp / "bad_model"
    shutil.copytree(world / "bert", folder)
    change(folder)
    return {"--model_name_or_path": str(folder)}


def dev_only(text):
    return lambda name, original: text if name == "dev.tsv" else original


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD = {  # case: (overrides or a function making them, words the error must contain)
    "unknown task": ({"--task_name": "imdb"}, "unknown task 'imdb'"),
    "bad patience empty": ({"--patience": "3,,4"}, "bad --patience '3,,4'"),
    "bad patience word": ({"--patience": "x"}, "bad --patience 'x'"),
    "bad patience negative": ({"--patience": "-1"}, "bad --patience '-1'"),
    "negative threshold": ({"--regression_threshold": "-0.1"}, "--regression_threshold -0.1 is out of range"),
    "missing data dir": ({"--data_dir": "/nonexistent/glue"}, "--data_dir /nonexistent/glue is not a folder"),
    "missing split file": (lambda w, t: bad_data(w, t, lambda n, x: None if n == "dev.tsv" else x),
                           "missing data file"),
    "malformed row": (lambda w, t: bad_data(w, t, lambda n, x: x + "no label here\n" if n == "dev.tsv" else x),
                      "dev.tsv:62: 1 tab-separated columns"),
    "label outside task": (lambda w, t: bad_data(w, t, lambda n, x: x + "nice\t7\n" if n == "dev.tsv" else x),
                           "dev.tsv:62: label '7' is not one of 0, 1"),
    "wrong model type": ({"--model_type": "albert"}, "holds a 'bert' model but --model_type is albert"),
    "missing model path": ({"--model_name_or_path": "/nonexistent/model"}, "/nonexistent/model is not a model folder"),
    "unknown model type": ({"--model_type": "gpt2"}, "invalid choice: 'gpt2'"),
    "fp16 without cuda": ({"--fp16": None, "--no_cuda": None}, "--fp16 needs a CUDA GPU"),
    "output dir not empty": ({"--do_train": None, "--overwrite_output_dir": False}, "exists and is not empty"),
    "invalid utf-8": (lambda w, t: bad_data(w, t, dev_only(b"sentence\tlabel\ngood \xff\xfe film\t1\n")),
                      "dev.tsv is not valid UTF-8"),
    "empty file": (lambda w, t: bad_data(w, t, dev_only("")), "dev.tsv holds no examples"),
    "header only": (lambda w, t: bad_data(w, t, dev_only("sentence\tlabel\n")), "dev.tsv holds no examples"),
    "non-numeric label": (lambda w, t: bad_data(w, t, dev_only("sentence\tlabel\nfine\tpositive\n")),
                          "dev.tsv:2: label 'positive' is not one of 0, 1"),
    "non-numeric score": (lambda w, t: bad_data(w, t, lambda n, x: x.replace("\n", "\thigh\n", 2).replace(
        "score\thigh", "score") if n == "dev.tsv" else x, task="STS-B"), "dev.tsv:2: score 'high' is not a number"),
    "model folder without config": (lambda w, t: bad_model(w, t, lambda f: (f / "config.json").unlink()),
                                    "cannot load a model config from"),
    "model folder without weights": (lambda w, t: bad_model(w, t, lambda f: (f / "model.safetensors").unlink()),
                                     "cannot load model weights from"),
    "truncated weights": (lambda w, t: bad_model(w, t, lambda f: truncate(f / "model.safetensors")),
                          "cannot load model weights from"),
    "config of another model": (lambda w, t: bad_model(w, t, lambda f: (f / "config.json").write_text(
        '{"model_type": "gpt2", "n_layer": 2}')), "holds a 'gpt2' model but --model_type is bert"),
    "model folder without tokenizer": (lambda w, t: bad_model(w, t, lambda f: [
        (f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")]), "no tokenizer files in"),
    "zero max_seq_length": ({"--max_seq_length": "0"}, "--max_seq_length 0 is out of range: give a length >= 1"),
    "zero batch size": ({"--per_gpu_train_batch_size": "0"}, "--per_gpu_train_batch_size 0 is out of range"),
    "fp16 and bf16": ({"--fp16": None, "--bf16": None}, "--fp16 and --bf16 exclude each other"),
    "bad exit thresholds": ({"--exit_criterion": "entropy", "--exit_thresholds": "a,b"}, "bad --exit_thresholds 'a,b'"),
    "nothing to do": ({"--do_eval": False}, "nothing to do: pass --do_train, --do_eval and/or --do_predict"),
}


def call(argv):
    try:
        return run_glue.main(argv)
    except SystemExit as stop:  # argparse's own errors
        return stop.code


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_nothing_touched(case, world, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("results of last week")
    before, data_before = snapshot(out), snapshot(world / "glue" / "SST-2")
    overrides, message = BAD[case]
    overrides = overrides(world, tmp_path) if callable(overrides) else overrides
    flags = {"--model_type": "bert", "--model_name_or_path": str(world / "bert"), "--task_name": "SST-2",
             "--data_dir": str(world / "glue" / "SST-2"), "--output_dir": str(out), "--do_eval": None,
             "--overwrite_output_dir": None, **overrides}
    argv = [part for flag, value in flags.items() if value is not False
            for part in ([flag] if value is None else [flag, value])]
    code = call(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert snapshot(out) == before and snapshot(world / "glue" / "SST-2") == data_before


def test_bad_input_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run_glue.py"), "--model_type", "bert",
                           "--model_name_or_path", "x", "--task_name", "SST-2", "--output_dir", str(tmp_path),
                           "--do_eval", "--patience", "3,,4"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "run_glue.py: error: bad --patience '3,,4': give a comma list of integers >= 0, e.g. 3,4,5"


def test_bad_data_from_the_command_line_prints_only_the_error(world, tmp_path):
    data = tmp_path / "SST-2"
    data.mkdir()
    for name in ("dev.tsv", "test.tsv"):
        (data / name).write_text((world / "glue" / "SST-2" / name).read_text())
    (data / "train.tsv").write_text("sentence\tlabel\na fine film\t1\nbroken\n")
    proc = subprocess.run([sys.executable, str(ROOT / "run_glue.py"), "--model_type", "bert", "--model_name_or_path",
                           str(world / "bert"), "--task_name", "SST-2", "--data_dir", str(data), "--output_dir",
                           str(tmp_path / "out"), "--do_train", "--do_eval"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"run_glue.py: error: {data / 'train.tsv'}:3: 1 tab-separated columns, SST-2 needs at least 2: "
        "fix or remove the row"]
    assert not (tmp_path / "out").exists() and sorted(p.name for p in data.iterdir()) == [
        "dev.tsv", "test.tsv", "train.tsv"]


def test_evaluation_batches_by_length_and_answers_in_dataset_order(world):
    import datasets

    from modeling_pabee_bert import BertForSequenceClassificationWithPabee
    from pabee.early_exit.rules import PatienceRule
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(world / "bert")
    model = BertForSequenceClassificationWithPabee.from_pretrained(world / "bert", num_labels=2).eval()
    texts = ["the movie", "a film was great and the story was fine and it was very good", "awful",
             "the plot is quite awful", "it is a great film and the story", "fine"]
    features = datasets.Dataset.from_dict(dict(tokenizer(texts), label=[0] * len(texts),
                                                index=[str(i) for i in range(len(texts))]))
    eval_set = EvalSet.of(glue.TASKS["sst-2"], features, tokenizer.pad_token_id, batch_size=2)
    loader = eval_set.loader
    widths = [b["input_ids"].shape[1] for b in loader]
    assert widths == sorted(widths, reverse=True) and sum(widths) * 2 < len(texts) * widths[0]
    rule = PatienceRule(1)
    logits, exits, _, _ = run_inference(Runtime(torch.device("cpu"), 0), model, eval_set, rule)
    for i, text in enumerate(texts):
        one = model(**tokenizer(text, return_tensors="pt"), exit_rule=rule)
        torch.testing.assert_close(logits[i], one.logits[0], rtol=1e-4, atol=1e-5)
        assert int(exits[i]) == int(one.exit_layers[0])


def test_without_data_dir_offline_hub_gives_one_line(world, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, str(ROOT / "run_glue.py"), "--model_type", "bert", "--model_name_or_path",
                           str(world / "bert"), "--task_name", "RTE", "--output_dir", str(tmp_path / "out"),
                           "--do_eval"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_glue.py: error: cannot load GLUE RTE from the hub")
    assert lines[0].endswith("pass --data_dir <folder with its TSV files>")


def test_load_says_in_one_line_which_heads_are_new(world, tmp_path, caplog):
    """From a plain backbone the L heads are new (expected: an info line, no load report); a
    checkpoint that lacks more than heads, or holds foreign keys, gets one warning line."""
    import logging

    from pabee.modeling.backbones import BACKBONES, load_model, log_new_parameters

    with caplog.at_level(logging.INFO):
        model, info = load_model(BACKBONES["bert"], str(world / "bert"), glue.TASKS["sst-2"], "cpu")
        log_new_parameters(str(world / "bert"), info)
    messages = [r.getMessage() for r in caplog.records]
    assert any("4 classifier heads are new (layers 1,2,3,4)" in m for m in messages)
    assert not any("LOAD REPORT" in m or "MISSING" in m for m in messages)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert info["missing_keys"] == sorted([f"classifiers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
                                          + ["classifier.bias", "classifier.weight"])
    weights = load_file(world / "bert" / "model.safetensors")
    del weights["pooler.dense.bias"]
    weights["extra.weight"] = torch.zeros(2)
    odd = tmp_path / "odd"
    odd.mkdir()
    from safetensors.torch import save_file

    save_file(weights, odd / "model.safetensors")
    (odd / "config.json").write_bytes((world / "bert" / "config.json").read_bytes())
    caplog.clear()
    with caplog.at_level(logging.INFO):
        log_new_parameters(str(odd), load_model(BACKBONES["bert"], str(odd), glue.TASKS["sst-2"], "cpu")[1])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "bert.pooler.dense.bias" in warnings[0] and "extra.weight" in warnings[0]
    assert "\n" not in warnings[0]


OUT_OF_RANGE = {  # one value per numeric flag that no run can honour
    "regression_threshold": "-1", "max_seq_length": "0", "per_gpu_train_batch_size": "0",
    "per_gpu_eval_batch_size": "-3", "gradient_accumulation_steps": "0", "learning_rate": "nan",
    "weight_decay": "-0.1", "adam_epsilon": "0", "max_grad_norm": "0", "num_train_epochs": "-2",
    "max_steps": "0", "warmup_steps": "-1", "logging_steps": "0", "save_steps": "0", "seed": "-1",
    "local_rank": "-2", "timing_repeats": "0", "validation_split_percentage": "100", "second_stage_steps": "-1",
    "distill_temperature": "0", "num_hidden_layers": "-1",
}


def test_every_numeric_flag_has_a_range_and_a_bad_value_here():
    numeric = {a.dest for a in run_glue.build_parser()._actions if a.type in (int, float)}
    assert numeric == set(run_glue.RANGES) == set(OUT_OF_RANGE)


@pytest.mark.parametrize("flag", sorted(OUT_OF_RANGE) + ["inf epochs", "negative rate"])
def test_numeric_flag_out_of_range_one_line_exit_2_nothing_written(flag, world, tmp_path, capsys):
    extra = {"inf epochs": ("num_train_epochs", "inf"), "negative rate": ("learning_rate", "-2e-5")}
    name, value = extra[flag] if flag in extra else (flag, OUT_OF_RANGE[flag])
    out = tmp_path / "out"
    code = call(["--model_type", "bert", "--model_name_or_path", str(world / "bert"), "--task_name", "SST-2",
                 "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(out), "--do_train", "--do_eval",
                 f"--{name}={value}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"--{name} " in err and "is out of range: give " in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv,message", [
    (["--exit_criterion", "fixed", "--exit_thresholds", "2,9"], "fixed exit layer 9 is beyond the model's 4 layers"),
    (["--exit_criterion", "confidence", "--exit_thresholds", "0.9,1.5"], "give a comma list of numbers from 0 to 1"),
])
def test_exit_settings_beyond_the_model_or_a_probability(argv, message, world, tmp_path, capsys):
    code = call(["--model_type", "bert", "--model_name_or_path", str(world / "bert"), "--task_name", "SST-2",
                 "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(tmp_path / "out"), "--do_eval", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_max_seq_length_beyond_the_model_is_clamped_with_one_warning(world, tmp_path, caplog):
    import logging

    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="pabee"):
        assert run(TRAIN[:-8] + ["--max_steps", "2", "--max_seq_length", "500", "--cache_dir", str(tmp_path / "c")],
                   out, world=world) == 0
    warnings = [r.getMessage() for r in caplog.records if "--max_seq_length" in r.getMessage()]
    assert warnings == ["--max_seq_length 500 is more than the model takes (64 positions): using 64"]
    assert [p.name.split("_")[3] for p in (tmp_path / "c").iterdir()] == ["64", "64"]


def test_feature_cache_goes_to_the_datasets_cache_never_the_data_folder(world, tmp_path):
    import os

    data = world / "glue" / "SST-2"
    before = snapshot(data)
    assert run(TRAIN[:-8] + ["--max_steps", "2"], tmp_path / "out", world=world) == 0
    assert snapshot(data) == before
    cached = [p.name for p in Path(os.environ["HF_DATASETS_CACHE"], "pabee-features").iterdir()]
    assert any(n.startswith("cached_train_") and "_sst-2_" in n for n in cached)


def test_unwritable_cache_dir_falls_back_with_one_warning(world, tmp_path, caplog):
    import logging

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="pabee"):
        assert run(TRAIN[:-8] + ["--max_steps", "2", "--cache_dir", str(blocker / "cache")], tmp_path / "out",
                   world=world) == 0
    warnings = [r.getMessage() for r in caplog.records if "feature cache" in r.getMessage()]
    assert warnings and all(w.startswith(f"cannot write the feature cache in {blocker / 'cache'}") for w in warnings)
    assert results(tmp_path / "out")[0]["n"] == 60


def test_two_processes_tokenizing_the_same_task_at_once(world, tmp_path):
    """Two real runs share a cold --cache_dir: both finish with the same answers, one cache
    entry per split is left, and no temporary folder."""
    data = tmp_path / "SST-2"
    write_task(tmp_path, "SST-2", n_train=20, n_dev=3000, n_test=5, seed=4)
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, str(ROOT / "run_glue.py"), "--model_type", "bert",
                               "--model_name_or_path", str(world / "bert"), "--task_name", "SST-2", "--data_dir",
                               str(data), "--output_dir", str(tmp_path / f"out{i}"), "--do_eval", "--cache_dir",
                               str(cache), "--do_lower_case", "--per_gpu_eval_batch_size", "64"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    assert results(tmp_path / "out0") == results(tmp_path / "out1")
    assert [p.name.split("_")[1] for p in cache.iterdir()] == ["dev"]


def test_every_flag_has_a_one_line_description_and_shows_its_default():
    parser = run_glue.build_parser()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert all(a.help and "\n" not in a.help for a in flags), [a.dest for a in flags if not a.help]
    text = parser.format_help()
    assert "(default: 128)" in text and "(default: 5e-05)" in text and "(default: patience)" in text


@pytest.mark.parametrize("argv", [["--help"], ["--model_type", "bert", "--model_name_or_path", "m", "--task_name",
                                              "SST-2", "--output_dir", "o", "--do_eval", "--patience", "x"]])
def test_help_and_flag_errors_load_nothing_heavy(argv):
    """--help and flag errors answer before torch, transformers or the scientific stack load."""
    proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "run_glue.py"), *argv],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 2)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & {"torch", "transformers", "numpy", "scipy", "sklearn", "datasets"}, imported
