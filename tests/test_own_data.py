"""Own data: CSV, TSV, JSON and JSONL files (or a hub dataset), column guessing, label names kept
from training to predict.py, regression from float labels, a seeded validation split, predict.py
equal to run_glue's predictions and answering a stream, and hostile files refused in one line."""

import csv
import json
import logging
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import run_glue
from glue_fixtures import FILLER

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"neg": "awful", "pos": "great", "mid": "fine"}  # the word that gives the label away
TRAIN = ["--do_train", "--do_eval", "--learning_rate", "3e-3", "--num_train_epochs", "8",
         "--per_gpu_train_batch_size", "16", "--per_gpu_eval_batch_size", "16", "--logging_steps", "1000",
         "--save_steps", "1000", "--seed", "3", "--patience", "0,1,2", "--exit_pooling", "mean"]
# Mean pooling: the label word sits anywhere, and a tiny random model's first token learns it
# for some initialisations only (first-token runs reach 0.68 or 1.0 by the backbone's seed).


def sentence(rng, word):
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def records(n, seed=0, regression=False):
    """{text, label} rows: a label name (or, for regression, the count of 'great' plus noise)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        if regression:
            k = rng.randint(0, 3)
            text = " ".join([sentence(rng, "great")] * k) if k else sentence(rng, "awful")
            rows.append({"text": text, "label": round(k + rng.random() * 0.3, 3)})
        else:
            label = rng.choice(sorted(WORDS))
            rows.append({"text": sentence(rng, WORDS[label]), "label": label})
    return rows


def write(path, rows, columns=None):
    """rows (dicts) in the format the suffix says."""
    path = Path(path)
    columns = columns or list(rows[0])
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            out.writerow(columns)
            out.writerows([[r[c] for c in columns] for r in rows])
    elif path.suffix == ".json":
        path.write_text(json.dumps([{c: r[c] for c in columns} for r in rows]), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps({c: r[c] for c in columns}) + "\n" for r in rows), encoding="utf-8")
    return path


def run(world, out, *args):
    return run_glue.main(["--model_type", "bert", "--model_name_or_path", str(world / "bert"),
                          "--output_dir", str(out), *args])


def rows_of(out):
    return json.loads((Path(out) / "eval_results.json").read_text())


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl"])
def test_each_format_trains_keeps_label_names_and_predicts_them(suffix, world, tmp_path):
    train = write(tmp_path / f"reviews{suffix}", records(300))
    dev = write(tmp_path / f"dev{suffix}", records(60, seed=1))
    test = write(tmp_path / f"test{suffix}", records(20, seed=2), columns=["text"])
    out = tmp_path / "out"
    assert run(world, out, "--train_file", str(train), "--validation_file", str(dev), "--test_file", str(test),
               "--do_predict", *TRAIN) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "mid", "1": "neg", "2": "pos"}
    rows = rows_of(out)
    assert [(r["task"], r["patience"]) for r in rows] == [("reviews", p) for p in (0, 1, 2)]
    assert rows[0]["acc"] >= 0.8, rows[0]
    assert {"acc", "macro_f1", "f1[mid]", "f1[neg]", "f1[pos]"} <= set(rows[0]) and "mcc" not in rows[0]
    lines = (out / "predictions" / "patience-0" / "reviews.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 21
    assert {line.split("\t")[1] for line in lines[1:]} <= {"mid", "neg", "pos"}


def test_columns_are_guessed_or_named(world, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pabee")
    rng = random.Random(4)
    pairs = [{"question": sentence(rng, "what"), "sentence": sentence(rng, WORDS[lab]), "label": lab}
             for lab in (rng.choice(sorted(WORDS)) for _ in range(200))]
    train = write(tmp_path / "pairs.csv", pairs)
    assert run(world, tmp_path / "a", "--train_file", str(train), "--validation_split_percentage", "20",
               "--do_train", "--do_eval", "--max_steps", "3") == 0
    assert "texts from 'question' + 'sentence', labels from 'label' (guessed" in caplog.text
    odd = write(tmp_path / "odd.jsonl", [{"body": r["sentence"], "target": r["label"], "label": "x"} for r in pairs])
    caplog.clear()
    assert run(world, tmp_path / "b", "--train_file", str(odd), "--validation_split_percentage", "20",
               "--text_columns", "body", "--label_column", "target", "--do_train", "--do_eval", "--max_steps", "3") == 0
    assert "texts from 'body', labels from 'target'" in caplog.text and "(guessed" not in caplog.text
    assert len(json.loads((tmp_path / "b" / "config.json").read_text())["id2label"]) == 3


def test_float_labels_make_a_regression_task(world, tmp_path):
    train = write(tmp_path / "scores.csv", records(300, regression=True))
    dev = write(tmp_path / "dev.csv", records(60, seed=1, regression=True))
    out = tmp_path / "out"
    assert run(world, out, "--train_file", str(train), "--validation_file", str(dev), *TRAIN,
               "--head_bias_init", "label_prior", "--regression_threshold", "0.2") == 0
    assert len(json.loads((out / "config.json").read_text())["id2label"]) == 1
    row = rows_of(out)[0]
    assert {"pearson", "spearmanr", "mse"} <= set(row) and row["main_metric"] == "pearson"
    assert row["pearson"] > 0.5, row
    assert run(world, tmp_path / "c", "--train_file", str(train), "--do_train", "--max_steps", "2",
               "--task_type", "classification") == 0
    assert len(json.loads((tmp_path / "c" / "config.json").read_text())["id2label"]) > 10  # each score a class


def carved_dev(tmp_path, seed):
    from pabee.data.data_settings import DataSettings
    from pabee.data.own_data import open_own

    train = write(tmp_path / "all.csv", [{"text": f"{r['text']} {i}", "label": r["label"]}
                                         for i, r in enumerate(records(100))])
    data = open_own(DataSettings(train_file=str(train), validation_split_percentage=25), ("train", "dev"), seed)
    return data.splits["dev"], data.splits["train"]


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    dev_a, train_a = carved_dev(tmp_path, 1)
    dev_b, _ = carved_dev(tmp_path, 1)
    dev_c, _ = carved_dev(tmp_path, 2)
    assert dev_a == dev_b and dev_a != dev_c
    assert len(dev_a["text_a"]) == 25 and len(train_a["text_a"]) == 75
    assert not set(dev_a["text_a"]) & set(train_a["text_a"])
    assert sorted(map(int, dev_a["index"] + train_a["index"])) == list(range(100))


def test_eval_only_takes_label_names_from_the_model(world, tmp_path):
    train = write(tmp_path / "t.csv", records(300))
    dev = write(tmp_path / "d.csv", records(60, seed=1))
    out = tmp_path / "out"
    assert run(world, out, "--train_file", str(train), "--validation_file", str(dev), *TRAIN) == 0
    again = tmp_path / "again"
    assert run_glue.main(["--model_type", "bert", "--model_name_or_path", str(out), "--output_dir", str(again),
                          "--validation_file", str(dev), "--do_eval", "--patience", "0"]) == 0
    assert rows_of(again)[0]["acc"] == rows_of(out)[0]["acc"]


def predict(*args, stdin=None):
    return subprocess.run([sys.executable, str(ROOT / "predict.py"), *args], input=stdin, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("own")
    train = write(folder / "reviews.csv", records(300))
    dev = write(folder / "dev.csv", records(60, seed=1))
    test = write(folder / "new.jsonl", records(40, seed=5), columns=["text"])
    out = folder / "out"
    assert run(world, out, "--train_file", str(train), "--validation_file", str(dev), "--test_file", str(test),
               "--do_predict", *TRAIN) == 0
    return out, test


@pytest.mark.parametrize("patience", [0, 1, 2])
def test_predict_equals_run_glue_predictions(trained, patience):
    out, test = trained
    proc = predict("--model_dir", str(out), "--input", str(test), "--patience", str(patience), "--batch_size", "7")
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    expected = [line.split("\t")[1] for line in
                (out / "predictions" / f"patience-{patience}" / "reviews.tsv").read_text().splitlines()[1:]]
    assert [a["label"] for a in answers] == expected
    texts = [json.loads(line)["text"] for line in test.read_text().splitlines()]
    assert [a["text"] for a in answers] == texts
    assert all(0 < a["probability"] <= 1 and 1 <= a["exit_layer"] <= 4 for a in answers)
    closing = proc.stderr.strip().splitlines()[-1]
    assert closing.startswith("predict.py: 40 examples in ") and "mean exit layer" in closing and "speed-up" in closing


def test_predict_without_a_setting_takes_the_exit_chosen_on_dev_and_says_so(trained, world, tmp_path):
    """The fastest patience whose dev accuracy stays within a point of full depth (the last layer's
    head), as run_glue's results say; a model without dev results runs at its config's patience."""
    out, test = trained
    final = [r for r in json.loads((out / "pabee_results.json").read_text()) if r["checkpoint"] == "final"]
    full = max((r for r in final if r["criterion"] == "layer"), key=lambda r: r["setting"])["acc"]
    chosen = max((r for r in final if r["criterion"] == "patience" and r["acc"] >= full - 0.01),
                 key=lambda r: r["speed_up"])["setting"]
    default = predict("--model_dir", str(out), "--input", str(test))
    asked = predict("--model_dir", str(out), "--input", str(test), "--patience", str(chosen))
    assert default.returncode == asked.returncode == 0, default.stderr
    assert default.stderr.splitlines()[0].startswith(f"predict.py: exit patience {chosen}: chosen on dev: the fastest")
    assert "dev figures at this setting are optimistic" in default.stderr.splitlines()[0]
    assert asked.stderr.splitlines()[0] == f"predict.py: exit patience {chosen}: as asked (--patience)"
    assert default.stdout == asked.stdout
    plain = tmp_path / "plain"
    assert run(world, plain, "--train_file", str(out.parent / "reviews.csv"), "--do_train", "--max_steps", "2") == 0
    default = predict("--model_dir", str(plain), stdin="a great film\n")
    assert default.returncode == 0, default.stderr
    assert default.stderr.splitlines()[0] == (f"predict.py: exit patience 0: {plain} holds no dev results to choose "
                                              "from (run_glue.py --do_eval writes them), so the config's patience 0 "
                                              "(full depth)")
    assert json.loads(default.stdout)["exit_layer"] == 4


def test_predict_plain_text_and_tsv_output(trained):
    out, _ = trained
    proc = predict("--model_dir", str(out), "--output_format", "tsv", "--patience", "1",
                   stdin="the plot was great\nquite awful film\tand a story\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "text\ttext_b\tlabel\tprobability\texit_layer" and len(lines) == 3
    assert lines[1].split("\t")[:3] == ["the plot was great", "", "pos"]
    assert lines[2].split("\t")[:3] == ["quite awful film", "and a story", "neg"]


def test_predict_answers_a_stream_before_it_ends(trained):
    out, _ = trained
    proc = subprocess.Popen([sys.executable, str(ROOT / "predict.py"), "--model_dir", str(out), "--batch_size", "8",
                             "--pause", "0.1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        proc.stdin.write("a great movie\n")
        proc.stdin.flush()
        first = proc.stdout.readline()  # the input is still open: the answer came from the pause
        assert json.loads(first)["label"] == "pos"
        proc.stdin.write("an awful plot\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["label"] == "neg"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_raw_lines_gives_the_lines_a_file_iterator_gives(tmp_path):
    """predict.py reads standard input with os.read (pabee.deploy.prediction_input.raw_lines); the lines must be
    those of a file, whatever the chunks: a line split across reads, a CR, a last line without LF."""
    from pabee.deploy.prediction_input import raw_lines

    data = b"first line\r\nsecond\tpair\n" + b"x" * 70000 + b"\n\nlast without newline"
    read, write = os.pipe()

    def feed():  # more than a pipe holds, in uneven pieces: the long line arrives in several reads
        with os.fdopen(write, "wb", buffering=0) as w:
            for start in range(0, len(data), 3001):
                w.write(data[start:start + 3001])

    feeder = threading.Thread(target=feed)
    feeder.start()
    got = list(raw_lines(read))
    feeder.join()
    os.close(read)
    path = tmp_path / "lines.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        assert got == list(f) and len(got) == 5


def test_metric_for_table_leads_the_table(world, tmp_path):
    train = write(tmp_path / "t.csv", records(200))
    out = tmp_path / "out"
    assert run(world, out, "--train_file", str(train), "--validation_split_percentage", "20", "--do_train",
               "--do_eval", "--max_steps", "3", "--metric_for_table", "macro_f1") == 0
    header = (out / "pabee_results.md").read_text().splitlines()[0]
    assert header.startswith("| checkpoint | task | criterion | setting | macro_f1 | acc |") and "f1[" not in header
    assert run(world, tmp_path / "bad", "--train_file", str(train), "--validation_split_percentage", "20",
               "--do_train", "--metric_for_table", "pearson") == 2


# --- hostile input ----------------------------------------------------------------------------

def hostile(tmp_path):
    good = records(30)
    cases = {
        "missing column": (write(tmp_path / "m.csv", good), ["--text_columns", "review"], "has no column 'review'"),
        "empty file": ((tmp_path / "e.csv"), [], "is empty"),
        "header only": ((tmp_path / "h.csv"), [], "only a header"),
        "unseen label": (write(tmp_path / "u.csv", good), ["--validation_file", str(tmp_path / "u_dev.csv")],
                         "u_dev.csv:4: label 'joy' was never seen in training"),
        "mixed label types": ((tmp_path / "x.jsonl"), [], "x.jsonl:2: label 'five' is not of the type"),
        "malformed json line": ((tmp_path / "j.jsonl"), [], "j.jsonl:3: not valid JSON"),
        "not utf-8": ((tmp_path / "n.csv"), [], "n.csv:3: byte 0xe9 is not UTF-8"),
        "empty text": ((tmp_path / "t.csv"), [], "t.csv:3: text column 'text' is empty"),
        "directory": ((tmp_path / "folder.csv"), [], "is a folder"),
        "unknown format": ((tmp_path / "data.xml"), [], "unknown format '.xml'"),
    }
    (tmp_path / "e.csv").write_text("")
    (tmp_path / "h.csv").write_text("text,label\n")
    dev = records(5, seed=9)
    dev[2]["label"] = "joy"
    write(tmp_path / "u_dev.csv", dev)
    (tmp_path / "x.jsonl").write_text('{"text": "a b", "label": 3}\n{"text": "c d", "label": "five"}\n')
    (tmp_path / "j.jsonl").write_text('{"text": "a", "label": "p"}\n{"text": "b", "label": "q"}\n{"text": "c",\n')
    (tmp_path / "n.csv").write_bytes(b"text,label\nfine film,pos\ncaf\xe9 film,neg\n")
    (tmp_path / "t.csv").write_text("text,label\na film,pos\n,neg\n")
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "data.xml").write_text("<x/>")
    return cases


@pytest.mark.parametrize("case", ["missing column", "empty file", "header only", "unseen label", "mixed label types",
                                  "malformed json line", "not utf-8", "empty text", "directory", "unknown format"])
def test_hostile_files_one_line_exit_2_nothing_written(case, world, tmp_path, capsys):
    path, extra, message = hostile(tmp_path)[case]
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    out = tmp_path / "out"
    code = run(world, out, "--train_file", str(path), "--do_train", "--do_eval", "--validation_split_percentage",
               "0" if "--validation_file" in extra else "50", *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_bad_combinations_and_offline_hub_are_one_line(world, tmp_path, capsys):
    train = write(tmp_path / "t.csv", records(20))
    cases = [
        (["--train_file", str(train), "--data_dir", str(tmp_path)], "--data_dir is for GLUE tasks"),
        (["--train_file", str(train), "--do_eval"], "no validation data for --do_eval"),
        (["--dataset_name", "someone/reviews"], "pass --train_file"),
        (["--validation_file", str(train)], "--do_train needs training data"),
    ]
    for args, message in cases:
        code = run(world, tmp_path / "out", *args, "--do_train")
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, (args, err)
        assert not (tmp_path / "out").exists()


def test_predict_refuses_bad_input_in_one_line(trained, tmp_path):
    out, _ = trained
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": \n')
    (tmp_path / "good.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    for args, message in [(["--input", str(tmp_path / "bad.jsonl")], "bad.jsonl:2: not valid JSON"),
                          (["--input", str(tmp_path)], "is not a file"),
                          (["--input", str(tmp_path / "good.jsonl"), "--text_columns", "body"], "no column 'body'")]:
        proc = predict("--model_dir", str(out), *args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    proc = predict("--model_dir", str(tmp_path))
    assert proc.returncode == 2 and "holds no config.json" in proc.stderr


def test_dataset_name_reads_splits_through_datasets(world, tmp_path):
    """--dataset_name takes what datasets.load_dataset takes: here a local folder of CSV splits
    (no network), whose validation split becomes the dev set."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    write(folder / "train.csv", records(300))
    write(folder / "validation.csv", records(60, seed=1))
    out = tmp_path / "out"
    assert run(world, out, "--dataset_name", str(folder), *TRAIN) == 0
    rows = rows_of(out)
    assert rows[0]["task"] == "reviews" and rows[0]["n"] == 60 and rows[0]["acc"] >= 0.8


