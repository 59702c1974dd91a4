"""Labelled data beyond GLUE: own files or a hub dataset (read by pabee.tables), their label names
(kept in the model's config), regression or classification, the seeded validation split, and the
task all that makes: `open_own` gives a source of examples (see pabee.sources).

Every problem with the data is a DataError whose one line names the file, the line and the fix. A
training or validation row that gives no label (see `unlabeled`) is one, unless --skip_unlabeled_rows
leaves such rows out, counted in one line per file.
"""

import hashlib
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

from pabee.errors import DataError
from pabee.glue import Task
from pabee.tables import (
    INTEGER,
    Number,
    check_columns,
    check_file,
    choose_columns,
    choose_texts,
    read_file,
    read_hub,
    texts_of,
)

logger = logging.getLogger(__name__)

METRICS = {"classification": ("acc", "macro_f1", "f1", "mcc"), "regression": ("pearson", "spearmanr", "mse")}
FLAGS = {"train": "--train_file", "dev": "--validation_file", "test": "--test_file"}
# pandas' default missing-value strings besides NaN's own spellings (float() reads those), in any case
MISSING_WORDS = frozenset({"na", "n/a", "#n/a", "#n/a n/a", "#na", "<na>", "null", "none", "1.#ind", "-1.#ind",
                           "1.#qnan", "-1.#qnan"})
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
    read_labelled: object  # path -> the examples of a file laid out as the validation data

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

def label_values(table, column):
    """The labels of a table as values. JSON and hub values keep their type (a JSON number is an
    integer or a float as written); a CSV or TSV column is integers when every label is written as
    one, else numbers when every label is one, else names: labels are the one column whose type
    is inferred."""
    values = table[column]
    if table.typed:
        return [number(v) if isinstance(v, Number) else ("true" if v else "false") if isinstance(v, bool) else v
                for v in values]
    if all(INTEGER.fullmatch(v.strip()) for v in values):
        return [int(v) for v in values]
    try:
        floats = [float(v) for v in values]
    except ValueError:
        return values
    return floats if all(math.isfinite(v) for v in floats) else values


def number(text):
    return int(text) if INTEGER.fullmatch(text) else float(text)


def labelled(table, column, classes, skip):
    """The table's rows that give a label (`unlabeled`): a row without one is an error naming it,
    unless `skip` (--skip_unlabeled_rows), which leaves such rows out and says how many in one line."""
    missing = [(i, why) for i, row in enumerate(table.rows) if (why := unlabeled(row, column, classes))]
    if not missing:
        return table
    if not skip:
        i, why = missing[0]
        raise DataError(f"{table.where(i)}: no label in column '{column}' ({why}): give the row its label, or pass "
                        "--skip_unlabeled_rows to leave out rows without one")
    if len(missing) == len(table):
        raise DataError(f"{table.source}: no row gives a label in column '{column}': check --label_column")
    logger.warning("%s: %d of %d rows give no label in column '%s' and are left out (--skip_unlabeled_rows), the "
                   "first at %s", table.source, len(missing), len(table), column, table.where(missing[0][0]))
    left_out = {i for i, _ in missing}
    return table.select([i for i in range(len(table)) if i not in left_out])


def unlabeled(row, column, classes):
    """Why the row gives no label in `column`, or None when it gives one: nothing there (a key the
    object lacks, JSON null, an empty cell), NaN however written, or a missing-value word
    (MISSING_WORDS) that is not one of `classes`."""
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return "empty" if value is not None else "null" if column in row else "the row has no such key"
    if is_nan(value) or (missing_word(value) and value not in classes):
        return f"{value if isinstance(value, str) else 'NaN'!r} marks a missing value"
    return None


def is_nan(value):
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):  # a name, a JSON object or list
        return False


def missing_word(value):
    return isinstance(value, str) and value.strip().lower() in MISSING_WORDS


