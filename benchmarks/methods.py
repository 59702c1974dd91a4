"""The methods that beat PABEE, beside it and plain fine-tuning, on a real pretrained model.

Fine-tunes all-MiniLM-L6-v2 on real GLUE tasks once per (task, model, seed), every model with the
same steps and settings, then reads every exit setting of every method from one full-depth pass
over the whole dev set (the one-pass sweep, equal to real early exit: tested):

    .venv/bin/python benchmarks/methods.py --glue_dir ../shared/glue_data --output_dir /tmp/methods

Models (--exit_training, MODELS): vanilla (`last`), PABEE, BERxiT (`alternate`, `alternate_lte`),
ElasticBERT (`equilibrium`), COSEE; a method (METHODS) is a model with an exit rule of
pabee.early_exit.rules (F-PABEE, PCEE-BERT and GPFEE's past part on the PABEE model). Rules that read class
probabilities are left out on STS-B (regression), where every patience is paired with every agreement
threshold of REGRESSION_THRESHOLDS. For every method and each target speed-up (1.3x, 1.5x, 2x fewer layers)
a setting is chosen on one random half of dev (the best metric among its settings reaching the target there)
and scored on the other half, over SPLITS random halves (pabee.scoring.split_choice); the table gives the
mean over seeds of the mean over halves, the min-max over seeds, the sd over seeds and halves, and the mean
speed-up on the scoring halves. The optimistic figure (chosen and scored on all of dev) follows in a second
table, labelled. Vanilla is at full depth, scored on the same halves. Results go to methods.json and
methods.md.

Each model's evaluation is kept as <results_dir>/<task>/<model>-seed<k>.json (with the backbone's digest,
steps and learning rate; one made with others is refused) and stands for that model, so the table can be
finished over several runs or machines; benchmarks/results/methods holds those behind docs/methods.md.
Models are trained and evaluated as a grid (pabee.paper_grid.driver: Ray, Slurm or local).
"""

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo import default_model_dir  # noqa: E402
from pabee.base.errors import Interrupted, UsageError  # noqa: E402
from pabee.base.file_io import read_json, write_json  # noqa: E402
from pabee.base.output_dir import OutputLock  # noqa: E402
from pabee.data import glue  # noqa: E402
from pabee.scoring.split_choice import SPLITS, best_at, choose_and_score, random_halves  # noqa: E402
from reproduce_paper import add_launch_flags, launch_from_flags, stopped  # noqa: E402
from pabee.data.data_settings import DataSettings  # noqa: E402
from pabee.early_exit.exit_settings import ExitSettings  # noqa: E402
from pabee.early_exit.rules import RULES  # noqa: E402
from pabee.fine_tuning.run_settings import ModelSettings, RunSettings, TrainingSettings  # noqa: E402

PLAN = {"MRPC": (342, 3), "STS-B": (537, 3), "SST-2": (600, 3)}  # task: (steps, seeds); MRPC, STS-B: 3 epochs
MODELS = ("last", "pabee", "alternate", "alternate_lte", "equilibrium", "cosee")
TARGETS = (1.3, 1.5, 2.0)
ENTROPY = "0.02,0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.65,0.68"  # up to ln 2 = 0.693, the most two classes have
DIVERGENCE = "0.001,0.003,0.01,0.03,0.1,0.3"
# a learned uncertainty that has not learned much sits near sigmoid(0) = 0.5: a fine grid there
LTE = "0.05,0.1,0.2,0.3,0.4,0.45,0.48,0.5,0.52,0.54,0.56,0.58,0.6,0.65,0.7,0.8"
# COSEE's signal 1 / (1 + sum exp(logits)) falls as a head grows sure; label-prior heads start at 1/2
# (their logits are the log class frequencies, whose exps sum to 1), so the grid reaches past it
ENERGY = "0.01,0.02,0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.7"
# method: (model, criterion, patience, thresholds); patience-only rules take --patience
METHODS = {
    "PABEE": ("pabee", "patience", "1,2,3,4,5", ""),
    "F-PABEE (KL)": ("pabee", "kl_patience", "1,2,3", DIVERGENCE),
    "F-PABEE (JS)": ("pabee", "js_patience", "1,2,3", DIVERGENCE),
    "PCEE-BERT": ("pabee", "entropy_patience", "1,2,3", ENTROPY),
    "GPFEE (past)": ("pabee", "past_entropy", "0", ENTROPY),
    "BERxiT (entropy)": ("alternate", "entropy", "0", ENTROPY),
    "BERxiT-LTE": ("alternate_lte", "lte", "0", LTE),
    "ElasticBERT (patience)": ("equilibrium", "patience", "1,2,3,4,5", ""),
    "ElasticBERT (entropy)": ("equilibrium", "entropy", "0", ENTROPY),
    "COSEE": ("cosee", "energy", "0", ENERGY),
}
# STS-B's scores run from 0 to 5: "agree" means within these of the previous head, each a setting
REGRESSION_THRESHOLDS = (0.05, 0.1, 0.25, 0.5, 0.75)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--glue_dir", required=True, help="Folder holding MRPC/, STS-B/, SST-2/ in GLUE's TSV format.")
    p.add_argument("--output_dir", required=True, help="One run folder per task, model and seed goes here.")
    p.add_argument("--model_dir", default=None, help="A BERT folder (default: all-MiniLM-L6-v2 from its package).")
    p.add_argument("--tasks", default=",".join(PLAN), help="Comma list of tasks from: " + ", ".join(PLAN))
    p.add_argument("--steps_scale", type=float, default=1.0, help="Multiplies every task's training steps.")
    p.add_argument("--seeds", type=int, default=0, help="Seeds per task (default: the plan's, 3).")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--results_dir", default=None,
                   help="Each model's evaluation is kept and reused here (default: --output_dir).")
    add_launch_flags(p)
    args = p.parse_args(argv)
    args.model_dir = args.model_dir or default_model_dir()
    return args