def test_own_data_resumes_bitwise_from_a_checkpoint(world, tmp_path):
    from safetensors.torch import load_file

    train = write(tmp_path / "t.jsonl", records(200))
    common = ["--train_file", str(train), "--validation_split_percentage", "20", "--do_train", "--max_steps", "12",
              "--save_steps", "5", "--per_gpu_train_batch_size", "16", "--learning_rate", "3e-3", "--seed", "5",
              "--exit_pooling", "mean"]
    assert run(world, tmp_path / "full", *common) == 0
    assert run_glue.main(["--model_type", "bert", "--model_name_or_path", str(tmp_path / "full" / "checkpoint-5"),
                          "--output_dir", str(tmp_path / "part"), *common]) == 0
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_predict_answers_the_same_at_every_batch_size(trained):
    """The exit engine groups examples into calls by length and lets new ones take the places of
    those that exit, so a batch size changes which rows share a call, never an answer. (predict.py's
    Predictor in this process: the command line around it is tested above.)"""
    from pabee.deploy.prediction_input import read_input
    from pabee.deploy.predictor import Predictor
    from pabee.early_exit.exit_settings import ExitSettings

    out, test = trained
    layers = set()
    for patience in (1, 2):
        answers = {}
        for size in (1, 7, 64):
            predictor, got = Predictor.load(out, ExitSettings("patience", (patience,)), batch_size=size), []
            batches, _, total = read_input(str(test), size)
            predictor.run(batches, lambda batch, answered, got=got: got.extend(zip(batch, answered, strict=True)), total)
            answers[size] = got
        for size in (7, 64):
            assert [(text, label, layer) for text, (label, _, layer) in answers[size]] == \
                [(text, label, layer) for text, (label, _, layer) in answers[1]]
            assert max(abs(a[1][1] - b[1][1]) for a, b in zip(answers[size], answers[1], strict=True)) < 1e-5
        layers |= {layer for _, (_, _, layer) in answers[1]}
    assert len(layers) >= 2, "exits should vary, or the test proves little"


