"""How the entry points log, set once by each of them: every module of the package logs under its
own name below "pabee" (info on the main process, warnings on the others), in one format, and the
third-party libraries keep quiet about what the project says in its own one line."""

import contextlib
import logging
import os


def setup_logging(main_process=None):
    """Called once by an entry point, after its flags are parsed. `main_process` defaults to rank 0
    of torchrun (its RANK variable), or the only process."""
    if main_process is None:
        main_process = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pabee").setLevel(logging.INFO if main_process else logging.WARNING)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its retries would stand before our one line
    logging.getLogger("datasets").setLevel(logging.ERROR)  # likewise its own error lines
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the ONNX exporter's notes on its own internals
    logging.getLogger().addFilter(without_static_quantization_advice)
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()  # bars of reading and caching; pabee.data.features says what it tokenizes
    transformers_logging.disable_progress_bar()  # a bar per model loaded or saved would bury the lines that matter


def without_static_quantization_advice(record):
    """A logging filter: ONNX Runtime's quantizer advises pre-processing at every graph it quantizes
    (on the root logger); the advice is for static quantization, not the dynamic one used here."""
    return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def quiet_exporter():
    """The ONNX exporter's notes on its own internals ("torchvision is not installed", four a graph)
    and the quantizer's advice held back while graphs are written. torch sets its exporter's level
    when it is imported, which may come after setup_logging, so the level is set here, for this time."""
    exporter, root = logging.getLogger("torch.onnx"), logging.getLogger()
    level = exporter.level
    exporter.setLevel(logging.ERROR)
    root.addFilter(without_static_quantization_advice)
    try:
        yield
    finally:
        exporter.setLevel(level)
        root.removeFilter(without_static_quantization_advice)


@contextlib.contextmanager
def quiet_ray_thread():
    """Ray joined from a thread (pabee.paper_grid.ray_launch bounds the wait) notes that it set no SIGTERM handler
    there: the grid sets its own, so the note is held back."""
    worker = logging.getLogger("ray._private.worker")
    worker.addFilter(without_thread_note)
    try:
        yield
    finally:
        worker.removeFilter(without_thread_note)


def without_thread_note(record):
    return "not the main thread" not in record.getMessage()