def models_for(task):
    """Vanilla, and every model that some method applicable to the task uses (on regression, none
    of the rules that read class probabilities)."""
    regression = glue.find_task(task).is_regression
    used = {model for model, criterion, *_ in METHODS.values() if not (regression and RULES[criterion].needs_probabilities)}
    return [m for m in MODELS if m == "last" or m in used]


def train(args, task, model, seed, steps):
    """Fine-tunes one model (reused when its folder holds a finished one); returns the folder and seconds."""
    from pabee.fine_tuning.pipeline import run

    out = Path(args.output_dir) / task / f"{model}-seed{seed}"
    if (out / "model.safetensors").is_file():
        return out, None
    start = time.perf_counter()
    run(RunSettings(
        output_dir=str(out), overwrite_output_dir=True, seed=seed,
        model=ModelSettings("bert", args.model_dir, do_lower_case=True, exit_pooling="mean"),
        data=DataSettings(task_name=task, data_dir=str(Path(args.glue_dir) / task), max_seq_length=128),
        training=TrainingSettings(exit_training=model, head_bias_init="label_prior", per_gpu_train_batch_size=32,
                                  learning_rate=args.learning_rate, max_steps=steps, warmup_steps=steps // 10,
                                  logging_steps=steps, save_steps=10 * steps)))
    return out, time.perf_counter() - start


def evaluate(args, task, model_name, seed, folder, steps, seconds):
    """Full depth, every layer's own head, and every setting of the methods on this model, all read
    from one full-depth pass over the dev set: on all of dev, and chosen on one half and scored on
    the other for each random split (pabee.scoring.split_choice)."""
    import torch

    from pabee.data.features import prepare_features
    from pabee.data.sources import open_source
    from pabee.fine_tuning.processes import Runtime
    from pabee.modeling.backbones import BACKBONES, load_model, load_tokenizer
    from pabee.scoring.evaluation import EvalSet, run_inference

    source = open_source(DataSettings(task_name=task, data_dir=str(Path(args.glue_dir) / task)), ("dev",), seed)
    runtime, backbone = Runtime(torch.device("cpu"), 0), BACKBONES["bert"]
    model = load_model(backbone, str(folder), source.task, runtime.device)[0]
    tokenizer = load_tokenizer(backbone, str(folder))
    features = prepare_features(source, [(source.task, "dev")], tokenizer, 128, runtime)
    dev = EvalSet.of(source.task, features[source.task.name, "dev"], tokenizer.pad_token_id, 64)
    layers = run_inference(runtime, model, dev, all_layers=True)[0]
    depth = model.config.num_hidden_layers
    every_row = tuple(range(len(dev.labels)))
    last = (layers.logits[:, -1], torch.full((len(dev.labels),), depth))
    each_layer = [measure(dev, layers.logits[:, i], torch.full((len(dev.labels),), i + 1), depth, every_row)[0]
                  for i in range(depth)]
    splits = random_halves(len(dev.labels))
    return {"task": task, "model": model_name, "seed": seed, "steps": steps, "train_seconds": seconds,
            "metric": source.task.metric, "full_depth": each_layer[-1], "each_layer": each_layer,
            "full_depth_on_scoring_halves": [measure(dev, *last, depth, split.score)[0] for split in splits],
            "methods": methods_on(model_name, source.task, dev, layers, depth, splits)}