# --- labels a row does not give, and long texts -----------------------------------------------

def own(path, **settings):
    from pabee.data.data_settings import DataSettings
    from pabee.data.own_data import open_own

    splits = ("train", "dev") if "validation_file" in settings else ("train",)
    return open_own(DataSettings(train_file=str(path), **settings), splits, seed=1)


NUMBERS = "text,label\na great film,1\nan awful plot,0\n"  # then a third row whose label is missing


@pytest.mark.parametrize("name,content,where,why", [
    ("t.csv", NUMBERS + "a fine one,NaN\n", "t.csv:4", "('NaN' marks a missing value)"),
    ("t.csv", NUMBERS + "a fine one,\n", "t.csv:4", "(empty)"),
    ("t.csv", NUMBERS + "a fine one, nan \n", "t.csv:4", "(' nan ' marks a missing value)"),
    ("t.csv", NUMBERS + "a fine one,NA\n", "t.csv:4", "('NA' marks a missing value)"),
    ("t.csv", "text,label\na,0.5\nb,1.25\nc,-nan\n", "t.csv:4", "('-nan' marks a missing value)"),
    ("t.tsv", NUMBERS.replace(",", "\t") + "a fine one\tN/A\n", "t.tsv:4", "('N/A' marks a missing value)"),
    ("t.tsv", NUMBERS.replace(",", "\t") + "a fine one\tnull\n", "t.tsv:4", "('null' marks a missing value)"),
    ("t.tsv", NUMBERS.replace(",", "\t") + "a fine one\tNone\n", "t.tsv:4", "('None' marks a missing value)"),
    ("t.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n\n{"text": "c", "label": NaN}\n',
     "t.jsonl:4", "('NaN' marks a missing value)"),
    ("t.jsonl", '{"text": "a", "label": 1.5}\n{"text": "b", "label": null}\n', "t.jsonl:2", "(null)"),
    ("t.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b"}\n', "t.jsonl:2", "(the row has no such key)"),
    ("t.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": "nan"}\n', "t.jsonl:2",
     "('nan' marks a missing value)"),
    ("t.json", '[{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c", "label": "NULL"}]',
     "t.json (item 3)", "('NULL' marks a missing value)"),
])
def test_a_label_the_row_does_not_give_is_an_error_naming_the_row(name, content, where, why, tmp_path):
    from pabee.base.errors import DataError

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as error:
        own(path)
    assert str(error.value) == (f"{tmp_path / where}: no label in column 'label' {why}: give the row its label, or "
                                "pass --skip_unlabeled_rows to leave out rows without one")


