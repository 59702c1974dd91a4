"""Fine-tune a backbone with PABEE on a GLUE task or own data and evaluate it at several patience values.

The flags are those of the original PABEE run_glue.py; `python run_glue.py --help` lists them.
Bad input stops with one line on stderr and exit code 2, before anything is written.

This file turns the flags into settings (pabee.fine_tuning.run_settings) once and hands them to pabee.fine_tuning.pipeline.run,
which reads top to bottom: checks -> data -> train -> evaluate -> report. torch and transformers
load once the flags are parsed, so that --help and flag errors answer at once.
"""

import argparse
import math
import shlex
import sys
from dataclasses import fields, replace
from pathlib import Path

from pabee.base.choices import ENGINE_STEPS, EXIT_POOLING, EXIT_TRAINING, HEAD_BIAS_INIT, QUANTIZE, RUNTIMES
from pabee.base.cli import OneDefault
from pabee.base.errors import UsageError, os_error_line
from pabee.data.data_settings import DataSettings, ExitChoice
from pabee.early_exit.exit_settings import ExitSettings
from pabee.early_exit.rules import RULES
from pabee.fine_tuning.run_settings import DeviceSettings, EvalSettings, ModelSettings, RunSettings, TrainingSettings
from pabee.modeling.backbones import BACKBONES

