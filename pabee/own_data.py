"""Labelled data beyond GLUE: own files or a hub dataset (read by pabee.tables), their label names
(kept in the model's config), regression or classification, the seeded validation split, and the
task all that makes: `open_own` gives a source of examples (see pabee.sources).

Every problem with the data is a DataError whose one line names the file, the line and the fix.
"""

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from pabee.errors import DataError
from pabee.glue import Task
from pabee.tables import (
    check_columns,
    check_file,
    choose_columns,
    choose_texts,
    read_file,
    read_hub,
    texts_of,
    where,
)

logger = logging.getLogger(__name__)

METRICS = {"classification": ("acc", "macro_f1", "f1", "mcc"), "regression": ("pearson", "spearmanr", "mse")}
FLAGS = {"train": "--train_file", "dev": "--validation_file", "test": "--test_file"}
MISSING = {"train": "--do_train needs training data: pass --train_file",
           "dev": "no validation data for --do_eval: pass --validation_file or --validation_split_percentage",
           "test": "no test data for --do_predict: pass --test_file"}


@dataclass(frozen=True)
class OwnData:
    """A source of examples (pabee.sources) made from own data: its task and, per split, its
    examples {text_a, text_b, label, index}."""

    task: Task
    splits: dict
    key: str  # tells cached features of other files, columns or labels apart

    @property
    def eval_tasks(self):
        return (self.task,)

    def examples(self, task, split):
        return self.splits[split]

    def cache_key(self, task, split):
        return f"own-{self.key}"


def check_request(data, wanted):
    """What can be said before a file is read: flags that exclude each other, a split asked for
    that no flag gives, files that are not readable data files."""
    if data.data_dir is not None:
        raise DataError("--data_dir is for GLUE tasks: drop it, or drop --train_file / --dataset_name")
    files = data.own_files()
    if data.dataset_name and files:
        raise DataError("--dataset_name and data files exclude each other: give one of them")
    if "train" in wanted and not (data.train_file or data.dataset_name):
        raise DataError(MISSING["train"])
    for split, path in files.items():
        check_file(path, FLAGS[split][2:])


def default_name(data):
    return Path(data.train_file).stem if data.train_file else (data.dataset_name or "data").split("/")[-1]


# --- labels -------------------------------------------------------------------------------

def label_scheme(values, rows, source, task_type):
    """('classification', sorted names) or ('regression', None) from the training labels: float
    labels are regression, strings or integers classification, unless --task_type says."""
    for value, row in zip(values, rows):
        if value is None or value == "":
            raise DataError(f"{where(source, row)}: no label: fill or remove the row")
    kinds = {type(v) for v in values}
    if not (kinds <= {int, float} or kinds == {str}):
        first = next(i for i, v in enumerate(values) if type(v) is not type(values[0]))
        raise DataError(f"{where(source, rows[first])}: label {values[first]!r} is not of the type of the first "
                        f"label {values[0]!r}: give every label as a name, or every label as a number")
    if task_type == "regression" or (task_type is None and float in kinds):
        return "regression", None
    numeric = kinds <= {int, float}
    return "classification", tuple(sorted({label_name(v) for v in values}, key=float if numeric else str))


def label_name(value):
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def labels_of(values, rows, source, kind, names):
    """Training-index labels (classification) or floats (regression); unseen names are errors."""
    if kind == "regression":
        out = []
        for value, row in zip(values, rows):
            try:
                out.append(float(value))
            except (TypeError, ValueError):
                raise DataError(f"{where(source, row)}: label {value!r} is not a number, and the task is "
                                f"regression: fix the label or pass --task_type classification") from None
        return out
    index = {name: i for i, name in enumerate(names)}
    out = []
    for value, row in zip(values, rows):
        name = None if value is None else label_name(value)
        if name not in index:
            raise DataError(f"{where(source, row)}: label {value!r} was never seen in training "
                            f"(labels: {', '.join(names)}): fix it or add it to the training data")
        out.append(index[name])
    return out


# --- the task ---------------------------------------------------------------------------------

def open_own(data, wanted, seed, cache_dir=None, model_config=None):
    """The source that --train_file / --validation_file / --test_file or --dataset_name give
    (`data`: settings.DataSettings), holding the splits `wanted`. Label names come from the
    training labels, else from the model's config (`model_config()`: evaluating or predicting with
    a fine-tuned model)."""
    check_request(data, wanted)
    tables, sources = read_tables(data, cache_dir)
    texts, label = columns_of(data, tables, sources)
    rows = {split: list(range(len(table))) for split, table in tables.items()}
    kind, names = task_labels(data.task_type, tables, sources, rows, label, model_config)  # the whole training file
    tables, sources, rows = carve_validation(data.validation_split_percentage, seed, tables, sources, rows)
    for split in wanted:
        if split not in tables:
            raise DataError(MISSING[split])
    examples = {split: examples_of(table, rows[split], sources[split], split, texts, label, kind, names)
                for split, table in tables.items()}
    task = make_task(data, kind, names, texts)
    key = hashlib.sha256(json.dumps([source_identity(sources), data.validation_split_percentage, seed,
                                     texts, label, kind, names], default=str).encode()).hexdigest()[:10]
    return OwnData(task, examples, key)