def test_a_missing_label_in_the_validation_file_is_named_too(tmp_path):
    from pabee.base.errors import DataError

    train = write(tmp_path / "t.csv", records(20))
    (tmp_path / "d.csv").write_text("text,label\na great film,pos\nan awful plot,NA\n")
    with pytest.raises(DataError, match=r"d\.csv:3: no label in column 'label' \('NA' marks a missing value\)"):
        own(train, validation_file=str(tmp_path / "d.csv"))


def test_skip_unlabeled_rows_leaves_them_out_and_counts_them_per_file(tmp_path, caplog):
    rows = records(20)
    for i, missing in ((2, ""), (7, "NaN"), (11, " ")):
        rows[i]["label"] = missing
    train = write(tmp_path / "t.csv", rows)
    dev = records(6, seed=1)
    dev[4]["label"] = None
    dev = write(tmp_path / "d.jsonl", dev)
    data = own(train, validation_file=str(dev), skip_unlabeled_rows=True)
    assert data.splits["train"]["index"] == [str(i) for i in range(20) if i not in (2, 7, 11)]
    assert data.splits["dev"]["index"] == ["0", "1", "2", "3", "5"]
    assert data.task.labels == ("mid", "neg", "pos")
    said = [r.getMessage() for r in caplog.records if "--skip_unlabeled_rows" in r.getMessage()]
    assert said == [f"{train}: 3 of 20 rows give no label in column 'label' and are left out (--skip_unlabeled_rows), "
                    f"the first at {train}:4",
                    f"{dev}: 1 of 6 rows give no label in column 'label' and are left out (--skip_unlabeled_rows), "
                    f"the first at {dev}:5"]
    (tmp_path / "none.csv").write_text("text,label\na,\nb,NaN\n")
    from pabee.base.errors import DataError

    with pytest.raises(DataError, match="none.csv: no row gives a label in column 'label': check --label_column"):
        own(tmp_path / "none.csv", skip_unlabeled_rows=True)


