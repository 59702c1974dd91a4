"""The GLUE task table: where each task's TSV columns are, its labels, metrics and the
submission file it produces. Reading keeps the original processors' quirks (see read_split)."""

import csv
import logging
import math
from dataclasses import dataclass

from pabee.base.errors import DataError
from pabee.base.file_io import allow_long_csv_fields

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    name: str
    folder: str
    labels: tuple | None  # None: regression (one output, MSE)
    text_columns: tuple  # train/dev columns of text_a and text_b (None: single sentence)
    label_column: int
    test_text_columns: tuple
    dev_file: str = "dev.tsv"
    test_file: str = "test.tsv"
    submission: str = ""
    train_has_header: bool = True
    skip_short_rows: bool = False  # QQP: the original dropped malformed rows silently
    hub_config: str = ""
    hub_columns: tuple = ()
    hub_dev_split: str = "validation"
    hub_test_split: str = "test"
    metric: str = "acc"  # the main metric, for tables and plots
    scores: str = "glue"  # which metrics: the GLUE task's own, or "classification" / "regression" (own data)

    @property
    def is_regression(self):
        return self.labels is None

    @property
    def num_labels(self):
        return 1 if self.is_regression else len(self.labels)

    def file_for(self, split):
        return {"train": "train.tsv", "dev": self.dev_file, "test": self.test_file}[split]


PAIR = ("entailment", "not_entailment")
MNLI = ("contradiction", "entailment", "neutral")
TASKS = {
    t.name: t
    for t in [
        Task("cola", "CoLA", ("0", "1"), (3, None), 1, (1, None), submission="CoLA.tsv", train_has_header=False,
             hub_config="cola", hub_columns=("sentence", None), metric="mcc"),
        Task("sst-2", "SST-2", ("0", "1"), (0, None), 1, (1, None), submission="SST-2.tsv",
             hub_config="sst2", hub_columns=("sentence", None)),
        Task("mrpc", "MRPC", ("0", "1"), (3, 4), 0, (3, 4), submission="MRPC.tsv",
             hub_config="mrpc", hub_columns=("sentence1", "sentence2"), metric="f1"),
        Task("sts-b", "STS-B", None, (7, 8), -1, (7, 8), submission="STS-B.tsv",
             hub_config="stsb", hub_columns=("sentence1", "sentence2"), metric="pearson"),
        Task("qqp", "QQP", ("0", "1"), (3, 4), 5, (1, 2), submission="QQP.tsv", skip_short_rows=True,
             hub_config="qqp", hub_columns=("question1", "question2"), metric="f1"),
        Task("mnli", "MNLI", MNLI, (8, 9), -1, (8, 9), dev_file="dev_matched.tsv", test_file="test_matched.tsv",
             submission="MNLI-m.tsv", hub_config="mnli", hub_columns=("premise", "hypothesis"),
             hub_dev_split="validation_matched", hub_test_split="test_matched"),
        Task("mnli-mm", "MNLI", MNLI, (8, 9), -1, (8, 9), dev_file="dev_mismatched.tsv",
             test_file="test_mismatched.tsv", submission="MNLI-mm.tsv", hub_config="mnli",
             hub_columns=("premise", "hypothesis"), hub_dev_split="validation_mismatched",
             hub_test_split="test_mismatched"),
        Task("qnli", "QNLI", PAIR, (1, 2), -1, (1, 2), submission="QNLI.tsv",
             hub_config="qnli", hub_columns=("question", "sentence")),
        Task("rte", "RTE", PAIR, (1, 2), -1, (1, 2), submission="RTE.tsv",
             hub_config="rte", hub_columns=("sentence1", "sentence2")),
        Task("wnli", "WNLI", ("0", "1"), (1, 2), -1, (1, 2), submission="WNLI.tsv",
             hub_config="wnli", hub_columns=("sentence1", "sentence2")),
    ]
}
# MNLI is evaluated on both dev sets, mismatched reported as "mnli-mm" (as the original).
EVAL_TASKS = {"mnli": ("mnli", "mnli-mm")}


def find_task(name):
    """Accepts GLUE folder names and spellings: SST-2, sst-2, sst2, STS-B, stsb, MNLI..."""
    key = name.lower().replace("_", "-")
    for task in TASKS.values():
        if key in (task.name, task.name.replace("-", ""), task.folder.lower()):
            return task
    known = ", ".join(t.folder if t.name != "mnli-mm" else "mnli-mm" for t in TASKS.values())
    raise DataError(f"unknown task '{name}': choose one of {known}")


