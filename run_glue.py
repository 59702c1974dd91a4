"""Fine-tune BERT/ALBERT with PABEE on a GLUE task and evaluate it at several patience values.

The flags are those of the original PABEE run_glue.py; `python run_glue.py --help` lists them.
Bad input stops with one line on stderr and exit code 2, before anything is written.

The run reads top to bottom in `run`: flags -> checks -> data -> train -> evaluate -> report.
"""

import argparse
import json
import logging
import re
import sys
from pathlib import Path

import glue
from backbones import BACKBONES, check_model_reference, load_config, load_model, load_tokenizer
from data import DataSource, prepare_data
from evaluation import EvalSet, evaluate, predict_test_sets
from pabee import RULES
from report import print_exit_lines, write_eval_results, write_report, write_submissions
from runtime import ExitPlan, UsageError, set_seed, start_runtime, write_json
from training import Interrupted, resume_folder, train, unwrap

logger = logging.getLogger("run_glue")


# --- flags ------------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    p = OneLineParser(prog="run_glue.py", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--data_dir", default=None, help="Folder with the task's TSV files; without it GLUE comes from the hub.")
    add("--model_type", required=True, choices=list(BACKBONES))
    add("--model_name_or_path", required=True, help="Hub name, model folder, or a checkpoint-N folder to resume.")
    add("--task_name", required=True, help="GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI.")
    add("--output_dir", required=True)
    add("--patience", default="0", help="Comma list of patience values to evaluate, e.g. 3,4,5,6,7,8.")
    add("--regression_threshold", type=float, default=0.0, help="Regression exit: |change| < this counts as agreeing.")
    add("--config_name", default="")
    add("--tokenizer_name", default="")
    add("--cache_dir", default="", help="Where hub downloads and the tokenized Arrow cache go.")
    add("--max_seq_length", type=int, default=128)
    add("--do_train", action="store_true")
    add("--do_eval", action="store_true")
    add("--do_predict", action="store_true", help="Write GLUE test-set submission files for each patience.")
    add("--evaluate_during_training", action="store_true")
    add("--do_lower_case", action="store_true")
    add("--per_gpu_train_batch_size", type=int, default=8)
    add("--per_gpu_eval_batch_size", type=int, default=8)
    add("--gradient_accumulation_steps", type=int, default=1)
    add("--learning_rate", type=float, default=5e-5)
    add("--weight_decay", type=float, default=0.0)
    add("--adam_epsilon", type=float, default=1e-8)
    add("--max_grad_norm", type=float, default=1.0)
    add("--num_train_epochs", type=float, default=3.0)
    add("--max_steps", type=int, default=-1, help="If > 0: total optimizer steps, overriding num_train_epochs.")
    add("--warmup_steps", type=int, default=0)
    add("--logging_steps", type=int, default=500)
    add("--save_steps", type=int, default=500)
    add("--eval_all_checkpoints", action="store_true")
    add("--no_cuda", action="store_true")
    add("--overwrite_output_dir", action="store_true")
    add("--overwrite_cache", action="store_true")
    add("--seed", type=int, default=42)
    add("--fp16", action="store_true", help="Mixed precision (torch.amp, float16 with a GradScaler); CUDA only.")
    add("--bf16", action="store_true", help="Mixed precision in bfloat16; CUDA only.")
    add("--local_rank", type=int, default=-1, help="Set by the launcher; torchrun's LOCAL_RANK wins.")
    add("--exit_criterion", choices=list(RULES), default="patience",
        help="patience (PABEE, settings from --patience), entropy (DeeBERT), confidence (Shallow-Deep), "
             "fixed (static exit layer); the last three take --exit_thresholds.")
    add("--exit_thresholds", default="", help="Comma list: entropy or confidence thresholds, or fixed exit layers.")
    add("--timed_inference", action="store_true",
        help="Run real early-exit inference for each setting and report the wall-clock speed-up over full depth "
             "(default: one full-depth pass serves every setting, same answers, no timing).")
    return p


def parse_settings(text, rule, flag):
    """A comma list of the criterion's settings, each of its type and at least its minimum."""
    pattern = r"\d+" if rule.setting_type is int else r"\d+(\.\d*)?|\.\d+"
    parts = [part.strip() for part in text.split(",")]
    if not all(re.fullmatch(pattern, part) and rule.setting_type(part) >= rule.min_setting for part in parts):
        kind = "integers" if rule.setting_type is int else "numbers"
        raise UsageError(f"bad {flag} '{text}': give a comma list of {kind} >= {rule.min_setting}, e.g. {rule.example}")
    return tuple(rule.setting_type(part) for part in parts)


def exit_plan(flags):
    """The task(s) and exit settings the flags ask for. Patience settings come from --patience,
    the other criteria's from --exit_thresholds."""
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
        if rule.needs_probabilities and task.is_regression:
            raise UsageError(f"--exit_criterion {rule.name} needs class probabilities and "
                             f"{task.folder} is a regression task: use patience or fixed")
        if not flags.exit_thresholds:
            raise UsageError(f"--exit_criterion {rule.name} needs --exit_thresholds, e.g. {rule.example}")
        settings = parse_settings(flags.exit_thresholds, rule, "--exit_thresholds")
    eval_tasks = tuple(glue.TASKS[name] for name in glue.EVAL_TASKS.get(task.name, (task.name,)))
    return ExitPlan(task, eval_tasks, rule.name, settings, flags.regression_threshold)


