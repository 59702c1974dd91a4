"""Labelled data beyond GLUE: CSV, TSV, JSON (a list of objects) or JSONL files, or a hub dataset,
read through datasets. Which columns hold the texts and the label, the label names (kept in
the model's config), regression or classification, and the task all that makes.

Every problem with the data is a DataError whose one line names the file, the line and the fix.
"""

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from glue import DataError, Task
from runtime import first_line

logger = logging.getLogger("run_glue")

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
# Column names tried in order when --text_columns is not given (pairs first), then for the label.
TEXT_GUESSES = [("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"),
                ("question", "sentence"), ("sentence", None), ("text", None)]
LABEL_GUESSES = ["label", "labels", "score"]
METRICS = {"classification": ("acc", "macro_f1", "f1", "mcc"), "regression": ("pearson", "spearmanr", "mse")}
SPLIT_FLAGS = {"train": "train_file", "dev": "validation_file", "test": "test_file"}


@dataclass(frozen=True)
class OwnData:
    """A task made from own data and its examples, split -> {text_a, text_b, label, index}."""

    task: Task
    examples: dict
    key: str  # tells cached features of other files, columns or labels apart


def wanted(flags):
    return bool(flags.dataset_name or any(getattr(flags, f) for f in SPLIT_FLAGS.values()))


def check_file(path, flag):
    """The file exists, is a file, and has a format we read."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"--{flag} {path} is a folder: give a .csv, .tsv, .json or .jsonl file")
    if not path.is_file():
        raise DataError(f"--{flag} {path} does not exist: give an existing .csv, .tsv, .json or .jsonl file")
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"--{flag} {path}: unknown format '{path.suffix}': give a .csv, .tsv, .json or .jsonl file")


def default_name(flags):
    return Path(flags.train_file).stem if flags.train_file else (flags.dataset_name or "data").split("/")[-1]


# --- reading ------------------------------------------------------------------------------------

def read_file(path, cache_dir=None):
    """The file as a datasets table, after checks that give the line of the first problem."""
    import datasets

    path = Path(path)
    check_text(path)
    kind = FORMATS[path.suffix.lower()]
    options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    quiet = logging.getLogger("datasets")
    level, bars = quiet.level, datasets.is_progress_bar_enabled()
    quiet.setLevel(logging.CRITICAL)  # its own error lines would stand before ours
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(kind, data_files={"data": str(path)}, split="data", cache_dir=cache_dir, **options)
    except ValueError as e:
        if "corresponds to no data" in str(e):
            raise DataError(f"{path} holds no examples: it has only a header") from None
        raise DataError(f"cannot read {path} ({first_line(e)}): check that it is {kind.upper()}") from None
    except Exception as e:  # the builders raise many kinds
        cause = e.__cause__ or e
        raise DataError(f"cannot read {path} ({first_line(cause)}): check that it is {kind.upper()}") from None
    finally:
        quiet.setLevel(level)
        if bars:
            datasets.enable_progress_bars()
    if len(table) == 0:
        raise DataError(f"{path} holds no examples: it has only a header")
    return table


def check_text(path):
    """Empty, not UTF-8 or not JSON: said with the line, before datasets reads the file."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path} holds no examples: it is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: byte {raw[e.start]:#04x} is not UTF-8: re-save the file as UTF-8") from None
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                parse_json(line, path, number)
    elif path.suffix.lower() == ".json":
        items = parse_json(text, path, None)
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise DataError(f"{path} is not a JSON list of objects: give one object per example, or use .jsonl")


def parse_json(text, path, number):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        line = number or e.lineno
        raise DataError(f"{path}:{line}: not valid JSON ({e.msg}): fix the line") from None
    if number is not None and not isinstance(value, dict):
        raise DataError(f"{path}:{number}: not a JSON object: give one object per line")
    return value


def where(source, row):
    """Where data row `row` (0-based) of a file or hub split is, as a user finds it in an editor."""
    suffix = Path(str(source)).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return f"{source}:{row + 2}"  # after the header line
    if suffix == ".jsonl":
        return f"{source}:{row + 1}"
    return f"{source} (item {row + 1})" if suffix == ".json" else f"{source} (row {row})"


def read_hub(name, config_name, cache_dir=None):
    """A hub dataset's splits as tables: train, dev (its validation split) and test where present."""
    import datasets

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        found = datasets.load_dataset(name, config_name or None, cache_dir=cache_dir)
    except Exception as e:  # offline, unknown name, broken cache: all end the same way
        raise DataError(f"cannot load dataset {name} from the hub ({first_line(e)}): "
                        f"pass --train_file (and --validation_file) with local files instead") from None
    dev = next((s for s in ("validation", "dev", "valid") if s in found), None)
    return {split: found[hub] for split, hub in (("train", "train"), ("dev", dev), ("test", "test"))
            if hub in found}


# --- columns and labels ---------------------------------------------------------------------

def choose_columns(table, source, text_columns, label_column):
    """(text columns, label column) of the training table: the flags', else the usual names."""
    columns = table.column_names
    label = label_column or next((c for c in LABEL_GUESSES if c in columns), None)
    if label is None:
        raise DataError(f"cannot tell the label column of {source} (it has: {', '.join(columns)}): pass --label_column")
    return choose_texts(columns, source, text_columns), label


def choose_texts(columns, source, text_columns):
    """The one or two text columns (the second None for single texts): the flag's, else the usual names."""
    if text_columns:
        texts = tuple(text_columns.split(","))
        if len(texts) > 2:
            raise DataError(f"--text_columns {text_columns}: give one text column or two, comma-separated")
        texts += (None,) * (2 - len(texts))
    else:
        texts = next((pair for pair in TEXT_GUESSES if all(c in columns for c in pair if c)), None)
        if texts is None:
            raise DataError(f"cannot tell the text columns of {source} (it has: {', '.join(columns)}): pass --text_columns")
    return texts


