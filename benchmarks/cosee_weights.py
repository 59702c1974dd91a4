"""Which heads a COSEE model's training examples teach: each head's share of COSEE's loss weight.

COSEE (pabee/modeling/cosee.py) weights head j's loss on an example by how near j is to the layer the
example would exit at under thresholds drawn from a range: [0, 1] in the first epoch, then the
range the internal heads' signals covered over the previous epoch. This reads a trained model's
signals on a sample of its task's training rows and prints each head's share of the weight,
beside PABEE's fixed i / sum i:

    .venv/bin/python benchmarks/cosee_weights.py --model_dir /tmp/methods/SST-2/cosee-seed1 \
        --glue_dir ../shared/glue_data --task SST-2

It prints the shares twice: thresholds from --low/--high ([0, 1], the first epoch's range), then
from the range the signals themselves cover, which is what a later epoch draws from. The signals
are the trained model's, not those of each step of training: a picture of where the weight went
late in training, not a replay of it.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pabee.data.data_settings import DataSettings  # noqa: E402

SHARPNESSES = (0.0, 5.0, 10.0)  # beta_t at the start, the middle and the end of training


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True, help="A folder run_glue.py trained with --exit_training cosee (any backbone).")
    p.add_argument("--glue_dir", required=True, help="Folder holding the task's folder in GLUE's TSV format.")
    p.add_argument("--task", required=True, help="The GLUE task the model was trained on.")
    p.add_argument("--rows", type=int, default=1000, help="Training rows to read, drawn at random (seed 0).")
    p.add_argument("--low", type=float, default=0.0, help="The thresholds' range: the first epoch's is [0, 1].")
    p.add_argument("--high", type=float, default=1.0)
    return p.parse_args(argv)


def internal_signals(args):
    """The normalized energy of every internal head on `args.rows` random training rows."""
    import torch

    from pabee.data.features import prepare_features
    from pabee.data.sources import open_source
    from pabee.early_exit.rules import normalized_energy
    from pabee.fine_tuning.processes import Runtime
    from pabee.modeling.backbones import backbone_of_folder, load_model, load_tokenizer
    from pabee.scoring.evaluation import EvalSet, run_inference

    source = open_source(DataSettings(task_name=args.task, data_dir=str(Path(args.glue_dir) / args.task)), ("train",), 0)
    runtime, backbone = Runtime(torch.device("cpu"), 0), backbone_of_folder(args.model_dir)
    model = load_model(backbone, args.model_dir, source.task, runtime.device)[0]
    tokenizer = load_tokenizer(backbone, args.model_dir)
    features = prepare_features(source, [(source.task, "train")], tokenizer, 128, runtime)[source.task.name, "train"]
    sample = features.shuffle(seed=0).select(range(min(args.rows, len(features))))
    layers = run_inference(runtime, model, EvalSet.of(source.task, sample, tokenizer.pad_token_id, 64), all_layers=True)[0]
    return normalized_energy(layers.logits[:, :-1].float())


def main(argv=None):
    args = parse_args(argv)
    from pabee.base.logs import setup_logging

    setup_logging()
    signals = internal_signals(args)
    own = float(signals.min()), float(signals.max())  # what a later epoch would draw from (CoseeSchedule.observe)
    print(f"{len(signals)} training rows; internal heads' mean signal: {shown(signals.mean(0).tolist())}; "
          f"all from {own[0]:.3f} to {own[1]:.3f}")
    print_shares(signals, args.low, args.high, "as given")
    print_shares(signals, *own, "the signals' own range, as a later epoch draws")
    return 0


def shown(values):
    return " ".join(f"{v:.3f}" for v in values)


def print_shares(signals, low, high, said):
    """Each head's share of the weight under thresholds uniform in [low, high], at the start,
    middle and end of training and averaged over it, beside PABEE's."""
    from pabee.modeling.cosee import SHARPNESS, head_weight_shares

    depth = signals.shape[1] + 1
    print(f"heads 1..{depth}, share of the loss weight, thresholds uniform in [{low:.3f}, {high:.3f}] ({said}):")
    for beta in SHARPNESSES:
        print(f"  beta {beta:g}: {shown(head_weight_shares(signals, low, high, beta).tolist())}")
    steps = [SHARPNESS * k / 20 for k in range(21)]  # beta_t rises linearly over training
    mean = sum(head_weight_shares(signals, low, high, b) for b in steps) / len(steps)
    print(f"  over training (beta 0 to {SHARPNESS:g}): {shown(mean.tolist())}")
    print(f"  PABEE (i / sum i): {shown(i / (depth * (depth + 1) / 2) for i in range(1, depth + 1))}")

if __name__ == "__main__":
    sys.exit(main())
