"""Tables of examples as users give them: CSV, TSV, JSON (a list of objects) or JSONL files, or a hub
dataset's splits, read through datasets; which columns hold the texts and the label; the texts of
a table. Used for own training data (pabee.own_data) and for predict.py's input files.

Every problem is a DataError whose one line names the file, the line and the fix.
"""

import json
from pathlib import Path

from pabee.errors import DataError, first_line

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
# Column names tried in order when --text_columns is not given (pairs first), then for the label.
TEXT_GUESSES = [("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"),
                ("question", "sentence"), ("sentence", None), ("text", None)]
LABEL_GUESSES = ["label", "labels", "score"]


def check_file(path, flag):
    """The file exists, is a file, and has a format we read."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"--{flag} {path} is a folder: give a .csv, .tsv, .json or .jsonl file")
    if not path.is_file():
        raise DataError(f"--{flag} {path} does not exist: give an existing .csv, .tsv, .json or .jsonl file")
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"--{flag} {path}: unknown format '{path.suffix}': give a .csv, .tsv, .json or .jsonl file")


def read_file(path, cache_dir=None):
    """The file as a datasets table, after checks that give the line of the first problem."""
    import datasets

    path = Path(path)
    check_text(path)
    kind = FORMATS[path.suffix.lower()]
    options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        table = datasets.load_dataset(kind, data_files={"data": str(path)}, split="data", cache_dir=cache_dir, **options)
    except ValueError as e:
        if "corresponds to no data" in str(e):
            raise DataError(f"{path} holds no examples: it has only a header") from None
        raise DataError(f"cannot read {path} ({first_line(e)}): check that it is {kind.upper()}") from None
    except Exception as e:  # the builders raise many kinds
        cause = e.__cause__ or e
        raise DataError(f"cannot read {path} ({first_line(cause)}): check that it is {kind.upper()}") from None
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

    try:
        found = datasets.load_dataset(name, config_name or None, cache_dir=cache_dir)
    except Exception as e:  # offline, unknown name, broken cache: all end the same way
        raise DataError(f"cannot load dataset {name} from the hub ({first_line(e)}): "
                        f"pass --train_file (and --validation_file) with local files instead") from None
    dev = next((s for s in ("validation", "dev", "valid") if s in found), None)
    return {split: found[hub] for split, hub in (("train", "train"), ("dev", dev), ("test", "test"))
            if hub in found}


# --- columns ---------------------------------------------------------------------------------

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


def texts_of(table, rows, source, column):
    values = table[column]
    for value, row in zip(values, rows):
        if value is None or not str(value).strip():
            raise DataError(f"{where(source, row)}: text column '{column}' is empty: fill or remove the row")
    return [str(v) for v in values]


def read_texts(path, text_columns=None):
    """The (text_a, text_b or None) pairs of a table file, and the text columns read."""
    table = read_file(path)
    texts = choose_texts(table.column_names, path, text_columns)
    check_columns(table, path, texts, "fix --text_columns")
    rows = list(range(len(table)))
    a = texts_of(table, rows, path, texts[0])
    b = texts_of(table, rows, path, texts[1]) if texts[1] else [None] * len(a)
    return list(zip(a, b)), texts