def methods_on(model_name, task, dev, layers, depth, splits):
    """{method: {"all_dev": [[setting, metric, speed-up], ...] on the whole dev set, "held_out":
    {target: [[setting, metric, speed-up] or None per split]}}} for the methods that use this model;
    on regression, patience rules take every patience with every agreement threshold."""
    from pabee.scoring.evaluation import swept

    found = {}
    for name, (model, criterion, patience, thresholds) in METHODS.items():
        if model != model_name or (task.is_regression and RULES[criterion].needs_probabilities):
            continue
        outputs = {}
        for agree in REGRESSION_THRESHOLDS if task.is_regression and criterion == "patience" else (0.0,):
            exits = ExitSettings.parse(criterion, patience, thresholds, agree)
            for setting in exits.settings:
                label = f"{setting}@{agree:g}" if agree else setting  # patience@regression threshold
                outputs[label] = swept(layers, exits.rule(setting))
        found[name] = held_out_points(outputs, lambda label, rows, outputs=outputs: measure(dev, *outputs[label], depth, rows),
                                      len(dev.labels), splits)
    return found


def held_out_points(outputs, measured, n, splits):
    """A method's points on all of dev, and for each target its choice on each split's choosing
    half scored on the other half."""
    cache = {}

    def cached(label, rows):
        if (label, rows) not in cache:
            cache[label, rows] = measured(label, rows)
        return cache[label, rows]

    every_row = tuple(range(n))
    return {"all_dev": [[label, *cached(label, every_row)] for label in outputs],
            "held_out": {str(t): [as_list(choose_and_score(list(outputs), cached, t, split)) for split in splits]
                         for t in TARGETS}}


def as_list(point):
    return None if point is None else list(point)  # as methods.json gives it back


def measure(dev, answers, exit_layers, depth, rows):
    """(the task's main metric, speed-up L / mean exit layer) of one set of answers on `rows`."""
    import torch

    from pabee.early_exit.sweep import exit_stats
    from pabee.scoring.evaluation import predictions_of

    index = torch.tensor(rows)
    metrics = glue.compute_metrics(dev.task, predictions_of(dev.task, answers[index]), dev.labels[list(rows)])
    return metrics[dev.task.metric], exit_stats(exit_layers[index], depth)["speed_up"]


def seed_mean(values):
    return statistics.mean(values) if values and None not in values else None


def cell(per_seed):
    """mean over seeds x 100, with (min-max over seeds) when there are several; n/a when a seed has no value."""
    if not per_seed or any(v is None for v in per_seed):
        return "n/a"
    text = f"{statistics.mean(per_seed) * 100:.1f}"
    return text if len(per_seed) == 1 else f"{text} ({min(per_seed) * 100:.1f}-{max(per_seed) * 100:.1f})"


def held_out_cell(runs, name, target):
    """A method's held-out score at `target` over seeds (each seed: the mean over splits), the
    spread over every seed and split (sd), and the mean speed-up on the scoring halves."""
    chosen = [[c for c in r["methods"][name]["held_out"][str(target)]] for r in runs]
    if any(c is None for seed in chosen for c in seed):
        return "n/a", None
    scores = [c[1] for seed in chosen for c in seed]
    speed_up = statistics.mean(c[2] for seed in chosen for c in seed)
    per_seed = [statistics.mean(c[1] for c in seed) for seed in chosen]
    return f"{cell(per_seed)} ±{statistics.pstdev(scores) * 100:.1f} @{speed_up:.2f}x", statistics.mean(per_seed)


def markdown(results):
    """Per task: vanilla at full depth, then each method's full depth (its model's last head) and,
    at each target speed-up, its setting chosen on one half of dev and scored on the other (mean
    over seeds of the mean over splits, (min-max over seeds), ±sd over seeds and splits, @ mean
    speed-up on the scoring halves); then the same choice made and scored on all of dev,
    optimistic, for comparison."""
    from pabee.scoring.report import markdown as table

    held, optimistic = [], []
    for task in dict.fromkeys(r["task"] for r in results):
        mine = [r for r in results if r["task"] == task]
        vanilla = [r for r in mine if r["model"] == "last"]
        vanilla_halves = statistics.mean(seed_mean(r["full_depth_on_scoring_halves"]) for r in vanilla) if vanilla else None
        label = f"{task} ({mine[0]['metric']})"
        held.append([label, "vanilla", cell([seed_mean(r["full_depth_on_scoring_halves"]) for r in vanilla]),
                     *["-"] * len(TARGETS), ""])
        optimistic.append([label, "vanilla", cell([r["full_depth"] for r in vanilla]), *["-"] * len(TARGETS)])
        for name, (model, *_rest) in METHODS.items():
            runs = [r for r in mine if r["model"] == model and name in r["methods"]]
            if not runs:
                continue
            cells = [held_out_cell(runs, name, t) for t in TARGETS]
            close = None not in (cells[0][1], vanilla_halves) and cells[0][1] >= vanilla_halves - 0.005
            held.append([task, name, cell([seed_mean(r["full_depth_on_scoring_halves"]) for r in runs]),
                         *[text for text, _ in cells], "yes" if close else ""])
            best = [[best_at(r["methods"][name]["all_dev"], t) for r in runs] for t in TARGETS]
            optimistic.append([task, name, cell([r["full_depth"] for r in runs]),
                               *[cell([b and b[1] for b in seeds]) for seeds in best]])
    targets = [f">= {t}x" for t in TARGETS]
    return ("Chosen on one half of dev, scored on the other (" + f"{SPLITS} random halves per task, the same for every "
            "method and seed):\n\n"
            + table(["task (metric)", "method", "full depth", *targets, "within 0.5 of vanilla at 1.3x"], held)
            + "\nOptimistic, for comparison only: chosen and scored on all of dev:\n\n"
            + table(["task (metric)", "method", "full depth", *targets], optimistic))


