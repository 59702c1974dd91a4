"""Where a run's examples come from, behind one interface: GLUE's TSV files, GLUE from the hub,
own files or a hub dataset (pabee.data.own_data). `open_source` decides which, once per run.

A source has `task` (labels, metric, regression or not: a glue.Task), `eval_tasks` (the tasks its
dev and test splits are evaluated as: MNLI's matched and mismatched sets), `examples(task,
split)` ({text_a, text_b, label, index} lists), `read_labelled(path)` (a file laid out as its dev
data) and `cache_key(task, split)` (tells the features of other files apart). Splits are "train",
"dev", "test" and "calibration" (the rows predict.py's exit is chosen on, data_settings.ExitChoice);
opening a source checks that the splits the run wants are there."""

import hashlib
from pathlib import Path

from pabee.base.errors import DataError, UsageError, first_line
from pabee.base.file_io import describe_missing
from pabee.base.hub_access import hub_unavailable
from pabee.data import glue
from pabee.data.own_data import open_own, seeded_share


def open_source(data, wanted, seed, cache_dir=None, model_config=None):
    """The source `data` (data_settings.DataSettings) names, holding the splits `wanted`. Own data is
    read and checked here; GLUE's files are checked and read when features are made."""
    choice = data.choose_exit_on
    slice_from = ("train",) if choice.where == "train" and "calibration" in wanted else ()  # read again, not trained on
    plain = tuple(dict.fromkeys(s for s in (*wanted, *slice_from) if s != "calibration"))
    source = open_plain(data, plain, seed, cache_dir, model_config)
    if choice.where == "file" and not Path(choice.path).is_file():
        raise UsageError(f"--choose_exit_on {choice.path} {describe_missing(Path(choice.path))}: give dev, train:P or "
                         "a file of labelled rows laid out as the dev data")
    return source if choice.where == "dev" else Calibrated(source, choice, seed)


def open_plain(data, wanted, seed, cache_dir, model_config):
    if data.own:
        return open_own(data, wanted, seed, cache_dir, model_config)
    if not data.task_name:
        raise UsageError("no task: pass --task_name with a GLUE task, or --train_file / --dataset_name with own data")
    task = glue.find_task(data.task_name)
    if data.data_dir is None:
        return GlueHub(task, cache_dir)
    source = GlueFiles(task, Path(data.data_dir))
    source.check(wanted)
    return source


class Calibrated:
    """A source with rows of its own to choose the exit on (data_settings.ExitChoice): a seeded slice of
    its training rows, which training then never sees, or a file read as its dev data. Every other
    split is the inner source's."""

    def __init__(self, inner, choice, seed):
        self.inner, self.choice, self.seed = inner, choice, seed
        self.task, self.eval_tasks = inner.task, inner.eval_tasks

    def examples(self, task, split):
        if split == "calibration" and self.choice.where == "file":
            return self.inner.read_labelled(self.choice.path)
        if split in ("train", "calibration") and self.choice.where == "train":
            kept, held = self.carve(self.inner.examples(task, "train"))
            return kept if split == "train" else held
        return self.inner.examples(task, split)

    def carve(self, examples):
        """(training rows kept, rows held out): --choose_exit_on train:P's share of the rows, seeded."""
        held, kept = seeded_share(len(examples["label"]), self.choice.percentage, self.seed)
        if not (held and kept):
            raise DataError(f"--choose_exit_on train:{self.choice.percentage:g} of {len(examples['label'])} training "
                            "rows leaves no row to train on or none to choose on: give a percentage that leaves both")
        return tuple({column: [values[i] for i in rows] for column, values in examples.items()} for rows in (kept, held))

    def cache_key(self, task, split):
        if self.choice.where == "train" and split in ("train", "calibration"):
            return f"{self.inner.cache_key(task, 'train')}-held{self.choice.percentage:g}-{self.seed}"
        if split == "calibration":  # the file, read as the dev data is (own data: its columns and labels)
            path = Path(self.choice.path).resolve()
            stat = path.stat()
            identity = f"{self.inner.cache_key(task, 'dev')}|{path}|{stat.st_size}|{stat.st_mtime_ns}"
            return hashlib.sha256(identity.encode()).hexdigest()[:10]
        return self.inner.cache_key(task, split)


def glue_eval_tasks(task):
    return tuple(glue.TASKS[name] for name in glue.EVAL_TASKS.get(task.name, (task.name,)))


class GlueFiles:
    """A GLUE task's folder of TSV files, read as the original processors did."""

    def __init__(self, task, folder):
        self.task, self.folder = task, folder
        self.eval_tasks = glue_eval_tasks(task)

    def check(self, wanted):
        if not self.folder.is_dir():
            raise UsageError(f"--data_dir {self.folder} is not a folder ({describe_missing(self.folder)}): point it at "
                             "the task's folder of TSV files")
        for split in wanted:
            for task in (self.task,) if split == "train" else self.eval_tasks:
                path = self.folder / task.file_for(split)
                if not path.is_file():
                    raise UsageError(f"missing data file {path} (it {describe_missing(path)}): put the task's {split} "
                                     "file there or fix --data_dir")

    def examples(self, task, split):
        return glue.read_split(task, self.folder / task.file_for(split), split)

    def read_labelled(self, path):
        return glue.read_split(self.task, Path(path), "dev")

    def cache_key(self, task, split):
        """The file's path, size and modification time: the same task from another folder, or an
        edited file, is another cache entry."""
        path = (self.folder / task.file_for(split)).resolve()
        stat = path.stat()
        return hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]


class GlueHub:
    """GLUE from the hub (nyu-mll/glue) through datasets, in the TSV reader's columns."""

    def __init__(self, task, cache_dir=None):
        self.task, self.cache_dir = task, cache_dir
        self.eval_tasks = glue_eval_tasks(task)

    def examples(self, task, split):
        import datasets

        hub_split = {"train": "train", "dev": task.hub_dev_split, "test": task.hub_test_split}[split]
        why = hub_unavailable("nyu-mll/glue", "datasets", self.cache_dir)
        if why:
            raise UsageError(f"cannot load GLUE {task.folder} from the hub ({why}): pass --data_dir <folder with its "
                             "TSV files>")
        try:
            data = datasets.load_dataset("nyu-mll/glue", task.hub_config, split=hub_split, cache_dir=self.cache_dir)
        except Exception as e:  # offline, unknown config, broken cache: all end the same way
            raise UsageError(f"cannot load GLUE {task.folder} from the hub ({first_line(e)}): "
                             "pass --data_dir <folder with its TSV files>") from None
        a, b = task.hub_columns
        return {"text_a": data[a], "text_b": data[b] if b else [None] * len(data),
                "label": hub_labels(task, split, data), "index": [str(i) for i in data["idx"]]}

    def read_labelled(self, path):
        return glue.read_split(self.task, Path(path), "dev")

    def cache_key(self, task, split):
        return f"hub-{task.hub_config}"


def hub_labels(task, split, data):
    if split == "test":
        return [None] * len(data)
    if task.is_regression:
        return [float(v) for v in data["label"]]
    names = data.features["label"].names  # the hub names MNLI's classes in another order
    by_name = set(names) == set(task.labels)  # "0"/"1" tasks keep their integers
    return [task.labels.index(names[v]) if by_name else v for v in data["label"]]
