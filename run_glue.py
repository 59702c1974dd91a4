"""Fine-tune a backbone with PABEE on a GLUE task or own data and evaluate it at several patience values.

The flags are those of the original PABEE run_glue.py; `python run_glue.py --help` lists them.
Bad input stops with one line on stderr and exit code 2, before anything is written.

The run reads top to bottom in `run`: flags -> checks -> data -> train -> evaluate -> report.
The modules that load torch and transformers are imported once the flags are parsed, so that
--help and flag errors answer at once.
"""

import argparse
import json
import logging
import math
import re
import shlex
import sys
from pathlib import Path

import glue
import own_data
from backbones import (
    BACKBONES,
    check_hub_reachable,
    check_model_reference,
    load_config,
    load_model,
    load_tokenizer,
    log_new_parameters,
)
from exit_rules import EXIT_POOLING, EXIT_TRAINING, RULES
from runtime import ExitPlan, UsageError, set_seed, start_runtime, write_json

logger = logging.getLogger("run_glue")


# --- flags ------------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    p = OneLineParser(prog="run_glue.py", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--data_dir", default=None, help="Folder with the task's TSV files; without it GLUE comes from the hub.")
    add("--model_type", required=True, choices=list(BACKBONES), help="The backbone: " + ", ".join(BACKBONES) + ".")
    add("--model_name_or_path", required=True, help="Hub name, model folder, or a checkpoint-N folder to resume.")
    add("--task_name", default=None, help="GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI. With own "
        "data files a free name for rows and files (default: the training file's name).")
    add("--output_dir", required=True, help="Where the model, checkpoints, results and reports are written.")
    add("--patience", default="0", help="Comma list of patience values to evaluate, e.g. 3,4,5,6,7,8.")
    add("--regression_threshold", type=float, default=0.0, help="Regression exit: |change| < this counts as agreeing.")
    add("--config_name", default="", help="Config to use instead of the model's own (hub name or folder).")
    add("--tokenizer_name", default="", help="Tokenizer to use instead of the model's own (hub name or folder).")
    add("--cache_dir", default="", help="Where hub downloads and the tokenized Arrow cache go (default: the "
        "datasets cache, HF_DATASETS_CACHE; never the data folder).")
    add("--max_seq_length", type=int, default=128, help="Longest input in tokens; longer ones are truncated. "
        "Clamped to the model's positions.")
    add("--do_train", action="store_true", help="Fine-tune the model with PABEE (or --exit_training).")
    add("--do_eval", action="store_true", help="Evaluate every exit setting on the dev set.")
    add("--do_predict", action="store_true", help="Write GLUE test-set submission files for each patience.")
    add("--evaluate_during_training", action="store_true", help="Full-depth dev metrics at every log.")
    add("--do_lower_case", action="store_true", help="Lower-case the text (uncased models).")
    add("--per_gpu_train_batch_size", type=int, default=8, help="Training batch per GPU (or CPU process).")
    add("--per_gpu_eval_batch_size", type=int, default=8, help="Evaluation batch per GPU; examples exit one by one.")
    add("--gradient_accumulation_steps", type=int, default=1, help="Batches per optimizer step.")
    add("--learning_rate", type=float, default=5e-5, help="AdamW's peak learning rate (small models: see README).")
    add("--weight_decay", type=float, default=0.0, help="AdamW weight decay (not on biases and LayerNorm).")
    add("--adam_epsilon", type=float, default=1e-8, help="AdamW's epsilon.")
    add("--max_grad_norm", type=float, default=1.0, help="Gradients are clipped to this norm.")
    add("--num_train_epochs", type=float, default=3.0, help="Epochs to train (whole epochs), unless --max_steps.")
    add("--max_steps", type=int, default=-1, help="If > 0: total optimizer steps, overriding num_train_epochs.")
    add("--warmup_steps", type=int, default=0, help="Steps of linear warm-up before the linear decay.")
    add("--logging_steps", type=int, default=500, help="Log the loss (and dev metrics) every this many steps.")
    add("--save_steps", type=int, default=500, help="Save a resumable checkpoint-N every this many steps.")
    add("--eval_all_checkpoints", action="store_true", help="Also evaluate every checkpoint-N in --output_dir.")
    add("--no_cuda", action="store_true", help="Run on the CPU even when a GPU is there.")
    add("--overwrite_output_dir", action="store_true", help="Train into an --output_dir that is not empty.")
    add("--overwrite_cache", action="store_true", help="Tokenize again instead of reading the Arrow cache.")
    add("--seed", type=int, default=42, help="Seed of every random generator (data order, dropout, new heads).")
    add("--fp16", action="store_true", help="Mixed precision (torch.amp, float16 with a GradScaler); CUDA only.")
    add("--bf16", action="store_true", help="Mixed precision in bfloat16; CUDA only.")
    add("--local_rank", type=int, default=-1, help="Set by the launcher; torchrun's LOCAL_RANK wins.")
    add("--exit_criterion", choices=list(RULES), default="patience",
        help="patience (PABEE, settings from --patience), entropy (DeeBERT), confidence (Shallow-Deep), "
             "fixed (static exit layer); the last three take --exit_thresholds.")
    add("--exit_thresholds", default="", help="Comma list: entropy or confidence thresholds, or fixed exit layers.")
    add("--exit_pooling", choices=EXIT_POOLING, default=None,
        help="What each head's pooler reads of its layer: the first token (the paper) or the attention-masked "
             "mean of the tokens. Saved in the model's config; default: the model's own setting, else first.")
    add("--exit_training", choices=EXIT_TRAINING, default="pabee",
        help="pabee: the weighted loss over every head (the paper); last: the last head alone (vanilla "
             "fine-tuning, internal heads untouched); two_stage (DeeBERT): last, then the internal heads on their "
             "own losses with everything else frozen; self_distill (FastBERT): last, then the internal heads "
             "towards the last layer's predictions with everything else frozen.")
    add("--second_stage_steps", type=int, default=0,
        help="Steps of the second stage of two_stage / self_distill (0: as many as the first).")
    add("--distill_temperature", type=float, default=1.0, help="Softmax temperature of self_distill's targets.")
    add("--num_hidden_layers", type=int, default=0,
        help="Fine-tune only the first k layers of the backbone (0: all); with --exit_training last, the "
             "paper's k-layer baseline rows.")
    add("--head_bias_init", choices=["zero", "label_prior"], default="zero",
        help="zero: new heads start with zero bias (the original); label_prior: at the training labels' mean "
             "(regression) or log class frequencies. See README, 'Fine-tuning a real model'.")
    add("--timed_inference", action="store_true",
        help="Also run real early-exit inference for each setting and report its wall-clock speed-up over full "
             "depth: the median of --timing_repeats rounds, with min and max (default: one full-depth pass "
             "serves every setting, same answers, no timing).")
    add("--timing_repeats", type=int, default=3, help="Rounds of timing per setting with --timed_inference.")
    own = p.add_argument_group("own data (instead of GLUE)")
    add = own.add_argument
    add("--train_file", default=None, help="Training examples: .csv, .tsv, .json (a list of objects) or .jsonl.")
    add("--validation_file", default=None, help="Dev examples (same columns), for --do_eval and training-time evaluation.")
    add("--test_file", default=None, help="Examples to predict with --do_predict (labels not needed).")
    add("--text_columns", default=None, help="The text column, or two comma-separated for pairs (default: the usual "
        "names: sentence1+sentence2, question1+question2, premise+hypothesis, question+sentence, sentence, text).")
    add("--label_column", default=None, help="The label column (default: label, labels or score).")
    add("--dataset_name", default=None, help="A hub dataset (through datasets) instead of files.")
    add("--dataset_config_name", default=None, help="The hub dataset's configuration.")
    add("--validation_split_percentage", type=float, default=0.0,
        help="Without validation data: this percentage of the training rows (seeded by --seed) becomes the dev set.")
    add("--task_type", choices=["classification", "regression"], default=None,
        help="Default: regression when the training labels are floats, else classification over their sorted names.")
    add("--metric_for_table", default=None, help="The main metric of tables and plots: acc (default), macro_f1, and "
        "for two labels f1 or mcc; regression: pearson (default), spearmanr or mse.")
    return p