def backbone_identity(model_dir):
    """What a model was fine-tuned from: the digest of the backbone folder's weight files (the same
    checkpoint installed anywhere gives the same), or the name itself for a hub name."""
    weights = sorted(Path(model_dir).glob("*.safetensors")) + sorted(Path(model_dir).glob("*.bin"))
    if not weights:
        return model_dir
    digest = hashlib.sha256()
    for path in weights:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def evaluation_of(args, backbone, task, model, seed, steps):
    """The model's kept evaluation, or a new one (training the model if its folder has none),
    kept. One kept for another backbone, other steps or another learning rate is refused rather
    than mixed in."""
    kept = kept_path(args, task, model, seed)
    asked = {"backbone": backbone, "steps": steps, "learning_rate": args.learning_rate}
    if kept.is_file():
        result = read_json(kept)
        differ = [f"{key} {result.get(key, 'not recorded')} where this run asks {value}"
                  for key, value in asked.items() if result.get(key) != value]
        if differ:
            raise UsageError(f"{kept} was made with {', '.join(differ)}: move it aside or give another --results_dir")
        return result
    folder, seconds = train(args, task, model, seed, steps)
    result = {**evaluate(args, task, model, seed, folder, steps, seconds), **asked}
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_json(kept, result)
    return result


def units(args):
    """(task, model, seed, steps) of every model the table needs, in the plan's order."""
    return [(task, model, seed, max(1, round(PLAN[task][0] * args.steps_scale))) for task in args.tasks.split(",")
            for seed in range(1, (args.seeds or PLAN[task][1]) + 1) for model in models_for(task)]


def kept_path(args, task, model, seed):
    return Path(args.results_dir or args.output_dir) / task / f"{model}-seed{seed}.json"


def do_job(args, backbone, plan, key):
    """One model of the plan, as a launcher's --job names it: TASK:MODEL:SEED."""
    evaluation_of(args, backbone, *next(u for u in plan if ":".join(map(str, u[:3])) == key))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from pabee.base.logs import setup_logging
    from pabee.paper_grid.driver import Grid
    from pabee.paper_grid.jobs import Job, become_job, job_argv

    become_job(args.job)
    setup_logging()
    try:
        backbone, plan = backbone_identity(args.model_dir), units(args)
        if args.job:
            do_job(args, backbone, plan, args.job)
            return 0
        kept = [u for u in plan if kept_path(args, *u[:3]).is_file()]
        for unit in kept:  # kept evaluations made otherwise are refused before any run
            evaluation_of(args, backbone, *unit)
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        jobs = [Job(f"{task}:{model}:{seed}", f"{task} {model} seed {seed}: train and evaluate",
                    str(Path(args.output_dir) / task / f"{model}-seed{seed}")) for task, model, seed, _ in plan
                if (task, model, seed, _) not in kept]
        resolved = job_argv(argv, output_dir=args.output_dir, model_dir=args.model_dir, glue_dir=args.glue_dir,
                            results_dir=args.results_dir)
        with OutputLock(args.output_dir), Grid(launch_from_flags(args), args.output_dir, __file__, resolved,
                                               lambda key: do_job(args, backbone, plan, key)) as grid:
            failed = grid.run(jobs)
    except (Interrupted, KeyboardInterrupt, UsageError, OSError) as error:
        return stopped("methods.py", error)
    results = [read_json(kept_path(args, *unit[:3])) for unit in plan if kept_path(args, *unit[:3]).is_file()]
    Path(args.output_dir, "methods.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results) + "".join(f"\nMissing (failed; its log is in launch/logs): {j.describe}\n" for j in failed)
    Path(args.output_dir, "methods.md").write_text(table)
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