def word_classes(table, column):
    """The missing-value words among the training labels that are class names: none in a column of
    numbers, where they mark rows without a label; all in a column of names (a relation "NA"
    among relation names), said in one line."""
    values = table[column]
    words = sorted({v for v in values if missing_word(v)})
    if not words or not any(is_name(v, table.typed) for v in values):
        return frozenset()
    logger.warning("%s: label %s is read as a class name, as the other labels in column '%s' are names; if it marks "
                   "rows without a label, empty those labels and pass --skip_unlabeled_rows", table.source,
                   " and ".join(map(repr, words)), column)
    return frozenset(words)


def is_name(value, typed):
    """Whether a label is a name: a text (not a JSON number) that no reader takes for a number or
    a missing value."""
    if not isinstance(value, str) or not value.strip() or missing_word(value) or is_nan(value):
        return False
    if typed:
        return not isinstance(value, Number)
    try:
        float(value)
    except ValueError:
        return True
    return False


def label_scheme(values, table, column, task_type):
    """('classification', sorted names) or ('regression', None) from the training labels: float
    labels are regression, strings or integers classification, unless --task_type says. A
    classifier needs two labels or more."""
    kinds = {type(v) for v in values}
    if not (kinds <= {int, float} or kinds == {str}):
        first = next(i for i, v in enumerate(values) if type(v) is not type(values[0]))
        raise DataError(f"{table.where(first)}: label {values[first]!r} is not of the type of the first "
                        f"label {values[0]!r}: give every label as a name, or every label as a number")
    if task_type == "regression" or (task_type is None and float in kinds):
        return "regression", None
    numeric = kinds <= {int, float}
    names = tuple(sorted({label_name(v) for v in values}, key=float if numeric else str))
    if len(names) < 2:
        raise DataError(f"{table.source}: every label in column '{column}' is {names[0]!r}, and a classifier needs "
                        "two labels or more: check --label_column, or add examples of the other labels")
    return "classification", names


def label_name(value):
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def labels_of(table, column, kind, names):
    """Training-index labels (classification) or floats (regression); unseen names are errors."""
    values = label_values(table, column)
    if kind == "regression":
        for i, value in enumerate(values):
            if isinstance(value, str):
                raise DataError(f"{table.where(i)}: label {value!r} is not a number, and the task is "
                                f"regression: fix the label or pass --task_type classification")
        return [float(v) for v in values]
    index = {name: i for i, name in enumerate(names)}
    for i, value in enumerate(values):
        if label_name(value) not in index:
            raise DataError(f"{table.where(i)}: label {value!r} was never seen in training "
                            f"(labels: {', '.join(names)}): fix it or add it to the training data")
    return [index[label_name(v)] for v in values]


# --- the task ---------------------------------------------------------------------------------

def open_own(data, wanted, seed, cache_dir=None, model_config=None):
    """The source that --train_file / --validation_file / --test_file or --dataset_name give
    (`data`: settings.DataSettings), holding the splits `wanted`. Label names come from the
    training labels, else from the model's config (`model_config()`: evaluating or predicting with
    a fine-tuned model)."""
    check_request(data, wanted)
    tables = read_tables(data, cache_dir)
    texts, label = columns_of(data, tables)
    if "train" in tables:
        tables["train"] = labelled(tables["train"], label, word_classes(tables["train"], label),
                                   data.skip_unlabeled_rows)
    kind, names = task_labels(data.task_type, tables, label, model_config)  # from the whole training file
    if "dev" in tables:
        tables["dev"] = labelled(tables["dev"], label, frozenset(names or ()), data.skip_unlabeled_rows)
    tables = carve_validation(data.validation_split_percentage, seed, tables)
    for split in wanted:
        if split not in tables:
            raise DataError(MISSING[split])
    examples = {split: examples_of(table, split, texts, label, kind, names) for split, table in tables.items()}
    task = make_task(data, kind, names, texts)
    key = hashlib.sha256(json.dumps([source_identity(tables), data.validation_split_percentage, seed,
                                     texts, label, kind, names], default=str).encode()).hexdigest()[:10]
    return OwnData(task, examples, key, lambda path: read_labelled(path, data, texts, label, kind, names))