def parse_settings(text, rule, flag):
    """A comma list of the criterion's settings, each of its type and at least its minimum."""
    pattern = r"\d+" if rule.setting_type is int else r"\d+(\.\d*)?|\.\d+"
    parts = [part.strip() for part in text.split(",")]

    def valid(part):
        value = rule.setting_type(part)
        return value >= rule.min_setting and (rule.max_setting is None or value <= rule.max_setting)

    if not all(re.fullmatch(pattern, part) and valid(part) for part in parts):
        kind = "integers" if rule.setting_type is int else "numbers"
        bounds = f">= {rule.min_setting}" if rule.max_setting is None else f"from {rule.min_setting} to {rule.max_setting}"
        raise UsageError(f"bad {flag} '{text}': give a comma list of {kind} {bounds}, e.g. {rule.example}")
    return tuple(rule.setting_type(part) for part in parts)


def exit_plan(flags, task=None):
    """The task(s) and exit settings the flags ask for. Patience settings come from --patience,
    the other criteria's from --exit_thresholds. The task of own data is known once its files
    are read: until then (`task` None with data files) the plan has none."""
    if task is None and not own_data.wanted(flags):
        if not flags.task_name:
            raise UsageError("no task: pass --task_name with a GLUE task, or --train_file / --dataset_name with own data")
        try:
            task = glue.find_task(flags.task_name)
        except glue.DataError as e:
            raise UsageError(str(e)) from None
    rule = RULES[flags.exit_criterion]
    patience = parse_settings(flags.patience, RULES["patience"], "--patience")
    if flags.exit_criterion == "patience":
        if flags.exit_thresholds:
            raise UsageError("--exit_thresholds is for the baseline criteria: give patience values with --patience")
        settings = patience
    else:
        if rule.needs_probabilities and task is not None and task.is_regression:
            raise UsageError(f"--exit_criterion {rule.name} needs class probabilities and "
                             f"{task.folder} is a regression task: use patience or fixed")
        if not flags.exit_thresholds:
            raise UsageError(f"--exit_criterion {rule.name} needs --exit_thresholds, e.g. {rule.example}")
        settings = parse_settings(flags.exit_thresholds, rule, "--exit_thresholds")
    if task is None or task.scores != "glue":
        eval_tasks = () if task is None else (task,)
    else:
        eval_tasks = tuple(glue.TASKS[name] for name in glue.EVAL_TASKS.get(task.name, (task.name,)))
    return ExitPlan(task, eval_tasks, rule.name, settings, flags.regression_threshold)


