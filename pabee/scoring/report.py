"""Everything a run shows and writes of its results: the console lines, eval_results.txt/.json,
pabee_results.json/.md, the trade-off plot, TensorBoard, and GLUE submission files. The markdown
table and the trade-off plot are drawn here for every caller (reproduce_paper's table and plots,
the demo's table)."""

import logging
from pathlib import Path

from pabee.base.file_io import write_json, write_text
from pabee.base.run_folder import checkpoint_step
from pabee.data import glue
from pabee.early_exit.rules import RULES
from pabee.scoring.result_rows import CALIBRATION, UNSTEADY, read_calibration, read_rows, unsteady

logger = logging.getLogger(__name__)


def exit_line(criterion, setting, mean_exit_layer, original_speed_up, speed_up):
    """The originals' log line (their "Speed Up" is 1 - avg/L), with the true ratio beside it."""
    return (f"*** {RULES[criterion].log_name or criterion} = {setting} Avg. Inference Layers = {mean_exit_layer:.2f} "
            f"Speed Up = {original_speed_up:.2f} *** (speed-up L/avg = {speed_up:.2f}x)")


def print_exit_lines(rows):
    """The originals' `*** Patience = p ...` line for every exit setting, under a line that says
    which checkpoint and task the block is about."""
    for checkpoint, task in dict.fromkeys((r.checkpoint, r.task) for r in rows if r.criterion != "layer"):
        print(f"***** Eval results {checkpoint} ({task}) *****", flush=True)
        block = [r for r in rows if (r.checkpoint, r.task) == (checkpoint, task) and r.criterion != "layer"]
        for r in block:
            wallclock = (f" wall-clock {r.wallclock_speed_up:.2f}x (min {r.wallclock_min:.2f}x, max "
                         f"{r.wallclock_max:.2f}x)") if r.timed else ""
            quantized = "" if r.fp32_metric is None else f" {r.main} {r.metrics[r.main]:.4f} (fp32 {r.fp32_metric:.4f})"
            print(exit_line(r.criterion, r.setting, r.mean_exit_layer, r.original_speed_up, r.speed_up) + quantized
                  + wallclock, flush=True)
        if any(unsteady(r) for r in block):
            logger.warning("wall-clock speed-ups of %s (%s) vary by more than %d%% between repetitions: the machine "
                           "is busy or the set too small to time; read them as rough, or raise --timing_repeats",
                           checkpoint, task, UNSTEADY * 100)


def warn_ignored_inputs(rows):
    """One warning line per checkpoint and task naming the exit settings and layers' heads whose
    answers ignore the input (ResultRow.ignores_input), each with its main metric, beside full
    depth's: their speed-up is no speed-up."""
    for checkpoint, task in dict.fromkeys((r.checkpoint, r.task) for r in rows):
        mine = [r for r in rows if (r.checkpoint, r.task) == (checkpoint, task)]
        ignoring = [r for r in mine if r.ignores_input]
        full = max((r for r in mine if r.criterion == "layer"), key=lambda r: r.setting, default=None)
        if not ignoring or full is None:
            continue
        named = ", ".join(f"{r.criterion} {r.setting} ({r.metrics[r.main]:.4f})" for r in ignoring)
        logger.warning("%s (%s): the answers of %s ignore the input (one class for nearly every example; "
                       "regression: no correlation with the labels, or answers that hardly vary); full depth %s %.4f. "
                       "predict.py's chosen exit skips them; docs/real_model.md says what helps", checkpoint, task,
                       named, full.main, full.metrics[full.main])


def merged_with_saved(path, rows):
    """The rows saved at `path` by earlier runs in the same output dir, then `rows`: a row this
    run measured again (same checkpoint, task, criterion, setting) replaces the saved one."""
    return list({r.key: r for r in read_rows(path) + rows}.values())