M, D, T, E, V = ModelSettings, DataSettings, TrainingSettings, EvalSettings, DeviceSettings  # the defaults


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    p = OneLineParser(prog="run_glue.py", description=__doc__.splitlines()[0],
                      formatter_class=OneDefault)
    add = p.add_argument
    add("--data_dir", default=D.data_dir, help="Folder with the task's TSV files; without it GLUE comes from the hub.")
    add("--model_type", required=True, choices=list(BACKBONES), help="The backbone: " + ", ".join(BACKBONES) + ".")
    add("--model_name_or_path", required=True, help="Hub name, model folder, or a checkpoint-N folder to resume.")
    add("--task_name", default=D.task_name, help="GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI. "
        "With own data files a free name for rows and files (default: the training file's name).")
    add("--output_dir", required=True, help="Where the model, checkpoints, results and reports are written.")
    add("--patience", default="0", help="Comma list of patience values to evaluate, e.g. 3,4,5,6,7,8.")
    add("--regression_threshold", type=float, default=ExitSettings.regression_threshold,
        help="Regression exit: |change| < this counts as agreeing.")
    add("--config_name", default=M.config_name, help="Config to use instead of the model's own (hub name or folder).")
    add("--tokenizer_name", default=M.tokenizer_name, help="Tokenizer to use instead of the model's own (hub name or folder).")
    add("--cache_dir", default="", help="Where hub downloads and the tokenized Arrow cache go (default: the "
        "datasets cache, HF_DATASETS_CACHE; never the data folder).")
    add("--max_seq_length", type=int, default=D.max_seq_length, help="Longest input in tokens; longer ones are "
        "truncated. Clamped to the model's positions.")
    add("--do_train", action="store_true", help="Fine-tune the model with PABEE (or --exit_training).")
    add("--do_eval", action="store_true", help="Evaluate every exit setting on the dev set.")
    add("--do_predict", action="store_true", help="Write GLUE test-set submission files for each patience.")
    add("--evaluate_during_training", action="store_true", help="Full-depth dev metrics at every log.")
    add("--do_lower_case", action="store_true", help="Lower-case the text (uncased models).")
    add("--per_gpu_train_batch_size", type=int, default=T.per_gpu_train_batch_size,
        help="Training batch per GPU (or CPU process).")
    add("--per_gpu_eval_batch_size", type=int, default=E.per_gpu_eval_batch_size,
        help="Evaluation batch per GPU; examples exit one by one.")
    add("--gradient_accumulation_steps", type=int, default=T.gradient_accumulation_steps, help="Batches per optimizer step.")
    add("--learning_rate", type=float, default=T.learning_rate,
        help="AdamW's peak learning rate (small models: see docs/real_model.md).")
    add("--weight_decay", type=float, default=T.weight_decay, help="AdamW weight decay (not on biases and LayerNorm).")
    add("--adam_epsilon", type=float, default=T.adam_epsilon, help="AdamW's epsilon.")
    add("--max_grad_norm", type=float, default=T.max_grad_norm, help="Gradients are clipped to this norm.")
    add("--num_train_epochs", type=float, default=T.num_train_epochs,
        help="Epochs to train (whole epochs), unless --max_steps.")
    add("--max_steps", type=int, default=T.max_steps, help="If > 0: total optimizer steps, overriding num_train_epochs.")
    add("--warmup_steps", type=int, default=T.warmup_steps, help="Steps of linear warm-up before the linear decay.")
    add("--logging_steps", type=int, default=T.logging_steps, help="Log the loss (and dev metrics) every this many steps.")
    add("--save_steps", type=int, default=T.save_steps, help="Save a resumable checkpoint-N every this many steps.")
    add("--eval_all_checkpoints", action="store_true", help="Also evaluate every checkpoint-N in --output_dir.")
    add("--no_cuda", action="store_true", help="Run on the CPU even when a GPU is there.")
    add("--overwrite_output_dir", action="store_true", help="Train into an --output_dir that is not empty.")
    add("--overwrite_cache", action="store_true", help="Tokenize again instead of reading the Arrow cache.")
    add("--seed", type=int, default=RunSettings.seed, help="Seed of every random generator (data order, dropout, new heads).")
    add("--fp16", action="store_true", help="Mixed precision (torch.amp, float16 with a GradScaler); CUDA only.")
    add("--bf16", action="store_true", help="Mixed precision in bfloat16; CUDA only.")
    add("--local_rank", type=int, default=V.local_rank, help="Set by the launcher; torchrun's LOCAL_RANK wins.")
    add("--exit_criterion", choices=list(RULES), default=ExitSettings.criterion,
        help="patience (PABEE, settings from --patience), entropy (DeeBERT), confidence (Shallow-Deep), "
             "fixed (static exit layer); the last three take --exit_thresholds.")
    add("--exit_thresholds", default="", help="Comma list: entropy or confidence thresholds, or fixed exit layers.")
    add("--choose_exit_on", default="dev", help="Rows predict.py's default exit is chosen on: dev (default; the rows "
        "of the dev figures, which then flatter that setting), train:P (P%% of the training rows held out of "
        "training, seeded by --seed; with --do_train) or a file laid out as the dev data. With --do_eval every exit "
        "setting is also evaluated there, in calibration_results.json; dev stays clean for your report.")
    add("--exit_pooling", choices=EXIT_POOLING, default=M.exit_pooling,
        help="What each head's pooler reads of its layer: the first token (the paper) or the attention-masked "
             "mean of the tokens. Saved in the model's config; default: the model's own setting, else first.")
    add("--exit_training", choices=EXIT_TRAINING, default=T.exit_training,
        help="pabee: the weighted loss over every head (the paper); last: the last head alone (vanilla "
             "fine-tuning, internal heads untouched); two_stage (DeeBERT): last, then the internal heads on their "
             "own losses with everything else frozen; self_distill (FastBERT): last, then the internal heads "
             "towards the last layer's predictions with everything else frozen.")
    add("--second_stage_steps", type=int, default=T.second_stage_steps,
        help="Steps of the second stage of two_stage / self_distill (0: as many as the first).")
    add("--distill_temperature", type=float, default=T.distill_temperature,
        help="Softmax temperature of self_distill's targets.")
    add("--num_hidden_layers", type=int, default=T.num_hidden_layers,
        help="Fine-tune only the first k layers of the backbone (0: all); with --exit_training last, the "
             "paper's k-layer baseline rows.")
    add("--head_bias_init", choices=HEAD_BIAS_INIT, default=T.head_bias_init,
        help="zero: new heads start with zero bias (the original); label_prior: at the training labels' mean "
             "(regression) or log class frequencies. See docs/real_model.md.")
    add("--timed_inference", action="store_true",
        help="Also run real early-exit inference for each setting and report its wall-clock speed-up over full "
             "depth: the median of --timing_repeats rounds, with min and max (default: one full-depth pass "
             "serves every setting, same answers, no timing).")
    add("--timing_repeats", type=int, default=E.timing_repeats, help="Rounds of timing per setting with --timed_inference.")
    add("--row_buckets", default=E.row_buckets, help="Exit engine: the row counts a layer call is padded to (auto: "
        "1,8,16,32,64,96,128,192,256 up to the eval batch size on a GPU, exact on the CPU; exact; or a comma list). "
        "See docs/engine.md.")
    add("--engine_step", choices=ENGINE_STEPS, default=E.engine_step, help="Exit engine: compile each layer call "
        "with its head and exit rule into one graph (CUDA: replayed as a CUDA graph), or run it eagerly; auto: "
        "compiled on a GPU, eager on the CPU.")
    add("--length_buckets", default=E.length_buckets, help="Exit engine: the token lengths examples are padded to "
        "(auto: 32,64,128,256,512 up to the longest example on a GPU, exact on the CPU; exact; or a comma list).")
    add("--runtime", choices=RUNTIMES, default=E.runtime, help="Where evaluation runs the layers: torch, or ONNX "
        "Runtime on the CPU (the model cut into one graph per layer with its head, exported once and cached in "
        "the model folder under onnx_cuts/; docs/onnx.md).")
    add("--quantize", choices=QUANTIZE, default=E.quantize, help="With --runtime onnxruntime: int8 layer graphs "
        "(ONNX Runtime's dynamic quantization); the exit table then gives int8's metrics.")
    own = p.add_argument_group("own data (instead of GLUE)")
    add = own.add_argument
    add("--train_file", default=D.train_file, help="Training examples: .csv, .tsv, .json (a list of objects) or .jsonl.")
    add("--validation_file", default=D.validation_file,
        help="Dev examples (same columns), for --do_eval and training-time evaluation.")
    add("--test_file", default=D.test_file, help="Examples to predict with --do_predict (labels not needed).")
    add("--text_columns", default=D.text_columns, help="The text column, or two comma-separated for pairs (default: "
        "the usual names: sentence1+sentence2, question1+question2, premise+hypothesis, question+sentence, sentence, text).")
    add("--label_column", default=D.label_column, help="The label column (default: label, labels or score).")
    add("--dataset_name", default=D.dataset_name, help="A hub dataset (through datasets) instead of files.")
    add("--dataset_config_name", default=D.dataset_config_name, help="The hub dataset's configuration.")
    add("--validation_split_percentage", type=float, default=D.validation_split_percentage,
        help="Without validation data: this percentage of the training rows (seeded by --seed) becomes the dev set.")
    add("--task_type", choices=["classification", "regression"], default=D.task_type,
        help="Default: regression when the training labels are floats, else classification over their sorted names.")
    add("--tsv_quoting", action="store_true", help="Read quotes in .tsv files as CSV does (a quoted field may hold "
        "tabs and newlines); by default every character of a .tsv file is text, as in GLUE's files.")
    add("--skip_unlabeled_rows", action="store_true", help="Leave out training and validation rows that give no "
        "label (an empty cell, null, a missing key, NaN, or NA, N/A, None, null... among numeric labels), counted in "
        "one line per file; by default such a row is an error naming its file and line.")
    add("--metric_for_table", default=D.metric_for_table, help="The main metric of tables and plots: acc (default), "
        "macro_f1, and for two labels f1 or mcc; regression: pearson (default), spearmanr or mse.")
    return p


