"""Small file helpers shared by the readers and writers of data, results, checkpoints and caches:
JSON, csv fields of any length, what a path that is not a readable file is, whether a folder can
be written, and the lock that keeps two runs out of one output folder."""

import contextlib
import csv
import errno
import fcntl
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from pabee.errors import DataError, UsageError


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


def check_writable(folder, flag):
    """Creates `folder` if needed and proves a file can be written there, before a run writes its
    first result into it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {folder} cannot be written ({e.strerror or e}): give a folder you can write "
                         "to") from None


class OutputLock:
    """Held for a run's life on its output folder, so that a second run into the same folder refuses
    at once instead of writing over the first one's files. The lock file lives in the temporary
    folder, keyed by the output folder's resolved path (bad input still writes nothing into the
    output folder), and the kernel releases the lock when the process ends however it ends, so a
    run that died never blocks the next."""

    def __init__(self, folder):
        self.folder = Path(folder)
        key = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:16]
        self.path = Path(tempfile.gettempdir()) / "pabee-locks" / f"{key}.lock"

    def __enter__(self):
        self.path.parent.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.chmod(0o1777)  # every user's runs share it, as /tmp
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise UsageError(f"another run ({holder}) is writing into {self.folder}: wait for it to end, or give "
                             "another --output_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