def write_eval_results(output_dir, rows):
    """eval_results.json and the original's eval_results.txt (`key = value`, keys suffixed by the
    exit setting; one per checkpoint and task, MNLI's mismatched set in <output_dir>-MM as the
    original) hold the same rows: every exit setting measured in this output dir."""
    rows = merged_with_saved(Path(output_dir) / "eval_results.json", [r for r in rows if r.criterion != "layer"])
    write_json(Path(output_dir) / "eval_results.json", [r.to_json() for r in rows])
    for checkpoint, task in dict.fromkeys((r.checkpoint, r.task) for r in rows):
        folder = Path(output_dir + ("-MM" if task == "mnli-mm" else ""))
        folder = folder / checkpoint if checkpoint.startswith("checkpoint-") else folder
        folder.mkdir(parents=True, exist_ok=True)
        mine = [r for r in rows if (r.checkpoint, r.task) == (checkpoint, task)]
        write_text(folder / "eval_results.txt", "\n".join(eval_results_lines(mine)) + "\n")


def write_calibration(output_dir, rows, chosen_on):
    """calibration_results.json: every exit setting and layer on the rows predict.py's exit is
    chosen on (run_glue --choose_exit_on), and what those rows are (`chosen_on`). Rows measured
    earlier on the same rows are kept unless measured again."""
    path = Path(output_dir) / CALIBRATION
    earlier, on = read_calibration(output_dir)
    merged = list({r.key: r for r in (earlier if on == chosen_on else []) + rows}.values())
    write_json(path, {"chosen_on": chosen_on, "rows": [r.to_json() for r in merged]})
    logger.info("exit settings on %s: %s", chosen_on, path)


def eval_results_lines(rows):
    # the originals' keys: not the fields they lacked
    skip = {"checkpoint", "task", "criterion", "setting", "patience", "ignores_input", "exits_per_layer"}
    return [f"{key}_{r.criterion}_{r.setting} = {value}"
            for r in rows for key, value in sorted(r.to_json().items()) if key not in skip]


def write_report(output_dir, rows, final_step):
    """pabee_results.json / .md / pabee_tradeoff.png in output_dir, and the rows in
    TensorBoard. Rows of earlier runs in the same output_dir are kept unless re-measured:
    evaluating one criterion per run builds up the comparison."""
    out = Path(output_dir)
    rows = merged_with_saved(out / "pabee_results.json", rows)
    write_json(out / "pabee_results.json", [r.to_json() for r in rows])
    write_text(out / "pabee_results.md", markdown_table(rows))
    plot_tradeoff(rows, out / "pabee_tradeoff.png")
    log_rows_to_tensorboard(out / "runs", rows, final_step)


