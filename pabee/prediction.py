"""A fine-tuned model answering new text (predict.py): the model, its tokenizer and an exit rule
(`Predictor`); the exit setting used when none is asked for (`chosen_exit`); the input (plain
text, tables or a stream) and the output (JSON lines or TSV, in input order)."""

import collections
import csv
import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from pabee.backbones import backbone_of_folder, load_config, load_model, load_tokenizer, usable_length
from pabee.errors import DataError, UsageError, first_line
from pabee.settings import ExitSettings
from pabee.files import describe_missing, read_json
from pabee.results import fastest_within, run_rows
from pabee.tables import read_texts

PLAIN = (".txt", "")  # one example per line
TOLERANCE = 0.01  # the chosen exit keeps the main metric within this of full depth
ONE_CLASS_INPUT, ONE_CLASS_SHARE = 100, 0.99  # as large an input, and as large a share, as make one class suspect
WAKE = 0.05  # seconds the input waiter sleeps at most between looks at the queue and at signals


class Predictor:
    """A loaded model, its tokenizer and the exit rule, answering a stream of texts through the exit
    engine (`shapes`: its call shapes, engine.Shapes)."""

    def __init__(self, model, tokenizer, rule, max_seq_length, device, shapes, step):
        self.model, self.tokenizer, self.rule = model, tokenizer, rule
        self.max_seq_length, self.device, self.shapes, self.step = max_seq_length, device, shapes, step

    @classmethod
    def load(cls, folder, exits, max_seq_length=None, no_cuda=False, batch_size=32, buckets=("auto", "auto"),
             step="auto", runtime="torch", quantize="none"):
        """The model run_glue wrote in `folder`, exiting by `exits` (exit_rules.ExitSettings, one
        setting), at the training run's --max_seq_length unless told (clamped as run_glue does);
        the engine's calls take at most `batch_size` rows, in `buckets` (engine.Shapes.of), with
        its step compiled or not (options.ENGINE_STEPS), its layers on torch or ONNX Runtime
        (options.RUNTIMES, QUANTIZE; ONNX Runtime runs on the CPU)."""
        import torch

        from pabee.compiled import compiled_step, compiles
        from pabee.engine import Shapes, layer_step

        backbone = backbone_of_folder(folder)
        config = load_config(backbone, str(folder))
        on_ort = runtime == "onnxruntime"
        device = "cuda" if torch.cuda.is_available() and not no_cuda and not on_ort else "cpu"
        model = load_model(backbone, str(folder), None, device)[0].eval()
        exits.check_task(config.num_labels == 1, "this model's task")
        exits.check_learned_exit(getattr(config, "exit_training", "pabee"))
        tokenizer = load_tokenizer(backbone, str(folder))
        length = usable_length(max_seq_length or trained_length(Path(folder)), [config], tokenizer)[0]
        rule = exits.rule(exits.settings[0])
        if on_ort:
            from pabee.onnx_engine import ort_model

            model = ort_model(model, folder, quantize)
            return cls(model, tokenizer, rule, length, device, Shapes.of(batch_size, length, *buckets), model.engine_step)
        compiled = compiles(step, device)
        shapes = Shapes.of(batch_size, length, *buckets, fixed=compiled or device == "cuda")
        return cls(model, tokenizer, rule, length, device, shapes,
                   compiled_step(config.num_hidden_layers, shapes, device) if compiled else layer_step)

    def tokenized(self, batch):
        """The model's input for each (text_a, text_b) of `batch` (pairs and singles may mix)."""
        return [dict(self.tokenizer(a, b, truncation=True, max_length=self.max_seq_length, return_token_type_ids=True))
                for a, b in batch]

    def answers(self, answered):
        """(label or value, probability or None, exit layer) of each example of an engine.Answered."""
        layers = answered.exit_layers.tolist()
        if self.model.config.num_labels == 1:
            return [(float(v), None, k) for v, k in zip(answered.logits[:, 0].tolist(), layers)]
        probs = answered.logits.softmax(-1)
        best = probs.argmax(-1).tolist()
        names = self.model.config.id2label
        return [(names[c], float(probs[i, c]), k) for i, (c, k) in enumerate(zip(best, layers))]

    def run(self, batches, write, total):
        """Answers the examples as they come (a short batch, after a pause in the input, is answered
        before more is read) and writes each answer as soon as those before it are written; returns
        a Summary."""
        import torch
        from tqdm import tqdm

        from pabee.engine import stream

        texts = collections.deque()

        def chunks():
            for batch in batches:
                texts.extend(batch)
                yield self.tokenized(batch)

        bar = tqdm(total=total, unit="ex", disable=total is None, file=sys.stderr)
        n, exits, classes, start = 0, 0, collections.Counter(), time.perf_counter()
        with torch.inference_mode():
            for answered in stream(self.model, self.rule, chunks(), self.shapes, self.tokenizer.pad_token_id,
                                   self.step):
                answers = self.answers(answered)
                write([texts.popleft() for _ in answers], answers)
                n, exits = n + len(answers), exits + sum(a[2] for a in answers)
                classes.update(a[0] for a in answers if a[1] is not None)
                bar.update(len(answers))
        bar.close()
        return Summary(n, time.perf_counter() - start, exits / max(n, 1), self.model.config.num_hidden_layers, classes)


