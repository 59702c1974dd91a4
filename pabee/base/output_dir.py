"""A run's output folder: whether it can be written before a run writes its first result there, and
the lock that keeps two runs out of one folder."""

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path

from pabee.base.errors import UsageError


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
