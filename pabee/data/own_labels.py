"""The labels of own data typed: integers, numbers or names as the whole column says, missing
values told apart from labels, and the task's label scheme (regression or classification, and the
label names kept in the model's config). A training or validation row that gives no label (see
`unlabeled`) is a DataError, unless --skip_unlabeled_rows leaves such rows out, counted in one line
per file."""

import logging
import math
import re

from pabee.base.errors import DataError
from pabee.data.table_files import Number

logger = logging.getLogger(__name__)

INTEGER = re.compile(r"[+-]?\d+")  # a label written as an integer
# pandas' default missing-value strings besides NaN's own spellings (float() reads those), in any case
MISSING_WORDS = frozenset({"na", "n/a", "#n/a", "#n/a n/a", "#na", "<na>", "null", "none", "1.#ind", "-1.#ind",
                           "1.#qnan", "-1.#qnan"})


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