class Summary(NamedTuple):
    """What a Predictor.run answered: how many examples, in how many seconds, their mean exit layer
    of how many, and how many got each class (empty for regression)."""

    examples: int
    seconds: float
    mean_exit: float
    layers: int
    classes: collections.Counter

    def one_class(self):
        """A line saying that nearly every answer of a large input is one class (what a model that
        ignores its input, or an exit whose heads do, answers), else None."""
        if self.examples < ONE_CLASS_INPUT or not self.classes:
            return None
        label, count = self.classes.most_common(1)[0]
        if count < ONE_CLASS_SHARE * self.examples:
            return None
        return (f"{count} of the {self.examples} answers ({count / self.examples:.1%}) are {label}: at this exit the "
                f"model may ignore its input; compare full depth (--patience 0) on labelled data")


def trained_length(folder):
    """The --max_seq_length of the run that wrote `folder` (or its parent, for a checkpoint), else 128."""
    for saved in (folder / "training_args.json", folder.parent / "training_args.json"):
        if saved.is_file():
            record = read_json(saved)
            return record.get("data", record).get("max_seq_length", 128)
    return 128


def chosen_exit(folder):
    """(exit settings, why) when none is asked for: the fastest setting run_glue evaluated whose
    main metric stays within TOLERANCE of full depth and whose answers do not ignore the input, on
    the rows run_glue --choose_exit_on gave (calibration_results.json), else on dev (whose figures
    then flatter it: the why says so). Full depth when only settings whose answers ignore the input
    were left, or full depth's own answers do; otherwise without a qualifying setting, the config's
    patience (0, full depth, unless set_patience said)."""
    rows, on = run_rows(Path(folder))
    full = max((r for r in rows if r.criterion == "layer"), key=lambda r: r.setting, default=None)
    if full is not None and full.ignores_input:
        return FULL_DEPTH, f"full depth: on {on} its answers ignore the input even there ({full.ignores_input})"
    settings = [r for r in rows if r.criterion != "layer"]
    candidates = [r for r in settings if not r.ignores_input]
    best = full and fastest_within([(r, r.metrics[r.main], r.speed_up) for r in candidates], full.metrics[full.main],
                                   TOLERANCE)
    skipped = [f"{r.criterion} {r.setting}" for r in settings if r.ignores_input]
    skipping = f"; skipped {', '.join(skipped)}: their answers ignore the input" if skipped else ""
    if best is None and skipped:
        return FULL_DEPTH, f"full depth: no other setting evaluated on {on} qualifies{skipping}"
    if best is None:
        config = read_json(Path(folder) / "config.json")
        patience, threshold = config.get("patience", 0), config.get("regression_threshold", 0.0)
        why = (f"{folder} holds no dev results to choose from (run_glue.py --do_eval writes them), so the config's "
               f"patience {patience}{' (full depth)' if patience == 0 else ''}")
        return ExitSettings("patience", (patience,), threshold), why
    threshold = best.regression_threshold if best.regression_threshold is not None else 0.0
    why = (f"chosen on {on}: the fastest setting evaluated within {TOLERANCE * 100:g} point of full depth ({best.task} "
           f"{best.main} {best.metrics[best.main]:.4f} against {full.metrics[full.main]:.4f}, {best.speed_up:.2f}x "
           f"fewer layers){skipping}{DEV_CHOICE if on == 'dev' else ''}")
    return ExitSettings(best.criterion, (best.setting,), threshold), why


FULL_DEPTH = ExitSettings("patience", (0,), 0.0)
DEV_CHOICE = ("; dev figures at this setting are optimistic, chosen on the same rows: run_glue.py --choose_exit_on "
              "train:10 or a file keeps dev clean")


# --- input ------------------------------------------------------------------------------------

def read_input(path, batch_size, text_columns=None, pause=0.2, tsv_quoting=False):
    """(batches, column names, number of examples or None when streaming) of `path` (- for
    standard input, answered batch by batch as lines arrive)."""
    if path == "-":
        return batches_as_they_come(plain_examples(raw_lines(sys.stdin.fileno()), "standard input"), batch_size,
                                    pause), \
            ("text", None), None
    if Path(path).suffix.lower() in PLAIN:
        with open(path, "rb") as f:
            examples = list(plain_examples(f, path))
        return in_batches(examples, batch_size), ("text", None), len(examples)
    examples, columns = read_texts(path, text_columns, tsv_quoting)
    return in_batches(examples, batch_size), columns, len(examples)


