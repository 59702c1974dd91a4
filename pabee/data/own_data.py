"""Labelled data beyond GLUE: own files or a hub dataset (read by pabee/data/table_files.py, their
columns chosen by pabee/data/columns.py, their labels typed by pabee/data/own_labels.py), the seeded
validation split, and the task all that makes: `open_own` gives a source of examples (see
pabee/data/sources.py). Every problem with the data is a DataError whose one line names the file,
the line and the fix."""

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from pabee.base.errors import DataError
from pabee.data.columns import check_columns, choose_columns, choose_texts, texts_of
from pabee.data.glue import Task
from pabee.data.own_labels import labelled, labels_of, task_labels, word_classes
from pabee.data.table_files import check_file, read_file, read_hub

logger = logging.getLogger(__name__)

METRICS = {"classification": ("acc", "macro_f1", "f1", "mcc"), "regression": ("pearson", "spearmanr", "mse")}
FLAGS = {"train": "--train_file", "dev": "--validation_file", "test": "--test_file"}

MISSING = {"train": "--do_train needs training data: pass --train_file",
           "dev": "no validation data for --do_eval: pass --validation_file or --validation_split_percentage",
           "test": "no test data for --do_predict: pass --test_file"}


@dataclass(frozen=True)
class OwnData:
    """A source of examples (pabee.data.sources) made from own data: its task and, per split, its
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


def open_own(data, wanted, seed, cache_dir=None, model_config=None):
    """The source that --train_file / --validation_file / --test_file or --dataset_name give
    (`data`: data_settings.DataSettings), holding the splits `wanted`. Label names come from the
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
