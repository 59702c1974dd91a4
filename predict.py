"""Run a fine-tuned PABEE model on new text, each example exiting at its own layer.

    python predict.py --model_dir DIR [--patience P | --exit_criterion C --exit_thresholds T]
                      [--input FILE|-] [--output FILE|-] [--output_format jsonl|tsv]

Input: plain text, one example per line (a tab separates the two texts of a pair), or a
.csv/.tsv/.json/.jsonl file with text columns (--text_columns, else the usual names). Output, in
input order: the text(s), the label name and its probability (classification) or the value
(regression), and the exit layer. Reading standard input, each batch is answered as soon as it
fills, or when the input pauses. Without --patience or --exit_criterion the exit is the one
chosen from the run's results (on the rows run_glue --choose_exit_on gave, else on dev); the first
line on stderr says which exit is used, why, and what it was chosen on.
Bad input: one line on stderr, exit code 2.
"""

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from pabee.base.choices import ENGINE_STEPS, QUANTIZE, RUNTIMES, check_runtime
from pabee.base.cli import OneDefault
from pabee.base.errors import UsageError, os_error_line
from pabee.base.file_io import describe_missing
from pabee.early_exit.exit_settings import ExitSettings, parse_buckets
from pabee.early_exit.rules import RULES


def build_parser():
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__.splitlines()[0],
                                formatter_class=OneDefault)
    add = p.add_argument
    add("--model_dir", required=True, help="A folder run_glue.py trained (or any of its checkpoint-N).")
    add_exit_flags(add)
    add("--input", default="-", help="A file (.txt, .csv, .tsv, .json, .jsonl) or - for standard input (plain text).")
    add("--output", default="-", help="Where answers go: a file or - for standard output.")
    add("--output_format", choices=["jsonl", "tsv"], default="jsonl", help="One JSON object per line, or TSV with a header.")
    add("--batch_size", type=int, default=32, help="Most rows a layer call of the exit engine runs; each example exits "
        "at its own layer and new ones take the places of those that left.")
    add("--row_buckets", default="auto", help="Row counts a layer call is padded to (auto: fixed on a GPU, exact on "
        "the CPU; exact; or a comma list), as run_glue.py.")
    add("--engine_step", choices=ENGINE_STEPS, default="auto", help="Compile each layer call (CUDA: a CUDA "
        "graph) or run it eagerly; auto: compiled on a GPU, eager on the CPU, as run_glue.py.")
    add("--length_buckets", default="auto", help="Token lengths examples are padded to (auto, exact or a comma "
        "list), as run_glue.py.")
    add("--runtime", choices=RUNTIMES, default="torch", help="Run the layers on torch, or on ONNX Runtime (CPU): "
        "the model cut into one graph per layer with its head, exported once and cached under the model's onnx_cuts/ "
        "(docs/onnx.md).")
    add("--quantize", choices=QUANTIZE, default="none", help="With --runtime onnxruntime: int8 layer graphs "
        "(ONNX Runtime's dynamic quantization; run_glue.py --quantize int8 says what they cost on dev).")
    add("--text_columns", default=None, help="Text column(s) of a CSV/TSV/JSON input, comma-separated "
        "for pairs (default: the usual names, as run_glue.py).")
    add("--tsv_quoting", action="store_true", help="Read quotes in a .tsv input as CSV does (as run_glue.py).")
    add("--max_seq_length", type=int, default=None, help="Longest input in tokens (default: the training run's).")
    add("--pause", type=float, default=0.2, help="Seconds without input after which a partial batch is answered.")
    add("--no_cuda", action="store_true", help="Run on the CPU even when a GPU is there.")
    return p


def add_exit_flags(add):
    """The exit flags predict.py and serve.py share (`exit_settings` reads them)."""
    add("--patience", type=int, default=None, help="Patience of the exit (default: the exit chosen from the run's results, see above).")
    add("--exit_criterion", choices=list(RULES), default=None, help="The exit criterion (as run_glue.py; default: the "
        "chosen exit's).")
    add("--exit_thresholds", default=None, help="The criterion's one setting (entropy / confidence "
        "threshold, fixed layer; default: the chosen exit's).")
    add("--regression_threshold", type=float, default=None, help="Regression agreement threshold (default: the chosen "
        "exit's).")