# Every numeric flag's valid range: (test, what to give). Out of range is a one-line error;
# --max_seq_length is also clamped to what the model takes (check_model_limits).
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


def parse_args(argv):
    """The flags as parsed, after the checks that need no file."""
    flags = build_parser().parse_args(argv)
    check_ranges(flags)
    if flags.fp16 and flags.bf16:
        raise UsageError("--fp16 and --bf16 exclude each other: choose one")
    return flags


def check_paths(flags, plan):
    """Everything that can be checked before writing a byte."""
    out = Path(flags.output_dir)
    if flags.do_train and out.is_dir() and any(out.iterdir()) and not flags.overwrite_output_dir:
        raise UsageError(f"output directory {out} exists and is not empty: pass --overwrite_output_dir or another --output_dir")
    if own_data.wanted(flags):
        check_own_data_flags(flags)
    elif flags.data_dir is not None:
        if not Path(flags.data_dir).is_dir():
            raise UsageError(f"--data_dir {flags.data_dir} is not a folder: point it at the task's folder of TSV files")
        for task, split in splits_needed(flags, plan):
            path = Path(flags.data_dir) / task.file_for(split)
            if not path.is_file():
                raise UsageError(f"missing data file {path}: put the task's {split} file there or fix --data_dir")
    loads_models = flags.do_train or not (Path(flags.output_dir) / "config.json").is_file()
    for flag in ("model_name_or_path", "config_name", "tokenizer_name"):
        check_model_reference(getattr(flags, flag), flag)
        if loads_models:
            check_hub_reachable(getattr(flags, flag), flag, flags.cache_dir or None)


def check_own_data_flags(flags):
    if flags.data_dir is not None:
        raise UsageError("--data_dir is for GLUE tasks: drop it, or drop --train_file / --dataset_name")
    if flags.dataset_name and any(getattr(flags, f) for f in own_data.SPLIT_FLAGS.values()):
        raise UsageError("--dataset_name and data files exclude each other: give one of them")
    if flags.do_train and not (flags.train_file or flags.dataset_name):
        raise UsageError("--do_train needs training data: pass --train_file")
    for flag in own_data.SPLIT_FLAGS.values():
        if getattr(flags, flag):
            try:
                own_data.check_file(getattr(flags, flag), flag)
            except glue.DataError as e:
                raise UsageError(str(e)) from None


