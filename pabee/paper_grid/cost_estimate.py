"""What a grid costs before it runs (reproduce_paper.py --dry_run): each run's optimizer steps, the
seconds of a step measured here at each batch size of the grid, with a run's share of the cores,
and the wall time with the runs the launcher will have at a time (pabee.paper_grid.driver)."""

import os
import statistics
import time
from pathlib import Path

import torch

from pabee.data.features import to_device
from pabee.data.sources import GlueFiles
from pabee.early_exit.batch_rows import collate
from pabee.fine_tuning.loop import make_optimizer
from pabee.fine_tuning.processes import start_runtime
from pabee.fine_tuning.run_settings import DeviceSettings
from pabee.modeling.backbones import BACKBONES, load_model, load_tokenizer
from pabee.paper_grid.driver import concurrency, makespan
from pabee.paper_grid.run_plan import steps_of


def print_plan(settings, tasks, runs, launch):
    """Every run with its steps, then the total and what it costs on the devices the grid will use
    (estimate_step, measured here with a run's share of the cores)."""
    at_once, threads = concurrency(launch, len(runs)), torch.get_num_threads()
    try:
        per_step, device = estimate_step(settings, tasks[0], threads_per_run(launch, at_once))
    finally:
        torch.set_num_threads(threads)  # a run's share was for the measurement: this process keeps its own
    seconds = []
    for i, run in enumerate(runs, start=1):
        steps = steps_of(settings, run)
        seconds.append(steps * per_step[run.batch_size])
        print(f"[{i}/{len(runs)}] {run.describe()}: {steps} steps -> {run.folder}")
    total = sum(steps_of(settings, run) for run in runs)
    measured = ", ".join(f"{t:.3f} s at batch {bs}" for bs, t in per_step.items())
    print(f"{len(runs)} runs, {total} optimizer steps in all; about {sum(seconds) / 3600:.1f} h of training on one "
          f"device ({device}: {measured} per step); {launch.launcher}, {at_once} run(s) at a time: about "
          f"{makespan(seconds, at_once) / 3600:.1f} h, then exit settings on dev, the table in {settings.output_dir}")


def threads_per_run(launch, at_once):
    """A run's threads when runs share this machine's cores (Ray without GPUs); None: torch's own."""
    if launch.launcher == "ray" and not torch.cuda.is_available() and at_once > 1:
        return max(1, (os.cpu_count() or 1) // at_once)
    return None


def estimate_step(settings, task, threads=None):
    """({batch size: seconds per optimizer step}, device) measured here: the model trained for five
    steps on the task's first training examples at each batch size of the grid (the median of the
    last three; every step priced as a full PABEE step, an upper bound for k-layer and second stages)."""
    if threads:
        torch.set_num_threads(threads)
    runtime, backbone = start_runtime(DeviceSettings()), BACKBONES[settings.backbone]
    model = load_model(backbone, settings.model_name_or_path, task, runtime.device, exit_pooling=settings.exit_pooling)[0]
    tokenizer = load_tokenizer(backbone, settings.model_name_or_path, settings.do_lower_case)
    optimizer = make_optimizer(model.train(), 1e-5, 0.0, 1e-8)
    examples = GlueFiles(task, Path(settings.glue_dir) / task.folder).examples(task, "train")
    per_step = {}
    for size in settings.batch_sizes:
        rows = list(zip(examples["text_a"], examples["text_b"], examples["label"], strict=True))[:size]
        batch = to_device(collate([{**tokenizer(a, b, truncation=True, max_length=settings.max_seq_length,
                                                return_token_type_ids=True), "label": label} for a, b, label in rows],
                                  tokenizer.pad_token_id), runtime.device)
        times = []
        for _ in range(5):
            runtime.synchronize()
            start = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            runtime.synchronize()
            times.append(time.perf_counter() - start)
        per_step[size] = statistics.median(times[2:])
    return per_step, f"{runtime.device}, {torch_threads()} threads" if runtime.device.type == "cpu" else str(runtime.device)


def torch_threads():
    return torch.get_num_threads()