def columns_of(data, tables, sources):
    """(text columns, label column) of the tables, checked in every one and logged in one line."""
    first = "train" if "train" in tables else next(iter(tables))
    if set(tables) == {"test"}:  # predicting only: no label needed
        texts, label = choose_texts(tables["test"].column_names, sources["test"], data.text_columns), data.label_column
    else:
        texts, label = choose_columns(tables[first], sources[first], data.text_columns, data.label_column)
    guessed = "" if data.text_columns and data.label_column else " (guessed: --text_columns / --label_column to choose)"
    logger.info("%s: texts from %s, labels from %s%s", sources[first], " + ".join(f"'{c}'" for c in texts if c),
                f"'{label}'" if label else "nowhere (test only)", guessed)
    for split, table in tables.items():
        check_columns(table, sources[split], texts, "fix --text_columns")
        if split != "test":
            check_columns(table, sources[split], [label], "fix --label_column")
    return texts, label


def read_tables(data, cache_dir):
    if data.dataset_name:
        tables = read_hub(data.dataset_name, data.dataset_config_name, cache_dir)
        name = data.dataset_name + (f"/{data.dataset_config_name}" if data.dataset_config_name else "")
        sources = {split: f"{name}[{split}]" for split in tables}
    else:
        sources = data.own_files()
        tables = {split: read_file(path, cache_dir) for split, path in sources.items()}
    return tables, sources


def carve_validation(percentage, seed, tables, sources, rows):
    """--validation_split_percentage P: P% of the training rows (seeded by --seed) become the dev
    set. `rows` keep each example's row in its file, for messages."""
    if not percentage:
        return tables, sources, rows
    if "dev" in tables:
        raise DataError(f"{sources['dev']} is already a validation set: drop --validation_split_percentage "
                        "or the validation data")
    if "train" not in tables:
        raise DataError("--validation_split_percentage carves from the training data: pass --train_file")
    train = tables["train"]
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    k = round(len(order) * percentage / 100)
    if not 0 < k < len(order):
        raise DataError(f"--validation_split_percentage {percentage:g} of {len(order)} rows "
                        "leaves no training or no validation example: give a percentage that leaves both")
    dev, keep = sorted(order[:k]), sorted(order[k:])
    logger.info("validation: %d of the %d rows of %s (%g%%, seed %d); %d left for training", len(dev), len(order),
                sources["train"], percentage, seed, len(keep))
    carved = {**tables, "train": train.select(keep), "dev": train.select(dev)}
    positions = {"train": [rows["train"][i] for i in keep], "dev": [rows["train"][i] for i in dev]}
    return carved, {**sources, "dev": sources["train"]}, {**rows, **positions}


def task_labels(task_type, tables, sources, rows, label, model_config):
    if "train" in tables:
        return label_scheme(tables["train"][label], rows["train"], sources["train"], task_type)
    config = model_config() if model_config is not None else None
    if config is not None and config.num_labels == 1:
        return "regression", None
    names = [config.id2label[i] for i in range(config.num_labels)] if config is not None else []
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        raise DataError("no training data to take the label names from, and the model's config has none: "
                        "pass --train_file")
    return "classification", tuple(names)


def examples_of(table, rows, source, split, texts, label, kind, names):
    """The reader's columns; test labels are not read (the test set is predicted, not scored)."""
    return {
        "text_a": texts_of(table, rows, source, texts[0]),
        "text_b": texts_of(table, rows, source, texts[1]) if texts[1] else [None] * len(table),
        "label": [None] * len(table) if split == "test" else labels_of(table[label], rows, source, kind, names),
        "index": [str(row) for row in rows],
    }


def make_task(data, kind, names, texts):
    metric = data.metric_for_table or ("acc" if kind == "classification" else "pearson")
    allowed = METRICS[kind] if kind == "regression" or len(names) == 2 else METRICS[kind][:2]
    if metric not in allowed:
        raise DataError(f"--metric_for_table {metric} is not a metric of this {kind} task: choose one of "
                        f"{', '.join(allowed)}")
    name = data.task_name or default_name(data)
    return Task(name=name, folder=name, labels=names, text_columns=texts, label_column=-1, test_text_columns=texts,
                submission=f"{name}.tsv", metric=metric, scores=kind)


def source_identity(sources):
    """Path, size and modification time of each file (hub names as they are)."""
    out = {}
    for split, source in sources.items():
        path = Path(str(source))
        out[split] = [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns] if path.is_file() else source
    return out
