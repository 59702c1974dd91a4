"""The paper's table in one command: every method fine-tuned in this code over a small grid and
several seeds, each method's run chosen on dev at full depth, exit settings evaluated on dev, one
table across tasks (paper_table.md/.json/.tex), GLUE submission files and a plot per task.

    python reproduce_paper.py BACKBONE [TASK ...] [--glue_dir DIR] [--output_dir DIR] ...

Restartable: finished runs and evaluations are reused, a killed run resumes from its last
checkpoint, and calling again after a crash ends with the same table. --dry_run prints the plan.
"""

import argparse
import math
import os
import sys
from pathlib import Path

from pabee.base.choices import EXIT_POOLING
from pabee.base.cli import OneDefault
from pabee.base.errors import Interrupted, UsageError, os_error_line
from pabee.data.data_settings import ExitChoice
from pabee.modeling.backbones import BACKBONES
from pabee.paper_grid.driver import Grid
from pabee.paper_grid.grid_settings import LaunchSettings, ReproduceSettings, SlurmSettings
from pabee.paper_grid.jobs import become_job, job_argv
from pabee.paper_grid.paper_table import KEYS, PAPER_METHODS, PAPER_TASKS
from pabee.paper_grid.ray_launch import CONNECT_TIMEOUT

R = ReproduceSettings  # the defaults
LAUNCHERS = ("ray", "slurm", "local")


def build_parser():
    p = argparse.ArgumentParser(prog="reproduce_paper.py", description=__doc__.splitlines()[0],
                                formatter_class=OneDefault)
    add = p.add_argument
    add("backbone", help="bert or albert (any --model_type of run_glue.py).")
    add("tasks", nargs="*", default=PAPER_TASKS, help="GLUE tasks (default: the paper's eight).")
    add("--glue_dir", default=os.environ.get("GLUE_DIR", "./glue_data"), help="Folder of the GLUE task folders.")
    add("--output_dir", default=None, help="Where runs, tables, plots and submissions go (default ./output/paper/BACKBONE).")
    add("--model_name_or_path", default=None, help="Model to fine-tune (default: MODEL_NAME_OR_PATH, else the "
        "backbone's default checkpoint).")
    # The grid as we read the paper (section 4): batch sizes {16, 32, 128}, learning rates
    # {1e-5, 2e-5, 3e-5, 5e-5}, the median of 5 runs.
    add("--learning_rates", default=",".join(R.learning_rates), help="Comma list of learning rates of the grid.")
    add("--batch_sizes", default=",".join(map(str, R.batch_sizes)), help="Comma list of batch sizes of the grid.")
    add("--seeds", type=int, default=R.seeds, help="Runs per grid point (seeds 1..N); tables show the median.")
    add("--num_train_epochs", type=float, default=R.num_train_epochs, help="Epochs per run, unless --max_steps.")
    add("--max_steps", type=int, default=R.max_steps, help="If > 0: steps per run (and per second stage) instead of epochs.")
    add("--max_seq_length", type=int, default=R.max_seq_length, help="As run_glue.py.")
    add("--k_layers", type=int, default=R.k_layers, help="Layers of the k-layer baseline (default: half the model's).")
    add("--tolerance", type=float, default=R.tolerance, help="PABEE's patience: the fastest within this of full depth on dev.")
    add("--regression_threshold", type=float, default=R.regression_threshold, help="STS-B's agreement threshold (scores 0-5).")
    add("--methods", default=",".join(PAPER_METHODS), help="Comma list of the methods to compare: "
        + ", ".join(KEYS) + " (docs/methods.md).")
    add("--entropy_thresholds", default=R.entropy_thresholds, help="Entropy thresholds to evaluate (DeeBERT, BERxiT, "
        "PCEE-BERT, GPFEE).")
    add("--confidence_thresholds", default=R.confidence_thresholds, help="Shallow-Deep's thresholds to evaluate.")
    add("--divergence_thresholds", default=R.divergence_thresholds, help="F-PABEE's divergence thresholds (with "
        "patience 1, 2, 3).")
    add("--lte_thresholds", default=R.lte_thresholds, help="BERxiT-LTE's uncertainty thresholds.")
    add("--energy_thresholds", default=R.energy_thresholds, help="COSEE's normalized energy thresholds.")
    add("--choose_on", default=f"train:{R.choose_exit_on.percentage:g}", help="Where each method's setting is "
        "chosen: train:P (default train:10: P%% of each run's training rows, seeded, held out of its training; the "
        "cells score dev) or dev (the paper's way: chosen on the rows the cells score, optimistic, and labelled so).")
    add("--per_gpu_eval_batch_size", type=int, default=R.per_gpu_eval_batch_size, help="As run_glue.py.")
    add("--exit_pooling", choices=EXIT_POOLING, default=R.exit_pooling,
        help="What every head reads, for every model (default: first token, the paper; see docs/real_model.md on small models).")
    add("--do_lower_case", action="store_true", help="As run_glue.py (uncased models).")
    add("--dry_run", action="store_true", help="Print the plan (runs, steps per run, the time it takes on the "
        "devices it will use) and stop.")
    add_launch_flags(p)
    return p