def plain_examples(stream, name):
    """(text_a, text_b or None) of each line of a byte stream: one example per line, a tab between
    the two texts of a pair. A line that is not UTF-8, holds no text, or more than one tab, stops
    the input with an error naming it: every line gets an answer or an error."""
    for number, raw in enumerate(stream, start=1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        line = line[:-1] if line.endswith(b"\r") else line
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{name} line {number}: byte {line[e.start]:#04x} is not UTF-8: give UTF-8 text") from None
        a, tab, b = (text.lstrip("\ufeff") if number == 1 else text).partition("\t")
        if "\t" in b or not a.strip() or (tab and not b.strip()):
            what = "more than one tab" if "\t" in b else "no text" if not a.strip() and not b.strip() else \
                "an empty side of its tab"
            raise DataError(f"{name} line {number} holds {what}: give one example per line, a tab between the two "
                            "texts of a pair")
        yield a, (b if tab else None)


def raw_lines(fd):
    """The lines of a file descriptor, read with os.read: the reader thread blocks holding no lock
    of Python's, so the interpreter can still shut down cleanly (a thread blocked inside
    sys.stdin.buffer holds its lock, and shutdown then aborts the process)."""
    pieces = []  # of the line not yet ended; only each new chunk is searched for line ends
    while chunk := os.read(fd, 1 << 16):
        *lines, rest = chunk.split(b"\n")
        if lines:
            lines[0] = b"".join(pieces) + lines[0]
            pieces = []
            yield from (line + b"\n" for line in lines)
        pieces.append(rest)
    if tail := b"".join(pieces):
        yield tail


def in_batches(examples, size):
    for i in range(0, len(examples), size):
        yield examples[i:i + size]


def batches_as_they_come(examples, size, pause):
    """Batches of at most `size`; a partial batch goes out when no example came for `pause`
    seconds, so a slow producer gets its answers without waiting for a full batch. An error in the
    input (or anything that stops the reader) ends the batches with that error."""
    arrived = queue.Queue()

    def read():
        # Ctrl-C is for the main thread: delivered here, it would only restart os.read.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for example in examples:
                arrived.put(example)
            arrived.put(None)
        except BaseException as e:  # the reader must never die silently: the consumer would wait forever
            arrived.put(e)

    threading.Thread(target=read, daemon=True).start()
    batch, last = [], time.monotonic()
    while True:
        try:  # never an endless wait: Python runs a Ctrl-C's handler only when this thread wakes
            item = arrived.get(timeout=WAKE)
        except queue.Empty:
            if batch and time.monotonic() - last >= pause:
                yield batch
                batch = []
            continue
        last = time.monotonic()
        if isinstance(item, BaseException):
            raise item if isinstance(item, UsageError) else UsageError(f"cannot read the input ({first_line(item)})")
        if item is None:
            if batch:
                yield batch
            return
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []


def check_output(output, input_path, model_dir):
    """--output must be a file in an existing folder, and neither the input nor a file of the model:
    said before anything is read or written."""
    if output == "-":
        return
    path = Path(output)
    if path.is_dir():
        raise UsageError(f"--output {path} is a folder: give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"--output {path}: its folder {path.parent} {describe_missing(path.parent)}: create it first")
    target = path.resolve()
    if input_path != "-" and target == Path(input_path).resolve():
        raise UsageError(f"--output {path} is the input file: give another file, the input would be overwritten")
    if target.parent == Path(model_dir).resolve() and target.exists():
        raise UsageError(f"--output {path} is a file of the model in {model_dir}: give another file")


# --- output -----------------------------------------------------------------------------------

class Writer:
    """Writes answers in input order, one line per example, flushed after every batch. TSV fields
    holding a tab, a line break or a quote are quoted as CSV quotes them (what csv readers and
    pandas' read_csv(sep="\\t") expect), so that rows always match examples."""

    def __init__(self, out, output_format, columns, regression):
        self.out, self.format, self.columns, self.regression = out, output_format, columns, regression
        self.pair = None  # whether the answers show a second text: decided by the first batch
        self.tsv = csv.writer(out, delimiter="\t", lineterminator="\n") if output_format == "tsv" else None

    def __call__(self, batch, answers):
        started = self.pair is not None
        if not started:
            self.pair = self.columns[1] is not None or any(b is not None for _, b in batch)
        names = [self.columns[0], self.columns[1] or "text_b"][:2 if self.pair else 1]
        score = "value" if self.regression else "probability"
        if self.tsv and not started:
            self.tsv.writerow(names + ([] if self.regression else ["label"]) + [score, "exit_layer"])
        for (a, b), (label, probability, layer) in zip(batch, answers):
            texts = [a, b][:len(names)]
            if self.tsv:
                self.tsv.writerow([t or "" for t in texts] + ([f"{label:.6g}"] if self.regression else
                                                             [label, f"{probability:.6f}"]) + [layer])
            else:
                answer = {"value": label} if self.regression else {"label": label, "probability": probability}
                shown = {name: text for name, text in zip(names, texts) if text is not None}
                self.out.write(json.dumps({**shown, **answer, "exit_layer": layer}, ensure_ascii=False) + "\n")
        self.out.flush()


class open_output:
    """Standard output for -, else the file (written only once the model and input are ready)."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.file = sys.stdout if self.path == "-" else open(self.path, "w", encoding="utf-8")
        return self.file

    def __exit__(self, *exc):
        if self.file is not sys.stdout:
            self.file.close()
