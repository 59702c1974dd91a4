"""Table files as users give them: CSV, TSV, JSON (a list of objects) or JSONL files, or a hub
dataset's splits, read into columns. Used for own training data (pabee/data/own_data.py) and for
predict.py's input files.

Every value is what the file says: a CSV or TSV field is read as its exact string (no number or
missing-value guessing; TSV quotes are text unless `tsv_quoting` asks for CSV's quoting rules), a
JSON number keeps its literal text (`Number`), and a row is never dropped or merged: a row with
another number of fields than the header is an error naming its line. Every problem is a
DataError whose one line names the file, the line and the fix."""

import csv
import json
import re
from pathlib import Path

from pabee.base.errors import DataError, first_line
from pabee.base.file_io import allow_long_csv_fields, describe_missing
from pabee.base.hub_access import hub_unavailable

FORMATS = (".csv", ".tsv", ".json", ".jsonl")

LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # with its end; the last may have none


class Number(str):
    """A JSON number as the text it was written with (so that a text column holds "007" or "1e3"
    exactly as written); labels read it as the number it is."""


class Table:
    """Rows of one file or hub split: `column_names` in order, `rows` as dicts, where each row
    stands (`places`, as a user finds it in an editor: file:line, or the item or row number) and
    its position in the file (`positions`, 0-based). `typed`: values carry their type (JSON, a hub
    dataset); CSV and TSV values are all strings."""

    def __init__(self, source, column_names, rows, places, positions=None, typed=False):
        self.source, self.column_names, self.rows, self.places = source, column_names, rows, places
        self.positions = list(range(len(rows))) if positions is None else positions
        self.typed = typed

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, column):
        return [row.get(column) for row in self.rows]

    def select(self, indices):
        return Table(self.source, self.column_names, [self.rows[i] for i in indices], [self.places[i] for i in indices],
                     [self.positions[i] for i in indices], self.typed)

    def where(self, i):
        return self.places[i]


def check_file(path, flag):
    """The file exists, is a file, and has a format we read."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--{flag} {path} {describe_missing(path)}: give an existing .csv, .tsv, .json or .jsonl file")
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"--{flag} {path}: unknown format '{path.suffix}': give a .csv, .tsv, .json or .jsonl file")


def read_file(path, tsv_quoting=False):
    """The file as a Table, every value as written."""
    path = Path(path)
    text = decoded(path)
    if not text.strip():
        raise DataError(f"{path} holds no examples: it is empty")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        table = read_delimited(path, text, suffix == ".tsv" and not tsv_quoting)
    else:
        table = read_json_lines(path, text) if suffix == ".jsonl" else read_json_list(path, text)
    if not len(table):
        raise DataError(f"{path} holds no examples: it has only a header")
    return table


def decoded(path):
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: byte {raw[e.start]:#04x} is not UTF-8: re-save the file as UTF-8") from None


def read_delimited(path, text, literal_quotes):
    """CSV (quoted fields as CSV defines them) or TSV (by default every character literal, one row
    per line, as GLUE's files are read): rows of exactly the header's width."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    options = {"quoting": csv.QUOTE_NONE} if literal_quotes else {"strict": True}
    allow_long_csv_fields()
    reader = csv.reader(lines_of(text), delimiter=delimiter, **options)
    rows, lines, start = [], [], 1
    try:
        header = next(reader)
        check_header(path, header)
        start = reader.line_num + 1
        for fields in reader:
            if fields:  # a blank line is no row (as pandas reads CSV)
                if len(fields) != len(header):
                    raise DataError(f"{path}:{start}: {len(fields)} fields where the header has {len(header)}: "
                                    f"fix the row{'' if literal_quotes else ' (a quote may open a field that runs on)'}")
                rows.append(dict(zip(header, fields, strict=True)))
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        kind = "CSV" if delimiter == "," else "TSV"
        raise DataError(f"{path}:{start}: not valid {kind} ({e}): fix the quoting of the row") from None
    return Table(path, header, rows, [f"{path}:{line}" for line in lines])


def lines_of(text):
    """The lines of a text, each with its end, one at a time. Lines end at LF, CRLF or CR alone:
    str.splitlines also ends them at characters a text may hold (U+2028, U+0085, a form feed),
    which would cut its row in two."""
    return (match.group() for match in LINE.finditer(text))


def check_header(path, header):
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path}:1: column '{repeated[0]}' appears twice in the header: rename one of them")


def read_json_lines(path, text):
    items, lines = [], []
    for number, line in enumerate(lines_of(text), start=1):
        if line.strip():
            items.append(parse_json(line, path, number))
            lines.append(number)
    return Table(path, columns_of(items), items, [f"{path}:{line}" for line in lines], typed=True)


def read_json_list(path, text):
    items = parse_json(text, path, None)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise DataError(f"{path} is not a JSON list of objects: give one object per example, or use .jsonl")
    return Table(path, columns_of(items), items, [f"{path} (item {i + 1})" for i in range(len(items))], typed=True)


def parse_json(text, path, number):
    try:
        value = json.loads(text, parse_int=Number, parse_float=Number, parse_constant=Number)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{number or e.lineno}: not valid JSON ({e.msg}): fix the line") from None
    if number is not None and not isinstance(value, dict):
        raise DataError(f"{path}:{number}: not a JSON object: give one object per line")
    return value


def columns_of(items):
    """Every key the objects use, in the order they first appear."""
    return list(dict.fromkeys(key for item in items for key in item))


def read_hub(name, config_name, cache_dir=None):
    """A hub dataset's splits as Tables: train, dev (its validation split) and test where present."""
    import datasets

    why = None if Path(name).exists() else hub_unavailable(name, "datasets", cache_dir)
    if why:
        raise DataError(f"cannot load dataset {name}: {why}: pass --train_file (and --validation_file) with local files")
    try:
        found = datasets.load_dataset(name, config_name or None, cache_dir=cache_dir)
    except Exception as e:  # offline, unknown name, broken cache: all end the same way
        raise DataError(f"cannot load dataset {name} from the hub ({first_line(e)}): "
                        f"pass --train_file (and --validation_file) with local files instead") from None
    dev = next((s for s in ("validation", "dev", "valid") if s in found), None)
    label = f"{name}/{config_name}" if config_name else name
    tables = {}
    for split, hub in (("train", "train"), ("dev", dev), ("test", "test")):
        if hub in found:
            source = f"{label}[{split}]"
            rows = found[hub].to_list()
            tables[split] = Table(source, found[hub].column_names, rows, [f"{source} (row {i})" for i in range(len(rows))],
                                  typed=True)
    return tables
