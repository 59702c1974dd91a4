"""Measures the per-call cost table that benchmarks/gpu_costs.py prices launch logs with: one
BERT-base layer call (the exit engine's step: layer, head, patience update) for each declared
bucket (engine.GPU_ROWS x engine.GPU_LENGTHS), eager and compiled (CUDA graphs), and the engine's
host time per call apart from the step. Then prices the benchmark's launch logs with it.

    python benchmarks/gpu_table.py --json PATH [--dry_run]

On CUDA the step runs under torch.cuda.set_sync_debug_mode("error"): a step that waits for the
device fails. --dry_run runs every part on the CPU with a narrow model and two buckets (the
timings then mean nothing): what the tests run.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pabee.early_exit.compiled_step import compiled_step  # noqa: E402
from pabee.early_exit.engine import GPU_LENGTHS, GPU_ROWS, Shapes, layer_step  # noqa: E402
from pabee.early_exit.rules import PatienceRule  # noqa: E402
from gpu_costs import READ_US, REPLAY_US, prediction  # noqa: E402
from workload import base_shaped_model  # noqa: E402


def step_inputs(model, rows, length, device):
    ids = torch.randint(5, model.config.vocab_size, (rows, length), device=device)
    mask = torch.ones(rows, length, dtype=torch.long, device=device)
    hidden = model.embed(ids, mask, None, None, None)
    inputs = model.layer_inputs(hidden, mask, None)
    rule = PatienceRule(2)
    state = rule.step(model.classify(0, hidden), rule.start(rows, device))  # after layer 1: a tensor state
    return rule, hidden, inputs, model.token_weights(mask, hidden), state


def time_call(step, model, rows, length, device, reps):
    """Median microseconds of one step call (layer 2, with heads) on rows x length."""
    rule, hidden, inputs, weights, state = step_inputs(model, rows, length, device)
    times = []
    for i in range(reps + 2):  # two warm-up calls (compile, graph capture)
        synchronize(device)
        start = time.perf_counter()
        with sync_errors(device):
            step(model, rule, 1, hidden, inputs.rows, inputs.shared, weights, state, True)
        synchronize(device)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class sync_errors:
    """CUDA: any wait for the device inside the step is an error."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")


def measured_table(model, device, rows, lengths, scheduling_us, reps):
    shapes = Shapes.of(max(rows), max(lengths), rows, lengths)
    compiled = compiled_step(model.num_layers, shapes, device.type, None if device.type == "cuda" else "aot_eager")
    gpu = {"eager": {}, "graph": {}}
    with torch.inference_mode():
        for r in rows:
            for t in lengths:
                gpu["eager"][f"{r}x{t}"] = time_call(layer_step, model, r, t, device, reps)
                gpu["graph"][f"{r}x{t}"] = time_call(compiled, model, r, t, device, reps)
    host_eager = min(gpu["eager"].values())  # the smallest call: the host's own pace
    return {"source": f"measured on {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu (dry run)'}",
            "gpu_us": gpu, "host_us": {"eager": host_eager + scheduling_us, "graph": REPLAY_US + scheduling_us},
            "read_us": READ_US}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True, help="Where the table and the prediction it gives are written.")
    p.add_argument("--dry_run", action="store_true", help="Every part on the CPU, narrow model, two buckets.")
    p.add_argument("--runs", default=None, help="A bench_speed JSON whose launch-log runs to price (engine_runs).")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_table.py: no CUDA device here; pass --dry_run to exercise it on the CPU", file=sys.stderr)
        return 2
    if args.dry_run:
        from engine_figures import narrow_model

        model, rows, lengths, reps = narrow_model(1000).to(device), (1, 8), (32,), 2
    else:
        model, rows, lengths, reps = base_shaped_model(30522, device), GPU_ROWS, GPU_LENGTHS, 20
    scheduling_us = json.loads(Path(args.runs).read_text()).get("engine_scheduling_us", 0.0) if args.runs else 0.0
    table = measured_table(model, device, rows, lengths, scheduling_us, reps)
    result = {"table": table}
    if args.runs:
        runs = json.loads(Path(args.runs).read_text()).get("engine_runs", {})
        result.update(prediction(table, runs))
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
