"""Small file helpers shared by the readers and writers of data, results, checkpoints and caches:
whole-file writes, JSON, csv fields of any length, and what a path that is not a readable file is."""

import csv
import errno
import json
import os
import sys
from pathlib import Path

from pabee.base.errors import DataError


def write_text(path, text):
    """Writes a whole file or nothing: a new copy beside it, renamed over it once complete, so that a
    disk that fills during the write leaves the earlier file as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path):
    """A JSON file's value; a file that is not JSON is a DataError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}): restore or remove the file") from None


def allow_long_csv_fields():
    """Lets the csv module read a field of any length: its default limit (131072 characters)
    refuses a legitimate long text. The limit is one for the whole process; raising it changes no
    read that succeeded, it only lets through fields that were refused."""
    try:
        csv.field_size_limit(sys.maxsize)
    except OverflowError:  # the limit is a C long, 32 bits on Windows
        csv.field_size_limit(2**31 - 1)


def describe_missing(path):
    """What a path that is not a regular file is, in words: a folder, a link loop, a link to
    nothing, a file that cannot be read, or nothing at all."""
    path = Path(path)
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        if e.errno == errno.EACCES:
            return "cannot be reached (permission denied)"
        return "does not exist"
    if path.is_dir():
        return "is a folder"
    return "is not a regular file" if not path.is_file() else "is a file"
