"""The one row type that results travel in, from evaluation to every file, table and plot: one exit
setting (or one layer's own head) of one checkpoint on one task. Also the choices made from rows:
the fastest setting that keeps a metric within a tolerance of full depth, and timings too
unsteady to trust."""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pabee.base.file_io import read_json
from pabee.data import glue

TIMING = ("seconds", "full_depth_seconds", "wallclock_speed_up", "wallclock_min", "wallclock_max")


@dataclass(frozen=True)
class ResultRow:
    """One exit setting (or one layer's own head: criterion "layer") of one checkpoint on one
    task. As JSON its metrics sit beside the other keys, and patience rows repeat their
    setting as "patience", as the files have always had it."""

    checkpoint: str
    task: str
    criterion: str
    setting: int | float
    n: int
    mean_exit_layer: float
    speed_up: float  # L / mean exit layer
    original_speed_up: float  # the originals' "Speed Up", 1 - mean / L
    metrics: dict = field(default_factory=dict)
    seconds: float | None = None  # with --timed_inference: medians over the repetitions
    full_depth_seconds: float | None = None
    wallclock_speed_up: float | None = None  # median of full depth / this setting, round by round
    wallclock_min: float | None = None
    wallclock_max: float | None = None
    main_metric: str | None = None  # the task's metric for tables and plots (rows of older runs lack it)
    training: str | None = None  # how the model was fine-tuned (its config's exit_training)
    regression_threshold: float | None = None  # patience rows of regression tasks: what "agree" meant
    exits_per_layer: list | None = None  # how many examples exit at layers 1..L
    ignores_input: str | None = None  # what shows that its answers ignore the input (evaluation.collapse)
    fp32_metric: float | None = None  # a quantized model's row: its main metric at fp32 (run_glue --quantize)

    @property
    def main(self):
        return self.main_metric or glue.TASKS[self.task].metric

    @property
    def key(self):
        return self.checkpoint, self.task, self.criterion, self.setting

    @property
    def timed(self):
        return self.wallclock_speed_up is not None

    def to_json(self):
        row = {k: v for k, v in asdict(self).items() if k != "metrics" and v is not None}
        head = {k: row.pop(k) for k in ("checkpoint", "task", "criterion", "setting")}
        patience = {"patience": self.setting} if self.criterion == "patience" else {}
        timing = {k: row.pop(k) for k in TIMING if k in row}
        return {**head, **patience, **row, **self.metrics, **timing}

    @classmethod
    def from_json(cls, row):
        own = {f.name for f in fields(cls)} - {"metrics"}
        return cls(**{k: v for k, v in row.items() if k in own},
                   metrics={k: v for k, v in row.items() if k not in own and k != "patience"})


UNSTEADY = 0.2  # timings whose ratios spread over more than this fraction of their median are flagged


def unsteady(row):
    """True when a timed row's speed-ups spread too far between repetitions to trust."""
    return row.timed and (row.wallclock_max - row.wallclock_min) > UNSTEADY * row.wallclock_speed_up


def fastest_within(candidates, full_depth, tolerance):
    """The key of the fastest candidate whose metric stays within `tolerance` of `full_depth`;
    `candidates` are (key, metric, speed-up) triples; ties go to the first. None if none qualifies."""
    good = [c for c in candidates if c[1] >= full_depth - tolerance]
    return max(good, key=lambda c: c[2])[0] if good else None


CALIBRATION = "calibration_results.json"  # run_glue --choose_exit_on's rows, apart from dev's


def read_calibration(folder):
    """(rows, what they were measured on) of a run's calibration_results.json; ([], None) if absent."""
    path = Path(folder) / CALIBRATION
    if not path.is_file():
        return [], None
    saved = read_json(path)
    return [ResultRow.from_json(r) for r in saved["rows"]], saved["chosen_on"]


def read_rows(path):
    """The rows of a results file (eval_results.json, pabee_results.json); none if it is absent."""
    return [ResultRow.from_json(r) for r in read_json(path)] if Path(path).is_file() else []


def run_of(folder):
    """(the run folder that wrote `folder`, the name its rows give `folder`: "final" or checkpoint-N)."""
    from pabee.base.run_folder import NAME as CHECKPOINT_NAME

    folder = Path(folder)
    checkpoint = folder.name if CHECKPOINT_NAME.fullmatch(folder.name) else "final"
    return (folder.parent if checkpoint != "final" else folder), checkpoint


def run_rows(folder):
    """(rows, what they were measured on) of the run that wrote `folder` (a checkpoint: its own),
    of its first task: the calibration rows when run_glue --choose_exit_on gave some, else dev's."""
    run, checkpoint = run_of(folder)
    calibration, on = read_calibration(run)
    rows = [r for r in calibration if r.checkpoint == checkpoint]
    if not rows:
        rows, on = dev_rows(folder), "dev"
    return ([r for r in rows if r.task == rows[0].task] if rows else []), on


def dev_rows(folder):
    """The dev rows of `folder` (a run folder or one of its checkpoints) in its run's results."""
    run, checkpoint = run_of(folder)
    return [r for r in read_rows(run / "pabee_results.json") if r.checkpoint == checkpoint]