def add_launch_flags(parser):
    add = parser.add_argument
    add("--launcher", choices=LAUNCHERS, default="ray", help="How the grid's runs are spread: ray (a local Ray, or "
        "a cluster's with --ray_address; one run per GPU), slurm (job arrays through submitit) or local (one after "
        "the other in this process). docs/cluster.md.")
    add("--workers", type=int, default=0, help="Ray without GPUs: runs at a time on each machine, each with its "
        "share of the cores (default 1).")
    add("--ray_address", default=os.environ.get("RAY_ADDRESS"), help="A Ray cluster to join, host:port of its head "
        "(default RAY_ADDRESS; none: a local Ray for the grid). Nothing listening there ends the run at once; a "
        f"cluster that does not answer, after {CONNECT_TIMEOUT} s.")
    add("--retries", type=int, default=2, help="Times a run whose worker or node died is started again.")
    add("--slurm_partition", default=None, help="Slurm partition (default: the cluster's).")
    add("--slurm_time", type=int, default=SlurmSettings.time_min, help="Slurm time limit of a run, minutes; a run "
        "that reaches it is requeued and resumes from its checkpoint.")
    add("--slurm_gpus", type=int, default=SlurmSettings.gpus, help="GPUs per run on Slurm.")
    add("--slurm_cpus", type=int, default=SlurmSettings.cpus, help="CPU cores per run on Slurm (its threads).")
    add("--slurm_array_parallelism", type=int, default=0, help="Runs at once on Slurm (0: as many as it gives).")
    add("--slurm_max_array_size", type=int, default=0, help="Runs per job array (0: the cluster's MaxArraySize).")
    add("--job", default=None, help=argparse.SUPPRESS)  # how a launcher calls the script back, not a user's flag


def launch_from_flags(flags):
    numbers = {"--workers": flags.workers, "--retries": flags.retries, "--slurm_gpus": flags.slurm_gpus,
               "--slurm_array_parallelism": flags.slurm_array_parallelism,
               "--slurm_max_array_size": flags.slurm_max_array_size}
    for flag, value in numbers.items():
        if value < 0:
            raise UsageError(f"{flag} {value}: give 0 or more")
    if flags.slurm_time < 1 or flags.slurm_cpus < 1:
        raise UsageError("--slurm_time and --slurm_cpus must be 1 or more")
    return LaunchSettings(flags.launcher, flags.workers, flags.ray_address or None, flags.retries, SlurmSettings(
        flags.slurm_partition, flags.slurm_time, flags.slurm_gpus, flags.slurm_cpus, flags.slurm_array_parallelism,
        flags.slurm_max_array_size))


def numbers(text, flag, kind=float):
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--{flag} {text}: give a comma list of numbers") from None
    if not values or not all(v > 0 and math.isfinite(v) for v in values):
        raise UsageError(f"--{flag} {text}: give a comma list of numbers > 0")
    return values


def choice_of(text):
    choice = ExitChoice.parse(text)
    if choice.where == "file":
        raise UsageError(f"--choose_on {text}: give train:P (e.g. train:10) or dev")
    return choice