# Every numeric flag's valid range: (test, what to give). Out of range is a one-line error;
# --max_seq_length is also clamped to what the model takes.
RANGES = {
    "regression_threshold": (lambda v: v >= 0, "a number >= 0"),
    "max_seq_length": (lambda v: v >= 1, "a length >= 1"),
    "per_gpu_train_batch_size": (lambda v: v >= 1, "a batch size >= 1"),
    "per_gpu_eval_batch_size": (lambda v: v >= 1, "a batch size >= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "a number of batches >= 1"),
    "learning_rate": (lambda v: v >= 0, "a rate >= 0"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "adam_epsilon": (lambda v: v > 0, "a number > 0"),
    "max_grad_norm": (lambda v: v > 0, "a norm > 0"),
    "num_train_epochs": (lambda v: v > 0, "a number of epochs > 0"),
    "max_steps": (lambda v: v == -1 or v >= 1, "-1 (train --num_train_epochs) or a number of steps >= 1"),
    "warmup_steps": (lambda v: v >= 0, "a number of steps >= 0"),
    "logging_steps": (lambda v: v >= 1, "a number of steps >= 1"),
    "save_steps": (lambda v: v >= 1, "a number of steps >= 1"),
    "seed": (lambda v: 0 <= v < 2**32, "a seed from 0 to 2**32 - 1"),
    "local_rank": (lambda v: v >= -1, "-1 (no launcher) or a GPU index"),
    "timing_repeats": (lambda v: v >= 1, "a number of rounds >= 1"),
    "validation_split_percentage": (lambda v: 0 <= v < 100, "a percentage from 0 (none) to below 100"),
    "second_stage_steps": (lambda v: v >= 0, "0 (as many as the first stage) or a number of steps"),
    "distill_temperature": (lambda v: v > 0, "a temperature > 0"),
    "num_hidden_layers": (lambda v: v >= 0, "0 (every layer) or a number of layers >= 1"),
}


def check_ranges(flags):
    for flag, (valid, wanted) in RANGES.items():
        value = getattr(flags, flag)
        if not (math.isfinite(value) and valid(value)):
            raise UsageError(f"--{flag} {value} is out of range: give {wanted}")


def pick(cls, flags):
    """The settings of class `cls` from the flags of the same names."""
    return cls(**{f.name: getattr(flags, f.name) for f in fields(cls)})


def settings_from_flags(flags):
    """The run the flags ask for, checked as far as the flags alone allow."""
    check_ranges(flags)
    exits = ExitSettings.parse(flags.exit_criterion, flags.patience, flags.exit_thresholds, flags.regression_threshold)
    data = replace(pick(DataSettings, flags), choose_exit_on=ExitChoice.parse(flags.choose_exit_on))
    return RunSettings(output_dir=flags.output_dir, model=pick(ModelSettings, flags), data=data,
                       exits=exits, training=pick(TrainingSettings, flags) if flags.do_train else None,
                       do_eval=flags.do_eval, do_predict=flags.do_predict, evaluation=pick(EvalSettings, flags),
                       device=pick(DeviceSettings, flags), seed=flags.seed, cache_dir=flags.cache_dir or None,
                       overwrite_output_dir=flags.overwrite_output_dir)


def parse_args(argv):
    """The run's settings from the command line (argparse's own errors exit here)."""
    return settings_from_flags(build_parser().parse_args(argv))


def main(argv=None):
    try:
        settings = parse_args(argv)
    except UsageError as e:
        return usage_error(e)
    from pabee.base.logs import setup_logging
    from pabee.fine_tuning.loop import Interrupted
    from pabee.fine_tuning.pipeline import run

    setup_logging()
    try:
        run(settings)
    except UsageError as e:
        return usage_error(e)
    except Interrupted as e:
        checkpoint = Path(settings.output_dir) / f"checkpoint-{e.step}"
        print(f"run_glue.py: {e}; saved {checkpoint}: resume with the same flags and --model_name_or_path "
              f"{shlex.quote(str(checkpoint))} --output_dir {shlex.quote(settings.output_dir)} --overwrite_output_dir",
              file=sys.stderr)
        return 128 + e.signum
    except OSError as e:
        return usage_error(os_error_line(e))
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves and stops): every file written is whole
        print("run_glue.py: stopped by SIGINT before the run ended; the files it wrote are complete", file=sys.stderr)
        return 130
    return 0


def usage_error(error):
    print(f"run_glue.py: error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
