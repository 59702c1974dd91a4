"""The runs of the paper's table (reproduce_paper.py): every method fine-tuned over a grid of
learning rates, batch sizes and seeds, the exit settings each is evaluated at, and the jobs that
train the runs and predict the test sets (the evaluation jobs follow from the runs that finished:
pabee/paper_grid/whole_table.py). A finished run is marked by DONE."""

from dataclasses import dataclass
from pathlib import Path

from pabee.base.choices import CLASSIFICATION_ONLY, STAGES
from pabee.base.errors import UsageError
from pabee.base.file_io import read_json
from pabee.data import glue
from pabee.early_exit.exit_settings import ExitSettings
from pabee.early_exit.rules import RULES
from pabee.modeling.backbones import BACKBONES, check_model_available, load_config
from pabee.paper_grid import paper_table
from pabee.paper_grid.jobs import Job

DONE = "reproduce_done.json"  # written once a run or an evaluation finished


@dataclass(frozen=True)
class Run:
    task: glue.Task
    model: str  # vanilla, k-layer, pabee, two_stage, self_distill
    learning_rate: str
    batch_size: int
    seed: int
    folder: Path

    def describe(self):
        return f"{self.task.folder} {self.model} lr={self.learning_rate} bs={self.batch_size} seed={self.seed}"


def check_tasks(settings):
    """The tasks, each with its training and dev file in --glue_dir."""
    tasks = [glue.find_task(name) for name in settings.tasks]
    for task in tasks:
        for split in ("train", "dev"):
            path = Path(settings.glue_dir) / task.folder / task.file_for(split)
            if not path.is_file():
                raise UsageError(f"missing {path}: put the GLUE data in --glue_dir (or GLUE_DIR)")
    return tasks


def model_depth(settings):
    check_model_available(settings.model_name_or_path, "model_name_or_path")
    return load_config(BACKBONES[settings.backbone], settings.model_name_or_path).num_hidden_layers


def methods_of(settings):
    """The method names to compare: --methods, else the paper's table."""
    return settings.methods or tuple(paper_table.METHODS)


def models_on(settings, task):
    """The models the compared methods need on `task`: not those whose training reads class logits
    on a regression task."""
    return [m for m in paper_table.models_for(methods_of(settings))
            if not (task.is_regression and paper_table.MODELS[m] in CLASSIFICATION_ONLY)]


def plan_runs(settings, tasks):
    out = Path(settings.output_dir)
    return [Run(task, model, lr, bs, seed, out / "runs" / task.folder / model / f"lr{lr}-bs{bs}-seed{seed}")
            for task in tasks for model in models_on(settings, task) for lr in settings.learning_rates
            for bs in settings.batch_sizes for seed in range(1, settings.seeds + 1)]


def steps_of(settings, run):
    """Optimizer steps of a run (both stages), from the training file's row count."""
    if settings.max_steps > 0:
        first = settings.max_steps
    else:
        path = Path(settings.glue_dir) / run.task.folder / "train.tsv"
        rows = sum(1 for _ in open(path, encoding="utf-8")) - run.task.train_has_header
        first = (rows // run.batch_size) * int(settings.num_train_epochs)
    return first * len(STAGES[paper_table.MODELS[run.model]])


def check_same_choice(settings, run):
    """A run folder trained holding out other rows (another --choose_on) is not reused or resumed."""
    saved = run.folder / "training_args.json"
    if not saved.is_file():
        return
    held = read_json(saved).get("data", {}).get("choose_exit_on") or {}  # runs of older code: dev
    was, now = (held.get("where", "dev"), held.get("percentage", 0.0)), (settings.choose_exit_on.where,
                                                                         settings.choose_exit_on.percentage)
    if was != now:
        said = {"dev": "dev", "train": f"train:{was[1]:g}"}.get(was[0], was[0])
        raise UsageError(f"{run.folder} was trained for --choose_on {said}, not this call's: call with --choose_on "
                         f"{said}, or give another --output_dir")


def exits_to_evaluate(settings, task, model, depth):
    """The exit settings (ExitSettings) to evaluate on dev for a model: every setting of the
    criteria its compared methods use (PABEE's patience always, for the speed-up others match)."""
    patience = ",".join(str(p) for p in range(depth))
    grids = {"patience": (patience, ""), "entropy": ("0", settings.entropy_thresholds),
             "confidence": ("0", settings.confidence_thresholds), "fixed": ("0", ",".join(map(str, range(1, depth + 1)))),
             "kl_patience": ("1,2,3", settings.divergence_thresholds), "js_patience": ("1,2,3", settings.divergence_thresholds),
             "entropy_patience": ("1,2,3", settings.entropy_thresholds), "past_entropy": ("0", settings.entropy_thresholds),
             "lte": ("0", settings.lte_thresholds), "energy": ("0", settings.energy_thresholds)}
    criteria = [criterion for m in methods_of(settings)
                for _, criterion, how, needs, _ in [paper_table.ALL_METHODS[m]] if needs == model and not how.startswith("full depth")]
    criteria = (["patience"] if model == "pabee" else []) + criteria
    return [ExitSettings.parse(c, *grids[c], settings.regression_threshold) for c in dict.fromkeys(criteria)
            if not (task.is_regression and RULES[c].needs_probabilities)]


def check_runs(settings, runs):
    for run in runs:
        check_same_choice(settings, run)


def train_jobs(runs):
    return [Job(f"train:{i}", f"{run.describe()}: training", str(run.folder))
            for i, run in enumerate(runs, start=1) if not (run.folder / DONE).is_file()]


def evaluation_markers(settings, run, depth):
    return [run.folder / f"reproduce_{exits.criterion}.json"
            for exits in exits_to_evaluate(settings, run.task, run.model, depth)]


def prediction_marker(run, criterion, setting):
    return run.folder / f"reproduce_predict_{criterion}-{setting}.json"


def predictions_of(table, run):
    """(criterion, setting) of each table cell whose submission comes from `run` (its first seed)."""
    return list(dict.fromkeys((cell["criterion"], cell["setting"]) for key, cell in table["cells"].items()
                              if table["runs"][cell_model(key)][0] == str(run.folder)))


def cell_model(key):
    """The "model|task" a table cell's key "method|task" reads."""
    method, task = key.split("|")
    return f"{paper_table.ALL_METHODS[method][3]}|{task}"


def submission_jobs(settings, table, runs):
    """A prediction job per run whose cells' settings it has not predicted on a task with a test file."""
    index = {str(run.folder): i for i, run in enumerate(runs, start=1)}
    jobs = []
    for run in runs:
        task = run.task
        wanted = [p for p in predictions_of(table, run) if not prediction_marker(run, *p).is_file()]
        if wanted and (Path(settings.glue_dir) / task.folder / task.file_for("test")).is_file():
            jobs.append(Job(f"predict:{index[str(run.folder)]}", f"{run.describe()}: on test", str(run.folder)))
    return jobs