def settings_from_flags(flags):
    if flags.backbone not in BACKBONES:
        raise UsageError(f"unknown backbone '{flags.backbone}': choose one of {', '.join(BACKBONES)}")
    if flags.seeds < 1:
        raise UsageError(f"--seeds {flags.seeds}: give 1 or more")
    if not (flags.tolerance >= 0 and flags.regression_threshold >= 0 and flags.k_layers >= 0):
        raise UsageError("--tolerance, --regression_threshold and --k_layers must be >= 0")
    numbers(flags.learning_rates, "learning_rates")
    for flag in ("entropy_thresholds", "confidence_thresholds", "divergence_thresholds", "lte_thresholds",
                 "energy_thresholds"):
        numbers(getattr(flags, flag), flag)
    unknown = [m for m in flags.methods.split(",") if m not in KEYS]
    if unknown:
        raise UsageError(f"--methods: unknown method '{unknown[0]}': choose from {', '.join(KEYS)}")
    model = flags.model_name_or_path or os.environ.get("MODEL_NAME_OR_PATH")
    if not model:  # the backbone's hub default: a refusal to download it names the variable to set
        model = os.environ["PABEE_DEFAULT_MODEL"] = BACKBONES[flags.backbone].default_checkpoint
    return ReproduceSettings(
        backbone=flags.backbone, tasks=tuple(flags.tasks), glue_dir=flags.glue_dir,
        output_dir=flags.output_dir or f"./output/paper/{flags.backbone}", model_name_or_path=model,
        learning_rates=tuple(flags.learning_rates.split(",")),
        batch_sizes=tuple(numbers(flags.batch_sizes, "batch_sizes", int)), seeds=flags.seeds,
        num_train_epochs=flags.num_train_epochs, max_steps=flags.max_steps, max_seq_length=flags.max_seq_length,
        k_layers=flags.k_layers, tolerance=flags.tolerance, regression_threshold=flags.regression_threshold,
        entropy_thresholds=flags.entropy_thresholds, confidence_thresholds=flags.confidence_thresholds,
        divergence_thresholds=flags.divergence_thresholds, lte_thresholds=flags.lte_thresholds,
        energy_thresholds=flags.energy_thresholds,
        choose_exit_on=choice_of(flags.choose_on),
        methods=tuple(KEYS[m] for m in flags.methods.split(",")),
        per_gpu_eval_batch_size=flags.per_gpu_eval_batch_size, exit_pooling=flags.exit_pooling,
        do_lower_case=flags.do_lower_case)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = build_parser().parse_args(argv)
    become_job(flags.job)
    try:
        settings, launch = settings_from_flags(flags), launch_from_flags(flags)
        from pabee.base.logs import setup_logging
        from pabee.base.output_dir import OutputLock
        from pabee.paper_grid.cost_estimate import print_plan
        from pabee.paper_grid.job_bodies import do_job
        from pabee.paper_grid.run_plan import check_tasks, model_depth, plan_runs
        from pabee.paper_grid.whole_table import reproduce

        setup_logging()
        tasks = check_tasks(settings)
        depth = model_depth(settings)
        runs = plan_runs(settings, tasks)
        if flags.job:
            do_job(settings, runs, depth, flags.job)
            return 0
        if flags.dry_run:
            print_plan(settings, tasks, runs, launch)
            return 0
        Path(settings.output_dir).mkdir(parents=True, exist_ok=True)
        resolved = job_argv(argv, glue_dir=settings.glue_dir, output_dir=settings.output_dir,
                            model_name_or_path=settings.model_name_or_path)
        with OutputLock(settings.output_dir), Grid(launch, settings.output_dir, __file__, resolved,
                                                   lambda key: do_job(settings, runs, depth, key)) as grid:
            failed = reproduce(settings, tasks, runs, depth, grid)
    except (Interrupted, KeyboardInterrupt, UsageError, OSError) as e:
        return stopped("reproduce_paper.py", e)
    return 1 if failed else 0


def stopped(name, error):
    """The one line and exit code of a driver (or job) that ends on `error`."""
    if isinstance(error, Interrupted):  # a run stopped in training: its checkpoint is saved
        line, code = f"a run {error}; call again to resume from its checkpoint", 128 + error.signum
    elif isinstance(error, KeyboardInterrupt):  # Ctrl-C or SIGTERM: the runs were ended with the driver
        line, code = "stopped by SIGINT; call again to go on where it stopped", 130
    else:
        line, code = f"error: {os_error_line(error) if isinstance(error, OSError) else error}", 2
    print(f"{name}: {line}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
