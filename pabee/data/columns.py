"""Which columns of a table hold the texts and the label (the flags', else the usual names), and
the texts of a table."""

from pabee.base.errors import DataError
from pabee.data.table_files import read_file

# Column names tried in order when --text_columns is not given (pairs first), then for the label.
TEXT_GUESSES = [("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"),
                ("question", "sentence"), ("sentence", None), ("text", None)]
LABEL_GUESSES = ["label", "labels", "score"]


def choose_columns(table, text_columns, label_column):
    """(text columns, label column) of the training table: the flags', else the usual names."""
    columns = table.column_names
    label = label_column or next((c for c in LABEL_GUESSES if c in columns), None)
    if label is None:
        raise DataError(f"cannot tell the label column of {table.source} (it has: {', '.join(columns)}): "
                        "pass --label_column")
    return choose_texts(table, text_columns), label


def choose_texts(table, text_columns):
    """The one or two text columns (the second None for single texts): the flag's, else the usual names."""
    if text_columns:
        texts = tuple(text_columns.split(","))
        if len(texts) > 2:
            raise DataError(f"--text_columns {text_columns}: give one text column or two, comma-separated")
        return texts + (None,) * (2 - len(texts))
    texts = next((pair for pair in TEXT_GUESSES if all(c in table.column_names for c in pair if c)), None)
    if texts is None:
        raise DataError(f"cannot tell the text columns of {table.source} (it has: {', '.join(table.column_names)}): "
                        "pass --text_columns")
    return texts


def check_columns(table, names, flag_hint):
    missing = [c for c in names if c and c not in table.column_names]
    if missing:
        raise DataError(f"{table.source} has no column '{missing[0]}' (it has: {', '.join(table.column_names)}): "
                        f"{flag_hint}")


def texts_of(table, column):
    """The column's texts, exactly as written; an empty or missing one, or one that is not a text
    (a JSON object or list), is an error naming its row."""
    texts = []
    for i, value in enumerate(table[column]):
        if isinstance(value, bool):
            value = "true" if value else "false"  # as JSON writes it
        if not isinstance(value, str):
            what = "missing" if value is None else f"a JSON {type(value).__name__}, not a text"
            raise DataError(f"{table.where(i)}: text column '{column}' is {what}: give a text")
        if not value.strip():
            raise DataError(f"{table.where(i)}: text column '{column}' is empty: fill or remove the row")
        texts.append(str(value))
    return texts


def read_texts(path, text_columns=None, tsv_quoting=False):
    """The (text_a, text_b or None) pairs of a table file, and the text columns read."""
    table = read_file(path, tsv_quoting)
    texts = choose_texts(table, text_columns)
    check_columns(table, texts, "fix --text_columns")
    a = texts_of(table, texts[0])
    b = texts_of(table, texts[1]) if texts[1] else [None] * len(a)
    return list(zip(a, b, strict=True)), texts