def main(argv=None):
    flags = build_parser().parse_args(argv)
    interrupted = threading.Event()  # a Ctrl-C whose KeyboardInterrupt was swallowed still ends in 130

    def on_sigint(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        check_flags(flags)
        from pabee.base.logs import setup_logging
        from pabee.deploy.prediction_input import read_input
        from pabee.deploy.prediction_output import Writer, check_output, open_output
        from pabee.deploy.predictor import Predictor

        setup_logging()
        check_output(flags.output, flags.input, flags.model_dir)
        exits, why = exit_settings(flags)
        buckets = parse_buckets(flags.row_buckets, "--row_buckets"), parse_buckets(flags.length_buckets,
                                                                                   "--length_buckets")
        predictor = Predictor.load(flags.model_dir, exits, flags.max_seq_length, flags.no_cuda, flags.batch_size,
                                   buckets, flags.engine_step, flags.runtime, flags.quantize)
        batches, columns, total = read_input(flags.input, flags.batch_size, flags.text_columns, flags.pause,
                                             flags.tsv_quoting)
        print(f"predict.py: exit {exits.criterion} {exits.settings[0]}: {why}", file=sys.stderr, flush=True)
        with open_output(flags.output) as out:
            write = Writer(out, flags.output_format, columns, predictor.model.config.num_labels == 1)
            done = predictor.run(batches, write, total)
        if interrupted.is_set():
            raise KeyboardInterrupt
        if done.examples:
            print(f"predict.py: {done.examples} examples in {done.seconds:.2f} s ({done.examples / done.seconds:.1f} "
                  f"examples/s), mean exit layer {done.mean_exit:.2f} of {done.layers}, speed-up "
                  f"{done.layers / done.mean_exit:.2f}x", file=sys.stderr)
        if warning := done.one_class():
            print(f"predict.py: warning: {warning}", file=sys.stderr)
    except UsageError as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): nothing left to say
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as e:  # a disk that fills, a file that cannot be written
        print(f"predict.py: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the answers written so far are whole lines
        print("predict.py: stopped by SIGINT", file=sys.stderr)
        return 130
    return 0


def check_flags(flags):
    if flags.batch_size < 1 or flags.pause <= 0 or (flags.max_seq_length is not None and flags.max_seq_length < 1):
        raise UsageError("--batch_size and --max_seq_length must be >= 1 and --pause > 0")
    if not (Path(flags.model_dir) / "config.json").is_file():
        raise UsageError(f"--model_dir {flags.model_dir} holds no config.json: give a folder run_glue.py wrote")
    if flags.input != "-" and not Path(flags.input).is_file():
        raise UsageError(f"--input {flags.input} is not a file ({describe_missing(flags.input)}): give a text, CSV, "
                         "TSV, JSON or JSONL file, or -")
    check_runtime(flags.runtime, flags.quantize)


def exit_settings(flags):
    """(exit settings, why): the flags' exit, parsed as run_glue parses it, else the one chosen on
    dev (pabee.scoring.default_exit.chosen_exit), whose regression threshold also stands unless one is given."""
    from pabee.scoring.default_exit import chosen_exit

    default, why = chosen_exit(flags.model_dir)
    threshold = default.regression_threshold if flags.regression_threshold is None else flags.regression_threshold
    if flags.patience is None and flags.exit_criterion is None:
        return ExitSettings(default.criterion, default.settings, threshold), why
    criterion = flags.exit_criterion or "patience"
    patience = "0" if flags.patience is None else str(flags.patience)
    exits = ExitSettings.parse(criterion, patience, flags.exit_thresholds or "", threshold)
    if len(exits.settings) != 1:
        raise UsageError(f"--exit_thresholds {flags.exit_thresholds}: give one setting")
    asked = "--patience" if criterion == "patience" else "--exit_criterion and --exit_thresholds"
    return exits, f"as asked ({asked})"


if __name__ == "__main__":
    sys.exit(main())
