"""The paper's table in one command (reproduce_paper.py): every method fine-tuned in this code over a
grid and several seeds through pabee.run, each method's grid point chosen on dev at full depth,
exit settings evaluated on dev, one table across tasks (pabee.paper), GLUE submission files and a
plot per task. Restartable: a finished run (marked by DONE) or evaluation is reused, a killed run
resumes from its last checkpoint."""

import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

from pabee import glue, paper
from pabee.backbones import BACKBONES, check_model_available, load_config
from pabee.checkpoints import list_checkpoints
from pabee.errors import UsageError
from pabee.files import read_json, write_json, write_text
from pabee.jobs import Job
from pabee.report import draw_tradeoff
from pabee.results import read_calibration, read_rows
from pabee.run import run as run_glue
from pabee.exit_rules import RULES
from pabee.options import CLASSIFICATION_ONLY, STAGES
from pabee.settings import DataSettings, EvalSettings, ExitSettings, ModelSettings, RunSettings, TrainingSettings

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
    return settings.methods or tuple(paper.METHODS)


def models_on(settings, task):
    """The models the compared methods need on `task`: not those whose training reads class logits
    on a regression task."""
    return [m for m in paper.models_for(methods_of(settings))
            if not (task.is_regression and paper.MODELS[m] in CLASSIFICATION_ONLY)]


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
    return first * len(STAGES[paper.MODELS[run.model]])


def run_settings(settings, run, model, exits, training=None, do_predict=False):
    """What pabee.run does for one run: train it (`training`) or evaluate `exits` on dev."""
    return RunSettings(
        output_dir=str(run.folder),
        model=ModelSettings(settings.backbone, model, do_lower_case=settings.do_lower_case,
                            exit_pooling=settings.exit_pooling),
        data=DataSettings(task_name=run.task.folder, data_dir=str(Path(settings.glue_dir) / run.task.folder),
                          max_seq_length=settings.max_seq_length, choose_exit_on=settings.choose_exit_on),
        exits=exits, training=training, do_eval=True, do_predict=do_predict,
        evaluation=EvalSettings(per_gpu_eval_batch_size=settings.per_gpu_eval_batch_size), seed=run.seed,
        overwrite_output_dir=True)


