"""The paper's table in one command: every method fine-tuned in this code over a small grid and
several seeds, each method's run chosen on dev at full depth, exit settings evaluated on dev, one
table across tasks (paper_table.md/.json/.tex), GLUE submission files and a plot per task.

    python reproduce_paper.py BACKBONE [TASK ...] [--glue_dir DIR] [--output_dir DIR] ...

Restartable: finished runs and evaluations are reused, a killed run resumes from its last
checkpoint, and calling again after a crash ends with the same table. --dry_run prints the plan.
"""

import argparse
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import glue
import paper
from backbones import BACKBONES
from runtime import UsageError, write_json

# The grid as we read the paper (section 4): batch sizes {16, 32, 128}, learning rates
# {1e-5, 2e-5, 3e-5, 5e-5}, the median of 5 runs.
LEARNING_RATES = "1e-5,2e-5,3e-5,5e-5"
BATCH_SIZES = "16,32,128"
ENTROPY = "0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.8,1.0"
CONFIDENCE = "0.5,0.6,0.7,0.8,0.9,0.95,0.99"
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


def build_parser():
    p = argparse.ArgumentParser(prog="reproduce_paper.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("backbone", help="bert or albert (any --model_type of run_glue.py).")
    add("tasks", nargs="*", default=paper.PAPER_TASKS, help="GLUE tasks (default: the paper's eight).")
    add("--glue_dir", default=os.environ.get("GLUE_DIR", "./glue_data"), help="Folder of the GLUE task folders.")
    add("--output_dir", default=None, help="Where runs, tables, plots and submissions go (default ./output/paper/BACKBONE).")
    add("--model_name_or_path", default=None, help="Model to fine-tune (default: MODEL_NAME_OR_PATH, else the "
        "backbone's default checkpoint).")
    add("--learning_rates", default=LEARNING_RATES, help="Comma list of learning rates of the grid.")
    add("--batch_sizes", default=BATCH_SIZES, help="Comma list of batch sizes of the grid.")
    add("--seeds", type=int, default=5, help="Runs per grid point (seeds 1..N); tables show the median.")
    add("--num_train_epochs", type=float, default=3.0, help="Epochs per run, unless --max_steps.")
    add("--max_steps", type=int, default=-1, help="If > 0: steps per run (and per second stage) instead of epochs.")
    add("--max_seq_length", type=int, default=128, help="As run_glue.py.")
    add("--k_layers", type=int, default=0, help="Layers of the k-layer baseline (default: half the model's).")
    add("--tolerance", type=float, default=0.01, help="PABEE's patience: the fastest within this of full depth on dev.")
    add("--regression_threshold", type=float, default=0.1, help="STS-B's agreement threshold (scores 0-5).")
    add("--entropy_thresholds", default=ENTROPY, help="DeeBERT's thresholds to evaluate.")
    add("--confidence_thresholds", default=CONFIDENCE, help="Shallow-Deep's thresholds to evaluate.")
    add("--per_gpu_eval_batch_size", type=int, default=64, help="As run_glue.py.")
    add("--exit_pooling", choices=["first", "mean"], default=None,
        help="What every head reads, for every model (default: first token, the paper; see README on small models).")
    add("--do_lower_case", action="store_true", help="As run_glue.py (uncased models).")
    add("--dry_run", action="store_true", help="Print the plan (runs, steps per run) and stop.")
    return p


def numbers(text, flag, kind=float):
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--{flag} {text}: give a comma list of numbers") from None
    if not values or not all(v > 0 and math.isfinite(v) for v in values):
        raise UsageError(f"--{flag} {text}: give a comma list of numbers > 0")
    return values


def check(flags):
    """Everything checked before anything is written; returns the tasks."""
    if flags.backbone not in BACKBONES:
        raise UsageError(f"unknown backbone '{flags.backbone}': choose one of {', '.join(BACKBONES)}")
    if flags.seeds < 1:
        raise UsageError(f"--seeds {flags.seeds}: give 1 or more")
    if not (flags.tolerance >= 0 and flags.regression_threshold >= 0 and flags.k_layers >= 0):
        raise UsageError("--tolerance, --regression_threshold and --k_layers must be >= 0")
    numbers(flags.learning_rates, "learning_rates")
    numbers(flags.batch_sizes, "batch_sizes", int)
    numbers(flags.entropy_thresholds, "entropy_thresholds")
    numbers(flags.confidence_thresholds, "confidence_thresholds")
    tasks = []
    for name in flags.tasks:
        try:
            task = glue.find_task(name)
        except glue.DataError as e:
            raise UsageError(str(e)) from None
        for split in ("train", "dev"):
            path = Path(flags.glue_dir) / task.folder / task.file_for(split)
            if not path.is_file():
                raise UsageError(f"missing {path}: put the GLUE data in --glue_dir (or GLUE_DIR)")
        tasks.append(task)
    return tasks


def model_name(flags):
    return flags.model_name_or_path or os.environ.get("MODEL_NAME_OR_PATH") or BACKBONES[flags.backbone].default_checkpoint


def plan(flags, tasks, out):
    return [Run(task, model, lr, bs, seed, out / "runs" / task.folder / model / f"lr{lr}-bs{bs}-seed{seed}")
            for task in tasks for model in paper.MODELS
            for lr in flags.learning_rates.split(",") for bs in numbers(flags.batch_sizes, "batch_sizes", int)
            for seed in range(1, flags.seeds + 1)]


def steps_of(flags, run):
    """Optimizer steps of a run (both stages), from the training file's row count."""
    if flags.max_steps > 0:
        first = flags.max_steps
    else:
        path = Path(flags.glue_dir) / run.task.folder / "train.tsv"
        rows = sum(1 for _ in open(path, encoding="utf-8")) - run.task.train_has_header
        first = (rows // run.batch_size) * int(flags.num_train_epochs)
    return first * (2 if run.model in ("two_stage", "self_distill") else 1)


def run_glue_flags(flags, run, depth):
    training = paper.MODELS[run.model]
    argv = ["--model_type", flags.backbone, "--task_name", run.task.folder,
            "--data_dir", str(Path(flags.glue_dir) / run.task.folder), "--output_dir", str(run.folder),
            "--max_seq_length", str(flags.max_seq_length), "--per_gpu_eval_batch_size", str(flags.per_gpu_eval_batch_size),
            "--exit_training", training, "--head_bias_init", "label_prior",
            "--regression_threshold", str(flags.regression_threshold)]
    argv += ["--do_lower_case"] if flags.do_lower_case else []
    argv += ["--exit_pooling", flags.exit_pooling] if flags.exit_pooling else []
    argv += ["--num_hidden_layers", str(flags.k_layers or max(1, depth // 2))] if run.model == "k-layer" else []
    return argv


def train(flags, run, depth):
    """Fine-tunes one run (or resumes it from its last checkpoint); a finished run is reused."""
    import run_glue

    if (run.folder / DONE).is_file():
        return "reused"
    checkpoints = sorted(run.folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    start = str(checkpoints[-1]) if checkpoints else model_name(flags)
    steps = ["--max_steps", str(flags.max_steps)] if flags.max_steps > 0 else ["--num_train_epochs",
                                                                                str(flags.num_train_epochs)]
    argv = run_glue_flags(flags, run, depth) + [
        "--model_name_or_path", start, "--do_train", "--do_eval", "--patience", "0", "--learning_rate",
        run.learning_rate, "--per_gpu_train_batch_size", str(run.batch_size), "--seed", str(run.seed),
        "--save_steps", str(max(1, steps_of(flags, run) // 4)), "--logging_steps", "50", "--overwrite_output_dir",
        *steps]
    if run_glue.main(argv) != 0:
        raise UsageError(f"run {run.describe()} failed: see its messages above; fix and call again to resume")
    for checkpoint in run.folder.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)  # the run is done: its final model is all that is read from now on
    write_json(run.folder / DONE, {"run": run.describe()})
    return "resumed" if checkpoints else "trained"


def evaluate(flags, run, criterion, settings, depth, predict=False):
    """Exit settings of one finished run on dev (rows added to its pabee_results.json); once."""
    import run_glue

    marker = run.folder / f"reproduce_{criterion}{'_predict' if predict else ''}.json"
    if marker.is_file():
        return
    argv = run_glue_flags(flags, run, depth) + ["--model_name_or_path", str(run.folder), "--do_eval"]
    argv += ["--do_predict"] if predict else []
    argv += ["--patience", settings] if criterion == "patience" else ["--exit_criterion", criterion,
                                                                       "--exit_thresholds", settings]
    if run_glue.main(argv) != 0:
        raise UsageError(f"evaluating {criterion} on {run.describe()} failed: see above")
    write_json(marker, {"criterion": criterion, "settings": settings})


def full_depth(run):
    rows = json.loads((run.folder / "eval_results.json").read_text())
    return next(r for r in rows if r["criterion"] == "patience" and r["setting"] == 0 and r["task"] == run.task.name)


def chosen_runs(runs, task, model):
    """The seeds of the grid point with the best median full-depth dev metric."""
    import statistics

    metric = paper.columns_of(task.name)[0]
    mine = [r for r in runs if r.task == task and r.model == model]
    points = sorted({(r.learning_rate, r.batch_size) for r in mine})
    best = max(points, key=lambda p: statistics.median(
        full_depth(r)[metric] for r in mine if (r.learning_rate, r.batch_size) == p))
    return [r for r in mine if (r.learning_rate, r.batch_size) == best]


def exits_to_evaluate(flags, task, model, depth):
    """(criterion, settings) to evaluate on dev for a model; entropy and confidence need classes."""
    patience = ",".join(str(p) for p in range(depth))
    layers = ",".join(str(k) for k in range(1, depth + 1))
    exits = {"pabee": [("patience", patience), ("entropy", flags.entropy_thresholds),
                       ("confidence", flags.confidence_thresholds), ("fixed", layers)],
             "two_stage": [("entropy", flags.entropy_thresholds)],
             "self_distill": [("confidence", flags.confidence_thresholds)]}.get(model, [])
    return [(c, s) for c, s in exits if not (task.is_regression and c in ("entropy", "confidence"))]


def final_rows(run):
    rows = json.loads((run.folder / "pabee_results.json").read_text())
    return [r for r in rows if r["checkpoint"] == "final" and r["task"] == run.task.name]


def main(argv=None):
    flags = build_parser().parse_args(argv)
    try:
        tasks = check(flags)
        out = Path(flags.output_dir or f"./output/paper/{flags.backbone}")
        depth = model_depth(flags)
        runs = plan(flags, tasks, out)
        if flags.dry_run:
            print_plan(flags, runs, out)
            return 0
        reproduce(flags, tasks, runs, out, depth)
    except UsageError as e:
        print(f"reproduce_paper.py: error: {e}", file=sys.stderr)
        return 2
    return 0


def model_depth(flags):
    from backbones import load_config

    return load_config(BACKBONES[flags.backbone], model_name(flags)).num_hidden_layers


def print_plan(flags, runs, out):
    total = 0
    for i, run in enumerate(runs, start=1):
        steps = steps_of(flags, run)
        total += steps
        print(f"[{i}/{len(runs)}] {run.describe()}: {steps} steps -> {run.folder}")
    print(f"{len(runs)} runs, {total} optimizer steps in all; then exit settings on dev, the table in {out}")


def reproduce(flags, tasks, runs, out, depth):
    for i, run in enumerate(runs, start=1):
        print(f"[run {i}/{len(runs)}] {run.describe()}: {train(flags, run, depth)}", flush=True)
    results, chosen = {}, {}
    for task in tasks:
        for model in paper.MODELS:
            picked = chosen_runs(runs, task, model)
            for criterion, settings in exits_to_evaluate(flags, task, model, depth):
                for run in picked:
                    evaluate(flags, run, criterion, settings, depth)
            results[model, task.name] = [final_rows(r) for r in picked]
            chosen[model, task.name] = picked
    table = paper.build_table(results, [t.name for t in tasks], flags.tolerance, Path(model_name(flags)).name)
    table["runs"] = {f"{m}|{t}": [str(r.folder) for r in rs] for (m, t), rs in chosen.items()}
    write_json(out / "paper_table.json", table)
    (out / "paper_table.md").write_text(paper.markdown(table))
    (out / "paper_table.tex").write_text(paper.latex(table))
    write_submissions(flags, tasks, table, chosen, out, depth)
    plot_tasks(tasks, results, out)
    print(paper.markdown(table))
    print(f"Wrote {out / 'paper_table.md'}, .json and .tex")


def write_submissions(flags, tasks, table, chosen, out, depth):
    """Each method's chosen setting on the test set of its first seed's run, as GLUE expects."""
    for key, cell in table["cells"].items():
        method, task_name = key.split("|")
        task = glue.TASKS[task_name]
        test = Path(flags.glue_dir) / task.folder / task.file_for("test")
        if not test.is_file():
            continue
        run = chosen[paper.METHODS[method][3], task_name][0]
        evaluate(flags, run, cell["criterion"], str(cell["setting"]), depth, predict=True)
        folder = out / "submission" / re.sub(r"[^a-z0-9]+", "-", method.lower()).strip("-")
        folder.mkdir(parents=True, exist_ok=True)
        source = run.folder / "predictions" / f"{cell['criterion']}-{cell['setting']}"
        for name in ([task.submission] + (["MNLI-mm.tsv"] if task.name == "mnli" else [])):
            if (source / name).is_file():
                shutil.copy(source / name, folder / name)


def plot_tasks(tasks, results, out):
    """One trade-off plot per task: each method's dev metric against speed-up (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for task in tasks:
        metric = paper.columns_of(task.name)[0]
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        for model, criterion in [("pabee", "patience"), ("two_stage", "entropy"), ("self_distill", "confidence"),
                                 ("pabee", "entropy"), ("pabee", "confidence"), ("pabee", "fixed"),
                                 ("vanilla", "patience"), ("k-layer", "patience")]:
            seed_rows = results.get((model, task.name))
            if not seed_rows:
                continue
            points = sorted((r for r in seed_rows[0] if r["criterion"] == criterion
                             and (criterion != "patience" or model == "pabee" or r["setting"] == 0)),
                            key=lambda r: r["speed_up"])
            if points:
                ax.plot([r["speed_up"] for r in points], [r[metric] for r in points], marker="o",
                        label=f"{model} model, {criterion}")
        ax.set_xlabel("speed-up (layers / mean exit layer)")
        ax.set_ylabel(f"dev {metric}")
        ax.set_title(f"{task.folder}: every method on dev")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"paper_tradeoff_{task.folder}.png", dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