def markdown(header, lines):
    """A markdown table: a header row, then one row of cells per line."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(str(c) for c in cells) + " |" for cells in lines]) + "\n"


def markdown_table(rows):
    """The results table: the plotted (main) metric of each task leads, then the others; per-label
    F1 (f1[name]) stays in the JSON rows."""
    metrics = list(dict.fromkeys([r.main for r in rows] + [k for r in rows for k in r.metrics if "[" not in k]))
    timed = any(r.timed for r in rows)
    quantized = any(r.fp32_metric is not None for r in rows)
    header = ["checkpoint", "task", "criterion", "setting", *metrics, *(["main metric at fp32"] if quantized else []),
              "mean exit layer", "speed-up"]
    lines = []
    for r in rows:
        cells = [r.checkpoint, r.task, r.criterion, r.setting,
                 *[f"{r.metrics[m]:.4f}" if m in r.metrics else "" for m in metrics],
                 *([f"{r.fp32_metric:.4f}" if r.fp32_metric is not None else ""] if quantized else []),
                 f"{r.mean_exit_layer:.2f}", f"{r.speed_up:.2f}x"]
        if timed:
            cells.append(f"{r.wallclock_speed_up:.2f}x ({r.wallclock_min:.2f}-{r.wallclock_max:.2f})" if r.timed else "")
        lines.append(cells)
    return markdown(header + (["wall-clock speed-up"] if timed else []), lines)


def plot_tradeoff(rows, path):
    """The task's main metric against speed-up: a line per criterion, a point per layer's own
    head, the full-depth value as a reference line; one panel per task, for the final model
    (else the first checkpoint). Settings that land on the same point share one label."""
    checkpoint = "final" if any(r.checkpoint == "final" for r in rows) else rows[0].checkpoint
    panels = []
    for name in dict.fromkeys(r.task for r in rows if r.checkpoint == checkpoint):
        mine = [r for r in rows if r.checkpoint == checkpoint and r.task == name]
        metric = mine[0].main
        series = [(criterion, sorted((r for r in mine if r.criterion == criterion), key=lambda r: r.speed_up))
                  for criterion in dict.fromkeys(r.criterion for r in mine)]
        full = max((r for r in mine if r.criterion == "layer"), key=lambda r: r.setting, default=None)
        values = [r.metrics[metric] for r in mine]
        panels.append({"metric": metric, "series": series, "full_depth": full and full.metrics[metric],
                       "ylabel": f"dev {metric} (the task's main metric)",
                       "title": f"{name} ({checkpoint}): dev {metric} against speed-up\n"
                                f"{metric} spans {min(values):.4f}-{max(values):.4f} (mind the y-axis range)"})
    draw_tradeoff(panels, path)


def draw_tradeoff(panels, path):
    """Panels side by side, each a metric against speed-up: `series` are (label, rows) drawn as a
    line with each point labelled by its setting, except "layer" rows (single layers), drawn as
    crosses; `full_depth`, when given, is a dashed reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        metric = panel["metric"]
        for k, (label, points) in enumerate(panel["series"]):
            x, y = [r.speed_up for r in points], [r.metrics[metric] for r in points]
            layer = label == "layer"
            if layer:
                ax.scatter(x, y, marker="x", color="grey", label="single layer (internal classifier)", zorder=3)
            else:
                ax.plot(x, y, marker="o", label=label, color=f"C{k}")
            for (px, py), settings in same_point_labels(points, metric).items():
                ax.annotate(",".join(("L" if layer else "") + str(s) for s in settings), (px, py), fontsize=7,
                            color="grey" if layer else f"C{k}", textcoords="offset points",
                            xytext=(3, -9) if layer else (3, 3 + 8 * k))  # criteria apart
        if panel.get("full_depth") is not None:
            ax.axhline(panel["full_depth"], color="black", linewidth=0.8, linestyle="--",
                       label=f"full depth ({panel['full_depth']:.4f})")
        ax.set_xlabel("speed-up (layers: L / mean exit layer)")
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def same_point_labels(points, metric):
    """{(speed-up, metric): [settings]}: settings with the same result are labelled once."""
    labels = {}
    for r in points:
        labels.setdefault((round(r.speed_up, 3), round(r.metrics[metric], 4)), []).append(r.setting)
    return labels


def log_rows_to_tensorboard(folder, rows, final_step):
    """Each row's metrics and speed-up, tagged by task and exit setting, at its checkpoint's step."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for r in rows:
            step = checkpoint_step(r.checkpoint) if r.checkpoint.startswith("checkpoint-") else final_step
            for name, value in {**r.metrics, "speed_up": r.speed_up}.items():
                writer.add_scalar(f"pabee/{r.task}/{r.criterion}={r.setting}/{name}", value, step)


def write_submissions(output_dir, criterion, test_sets, predictions):
    """GLUE submission files, one folder per exit setting, e.g. predictions/patience-3/RTE.tsv."""
    for (setting, task_name), values in predictions.items():
        test = next(t for t in test_sets if t.task.name == task_name)
        folder = Path(output_dir) / "predictions" / f"{criterion}-{setting}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["index\tprediction"] + [f"{index}\t{glue.submission_value(test.task, p)}"
                                         for index, p in zip(test.index, values, strict=True)]
        write_text(folder / test.task.submission, "\n".join(lines) + "\n")
        logger.info("Wrote %s", folder / test.task.submission)
