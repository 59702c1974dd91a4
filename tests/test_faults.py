"""Data that must never change silently, and faults that must end in one line (exit 2), never a
traceback or a hang, with nothing deleted or overwritten: own files read as written, a training
set with one label, predict.py's input and output, the file system (a folder that cannot be
written, a disk that fills while saving, a link loop), two runs into one folder, damaged
checkpoints, and entry points that must answer at once offline."""

import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import reproduce_paper
import run_glue
from pabee.data.data_settings import DataSettings
from pabee.data.own_data import open_own
from pabee.data.table_files import read_file
from test_own_data import TRAIN, predict, records, rows_of, run, write

ROOT = Path(__file__).resolve().parents[1]
LOOKS_LIKE_DATA = ["007", "1e3", "3.10", "-0", "NA", "null", "None", "N/A", "nan", "TRUE"]


def one_line_error(code, err, *words, after_progress=False):
    """The error is one line, exit code 2, no traceback; with `after_progress` it ends what a run
    that had started (progress bars, log lines) printed."""
    lines = err.strip().splitlines()
    assert code == 2 and (after_progress or len(lines) == 1) and "Traceback" not in err, err
    assert [line for line in lines if ": error: " in line] == lines[-1:], err
    assert all(w in lines[-1] for w in words), lines[-1]
    return lines[-1]


def snapshot(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


# --- 1. own data read as written -----------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_texts_are_the_exact_strings_of_the_file(suffix, tmp_path):
    rows = [{"text": t, "label": "pos" if i % 2 else "neg"} for i, t in enumerate(LOOKS_LIKE_DATA)]
    rows.append({"text": 'a "stray quote in a text', "label": "pos"})
    path = write(tmp_path / f"t{suffix}", rows)
    if suffix == ".tsv":  # csv.writer quoted the stray quote; a TSV user writes it raw
        path.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows))
    data = open_own(DataSettings(train_file=str(path)), ("train",), seed=1)
    assert data.splits["train"]["text_a"] == [r["text"] for r in rows]


def test_a_stray_quote_in_a_tsv_text_does_not_swallow_rows(world, tmp_path):
    quoted = {3: '"{}', 9: '{} "', 20: 'he said "{}'}  # a quote opening a text, closing one, inside one
    dev = [{"text": quoted.get(i, "{}").format(r["text"]), "label": r["label"]} for i, r in enumerate(records(30, seed=1))]
    (tmp_path / "dev.tsv").write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in dev))
    train = write(tmp_path / "train.csv", records(100))
    assert run(world, tmp_path / "out", "--train_file", str(train), "--validation_file", str(tmp_path / "dev.tsv"),
               "--do_train", "--do_eval", "--max_steps", "2") == 0
    assert rows_of(tmp_path / "out")[0]["n"] == 30