def test_missing_value_words_among_names_are_class_names_and_said(tmp_path, caplog):
    """Relation data names its no-relation class "NA": among names it is a class, and one line says
    so; NaN, as written by str() of a float, is never a class."""
    path = tmp_path / "rel.csv"
    path.write_text("text,label\na b,born_in\nc d,NA\ne f,works_for\ng h,NA\n")
    data = own(path)
    assert data.task.labels == ("NA", "born_in", "works_for") and data.splits["train"]["label"] == [1, 0, 2, 0]
    assert "label 'NA' is read as a class name, as the other labels in column 'label' are names" in caplog.text
    path.write_text("text,label\na b,born_in\nc d,nan\ne f,works_for\n")
    from pabee.base.errors import DataError

    with pytest.raises(DataError, match=r"rel\.csv:3: no label in column 'label' \('nan' marks a missing value\)"):
        own(path)


def test_a_missing_label_ends_run_glue_in_one_line_or_is_skipped(world, tmp_path, capsys):
    rows = records(40)
    rows[5]["label"] = "NaN"
    train = write(tmp_path / "t.csv", rows)
    out = tmp_path / "out"
    code = run(world, out, "--train_file", str(train), "--validation_split_percentage", "25", "--do_train",
               "--do_eval", "--max_steps", "2")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [
        f"run_glue.py: error: {train}:7: no label in column 'label' ('NaN' marks a missing value): give the row its "
        "label, or pass --skip_unlabeled_rows to leave out rows without one"], err
    assert not out.exists()
    assert run(world, out, "--train_file", str(train), "--validation_split_percentage", "25", "--do_train",
               "--do_eval", "--max_steps", "2", "--skip_unlabeled_rows") == 0
    assert rows_of(out)[0]["n"] == 10  # a quarter of the 39 rows that give a label


