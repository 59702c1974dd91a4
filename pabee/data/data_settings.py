"""Where a run's examples come from and how they become features, as frozen settings (field names
and defaults are run_glue's flags'): a GLUE task or own files or a hub dataset (`DataSettings`), and
where predict.py's default exit is chosen (`ExitChoice`, --choose_exit_on)."""

import math
from dataclasses import dataclass, field

from pabee.base.errors import UsageError

OWN_DATA_FILES = {"train": "train_file", "dev": "validation_file", "test": "test_file"}


@dataclass(frozen=True)
class ExitChoice:
    """Where the chosen exit (predict.py's default setting) is chosen: on dev ("dev", the rows of
    the run's dev figures, which then flatter that setting), on `percentage`% of the training rows
    held out of training ("train", seeded by --seed), or on a file laid out as the dev data ("file",
    `path`). --choose_exit_on dev | train:P | <file>."""

    where: str = "dev"
    percentage: float = 0.0
    path: str | None = None

    @classmethod
    def parse(cls, text):
        if text == "dev":
            return cls()
        if text.startswith("train:"):
            try:
                percentage = float(text[len("train:"):])
            except ValueError:
                percentage = math.nan
            if not 0 < percentage < 100:
                raise UsageError(f"--choose_exit_on {text}: give train:P with a percentage 0 < P < 100, e.g. train:10")
            return cls("train", percentage)
        return cls("file", path=text)

    def describe(self, rows, seed):
        if self.where == "train":
            return f"{self.percentage:g}% of the training rows held out of training ({rows} rows, seed {seed})"
        return f"{self.path} ({rows} rows)" if self.where == "file" else f"dev ({rows} rows)"


@dataclass(frozen=True)
class DataSettings:
    """Where examples come from (a GLUE task, or own files or a hub dataset) and how they become
    features."""

    task_name: str | None = None
    data_dir: str | None = None  # GLUE TSV folder; None: GLUE from the hub
    max_seq_length: int = 128
    overwrite_cache: bool = False
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_columns: str | None = None
    label_column: str | None = None
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    validation_split_percentage: float = 0.0
    task_type: str | None = None
    metric_for_table: str | None = None
    tsv_quoting: bool = False  # .tsv files: quotes as CSV reads them (fields may hold tabs and newlines)
    skip_unlabeled_rows: bool = False  # training and validation rows without a label: left out, not an error
    choose_exit_on: ExitChoice = field(default_factory=ExitChoice)

    @property
    def own(self):
        """Own files or a hub dataset instead of GLUE."""
        return bool(self.dataset_name or self.own_files())

    def own_files(self):
        """{split: path} of the own data files given."""
        return {split: getattr(self, name) for split, name in OWN_DATA_FILES.items() if getattr(self, name)}
