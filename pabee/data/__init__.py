"""The examples: GLUE's tasks and files, tables users give (CSV, TSV, JSON, JSONL, hub datasets), their
columns and typed labels, own data with its validation split, the sources a run reads, and the
tokenized features, cached."""

from pabee.base.lazy import lazy_exports

ENTRY_POINTS = {"open_source": "sources", "find_task": "glue", "prepare_features": "features"}  # name -> its module here
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