def test_json_numbers_in_a_text_column_keep_their_literal_text_and_labels_their_type(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": 1e3, "label": 2}\n{"text": 3.10, "label": 10}\n{"text": "x", "label": 2}\n')
    data = open_own(DataSettings(train_file=str(path)), ("train",), seed=1)
    assert data.splits["train"]["text_a"] == ["1e3", "3.10", "x"]
    assert data.task.labels == ("2", "10")  # integers, sorted as numbers


def test_quoted_tsv_fields_are_read_when_asked(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text('text\tlabel\n"a\ttab and a\nline break"\tpos\n"plain"\tneg\n')
    literal = read_file(path)  # by default a quote is text and a line is a row: the second line has one field
    assert literal.rows[0]["text"] == '"a' and literal.where(1) == f"{path}:3"
    quoted = read_file(path, tsv_quoting=True)
    assert quoted["text"] == ["a\ttab and a\nline break", "plain"] and quoted.where(1) == f"{path}:4"


@pytest.mark.parametrize("content,words", [
    ("text,label\na film,pos\nanother, with a comma,neg\n", ["t.csv:3: 3 fields where the header has 2"]),
    ('text,label\n"an open quote,pos\nnext,neg\n', ["t.csv:2: not valid CSV"]),
    ("text,text,label\na,b,pos\n", ["t.csv:1: column 'text' appears twice"]),
])
def test_a_row_is_never_dropped_or_merged_without_an_error_naming_it(content, words, world, tmp_path, capsys):
    (tmp_path / "t.csv").write_text(content)
    code = run(world, tmp_path / "out", "--train_file", str(tmp_path / "t.csv"), "--do_train")
    one_line_error(code, capsys.readouterr().err, *words)
    assert not (tmp_path / "out").exists()


# --- 2. one label --------------------------------------------------------------------------------

def test_a_training_set_with_a_single_label_is_refused(world, tmp_path, capsys):
    train = write(tmp_path / "t.csv", [{"text": r["text"], "label": "pos"} for r in records(40)])
    code = run(world, tmp_path / "out", "--train_file", str(train), "--validation_split_percentage", "20",
               "--do_train", "--do_eval")
    one_line_error(code, capsys.readouterr().err, "every label in column 'label' is 'pos'", "two labels or more")
    assert not (tmp_path / "out").exists()


# --- 3. predict.py -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "model"
    folder = out.parent
    assert run(world, out, "--train_file", str(write(folder / "r.csv", records(200))), "--validation_file",
               str(write(folder / "d.csv", records(40, seed=1))), *TRAIN) == 0
    return out


def predict_bytes(model, data, *args):
    return subprocess.run([sys.executable, str(ROOT / "predict.py"), "--model_dir", str(model), *args], input=data,
                          capture_output=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("data,words", [
    (b"a great film\nan awful \xff plot\nfine\n", ["standard input line 2: byte 0xff is not UTF-8"]),
    (b"a great film\n\t\nfine\n", ["standard input line 2 holds no text"]),
    (b"a great film\nfine\t\n", ["standard input line 2 holds an empty side of its tab"]),
    (b"a\tb\tc\n", ["standard input line 1 holds more than one tab"]),
])
def test_every_input_line_gets_an_answer_or_an_error_naming_it(model, data, words):
    proc = predict_bytes(model, data, "--pause", "5")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert any(all(w in line for w in words) for line in err.splitlines()), err


def test_a_text_file_that_is_not_utf8_is_one_line(model, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"a great film\ncaf\xe9 noir\n")
    proc = predict("--model_dir", str(model), "--input", str(tmp_path / "in.txt"))
    one_line_error(proc.returncode, proc.stderr, "in.txt line 2: byte 0xe9 is not UTF-8")
    assert proc.stdout == ""


def test_output_into_a_missing_folder_or_onto_the_input_is_refused(model, tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("a great film\nan awful plot\n")
    before = inp.read_bytes()
    for output, words in [(tmp_path / "no" / "such" / "out.jsonl", ["its folder", "does not exist"]),
                          (inp, ["is the input file"]), (tmp_path, ["is a folder"])]:
        proc = predict("--model_dir", str(model), "--input", str(inp), "--output", str(output))
        one_line_error(proc.returncode, proc.stderr, *words)
    assert inp.read_bytes() == before and not (tmp_path / "no").exists()


def test_tsv_output_round_trips_texts_with_tabs_newlines_and_quotes(model, tmp_path):
    texts = ["a great\tfilm", "an awful\nplot", 'a "quoted" word', '"starts with a quote', "plain fine"]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out.tsv"
    proc = predict("--model_dir", str(model), "--input", str(inp), "--output", str(out), "--output_format", "tsv")
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="", encoding="utf-8") as f:
        read_back = list(csv.DictReader(f, delimiter="\t"))
    assert [r["text"] for r in read_back] == texts and all(r["label"] in {"neg", "pos", "mid"} for r in read_back)
    assert read_file(out, tsv_quoting=True)["text"] == texts


# --- 4. the file system --------------------------------------------------------------------------

def train_argv(world, out, *extra):
    return ["--model_type", "bert", "--model_name_or_path", str(world / "bert"), "--task_name", "SST-2", "--data_dir",
            str(world / "glue" / "SST-2"), "--output_dir", str(out), "--do_train", "--per_gpu_train_batch_size", "16",
            "--learning_rate", "3e-3", "--max_steps", "12", "--logging_steps", "5", "--save_steps", "5", "--seed", "5",
            *extra]


def test_an_output_dir_that_cannot_be_written_is_said_before_training(world, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    code = run_glue.main(train_argv(world, tmp_path / "a-file" / "out"))
    one_line_error(code, capsys.readouterr().err, "--output_dir", "cannot be written")
    if os.geteuid() != 0:  # root writes into read-only folders: only a user can see this refusal
        (tmp_path / "ro").mkdir(mode=0o555)
        code = run_glue.main(train_argv(world, tmp_path / "ro" / "out"))
        one_line_error(code, capsys.readouterr().err, "cannot be written", "Permission denied")


def test_a_disk_that_fills_while_saving_names_it_and_the_last_complete_checkpoint(world, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def full_disk_at_step_10(obj, path, *a, **k):  # torch's zip writer on a full disk
        if ".checkpoint-10.tmp" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk_at_step_10)
    out = tmp_path / "out"
    code = run_glue.main(train_argv(world, out))
    one_line_error(code, capsys.readouterr().err, "cannot write checkpoint-10", "MiB free",
                   f"the last complete checkpoint is {out / 'checkpoint-5'}", "--model_name_or_path", after_progress=True)
    assert [p.name for p in out.iterdir() if "checkpoint" in p.name] == ["checkpoint-5"]


def test_a_file_size_limit_while_saving_is_one_line(world, tmp_path):
    """A real refusal of the operating system: files may not grow past 150 KB, so the first
    checkpoint's optimizer state (twice the tiny model's weights) cannot be written."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))

    proc = subprocess.run([sys.executable, str(ROOT / "run_glue.py"), *train_argv(world, tmp_path / "out")],
                          capture_output=True, text=True, preexec_fn=limit, timeout=300)
    error = one_line_error(proc.returncode, proc.stderr, "no checkpoint is complete yet", after_progress=True)
    assert error.startswith("run_glue.py: error: cannot write checkpoint-5")
    assert not list((tmp_path / "out").glob("*checkpoint*"))


def test_a_link_loop_is_called_what_it_is(world, tmp_path, capsys):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "gone.csv")
    for path, words in [(loop, "is a symbolic link loop"),
                        (tmp_path / "dangling.csv", f"is a symbolic link to {tmp_path / 'gone.csv'}, which does not exist")]:
        code = run(world, tmp_path / "out", "--train_file", str(path), "--do_train")
        one_line_error(code, capsys.readouterr().err, f"--train_file {path} {words}")


# --- 5. two runs into one folder ------------------------------------------------------------------

def test_a_second_run_into_the_same_folder_refuses_at_once(world, tmp_path):
    """The first run holds the folder; the second, started while the first trains, refuses in one
    line; the first, stopped afterwards by Ctrl-C, leaves a complete checkpoint and no partial one."""
    out = tmp_path / "out"
    argv = [sys.executable, str(ROOT / "run_glue.py"),
            *train_argv(world, out, "--max_steps", "100000", "--save_steps", "100000", "--logging_steps", "20")]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.stdout.readline().startswith("{"), "the first run trains"
    second = subprocess.run(argv + ["--overwrite_output_dir"], capture_output=True, text=True, timeout=120)
    one_line_error(second.returncode, second.stderr, "another run (pid", f"is writing into {out}")
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGINT
    (checkpoint,) = out.glob("checkpoint-*")
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= {p.name for p in checkpoint.iterdir()}
    assert not list(out.glob(".checkpoint*"))


def test_the_lock_of_a_killed_run_does_not_block_the_next(world, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, str(ROOT / "run_glue.py"), *train_argv(world, out, "--max_steps", "40")]
    killed = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in killed.stdout:
        if line.startswith("{"):
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert run_glue.main(train_argv(world, out, "--overwrite_output_dir")) == 0


# --- 6. damaged checkpoints ----------------------------------------------------------------------

@pytest.mark.parametrize("damage,words", [
    (lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:1000]), "optimizer.pt is damaged"),
    (lambda c: (c / "trainer_state.json").write_text("{ not json"), "trainer_state.json is damaged"),
    (lambda c: (c / "rng_state_0.safetensors").unlink(), "rng_state_0.safetensors does not exist"),
    (lambda c: (c / "scheduler.pt").write_bytes(b""), "scheduler.pt is damaged"),
])
def test_a_damaged_checkpoint_names_the_file_and_the_previous_complete_one(damage, words, world, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_glue.main(train_argv(world, out)) == 0
    damage(out / "checkpoint-10")
    before = snapshot(out)
    capsys.readouterr()
    code = run_glue.main(train_argv(world, tmp_path / "again", "--model_name_or_path", str(out / "checkpoint-10")))
    one_line_error(code, capsys.readouterr().err, f"{out / 'checkpoint-10'}/{words}",
                   f"resume from the previous complete checkpoint with --model_name_or_path {out / 'checkpoint-5'}")
    assert snapshot(out) == before and not (tmp_path / "again").exists()


# --- 7. offline answers everywhere ---------------------------------------------------------------

def test_reproduce_dry_run_offline_answers_at_once_and_names_the_variable(world, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "GLUE_DIR": str(world / "glue"),
           "OUTPUT_DIR": str(tmp_path / "out"), "PYTHON": sys.executable}
    env.pop("MODEL_NAME_OR_PATH", None)
    start = time.perf_counter()
    proc = subprocess.run(["bash", str(ROOT / "reproduce_paper.sh"), "bert", "SST-2", "--dry_run"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert time.perf_counter() - start < 20
    one_line_error(proc.returncode, proc.stderr, "--model_name_or_path bert-base-uncased must come from the hub",
                   "set MODEL_NAME_OR_PATH")
    assert not (tmp_path / "out").exists()


def test_reproduce_checks_before_reading_a_model_it_cannot_get(world, tmp_path, capsys):
    code = reproduce_paper.main(["bert", "SST-2", "--glue_dir", str(world / "glue"), "--model_name_or_path",
                                 str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out"), "--dry_run"])
    one_line_error(code, capsys.readouterr().err, "is not a model folder (does not exist)")
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


# --- files that run_glue and predict.py read back, and writes the disk refuses -----------------

def eval_argv(world, model, out, *extra):
    return ["--model_type", "bert", "--model_name_or_path", str(model), "--task_name", "SST-2", "--data_dir",
            str(world / "glue" / "SST-2"), "--output_dir", str(out), "--do_eval", *extra]


def test_a_full_disk_while_writing_results_keeps_the_earlier_results_whole(world, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert run_glue.main(eval_argv(world, world / "bert", out, "--patience", "0")) == 0
    before = snapshot(out)
    real = Path.write_text

    def full_disk(self, *a, **k):
        if out in self.parents:
            raise OSError(28, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full_disk)
    capsys.readouterr()
    code = run_glue.main(eval_argv(world, world / "bert", out, "--patience", "1,2"))
    one_line_error(code, capsys.readouterr().err, "No space left on device", str(out), after_progress=True)
    assert snapshot(out) == before


def test_results_or_a_model_config_that_are_not_json_are_one_line(world, model, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_glue.main(eval_argv(world, world / "bert", out)) == 0
    (out / "eval_results.json").write_text("[{ broken")
    capsys.readouterr()
    code = run_glue.main(eval_argv(world, world / "bert", out))
    one_line_error(code, capsys.readouterr().err, f"{out / 'eval_results.json'} is not valid JSON", after_progress=True)
    broken = tmp_path / "broken-model"
    shutil.copytree(model, broken)
    (broken / "config.json").write_text("{ not json")
    proc = predict("--model_dir", str(broken), "--patience", "1", stdin="a great film\n")
    one_line_error(proc.returncode, proc.stderr, "config.json is not valid JSON")
    shutil.copy(model / "config.json", broken / "config.json")
    (broken / "tokenizer.json").write_text("{ not json")
    proc = predict("--model_dir", str(broken), "--patience", "1", stdin="a great film\n")
    one_line_error(proc.returncode, proc.stderr, "cannot load a tokenizer from")


def test_ctrl_c_outside_training_is_one_line(world, model, tmp_path, monkeypatch, capsys):
    """Ctrl-C while predict.py waits for input, or while run_glue evaluates: one line, exit 130.
    Three times: a reader blocked inside sys.stdin aborted the shutdown about half the time."""
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(ROOT / "predict.py"), "--model_dir", str(model), "--patience", "1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write("a great film\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["label"]  # answered; now waiting for more input
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == "predict.py: stopped by SIGINT"
    import pabee.scoring.evaluation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pabee.scoring.evaluation, "run_inference", interrupted)
    capsys.readouterr()
    assert run_glue.main(eval_argv(world, world / "bert", tmp_path / "out")) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("run_glue.py: stopped by SIGINT")


def test_a_ctrl_c_that_reaches_another_thread_still_stops_the_waiting_input():
    """The kernel may hand a process's SIGINT to any of its threads (torch has several); the main
    thread waiting for input must still raise KeyboardInterrupt at once, not at the next line."""
    import threading
    import time

    from pabee.deploy.prediction_input import batches_as_they_come

    release = threading.Event()

    def source():
        release.wait(20)
        yield "late", None

    # Python raises KeyboardInterrupt only where SIGINT was not ignored when it started, and a shell
    # starts its background jobs ignoring it (`pytest &`): this test sets the handler predict.py sets.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    helper = threading.Thread(target=release.wait, args=(20,), daemon=True)  # a thread that takes SIGINT
    helper.start()
    threading.Timer(0.5, signal.pthread_kill, (helper.ident, signal.SIGINT)).start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(batches_as_they_come(source(), 4, pause=0.2))
        assert time.monotonic() - start < 5
    finally:
        release.set()
        signal.signal(signal.SIGINT, previous)