def check_columns(table, source, names, flag_hint):
    missing = [c for c in names if c and c not in table.column_names]
    if missing:
        raise DataError(f"{source} has no column '{missing[0]}' (it has: {', '.join(table.column_names)}): "
                        f"{flag_hint}")


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


def texts_of(table, rows, source, column):
    values = table[column]
    for value, row in zip(values, rows):
        if value is None or not str(value).strip():
            raise DataError(f"{where(source, row)}: text column '{column}' is empty: fill or remove the row")
    return [str(v) for v in values]


# --- the task ---------------------------------------------------------------------------------

def load(flags, config=None):
    """The task and examples that --train_file / --validation_file / --test_file or --dataset_name
    give. Label names come from the training labels, else from the model's config (evaluating or
    predicting with a fine-tuned model)."""
    tables, sources = read_tables(flags)
    first = "train" if "train" in tables else next(iter(tables))
    if set(tables) == {"test"}:  # predicting only: no label needed
        texts, label = choose_texts(tables["test"].column_names, sources["test"], flags.text_columns), flags.label_column
    else:
        texts, label = choose_columns(tables[first], sources[first], flags.text_columns, flags.label_column)
    guessed = "" if flags.text_columns and flags.label_column else " (guessed: --text_columns / --label_column to choose)"
    logger.info("%s: texts from %s, labels from %s%s", sources[first], " + ".join(f"'{c}'" for c in texts if c),
                f"'{label}'" if label else "nowhere (test only)", guessed)
    for split, table in tables.items():
        check_columns(table, sources[split], texts, "fix --text_columns")
        if split != "test":
            check_columns(table, sources[split], [label], "fix --label_column")
    rows = {split: list(range(len(table))) for split, table in tables.items()}
    kind, names = task_labels(flags, tables, sources, rows, label, config)  # from the whole training file
    tables, sources, rows = carve_validation(flags, tables, sources, rows)
    examples = {split: examples_of(table, rows[split], sources[split], split, texts, label, kind, names)
                for split, table in tables.items()}
    task = make_task(flags, kind, names, texts)
    key = hashlib.sha256(json.dumps([source_identity(sources), flags.validation_split_percentage, flags.seed,
                                     texts, label, kind, names], default=str).encode()).hexdigest()[:10]
    return OwnData(task, examples, key)


def read_tables(flags):
    if flags.dataset_name:
        tables = read_hub(flags.dataset_name, flags.dataset_config_name, flags.cache_dir or None)
        name = flags.dataset_name + (f"/{flags.dataset_config_name}" if flags.dataset_config_name else "")
        sources = {split: f"{name}[{split}]" for split in tables}
    else:
        sources = {split: getattr(flags, flag) for split, flag in SPLIT_FLAGS.items() if getattr(flags, flag)}
        tables = {split: read_file(path, flags.cache_dir or None) for split, path in sources.items()}
    return tables, sources


def carve_validation(flags, tables, sources, rows):
    """--validation_split_percentage P: P% of the training rows (seeded by --seed) become the dev
    set. `rows` keep each example's row in its file, for messages."""
    if not flags.validation_split_percentage:
        return tables, sources, rows
    if "dev" in tables:
        raise DataError(f"{sources['dev']} is already a validation set: drop --validation_split_percentage "
                        "or the validation data")
    if "train" not in tables:
        raise DataError("--validation_split_percentage carves from the training data: pass --train_file")
    train = tables["train"]
    order = list(range(len(train)))
    random.Random(flags.seed).shuffle(order)
    k = round(len(order) * flags.validation_split_percentage / 100)
    if not 0 < k < len(order):
        raise DataError(f"--validation_split_percentage {flags.validation_split_percentage:g} of {len(order)} rows "
                        "leaves no training or no validation example: give a percentage that leaves both")
    dev, keep = sorted(order[:k]), sorted(order[k:])
    logger.info("validation: %d of the %d rows of %s (%g%%, seed %d); %d left for training", len(dev), len(order),
                sources["train"], flags.validation_split_percentage, flags.seed, len(keep))
    carved = {**tables, "train": train.select(keep), "dev": train.select(dev)}
    positions = {"train": [rows["train"][i] for i in keep], "dev": [rows["train"][i] for i in dev]}
    return carved, {**sources, "dev": sources["train"]}, {**rows, **positions}


def task_labels(flags, tables, sources, rows, label, config):
    if "train" in tables:
        return label_scheme(tables["train"][label], rows["train"], sources["train"], flags.task_type)
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


def make_task(flags, kind, names, texts):
    metric = flags.metric_for_table or ("acc" if kind == "classification" else "pearson")
    allowed = METRICS[kind] if kind == "regression" or len(names) == 2 else METRICS[kind][:2]
    if metric not in allowed:
        raise DataError(f"--metric_for_table {metric} is not a metric of this {kind} task: choose one of "
                        f"{', '.join(allowed)}")
    name = flags.task_name or default_name(flags)
    return Task(name=name, folder=name, labels=names, text_columns=texts, label_column=-1, test_text_columns=texts,
                submission=f"{name}.tsv", metric=metric, scores=kind)


def source_identity(sources):
    """Path, size and modification time of each file (hub names as they are)."""
    out = {}
    for split, source in sources.items():
        path = Path(str(source))
        out[split] = [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns] if path.is_file() else source
    return out
