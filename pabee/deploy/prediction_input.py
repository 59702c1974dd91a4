"""predict.py's input: plain text (one example a line), a table (pabee/data/columns.py chooses its
text columns), or standard input read by a thread and answered batch by batch as lines arrive."""

import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

from pabee.base.errors import DataError, UsageError, first_line
from pabee.data.columns import read_texts

PLAIN = (".txt", "")  # one example per line

WAKE = 0.05  # seconds the input waiter sleeps at most between looks at the queue and at signals


def read_input(path, batch_size, text_columns=None, pause=0.2, tsv_quoting=False):
    """(batches, column names, number of examples or None when streaming) of `path` (- for
    standard input, answered batch by batch as lines arrive)."""
    if path == "-":
        return batches_as_they_come(plain_examples(raw_lines(sys.stdin.fileno()), "standard input"), batch_size,
                                    pause), \
            ("text", None), None
    if Path(path).suffix.lower() in PLAIN:
        with open(path, "rb") as f:
            examples = list(plain_examples(f, path))
        return in_batches(examples, batch_size), ("text", None), len(examples)
    examples, columns = read_texts(path, text_columns, tsv_quoting)
    return in_batches(examples, batch_size), columns, len(examples)


def plain_examples(stream, name):
    """(text_a, text_b or None) of each line of a byte stream: one example per line, a tab between
    the two texts of a pair. A line that is not UTF-8, holds no text, or more than one tab, stops
    the input with an error naming it: every line gets an answer or an error."""
    for number, raw in enumerate(stream, start=1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        line = line[:-1] if line.endswith(b"\r") else line
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{name} line {number}: byte {line[e.start]:#04x} is not UTF-8: give UTF-8 text") from None
        a, tab, b = (text.lstrip("\ufeff") if number == 1 else text).partition("\t")
        if "\t" in b or not a.strip() or (tab and not b.strip()):
            what = "more than one tab" if "\t" in b else "no text" if not a.strip() and not b.strip() else \
                "an empty side of its tab"
            raise DataError(f"{name} line {number} holds {what}: give one example per line, a tab between the two "
                            "texts of a pair")
        yield a, (b if tab else None)


def raw_lines(fd):
    """The lines of a file descriptor, read with os.read: the reader thread blocks holding no lock
    of Python's, so the interpreter can still shut down cleanly (a thread blocked inside
    sys.stdin.buffer holds its lock, and shutdown then aborts the process)."""
    pieces = []  # of the line not yet ended; only each new chunk is searched for line ends
    while chunk := os.read(fd, 1 << 16):
        *lines, rest = chunk.split(b"\n")
        if lines:
            lines[0] = b"".join(pieces) + lines[0]
            pieces = []
            yield from (line + b"\n" for line in lines)
        pieces.append(rest)
    if tail := b"".join(pieces):
        yield tail


def in_batches(examples, size):
    for i in range(0, len(examples), size):
        yield examples[i:i + size]


def batches_as_they_come(examples, size, pause):
    """Batches of at most `size`; a partial batch goes out when no example came for `pause`
    seconds, so a slow producer gets its answers without waiting for a full batch. An error in the
    input (or anything that stops the reader) ends the batches with that error."""
    arrived = queue.Queue()

    def read():
        # Ctrl-C is for the main thread: delivered here, it would only restart os.read.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for example in examples:
                arrived.put(example)
            arrived.put(None)
        except BaseException as e:  # the reader must never die silently: the consumer would wait forever
            arrived.put(e)

    threading.Thread(target=read, daemon=True).start()
    batch, last = [], time.monotonic()
    while True:
        try:  # never an endless wait: Python runs a Ctrl-C's handler only when this thread wakes
            item = arrived.get(timeout=WAKE)
        except queue.Empty:
            if batch and time.monotonic() - last >= pause:
                yield batch
                batch = []
            continue
        last = time.monotonic()
        if isinstance(item, BaseException):
            raise item if isinstance(item, UsageError) else UsageError(f"cannot read the input ({first_line(item)})")
        if item is None:
            if batch:
                yield batch
            return
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