def check_model_limits(flags, plan, configs, tokenizer):
    """Settings the model cannot honour: fixed exit layers beyond its depth are an error; a
    --max_seq_length beyond its positions (or its tokenizer's limit) is clamped, as transformers'
    run_glue does. Returns the length used and, when clamped, the warning to give."""
    depth = min(c.num_hidden_layers for c in configs)
    if flags.do_train and flags.num_hidden_layers:
        if flags.num_hidden_layers > depth:
            raise UsageError(f"--num_hidden_layers {flags.num_hidden_layers} is more than the model's {depth} layers: "
                             f"give 1 to {depth}")
        depth = flags.num_hidden_layers
    if plan.criterion == "fixed" and max(plan.settings) > depth:
        raise UsageError(f"--exit_thresholds {flags.exit_thresholds}: fixed exit layer {max(plan.settings)} is beyond "
                         f"the model's {depth} layers: give layers from 1 to {depth}")
    limit = min([c.max_position_embeddings for c in configs] + [tokenizer.model_max_length])
    if flags.max_seq_length <= limit:
        return flags.max_seq_length, None
    return limit, f"--max_seq_length {flags.max_seq_length} is more than the model takes ({limit} positions): using {limit}"


def splits_needed(flags, plan, present=None):
    """(task, split) pairs the run reads. `present`: the splits own data has, to say what is missing."""
    if present is not None:
        for split, needed, fix in (("dev", flags.do_eval or flags.evaluate_during_training,
                                    "pass --validation_file or --validation_split_percentage"),
                                   ("test", flags.do_predict, "pass --test_file")):
            if needed and split not in present:
                raise UsageError(f"no {'validation' if split == 'dev' else 'test'} data for "
                                 f"{'--do_eval' if split == 'dev' else '--do_predict'}: {fix}")
    wanted = [(plan.task, "train")] if flags.do_train else []
    wanted += [(t, "dev") for t in plan.eval_tasks if flags.do_eval or flags.evaluate_during_training]
    return wanted + [(t, "test") for t in plan.eval_tasks if flags.do_predict]


def models_to_evaluate(flags):
    """(name, folder) pairs: the trained or given model, then every checkpoint-N if asked."""
    out = Path(flags.output_dir)
    found = [("final", str(out) if (out / "config.json").is_file() else flags.model_name_or_path)]
    if flags.eval_all_checkpoints:
        checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        found += [(p.name, str(p)) for p in checkpoints if (p / "config.json").is_file()]
    return found


# --- main -------------------------------------------------------------------------------------

def main(argv=None):
    try:
        flags = parse_args(argv)
        plan = exit_plan(flags)
    except UsageError as e:
        return usage_error(e)
    from training import Interrupted

    try:
        run(flags, plan)
    except UsageError as e:
        return usage_error(e)
    except Interrupted as e:
        checkpoint = Path(flags.output_dir) / f"checkpoint-{e.step}"
        print(f"run_glue.py: {e}; saved {checkpoint}: resume with the same flags and --model_name_or_path "
              f"{shlex.quote(str(checkpoint))} --output_dir {shlex.quote(flags.output_dir)} --overwrite_output_dir",
              file=sys.stderr)
        return 128 + e.signum
    return 0


def usage_error(error):
    print(f"run_glue.py: error: {error}", file=sys.stderr)
    return 2


def run(flags, plan):
    from data import DataSource, prepare_data

    check_paths(flags, plan)
    runtime = start_runtime(flags.no_cuda, flags.fp16, flags.bf16, flags.local_rank)
    set_seed(flags.seed)
    if not (flags.do_train or flags.do_eval or flags.do_predict):
        raise UsageError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    backbone = BACKBONES[flags.model_type]
    cache_dir = flags.cache_dir or None
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if runtime.is_main else logging.WARNING)
    models = [flags.model_name_or_path] if flags.do_train else [f for _, f in models_to_evaluate(flags)]
    configs = [load_config(backbone, name, cache_dir)
               for name in ([flags.config_name or flags.model_name_or_path] if flags.do_train else models)]
    own = None
    if plan.task is None:  # own data: the task is what its files say
        own = read_own_data(flags, configs[0])
        plan = exit_plan(flags, own.task)
    tokenizer = load_tokenizer(backbone, flags.tokenizer_name or models[0], flags.do_lower_case, cache_dir)
    max_seq_length, clamped = check_model_limits(flags, plan, configs, tokenizer)
    training = {"exit_training": flags.exit_training, "distill_temperature": flags.distill_temperature,
                "num_hidden_layers": flags.num_hidden_layers or None} if flags.do_train else {}
    model, loaded = load_model(backbone, models[0], plan.task, runtime.device, flags.config_name, cache_dir,
                               exit_pooling=flags.exit_pooling, **training)
    source = DataSource(flags.data_dir, cache_dir, max_seq_length, flags.overwrite_cache, own)
    wanted = splits_needed(flags, plan, own.examples if own else None)
    data = prepare_data(source, wanted, tokenizer, runtime)  # bad data stops us here
    # Every input is checked: what is worth saying about them comes now, not before an error line.
    if clamped:
        logger.warning(clamped)
    log_new_parameters(models[0], loaded)
    logger.info("device %s, %d GPUs, distributed %s, amp %s", runtime.device, runtime.n_gpu, runtime.distributed,
                runtime.amp_dtype)
    if flags.do_train:
        fine_tune(flags, plan, runtime, model, loaded["new_heads"], tokenizer, data)
    if (flags.do_eval or flags.do_predict) and runtime.is_main:
        evaluate_and_report(flags, plan, runtime, backbone, data, final_model=model)
    runtime.shut_down()