def train(settings, run, depth):
    """Fine-tunes one run (or resumes it from its last checkpoint); a finished run is reused."""
    check_same_choice(settings, run)
    if (run.folder / DONE).is_file():
        return "reused"
    checkpoints = list_checkpoints(run.folder)
    training = TrainingSettings(
        exit_training=paper.MODELS[run.model], head_bias_init="label_prior",
        num_hidden_layers=(settings.k_layers or max(1, depth // 2)) if run.model == "k-layer" else 0,
        per_gpu_train_batch_size=run.batch_size, learning_rate=float(run.learning_rate),
        num_train_epochs=settings.num_train_epochs, max_steps=settings.max_steps,
        logging_steps=50, save_steps=max(1, steps_of(settings, run) // 4))
    start = str(checkpoints[-1]) if checkpoints else settings.model_name_or_path
    exits = ExitSettings(regression_threshold=settings.regression_threshold)
    run_glue(run_settings(settings, run, start, exits, training))
    for checkpoint in list_checkpoints(run.folder):
        shutil.rmtree(checkpoint)  # the run is done: its final model is all that is read from now on
    write_json(run.folder / DONE, {"run": run.describe()})
    return "resumed" if checkpoints else "trained"


def evaluate(settings, run, exits, predict=False):
    """Exit settings `exits` of one finished run on dev (rows added to its pabee_results.json); once."""
    marker = prediction_marker(run, exits.criterion, exits.settings[0]) if predict else \
        run.folder / f"reproduce_{exits.criterion}.json"
    if marker.is_file():
        return
    run_glue(run_settings(settings, run, str(run.folder), exits, do_predict=predict))
    write_json(marker, {"criterion": exits.criterion, "settings": list(exits.settings)})


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


def full_depth(run, calibration=False):
    return next(r for r in final_rows(run, calibration) if r.criterion == "patience" and r.setting == 0)


def chosen_runs(runs, task, model, calibration=False):
    """The seeds of the grid point with the best median full-depth metric, on the rows settings are
    chosen on (`calibration`: those held out of training, else dev)."""
    metric = paper.columns_of(task.name)[0]
    mine = [r for r in runs if r.task == task and r.model == model]
    points = sorted({(r.learning_rate, r.batch_size) for r in mine})
    best = max(points, key=lambda p: statistics.median(
        full_depth(r, calibration).metrics[metric] for r in mine if (r.learning_rate, r.batch_size) == p))
    return [r for r in mine if (r.learning_rate, r.batch_size) == best]


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
                for _, criterion, how, needs, _ in [paper.ALL_METHODS[m]] if needs == model and not how.startswith("full depth")]
    criteria = (["patience"] if model == "pabee" else []) + criteria
    return [ExitSettings.parse(c, *grids[c], settings.regression_threshold) for c in dict.fromkeys(criteria)
            if not (task.is_regression and RULES[c].needs_probabilities)]


def final_rows(run, calibration=False):
    """The final model's dev rows of its task, or with `calibration` its rows held out of training."""
    rows = read_calibration(run.folder)[0] if calibration else read_rows(run.folder / "pabee_results.json")
    return [r for r in rows if r.checkpoint == "final" and r.task == run.task.name]


def held_out_rows(settings):
    return (f"{settings.choose_exit_on.percentage:g}% of each run's training rows, held out of its training "
            "(seeded by the run's seed)")


def check_runs(settings, runs):
    for run in runs:
        check_same_choice(settings, run)


def train_jobs(runs):
    return [Job(f"train:{i}", f"{run.describe()}: training", str(run.folder))
            for i, run in enumerate(runs, start=1) if not (run.folder / DONE).is_file()]


def evaluation_markers(settings, run, depth):
    return [run.folder / f"reproduce_{exits.criterion}.json"
            for exits in exits_to_evaluate(settings, run.task, run.model, depth)]


def do_job(settings, runs, depth, key):
    """One piece of the grid, as a launcher's --job names it: train:I (run I, 1-based, of the plan),
    evaluate:I (run I's exit settings on dev), predict:I (run I on test at the setting of each
    paper_table.json cell it stands for)."""
    kind, index = key.split(":")
    run = runs[int(index) - 1]
    if kind == "train":
        print(f"{run.describe()}: {train(settings, run, depth)}", flush=True)
    elif kind == "evaluate":
        for exits in exits_to_evaluate(settings, run.task, run.model, depth):
            evaluate(settings, run, exits)
    elif kind == "predict":
        for criterion, setting in predictions_of(read_json(Path(settings.output_dir) / "paper_table.json"), run):
            evaluate(settings, run, ExitSettings(criterion, (setting,), settings.regression_threshold), predict=True)
    else:
        raise UsageError(f"--job {key}: give train:I, evaluate:I or predict:I")


def prediction_marker(run, criterion, setting):
    return run.folder / f"reproduce_predict_{criterion}-{setting}.json"


def predictions_of(table, run):
    """(criterion, setting) of each table cell whose submission comes from `run` (its first seed)."""
    return list(dict.fromkeys((cell["criterion"], cell["setting"]) for key, cell in table["cells"].items()
                              if table["runs"][cell_model(key)][0] == str(run.folder)))


def cell_model(key):
    """The "model|task" a table cell's key "method|task" reads."""
    method, task = key.split("|")
    return f"{paper.ALL_METHODS[method][3]}|{task}"


def reproduce(settings, tasks, runs, depth, grid):
    """Every run trained, the chosen ones evaluated, the table, submissions and plots written.
    `grid` (pabee.grid.Grid) runs the jobs; the table is made of the runs that finished and names
    the others."""
    out = Path(settings.output_dir)
    check_runs(settings, runs)
    failed = grid.run(train_jobs(runs))
    finished = [r for r in runs if (r.folder / DONE).is_file()]
    held_out = settings.choose_exit_on.where == "train"
    picked = {(task.name, model): chosen_runs(finished, task, model, held_out)
              for task in tasks for model in models_on(settings, task)
              if any(r.task == task and r.model == model for r in finished)}
    index = {run: i for i, run in enumerate(runs, start=1)}
    failed += grid.run([Job(f"evaluate:{index[run]}", f"{run.describe()}: exit settings on dev", str(run.folder))
                      for chosen in picked.values() for run in chosen
                      if not all(m.is_file() for m in evaluation_markers(settings, run, depth))])
    evaluated = {pair: chosen for pair, chosen in picked.items()
                 if all(m.is_file() for run in chosen for m in evaluation_markers(settings, run, depth))}
    results = {(model, task): [final_rows(r) for r in chosen] for (task, model), chosen in evaluated.items()}
    choose = {(model, task): [final_rows(r, calibration=True) for r in chosen] for (task, model), chosen in evaluated.items()}
    table = paper.build_table(results, [t.name for t in tasks], settings.tolerance,
                              Path(settings.model_name_or_path).name, methods_of(settings), choose if held_out else None,
                              held_out_rows(settings) if held_out else paper.DEV)
    table["runs"] = {f"{m}|{t}": [str(r.folder) for r in rs] for (t, m), rs in evaluated.items()}
    table["missing"] = [f"{job.describe} ({job.folder})" for job in failed]
    write_tables(out, table)
    missing = grid.run(submission_jobs(settings, table, runs))
    if missing:  # said in the table's files too
        table["missing"] += [f"{job.describe} ({job.folder})" for job in missing]
        write_tables(out, table)
    write_submissions(settings, table)
    plot_tasks(settings, tasks, results, out)
    print(paper.markdown(table))
    print(f"Wrote {out / 'paper_table.md'}, .json and .tex" + (f"; {len(failed + missing)} job(s) failed, listed as "
                                                           "missing: call again to retry them" if failed + missing else ""))
    return failed + missing


def write_tables(out, table):
    write_json(out / "paper_table.json", table)
    write_text(out / "paper_table.md", paper.markdown(table))
    write_text(out / "paper_table.tex", paper.latex(table))


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


def write_submissions(settings, table):
    """Each method's chosen setting on the test set of its first seed's run, as GLUE expects."""
    for key, cell in table["cells"].items():
        method, task_name = key.split("|")
        task = glue.TASKS[task_name]
        source = Path(table["runs"][cell_model(key)][0]) / "predictions" / f"{cell['criterion']}-{cell['setting']}"
        folder = Path(settings.output_dir) / "submission" / paper.method_folder(method)
        for name in ([task.submission] + (["MNLI-mm.tsv"] if task.name == "mnli" else [])):
            if (source / name).is_file():
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(source / name, folder / name)


def plot_tasks(settings, tasks, results, out):
    """One trade-off plot per task: each method's dev metric against speed-up (first seed); the
    full-depth methods as their one point."""
    for task in tasks:
        metric = paper.columns_of(task.name)[0]
        series = []
        for method in methods_of(settings):
            _, criterion, how, model, _ = paper.ALL_METHODS[method]
            seed_rows = results.get((model, task.name))
            points = sorted((r for r in (seed_rows or [[]])[0] if r.criterion == criterion
                             and (not how.startswith("full depth") or r.setting == 0)), key=lambda r: r.speed_up)
            if points:
                series.append((method, points))
        draw_tradeoff([{"metric": metric, "series": series, "ylabel": f"dev {metric}",
                        "title": f"{task.folder}: every method on dev"}], out / f"paper_tradeoff_{task.folder}.png")