def read_split(task, path, split):
    """Examples of one TSV split as dict of lists: text_a, text_b, label, index.

    As the original processors: tab-separated, quote characters literal, a byte-order mark
    ignored, a header line skipped except in CoLA's train and dev files, and QQP rows that
    lack columns skipped. Anything else malformed is an error naming file and line."""
    allow_long_csv_fields()
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except FileNotFoundError:
        raise DataError(f"missing data file {path}: put the task's {split} file there or fix --data_dir") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not valid UTF-8 (byte {e.start}): re-save it as UTF-8") from None
    test = split == "test"
    has_header = test or task.train_has_header
    a_col, b_col = task.test_text_columns if test else task.text_columns
    label_col = None if test else task.label_column
    # A label counted from the end (-1) must be a column of its own, after the texts.
    needed = max(c + 1 for c in (a_col, b_col, label_col) if c is not None and c >= 0)
    needed += 1 if label_col is not None and label_col < 0 else 0
    examples = {"text_a": [], "text_b": [], "label": [], "index": []}
    skipped = []
    for line_number, row in enumerate(rows, start=1):
        if line_number == 1 and has_header:
            continue
        if len(row) < needed:
            if task.skip_short_rows:
                skipped.append(line_number)
                continue
            raise DataError(
                f"{path}:{line_number}: {len(row)} tab-separated columns, {task.folder} needs at least "
                f"{needed}: fix or remove the row"
            )
        examples["text_a"].append(row[a_col])
        examples["text_b"].append(row[b_col] if b_col is not None else None)
        examples["label"].append(None if test else parse_label(task, row[task.label_column], path, line_number))
        examples["index"].append(row[0] if test else str(len(examples["index"])))
    if not examples["text_a"]:
        raise DataError(f"{path} holds no examples: it is empty or has only a header")
    if skipped:
        logger.warning("%s: %d rows with fewer than %d columns skipped, as the original %s processor did (lines %s)",
                       path, len(skipped), needed, task.folder, ", ".join(map(str, skipped[:10])) +
                       (" ..." if len(skipped) > 10 else ""))
    return examples


def parse_label(task, value, path, line_number):
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            raise DataError(f"{path}:{line_number}: score '{value}' is not a number") from None
        if not math.isfinite(score):  # float() reads NaN and inf: no score, never trained on
            raise DataError(f"{path}:{line_number}: score '{value}' is not a finite number: give the row its score")
        return score
    if value not in task.labels:
        raise DataError(f"{path}:{line_number}: label '{value}' is not one of {', '.join(task.labels)} for {task.folder}")
    return task.labels.index(value)


def compute_metrics(task, predictions, labels):
    """predictions: class indices, or scores for regression."""
    import numpy as np  # the scientific stack loads when metrics are computed, not with the task table
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task.scores == "regression":
        pearson, spearman = float(pearsonr(predictions, labels)[0]), float(spearmanr(predictions, labels)[0])
        return {"pearson": pearson, "spearmanr": spearman, "mse": float(((predictions - labels) ** 2).mean())}
    if task.scores == "classification":
        every = list(range(task.num_labels))
        scores = {"acc": float((predictions == labels).mean()),
                  "macro_f1": float(f1_score(labels, predictions, labels=every, average="macro", zero_division=0))}
        if task.num_labels == 2:  # the second of the sorted label names is the positive class
            scores["f1"] = float(f1_score(labels, predictions, zero_division=0))
            scores["mcc"] = float(matthews_corrcoef(labels, predictions))
        per_label = f1_score(labels, predictions, labels=every, average=None, zero_division=0)
        return {**scores, **{f"f1[{name}]": float(v) for name, v in zip(task.labels, per_label, strict=True)}}
    if task.name == "cola":
        return {"mcc": float(matthews_corrcoef(labels, predictions))}
    if task.name == "sts-b":
        pearson, spearman = float(pearsonr(predictions, labels)[0]), float(spearmanr(predictions, labels)[0])
        return {"pearson": pearson, "spearmanr": spearman, "corr": (pearson + spearman) / 2}
    acc = float((predictions == labels).mean())
    if task.name in ("mrpc", "qqp"):
        f1 = float(f1_score(labels, predictions))
        return {"acc": acc, "f1": f1, "acc_and_f1": (acc + f1) / 2}
    return {"acc": acc}


def submission_value(task, prediction):
    """What GLUE's server expects in the prediction column."""
    if task.is_regression:
        return f"{float(prediction):.3f}"
    return task.labels[int(prediction)]
