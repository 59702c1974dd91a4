"""Evaluation throughput of a fine-tuned model on SST-2 dev at one patience: run_glue's inference
(pabee.scoring.evaluation.run_inference, as --timed_inference runs it) and predict.py on the same sentences.

    python benchmarks/eval_throughput.py --model_dir DIR [--patience 2] [--rounds 5] [--json PATH]

Prints examples per second of each (the median over rounds, each round a whole pass of the 872
sentences) and the mean exit layer. The code measured is the tree this file sits in: copy it into
another checkout to compare two versions on one machine.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEV = ROOT.parent / "shared" / "glue_data" / "SST-2" / "dev.tsv"


def run_glue_rate(model_dir, patience, rounds, batch_size, dev=DEV):
    import torch

    from pabee.data import glue
    from pabee.data.features import tokenize
    from pabee.early_exit.rules import PatienceRule
    from pabee.fine_tuning.processes import Runtime
    from pabee.modeling.backbones import BACKBONES, load_model, load_tokenizer
    from pabee.scoring.evaluation import EvalSet, run_inference

    tokenizer = load_tokenizer(BACKBONES["bert"], model_dir)
    model = load_model(BACKBONES["bert"], model_dir, None, "cpu")[0].eval()
    task = glue.TASKS["sst-2"]
    features = tokenize(task, "dev", tokenizer, 128, glue.read_split(task, dev, "dev"))
    eval_set = EvalSet.of(task, features, tokenizer.pad_token_id, batch_size)
    runtime, rule = Runtime(torch.device("cpu"), 0), PatienceRule(patience)
    run_inference(runtime, model, eval_set, rule)  # warm-up
    passes = [run_inference(runtime, model, eval_set, rule) for _ in range(rounds)]
    seconds = statistics.median(p[2] for p in passes)
    return len(eval_set.labels) / seconds, float(passes[-1][1].float().mean()), against_batches(runtime, model,
                                                                                               eval_set, rule, rounds)


def against_batches(runtime, model, eval_set, rule, rounds):
    """The exit engine's speed over the batch-by-batch loop run_glue had before it (still its path
    under DataParallel), taking turns in one process: the median of the rounds' ratios."""
    import time

    import torch

    from pabee.scoring import evaluation

    if not hasattr(evaluation, "batch_by_batch"):
        return None
    ratios = []
    for _ in range(rounds):
        start = time.perf_counter()
        with torch.inference_mode():
            evaluation.batch_by_batch(runtime, model, eval_set, rule, False)
        ratios.append((time.perf_counter() - start) / evaluation.run_inference(runtime, model, eval_set, rule)[2])
    return statistics.median(ratios)


def predict_rate(model_dir, patience, batch_size, dev=DEV):
    from pabee.data import glue

    texts = glue.read_split(glue.TASKS["sst-2"], dev, "dev")["text_a"]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(texts) + "\n")
    proc = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--model_dir", str(model_dir), "--input", f.name,
                           "--patience", str(patience), "--batch_size", str(batch_size), "--output", "/dev/null"],
                          capture_output=True, text=True, check=True)
    return float(re.search(r"\(([\d.]+) examples/s\)", proc.stderr).group(1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True, help="A BERT folder run_glue.py fine-tuned on SST-2.")
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--json", default=None)
    p.add_argument("--sst2_dev", default=str(DEV), help="SST-2's dev.tsv (default: ../shared's).")
    args = p.parse_args(argv)
    rate, mean_exit, ratio = run_glue_rate(args.model_dir, args.patience, args.rounds, args.batch_size, args.sst2_dev)
    predicted = statistics.median(predict_rate(args.model_dir, args.patience, args.batch_size, args.sst2_dev)
                                  for _ in range(args.rounds))
    results = {"run_glue_examples_per_s": rate, "predict_examples_per_s": predicted, "mean_exit_layer": mean_exit,
               "engine_over_batch_by_batch": ratio,
               "patience": args.patience, "batch_size": args.batch_size, "rounds": args.rounds}
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