def parse_args(argv):
    """The flags as parsed, after the checks that need no file."""
    flags = build_parser().parse_args(argv)
    if flags.regression_threshold < 0:
        raise UsageError(f"--regression_threshold {flags.regression_threshold} is negative: give a value >= 0")
    for flag in ("per_gpu_train_batch_size", "per_gpu_eval_batch_size", "gradient_accumulation_steps",
                 "max_seq_length", "logging_steps", "save_steps"):
        if getattr(flags, flag) < 1:
            raise UsageError(f"--{flag} must be >= 1, got {getattr(flags, flag)}")
    if flags.fp16 and flags.bf16:
        raise UsageError("--fp16 and --bf16 exclude each other: choose one")
    return flags


def check_paths(flags, plan):
    """Everything that can be checked before writing a byte."""
    out = Path(flags.output_dir)
    if flags.do_train and out.is_dir() and any(out.iterdir()) and not flags.overwrite_output_dir:
        raise UsageError(f"output directory {out} exists and is not empty: pass --overwrite_output_dir or another --output_dir")
    if flags.data_dir is not None:
        if not Path(flags.data_dir).is_dir():
            raise UsageError(f"--data_dir {flags.data_dir} is not a folder: point it at the task's folder of TSV files")
        for task, split in splits_needed(flags, plan):
            path = Path(flags.data_dir) / task.file_for(split)
            if not path.is_file():
                raise UsageError(f"missing data file {path}: put the task's {split} file there or fix --data_dir")
    for flag in ("model_name_or_path", "config_name", "tokenizer_name"):
        check_model_reference(getattr(flags, flag), flag)


def splits_needed(flags, plan):
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
        run(parse_args(argv))
    except UsageError as e:
        print(f"run_glue.py: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"run_glue.py: {e}; saved checkpoint-{e.step}: resume with --model_name_or_path "
              f"<output_dir>/checkpoint-{e.step} --overwrite_output_dir", file=sys.stderr)
        return 128 + e.signum
    return 0


def run(flags):
    plan = exit_plan(flags)
    check_paths(flags, plan)
    runtime = start_runtime(flags.no_cuda, flags.fp16, flags.bf16, flags.local_rank)
    set_seed(flags.seed)
    if not (flags.do_train or flags.do_eval or flags.do_predict):
        raise UsageError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    backbone = BACKBONES[flags.model_type]
    cache_dir = flags.cache_dir or None
    models = [flags.model_name_or_path] if flags.do_train else [f for _, f in models_to_evaluate(flags)]
    for name in [flags.config_name or flags.model_name_or_path] if flags.do_train else models:
        load_config(backbone, name, cache_dir)
    tokenizer = load_tokenizer(backbone, flags.tokenizer_name or models[0], flags.do_lower_case, cache_dir)
    source = DataSource(flags.data_dir, cache_dir, flags.max_seq_length, flags.overwrite_cache)
    data = prepare_data(source, splits_needed(flags, plan), tokenizer, runtime)  # bad data stops us here
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if runtime.is_main else logging.WARNING)
    logger.info("device %s, %d GPUs, distributed %s, amp %s", runtime.device, runtime.n_gpu, runtime.distributed,
                runtime.amp_dtype)
    if flags.do_train:
        model = load_model(backbone, flags.model_name_or_path, plan.task, runtime.device, flags.config_name, cache_dir)
        out = Path(flags.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        if runtime.is_main:
            write_json(out / "training_args.json", vars(flags))
        dev_sets = eval_sets(flags, plan, runtime, data, "dev", tokenizer) if flags.evaluate_during_training else ()
        steps = train(flags, runtime, model, tokenizer, data[plan.task.name, "train"], dev_sets,
                      resume_folder(flags.model_name_or_path))
        if runtime.is_main:
            unwrap(model).save_pretrained(out)
            tokenizer.save_pretrained(out)
            write_json(out / "trainer_state.json", {"global_step": steps})
            logger.info("Trained %d steps; model saved to %s", steps, out)
        runtime.barrier()
    if (flags.do_eval or flags.do_predict) and runtime.is_main:
        evaluate_and_report(flags, plan, runtime, backbone, data)
    runtime.shut_down()


def eval_sets(flags, plan, runtime, data, split, tokenizer):
    batch_size = flags.per_gpu_eval_batch_size * max(1, runtime.n_gpu)
    return [EvalSet.of(t, data[t.name, split], tokenizer.pad_token_id, batch_size) for t in plan.eval_tasks]


def evaluate_and_report(flags, plan, runtime, backbone, data):
    """Every model to evaluate on the dev sets (rows, console lines, reports), and the final
    model's test-set submission files."""
    Path(flags.output_dir).mkdir(parents=True, exist_ok=True)
    rows = []
    for name, folder in models_to_evaluate(flags):
        model = load_model(backbone, folder, plan.task, runtime.device, flags.config_name, flags.cache_dir or None)
        tokenizer = load_tokenizer(backbone, flags.tokenizer_name or folder, flags.do_lower_case,
                                   flags.cache_dir or None)
        if flags.do_eval:
            new = evaluate(runtime, plan, model, eval_sets(flags, plan, runtime, data, "dev", tokenizer), name,
                           flags.timed_inference)
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