def read_own_data(flags, config):
    try:
        return own_data.load(flags, config)
    except glue.DataError as e:
        raise UsageError(str(e)) from None


def fine_tune(flags, plan, runtime, model, heads_new, tokenizer, data):
    """Trains `model` in place and saves it in --output_dir, then warns if it collapsed."""
    from training import resume_folder, train, unwrap

    if flags.head_bias_init == "label_prior":
        model.init_head_bias(data[plan.task.name, "train"]["label"], heads_new)
    out = Path(flags.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if runtime.is_main:
        write_json(out / "training_args.json", vars(flags))
    dev_sets = eval_sets(flags, plan, runtime, data, "dev", tokenizer)  # empty when no dev split was asked for
    steps = train(flags, runtime, model, tokenizer, data[plan.task.name, "train"],
                  dev_sets if flags.evaluate_during_training else (), resume_folder(flags.model_name_or_path))
    if runtime.is_main:
        unwrap(model).save_pretrained(out)
        tokenizer.save_pretrained(out)
        write_json(out / "trainer_state.json", {"global_step": steps})
        logger.info("Trained %d steps; model saved to %s", steps, out)
        warn_if_collapsed(runtime, model, dev_sets)
    runtime.barrier()


def warn_if_collapsed(runtime, model, dev_sets):
    """One warning line per dev set on which the trained model's full-depth answers ignore the input."""
    from evaluation import collapse, full_depth_predictions

    predictions = full_depth_predictions(runtime, model, dev_sets)
    for dev in dev_sets:
        sign = collapse(dev.task, predictions[dev.task.name], dev.labels)
        if sign:
            logger.warning("fine-tuning collapsed on %s: %s. Try --head_bias_init label_prior, --exit_pooling mean, "
                           "a lower --learning_rate or more --warmup_steps (README: 'Fine-tuning a real model')",
                           dev.task.folder, sign)


def eval_sets(flags, plan, runtime, data, split, tokenizer):
    from evaluation import EvalSet

    batch_size = flags.per_gpu_eval_batch_size * max(1, runtime.n_gpu)
    return [EvalSet.of(t, data[t.name, split], tokenizer.pad_token_id, batch_size)
            for t in plan.eval_tasks if (t.name, split) in data]


def evaluate_and_report(flags, plan, runtime, backbone, data, final_model):
    """Every model to evaluate on the dev sets (rows, console lines, reports), and the final
    model's test-set submission files. The final model is the one trained or loaded already."""
    from evaluation import evaluate, predict_test_sets
    from report import print_exit_lines, write_eval_results, write_report, write_submissions

    Path(flags.output_dir).mkdir(parents=True, exist_ok=True)
    rows = []
    for name, folder in models_to_evaluate(flags):
        model = final_model
        if name != "final":
            model, loaded = load_model(backbone, folder, plan.task, runtime.device, flags.config_name,
                                       flags.cache_dir or None, exit_pooling=flags.exit_pooling)
            log_new_parameters(folder, loaded)
        tokenizer = load_tokenizer(backbone, flags.tokenizer_name or folder, flags.do_lower_case,
                                   flags.cache_dir or None)
        if flags.do_eval:
            new = evaluate(runtime, plan, model, eval_sets(flags, plan, runtime, data, "dev", tokenizer), name,
                           flags.timing_repeats if flags.timed_inference else 0)
            print_exit_lines(new)
            rows += new
        if flags.do_predict and name == "final":
            tests = eval_sets(flags, plan, runtime, data, "test", tokenizer)
            write_submissions(flags.output_dir, plan.criterion, tests, predict_test_sets(runtime, plan, model, tests))
    if flags.do_eval:
        write_eval_results(flags.output_dir, rows)
        write_report(flags.output_dir, rows, final_step(flags.output_dir))


def final_step(output_dir):
    state = Path(output_dir) / "trainer_state.json"
    return json.loads(state.read_text())["global_step"] if state.is_file() else 0


if __name__ == "__main__":
    sys.exit(main())