def read_labelled(path, data, texts, label, kind, names):
    """A further file of labelled rows (--choose_exit_on <file>), checked as the validation file."""
    check_file(path, "choose_exit_on")
    table = read_file(path, data.tsv_quoting)
    check_columns(table, texts, "fix --text_columns")
    check_columns(table, [label], "fix --label_column")
    table = labelled(table, label, frozenset(names or ()), data.skip_unlabeled_rows)
    return examples_of(table, "dev", texts, label, kind, names)


def columns_of(data, tables):
    """(text columns, label column) of the tables, checked in every one and logged in one line."""
    first = tables["train"] if "train" in tables else next(iter(tables.values()))
    if set(tables) == {"test"}:  # predicting only: no label needed
        texts, label = choose_texts(first, data.text_columns), data.label_column
    else:
        texts, label = choose_columns(first, data.text_columns, data.label_column)
    guessed = "" if data.text_columns and data.label_column else " (guessed: --text_columns / --label_column to choose)"
    logger.info("%s: texts from %s, labels from %s%s", first.source, " + ".join(f"'{c}'" for c in texts if c),
                f"'{label}'" if label else "nowhere (test only)", guessed)
    for split, table in tables.items():
        check_columns(table, texts, "fix --text_columns")
        if split != "test":
            check_columns(table, [label], "fix --label_column")
    return texts, label


def read_tables(data, cache_dir):
    if data.dataset_name:
        return read_hub(data.dataset_name, data.dataset_config_name, cache_dir)
    return {split: read_file(path, data.tsv_quoting) for split, path in data.own_files().items()}


def carve_validation(percentage, seed, tables):
    """--validation_split_percentage P: P% of the training rows (seeded by --seed) become the dev
    set; every row keeps where it stands in its file, for messages."""
    if not percentage:
        return tables
    if "dev" in tables:
        raise DataError(f"{tables['dev'].source} is already a validation set: drop --validation_split_percentage "
                        "or the validation data")
    if "train" not in tables:
        raise DataError("--validation_split_percentage carves from the training data: pass --train_file")
    train = tables["train"]
    dev, keep = seeded_share(len(train), percentage, seed)
    if not (dev and keep):
        raise DataError(f"--validation_split_percentage {percentage:g} of {len(train)} rows "
                        "leaves no training or no validation example: give a percentage that leaves both")
    logger.info("validation: %d of the %d rows of %s (%g%%, seed %d); %d left for training", len(dev), len(train),
                train.source, percentage, seed, len(keep))
    return {**tables, "train": train.select(keep), "dev": train.select(dev)}


def seeded_share(n, percentage, seed):
    """(percentage% of rows 0..n-1 drawn with `seed`, the rest), each in file order."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = round(n * percentage / 100)
    return sorted(order[:k]), sorted(order[k:])


def task_labels(task_type, tables, label, model_config):
    if "train" in tables:
        return label_scheme(label_values(tables["train"], label), tables["train"], label, task_type)
    config = model_config() if model_config is not None else None
    if config is not None and config.num_labels == 1:
        return "regression", None
    names = [config.id2label[i] for i in range(config.num_labels)] if config is not None else []
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        raise DataError("no training data to take the label names from, and the model's config has none: "
                        "pass --train_file")
    return "classification", tuple(names)


def examples_of(table, split, texts, label, kind, names):
    """The reader's columns; test labels are not read (the test set is predicted, not scored)."""
    return {
        "text_a": texts_of(table, texts[0]),
        "text_b": texts_of(table, texts[1]) if texts[1] else [None] * len(table),
        "label": [None] * len(table) if split == "test" else labels_of(table, label, kind, names),
        "index": [str(position) for position in table.positions],
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


def source_identity(tables):
    """Path, size and modification time of each file (hub splits by name)."""
    out = {}
    for split, table in tables.items():
        path = Path(str(table.source))
        out[split] = [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns] if path.is_file() \
            else str(table.source)
    return out
