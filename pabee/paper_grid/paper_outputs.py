"""What the paper's grid writes once its runs are done: the grid point of each method chosen on dev
at full depth, one table across tasks (pabee/paper_grid/paper_table.py), GLUE submission files and
a plot per task."""

import shutil
import statistics
from pathlib import Path

from pabee.base.file_io import write_json, write_text
from pabee.data import glue
from pabee.paper_grid import paper_table
from pabee.paper_grid.run_plan import cell_model, methods_of
from pabee.scoring.report import draw_tradeoff
from pabee.scoring.result_rows import read_calibration, read_rows


def full_depth(run, calibration=False):
    return next(r for r in final_rows(run, calibration) if r.criterion == "patience" and r.setting == 0)


def chosen_runs(runs, task, model, calibration=False):
    """The seeds of the grid point with the best median full-depth metric, on the rows settings are
    chosen on (`calibration`: those held out of training, else dev)."""
    metric = paper_table.columns_of(task.name)[0]
    mine = [r for r in runs if r.task == task and r.model == model]
    points = sorted({(r.learning_rate, r.batch_size) for r in mine})
    best = max(points, key=lambda p: statistics.median(
        full_depth(r, calibration).metrics[metric] for r in mine if (r.learning_rate, r.batch_size) == p))
    return [r for r in mine if (r.learning_rate, r.batch_size) == best]


def final_rows(run, calibration=False):
    """The final model's dev rows of its task, or with `calibration` its rows held out of training."""
    rows = read_calibration(run.folder)[0] if calibration else read_rows(run.folder / "pabee_results.json")
    return [r for r in rows if r.checkpoint == "final" and r.task == run.task.name]


def held_out_rows(settings):
    return (f"{settings.choose_exit_on.percentage:g}% of each run's training rows, held out of its training "
            "(seeded by the run's seed)")


def write_tables(out, table):
    write_json(out / "paper_table.json", table)
    write_text(out / "paper_table.md", paper_table.markdown(table))
    write_text(out / "paper_table.tex", paper_table.latex(table))


def write_submissions(settings, table):
    """Each method's chosen setting on the test set of its first seed's run, as GLUE expects."""
    for key, cell in table["cells"].items():
        method, task_name = key.split("|")
        task = glue.TASKS[task_name]
        source = Path(table["runs"][cell_model(key)][0]) / "predictions" / f"{cell['criterion']}-{cell['setting']}"
        folder = Path(settings.output_dir) / "submission" / paper_table.method_folder(method)
        for name in ([task.submission] + (["MNLI-mm.tsv"] if task.name == "mnli" else [])):
            if (source / name).is_file():
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(source / name, folder / name)


def plot_tasks(settings, tasks, results, out):
    """One trade-off plot per task: each method's dev metric against speed-up (first seed); the
    full-depth methods as their one point."""
    for task in tasks:
        metric = paper_table.columns_of(task.name)[0]
        series = []
        for method in methods_of(settings):
            _, criterion, how, model, _ = paper_table.ALL_METHODS[method]
            seed_rows = results.get((model, task.name))
            points = sorted((r for r in (seed_rows or [[]])[0] if r.criterion == criterion
                             and (not how.startswith("full depth") or r.setting == 0)), key=lambda r: r.speed_up)
            if points:
                series.append((method, points))
        draw_tradeoff([{"metric": metric, "series": series, "ylabel": f"dev {metric}",
                        "title": f"{task.folder}: every method on dev"}], out / f"paper_tradeoff_{task.folder}.png")