LONG = 5_000_000  # characters in one text: far beyond the csv module's default field limit (131072)


def long_text():
    rng = random.Random(7)
    return " ".join(rng.choice(FILLER) for _ in range(LONG // 4))[:LONG - 6] + " great"


@pytest.mark.parametrize("name,options", [("t.csv", {}), ("t.tsv", {}), ("t.tsv", {"tsv_quoting": True}),
                                          ("t.jsonl", {}), ("t.json", {})])
def test_a_multi_megabyte_text_is_read_whole(name, options, tmp_path):
    from pabee.data.table_files import read_file

    text = long_text()
    path = write(tmp_path / name, [{"text": "a short one", "label": "neg"}, {"text": text, "label": "pos"}])
    table = read_file(path, **options)
    assert len(table) == 2 and len(table["text"][1]) == LONG and table["text"][1] == text
    assert table.where(1) == {".json": f"{path} (item 2)", ".jsonl": f"{path}:2"}.get(path.suffix, f"{path}:3")


def test_a_multi_megabyte_text_in_a_glue_file_is_read_whole(tmp_path):
    from pabee.data import glue

    text = long_text()
    (tmp_path / "train.tsv").write_text(f"sentence\tlabel\na short one\t0\n{text}\t1\n")
    examples = glue.read_split(glue.find_task("sst-2"), tmp_path / "train.tsv", "train")
    assert [len(t) for t in examples["text_a"]] == [11, LONG] and examples["label"] == [0, 1]


def test_a_run_trains_on_a_multi_megabyte_text(world, tmp_path):
    rows = records(40)
    rows[3]["text"] = long_text()
    train = write(tmp_path / "t.csv", rows)
    assert run(world, tmp_path / "out", "--train_file", str(train), "--validation_split_percentage", "25",
               "--do_train", "--do_eval", "--max_steps", "2") == 0


def test_predict_answers_a_multi_megabyte_line_of_standard_input(trained):
    out, _ = trained
    text = long_text()
    proc = predict("--model_dir", str(out), stdin=f"a great film\n{text}\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [len(a["text"]) for a in answers] == [12, LONG] and answers[1]["text"] == text


def test_a_line_separator_inside_a_text_does_not_split_its_row(tmp_path):
    """U+2028, U+0085 and a form feed end a line for str.splitlines, never for a CSV or JSONL file."""
    from pabee.data.table_files import read_file

    texts = ["one\u2028two", "three\x85four", "five\x0csix"]
    for name in ("t.csv", "t.tsv", "t.jsonl"):
        path = tmp_path / name
        if name == "t.jsonl":
            path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
        else:
            path.write_text("text\n" + "".join(f"{t}\n" for t in texts), encoding="utf-8")
        assert read_file(path)["text"] == texts, name
