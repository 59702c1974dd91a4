"""predict.py's output: checked before anything is read (never the input, never a file of the model),
written as JSON lines or TSV, in input order."""

import csv
import json
import sys
from pathlib import Path

from pabee.base.errors import UsageError
from pabee.base.file_io import describe_missing


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
        for (a, b), (label, probability, layer) in zip(batch, answers, strict=True):
            texts = [a, b][:len(names)]
            if self.tsv:
                self.tsv.writerow([t or "" for t in texts] + ([f"{label:.6g}"] if self.regression else
                                                             [label, f"{probability:.6f}"]) + [layer])
            else:
                answer = answer_fields(label, probability, self.regression)
                shown = {name: text for name, text in zip(names, texts, strict=True) if text is not None}
                self.out.write(json.dumps({**shown, **answer, "exit_layer": layer}, ensure_ascii=False) + "\n")
        self.out.flush()


def answer_fields(label, probability, regression):
    """What an answer says, as predict.py's JSON lines and the server write it (the exit layer aside)."""
    return {"value": label} if regression else {"label": label, "probability": probability}


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
