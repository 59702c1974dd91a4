"""Fine-tune BERT/ALBERT with PABEE on a GLUE task and evaluate it at several patience values.

The flags are those of the original PABEE run_glue.py; `python run_glue.py --help` lists them.
Bad input stops with one line on stderr and exit code 2, before anything is written.
"""

import argparse
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import glue
from pabee import (
    RULES,
    PatienceRule,
    exit_layers_from_logits,
    exit_stats,
    logits_at_exit,
    make_rule,
    patience_line,
)

logger = logging.getLogger("run_glue")


class UsageError(Exception):
    """Bad input: the message names the problem and the fix."""


def model_classes(model_type):
    """Imported lazily so that --help and argument errors stay fast."""
    from transformers import AlbertTokenizer, BertTokenizer

    from modeling_pabee_albert import AlbertForSequenceClassificationWithPabee
    from modeling_pabee_bert import BertForSequenceClassificationWithPabee

    return {
        "bert": (BertForSequenceClassificationWithPabee, BertTokenizer),
        "albert": (AlbertForSequenceClassificationWithPabee, AlbertTokenizer),
    }[model_type]


# --- arguments ----------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    p = OneLineParser(prog="run_glue.py", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--data_dir", default=None, help="Folder with the task's TSV files; without it GLUE comes from the hub.")
    add("--model_type", required=True, choices=["bert", "albert"])
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


def parse_patience(text):
    values = []
    for part in text.split(","):
        if not re.fullmatch(r"\d+", part.strip()):
            raise UsageError(f"bad --patience '{text}': give a comma list of integers >= 0, e.g. 3,4,5")
        values.append(int(part))
    return values


def parse_thresholds(args):
    """The settings of a baseline criterion: layers >= 1 for fixed, thresholds >= 0 otherwise."""
    if args.exit_criterion != "patience" and args.task.is_regression and args.exit_criterion != "fixed":
        raise UsageError(f"--exit_criterion {args.exit_criterion} needs class probabilities and "
                         f"{args.task.folder} is a regression task: use patience or fixed")
    if not args.exit_thresholds:
        raise UsageError(f"--exit_criterion {args.exit_criterion} needs --exit_thresholds, e.g. "
                         + ("2,4,6" if args.exit_criterion == "fixed" else "0.1,0.2,0.4"))
    pattern = r"[1-9]\d*" if args.exit_criterion == "fixed" else r"\d+(\.\d*)?|\.\d+"
    parts = [part.strip() for part in args.exit_thresholds.split(",")]
    if not all(re.fullmatch(pattern, part) for part in parts):
        wanted = "layers >= 1" if args.exit_criterion == "fixed" else "numbers >= 0"
        raise UsageError(f"bad --exit_thresholds '{args.exit_thresholds}': give a comma list of {wanted}")
    return [int(part) if args.exit_criterion == "fixed" else float(part) for part in parts]


def parse_args(argv):
    args = build_parser().parse_args(argv)
    args.patience_list = parse_patience(args.patience)
    if args.regression_threshold < 0:
        raise UsageError(f"--regression_threshold {args.regression_threshold} is negative: give a value >= 0")
    try:
        args.task = glue.find_task(args.task_name)
    except glue.DataError as e:
        raise UsageError(str(e)) from None
    if args.exit_criterion == "patience":
        if args.exit_thresholds:
            raise UsageError("--exit_thresholds is for the baseline criteria: give patience values with --patience")
        args.settings = args.patience_list
    else:
        args.settings = parse_thresholds(args)
    for flag in ("per_gpu_train_batch_size", "per_gpu_eval_batch_size", "gradient_accumulation_steps",
                 "max_seq_length", "logging_steps", "save_steps"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.fp16 and args.bf16:
        raise UsageError("--fp16 and --bf16 exclude each other: choose one")
    args.local_rank = int(os.environ.get("LOCAL_RANK", args.local_rank))
    return args


def check_paths(args):
    """Everything that can be checked before writing a byte."""
    out = Path(args.output_dir)
    if args.do_train and out.is_dir() and any(out.iterdir()) and not args.overwrite_output_dir:
        raise UsageError(f"output directory {out} exists and is not empty: pass --overwrite_output_dir or another --output_dir")
    if args.data_dir is not None:
        if not Path(args.data_dir).is_dir():
            raise UsageError(f"--data_dir {args.data_dir} is not a folder: point it at the task's folder of TSV files")
        needed = (["train"] if args.do_train else []) + (["dev"] if args.do_eval or args.evaluate_during_training else [])
        needed += ["test"] if args.do_predict else []
        for task in eval_tasks(args):
            for split in needed:
                path = Path(args.data_dir) / task.file_for(split)
                if not path.is_file():
                    raise UsageError(f"missing data file {path}: put the task's {split} file there or fix --data_dir")
    for flag in ("model_name_or_path", "config_name", "tokenizer_name"):
        check_model_reference(getattr(args, flag), flag)


def check_model_reference(name, flag):
    """A local folder must exist; anything else must at least look like a hub name."""
    if not name or Path(name).is_dir():
        return
    if Path(name).exists() or name.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise UsageError(f"--{flag} {name} is not a model folder: give an existing folder or a hub name")


def eval_tasks(args):
    return [glue.TASKS[name] for name in glue.EVAL_TASKS.get(args.task.name, (args.task.name,))]


# --- setup ----------------------------------------------------------------------------------

def setup_device(args):
    if (args.fp16 or args.bf16) and (args.no_cuda or not torch.cuda.is_available()):
        flag = "--fp16" if args.fp16 else "--bf16"
        raise UsageError(f"{flag} needs a CUDA GPU: none is available here, drop {flag} to run in float32")
    args.distributed = args.local_rank != -1
    if args.distributed:
        backend = "nccl" if torch.cuda.is_available() and not args.no_cuda else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(args.local_rank)
        torch.distributed.init_process_group(backend=backend)
        args.device = torch.device("cuda", args.local_rank) if backend == "nccl" else torch.device("cpu")
        args.n_gpu = 1 if backend == "nccl" else 0
        args.world_size, args.rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    else:
        use_cuda = torch.cuda.is_available() and not args.no_cuda
        args.device = torch.device("cuda" if use_cuda else "cpu")
        args.n_gpu = torch.cuda.device_count() if use_cuda else 0
        args.world_size, args.rank = 1, 0
    args.is_main = args.rank == 0
    args.amp_dtype = torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else None


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def barrier(args):
    if args.distributed:
        torch.distributed.barrier()


def load_config(args, name, **kwargs):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, cache_dir=args.cache_dir or None, **kwargs)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load a model config from {name} ({first_line(e)}): check --model_name_or_path") from None
    if config.model_type != args.model_type:
        raise UsageError(
            f"{name} holds a '{config.model_type}' model but --model_type is {args.model_type}: "
            f"pass --model_type {config.model_type} or another model"
        )
    return config


def load_model(args, path):
    model_class, _ = model_classes(args.model_type)
    config = load_config(args, args.config_name or path, num_labels=args.task.num_labels,
                         finetuning_task=args.task.name)
    try:
        return model_class.from_pretrained(path, config=config, cache_dir=args.cache_dir or None).to(args.device)
    except Exception as e:  # missing, truncated or foreign weights: the loaders raise many kinds
        raise UsageError(f"cannot load model weights from {path} ({first_line(e)}): check the folder or hub name") from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")


def load_tokenizer(args, path):
    _, tokenizer_class = model_classes(args.model_type)
    name = args.tokenizer_name or path
    if Path(name).is_dir() and not any((Path(name) / f).is_file() for f in TOKENIZER_FILES):
        # transformers would build an empty-vocabulary tokenizer here, and every word would be [UNK]
        raise UsageError(f"no tokenizer files in {name} ({', '.join(TOKENIZER_FILES)}): pass --tokenizer_name")
    extra = {"do_lower_case": True} if args.do_lower_case else {}
    try:
        return tokenizer_class.from_pretrained(name, cache_dir=args.cache_dir or None, **extra)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load a tokenizer from {args.tokenizer_name or path} ({first_line(e)}): "
                         "pass --tokenizer_name") from None


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# --- data -----------------------------------------------------------------------------------

def read_examples(args, task, split):
    if args.data_dir is not None:
        try:
            return glue.read_split(task, Path(args.data_dir) / task.file_for(split), split)
        except glue.DataError as e:
            raise UsageError(str(e)) from None
    return hub_examples(args, task, split)


def hub_examples(args, task, split):
    """GLUE from the hub (nyu-mll/glue), turned into the same columns as the TSV reader."""
    import datasets

    hub_split = {"train": "train", "dev": task.hub_dev_split, "test": task.hub_test_split}[split]
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its retries would print before our one line
    try:
        data = datasets.load_dataset("nyu-mll/glue", task.hub_config, split=hub_split, cache_dir=args.cache_dir or None)
    except Exception as e:  # offline, unknown config, broken cache: all end the same way
        raise UsageError(
            f"cannot load GLUE {task.folder} from the hub ({first_line(e)}): pass --data_dir <folder with its TSV files>"
        ) from None
    a, b = task.hub_columns
    if split == "test":
        labels = [None] * len(data)
    elif task.is_regression:
        labels = [float(v) for v in data["label"]]
    else:  # the hub names MNLI's classes in another order; "0"/"1" tasks keep their integers
        names = data.features["label"].names
        by_name = set(names) == set(task.labels)
        labels = [task.labels.index(names[v]) if by_name else v for v in data["label"]]
    return {"text_a": data[a], "text_b": data[b] if b else [None] * len(data), "label": labels,
            "index": [str(i) for i in data["idx"]]}


def cache_path(args, task, tokenizer, split):
    root = args.cache_dir or args.data_dir
    if not root:
        return None
    # Keyed by what the tokenizer does, not where it lives: a checkpoint's copy hits the cache.
    # Truncation and padding settings change as the tokenizer is called: leave them out.
    behaviour = {k: v for k, v in json.loads(tokenizer.backend_tokenizer.to_str()).items()
                 if k not in ("truncation", "padding")}
    identity = json.dumps(behaviour, sort_keys=True) + str(sorted(tokenizer.special_tokens_map.items()))
    key = f"{type(tokenizer).__name__}-{stable_hash(identity)}"
    return Path(root) / f"cached_{split}_{key}_{args.max_seq_length}_{task.name}"


def stable_hash(text):
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def prepare_data(args, tokenizer):
    """Every split the run needs, tokenized: {(task name, split): Dataset}. The files to
    tokenize are all read, and so checked, before anything is tokenized or written."""
    wanted = [(args.task, "train")] if args.do_train else []
    wanted += [(t, "dev") for t in eval_tasks(args) if args.do_eval or args.evaluate_during_training]
    wanted += [(t, "test") for t in eval_tasks(args) if args.do_predict]
    paths = {(t.name, s): cache_path(args, t, tokenizer, s) for t, s in wanted}
    fresh = {(t.name, s): read_examples(args, t, s) for t, s in wanted
             if paths[t.name, s] is None or args.overwrite_cache or not paths[t.name, s].exists()}
    return {(t.name, s): load_features(args, t, tokenizer, s, paths[t.name, s], fresh.get((t.name, s)))
            for t, s in wanted}


def load_features(args, task, tokenizer, split, path, examples):
    """Tokenizes `examples` (None: the Arrow cache at `path` is current); rank 0 writes the
    cache, the other processes read it once it is there."""
    import datasets

    features = None
    if examples is not None and (args.is_main or path is None):
        features = tokenize(args, task, tokenizer, split, examples)
        if path is not None:
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            features.save_to_disk(str(tmp))
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
    barrier(args)
    return datasets.load_from_disk(str(path)) if path is not None else features


def tokenize(args, task, tokenizer, split, examples):
    import datasets

    pair = task.text_columns[1] is not None

    def encode(batch):
        return tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True,
                         max_length=args.max_seq_length, return_token_type_ids=True)  # ALBERT's default omits them

    columns = ["text_a", "text_b"] + (["label"] if split == "test" else [])
    return datasets.Dataset.from_dict(examples).map(encode, batched=True, remove_columns=columns,
                                                    desc=f"Tokenizing {task.name} {split}")


def collate(features, pad_id):
    """Pads a batch to its longest sequence."""
    longest = max(len(f["input_ids"]) for f in features)

    def padded(key, value):
        return torch.tensor([f[key] + [value] * (longest - len(f[key])) for f in features])

    batch = {"input_ids": padded("input_ids", pad_id), "attention_mask": padded("attention_mask", 0)}
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = padded("token_type_ids", 0)
    if "label" in features[0]:
        batch["labels"] = torch.tensor([f["label"] for f in features])
    return batch


def eval_loader(args, features, tokenizer):
    """Batches of similar length, longest first, to cut padding; returns the loader and
    `order`, the dataset index of each example in the order the loader yields them."""
    order = np.argsort([-len(ids) for ids in features["input_ids"]], kind="stable")
    loader = DataLoader(features.remove_columns([c for c in ("index",) if c in features.column_names]),
                        batch_size=args.per_gpu_eval_batch_size * max(1, args.n_gpu), sampler=order.tolist(),
                        collate_fn=lambda f: collate(f, tokenizer.pad_token_id))
    return loader, torch.as_tensor(order)


def to_device(batch, device):
    return {k: v.to(device) for k, v in batch.items()}


# --- training -------------------------------------------------------------------------------

def train(args, model, tokenizer, data, resume_from=None):
    from torch.utils.tensorboard import SummaryWriter
    from transformers import get_linear_schedule_with_warmup

    train_features = data[args.task.name, "train"]
    batch_size = args.per_gpu_train_batch_size * max(1, args.n_gpu)
    # DistributedSampler orders each epoch from seed + epoch, with one process as well:
    # the order is reproducible, so a resumed run sees the batches it would have seen.
    sampler = DistributedSampler(train_features, num_replicas=args.world_size, rank=args.rank,
                                 shuffle=True, seed=args.seed)
    loader = DataLoader(train_features, batch_size=batch_size, sampler=sampler,
                        collate_fn=lambda f: collate(f, tokenizer.pad_token_id),
                        generator=torch.Generator())  # keeps the global RNG (dropout) untouched
    steps_per_epoch = len(loader) // args.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise UsageError(f"{len(train_features)} training examples do not fill one step: "
                         "lower --per_gpu_train_batch_size or --gradient_accumulation_steps")
    if args.max_steps > 0:
        total_steps = args.max_steps
        epochs = math.ceil(args.max_steps / steps_per_epoch)
    else:
        epochs = int(args.num_train_epochs)
        total_steps = steps_per_epoch * epochs

    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon)
    scheduler = get_linear_schedule_with_warmup(optimizer, args.warmup_steps, total_steps)
    scaler = torch.amp.GradScaler("cuda") if args.fp16 else None
    global_step = 0
    if resume_from is not None:
        global_step = load_training_state(args, resume_from, optimizer, scheduler, scaler)
        logger.info("Resuming from %s at step %d", resume_from, global_step)

    if args.n_gpu > 1 and not args.distributed:
        model = torch.nn.DataParallel(model)
    if args.distributed:
        ids = [args.local_rank] if args.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    writer = SummaryWriter(str(Path(args.output_dir) / "runs")) if args.is_main else None
    logger.info("Training: %d examples, %d epochs, %d steps, batch %d x %d processes x %d accumulation",
                len(train_features), epochs, total_steps, batch_size, args.world_size,
                args.gradient_accumulation_steps)
    with StopOnSignal() as stop:
        running_loss, logged_loss = 0.0, 0.0
        model.zero_grad()
        for epoch in range(global_step // steps_per_epoch, epochs):
            sampler.set_epoch(epoch)
            skip = (global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
            end = min(steps_per_epoch, total_steps - epoch * steps_per_epoch) * args.gradient_accumulation_steps
            bar = tqdm(islice(loader, skip, end), desc=f"Epoch {epoch + 1}/{epochs}", initial=skip, total=end,
                       disable=not args.is_main)
            for step, batch in enumerate(bar, start=skip):
                running_loss += backward(args, model, batch, scaler)
                if (step + 1) % args.gradient_accumulation_steps:
                    continue
                optimizer_step(args, model, optimizer, scheduler, scaler)
                global_step += 1
                if global_step % args.logging_steps == 0:
                    logs = {"loss": mean_over_processes(args, running_loss - logged_loss) / args.logging_steps,
                            "learning_rate": scheduler.get_last_lr()[0], "step": global_step}
                    logged_loss = running_loss
                    log_training(args, logs, model, tokenizer, data, writer)
                stopping = stop.requested(args)
                if global_step % args.save_steps == 0 or stopping:
                    save_checkpoint(args, unwrap(model), tokenizer, optimizer, scheduler, scaler, global_step)
                if stopping:
                    raise Interrupted(stop.signal, global_step)
                if global_step >= total_steps:
                    break
            if global_step >= total_steps:
                break
    if writer:
        writer.close()
    return global_step


def backward(args, model, batch, scaler):
    """Forward and backward of one batch; returns its loss as a float."""
    model.train()
    with torch.autocast(args.device.type, dtype=args.amp_dtype, enabled=args.amp_dtype is not None):
        loss = model(**to_device(batch, args.device)).loss
    if args.n_gpu > 1 and not args.distributed:
        loss = loss.mean()
    loss = loss / args.gradient_accumulation_steps
    (scaler.scale(loss) if scaler else loss).backward()
    return loss.item()


def optimizer_step(args, model, optimizer, scheduler, scaler):
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    model.zero_grad()


def log_training(args, logs, model, tokenizer, data, writer):
    """One JSON line on stdout and the same scalars in TensorBoard (main process only)."""
    if args.evaluate_during_training and not args.distributed:
        logs.update(training_eval_logs(args, unwrap(model), tokenizer, data, logs["step"]))
    if args.is_main:
        print(json.dumps(logs), flush=True)
        for key, value in logs.items():
            if key != "step":
                writer.add_scalar(key, value, logs["step"])


class Interrupted(Exception):
    def __init__(self, signum, step):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step


class StopOnSignal:
    """SIGINT or SIGTERM during training asks for a stop: the step under way finishes, a
    checkpoint is saved, and run_glue exits (a pre-empted job loses nothing)."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.ask) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def ask(self, signum, frame):
        self.signal = signum

    def requested(self, args):
        """True on every process once any process was signalled (they must stop together)."""
        if not args.distributed:
            return self.signal is not None
        flag = torch.tensor([self.signal or 0], dtype=torch.long, device=args.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self.signal = int(flag) or None
        return self.signal is not None


def mean_over_processes(args, value):
    if not args.distributed:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=args.device)
    torch.distributed.all_reduce(total)
    return float(total) / args.world_size


def training_eval_logs(args, model, tokenizer, data, step):
    """Full-depth dev metrics of the model in training, as eval_* log entries (MNLI's
    mismatched set as eval_mnli-mm_*)."""
    rows = evaluate(args, model, tokenizer, data, f"step-{step}", settings=[], write=False)
    logs = {}
    for row in rows:
        if row["setting"] == model.config.num_hidden_layers:
            prefix = "eval_" if row["task"] == args.task.name else f"eval_{row['task']}_"
            logs.update({prefix + key: value for key, value in metrics_of(row).items()})
    return logs


NOT_METRICS = {"checkpoint", "task", "criterion", "setting", "patience", "n", "mean_exit_layer", "speed_up",
               "original_speed_up", "seconds", "full_depth_seconds", "wallclock_speed_up"}


def metrics_of(row):
    return {k: v for k, v in row.items() if k not in NOT_METRICS}


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def save_checkpoint(args, model, tokenizer, optimizer, scheduler, scaler, step):
    """Written to a temporary folder then renamed, so a crash never leaves a checkpoint-N
    that looks complete. Every process adds its own RNG state."""
    final = Path(args.output_dir) / f"checkpoint-{step}"
    tmp = Path(args.output_dir) / f".checkpoint-{step}.tmp"
    if args.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        write_json(tmp / "training_args.json", args_as_json(args))
        write_json(tmp / "trainer_state.json", {"global_step": step})
    barrier(args)
    save_rng_state(tmp, args.rank)
    barrier(args)
    if args.is_main:
        if final.exists():  # only reachable with --overwrite_output_dir
            shutil.rmtree(final)
        tmp.rename(final)
        logger.info("Saved %s", final)
    barrier(args)


def save_rng_state(folder, rank):
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(folder / f"rng_state_{rank}.safetensors"))
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    write_json(folder / f"rng_state_{rank}.json",
               {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]})


def load_training_state(args, folder, optimizer, scheduler, scaler):
    folder = Path(folder)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=args.device, weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    if scaler and (folder / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    tensors = load_file(str(folder / f"rng_state_{args.rank}.safetensors"))
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    states = json.loads((folder / f"rng_state_{args.rank}.json").read_text())
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return json.loads((folder / "trainer_state.json").read_text())["global_step"]


def resume_folder(args):
    """A checkpoint-N folder given as --model_name_or_path resumes training there."""
    path = Path(args.model_name_or_path)
    if re.fullmatch(r"checkpoint-\d+", path.name) and (path / "trainer_state.json").is_file():
        return path
    return None


def args_as_json(args):
    skip = {"task", "device", "amp_dtype"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def write_json(path, value):
    Path(path).write_text(json.dumps(value, indent=2) + "\n")


# --- evaluation and prediction -------------------------------------------------------------

def run_inference(args, model, loader, order, rule=None, all_layers=False):
    """Runs the dev or test set once. Returns, in dataset order, the logits at each example's
    exit layer (all_layers: every layer's, [N, L, C]) and its exit layer, and the wall-clock
    seconds. Nothing waits for the device inside the loop but the exit loop's own sync."""
    model.eval()
    logits, exits = [], []
    synchronize(args)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in tqdm(loader, desc="Evaluating", disable=not args.is_main, leave=False):
            batch.pop("labels", None)
            with torch.autocast(args.device.type, dtype=args.amp_dtype, enabled=args.amp_dtype is not None):
                out = model(**to_device(batch, args.device), exit_rule=rule, output_all_layer_logits=all_layers)
            logits.append(out.all_layer_logits if all_layers else out.logits)
            exits.append(out.exit_layers)
        logits, exits = torch.cat(logits).float().cpu(), torch.cat(exits).cpu()
    seconds = time.perf_counter() - start
    back = torch.empty_like(order)
    back[order] = torch.arange(len(order))
    return logits[back], exits[back], seconds


def synchronize(args):
    if args.device.type == "cuda":
        torch.cuda.synchronize(args.device)


def predictions_of(task, logits):
    return logits.squeeze(-1).numpy() if task.is_regression else logits.argmax(-1).numpy()


def evaluate(args, model, tokenizer, data, checkpoint, settings=None, write=True):
    """Dev metrics, mean exit layer and speed-up for every exit setting, plus each layer's
    own head ("layer" rows). By default one full-depth pass serves every setting; with
    --timed_inference each setting runs real early exit and is timed against full depth."""
    settings = args.settings if settings is None else settings
    wrapped = torch.nn.DataParallel(model) if args.n_gpu > 1 and not args.distributed else model
    num_layers = model.config.num_hidden_layers
    rows = []
    for task in eval_tasks(args):
        loader, order = eval_loader(args, data[task.name, "dev"], tokenizer)
        labels = np.array(data[task.name, "dev"]["label"])

        def row(criterion, setting, logits, exits, **timing):
            stats = exit_stats(exits, num_layers)
            if write and criterion != "layer":
                print(patience_line(setting, stats, criterion), flush=True)
            named = {"patience": setting} if criterion == "patience" else {}
            return {"checkpoint": checkpoint, "task": task.name, "criterion": criterion, "setting": setting,
                    **named, "n": len(labels), **stats,
                    **glue.compute_metrics(task, predictions_of(task, logits), labels), **timing}

        all_logits, _, _ = run_inference(args, wrapped, loader, order, all_layers=True)
        if args.timed_inference and settings:
            full_depth = run_inference(args, wrapped, loader, order, PatienceRule(0))[2]
            for setting in settings:
                logits, exits, seconds = run_inference(args, wrapped, loader, order, rule_for(args, setting))
                rows.append(row(args.exit_criterion, setting, logits, exits, seconds=seconds,
                                full_depth_seconds=full_depth, wallclock_speed_up=full_depth / seconds))
        else:
            for setting in settings:
                exits = exit_layers_from_logits(all_logits, rule_for(args, setting))
                rows.append(row(args.exit_criterion, setting, logits_at_exit(all_logits, exits), exits))
        for layer in range(1, num_layers + 1):
            rows.append(row("layer", layer, all_logits[:, layer - 1], torch.full((len(labels),), layer)))
        if write:
            write_eval_results(args, task, checkpoint, [r for r in rows if r["task"] == task.name])
    return rows


def rule_for(args, setting):
    return make_rule(args.exit_criterion, setting, args.regression_threshold)


def write_eval_results(args, task, checkpoint, rows):
    """The original's eval_results.txt (`key = value`, keys suffixed by the exit setting),
    one file per checkpoint; MNLI's mismatched set goes to <output_dir>-MM as the original."""
    folder = Path(args.output_dir + ("-MM" if task.name == "mnli-mm" else ""))
    folder = folder / checkpoint if checkpoint.startswith("checkpoint-") else folder
    folder.mkdir(parents=True, exist_ok=True)
    skip = {"checkpoint", "task", "criterion", "setting", "patience"}
    lines = [f"{key}_{row['criterion']}_{row['setting']} = {value}"
             for row in rows for key, value in sorted(row.items()) if key not in skip]
    (folder / "eval_results.txt").write_text("\n".join(lines) + "\n")


def predict(args, model, tokenizer, data):
    """GLUE submission files, one folder per exit setting, e.g. predictions/patience-3/RTE.tsv."""
    for task in eval_tasks(args):
        features = data[task.name, "test"]
        loader, order = eval_loader(args, features, tokenizer)
        all_logits, _, _ = run_inference(args, model, loader, order, all_layers=True)
        for setting in args.settings:
            logits = logits_at_exit(all_logits, exit_layers_from_logits(all_logits, rule_for(args, setting)))
            folder = Path(args.output_dir) / "predictions" / f"{args.exit_criterion}-{setting}"
            folder.mkdir(parents=True, exist_ok=True)
            lines = ["index\tprediction"] + [
                f"{index}\t{glue.submission_value(task, p)}"
                for index, p in zip(features["index"], predictions_of(task, logits))
            ]
            (folder / task.submission).write_text("\n".join(lines) + "\n")
            logger.info("Wrote %s", folder / task.submission)


# --- report -----------------------------------------------------------------------------

def write_report(args, rows):
    """pabee_results.json / .md / pabee_tradeoff.png in output_dir, and the rows in
    TensorBoard. Rows of earlier runs in the same output_dir are kept unless this run
    measured the same (checkpoint, task, criterion, setting): evaluating one criterion per
    run builds up the comparison."""
    out = Path(args.output_dir)
    key = lambda r: (r["checkpoint"], r["task"], r["criterion"], r["setting"])  # noqa: E731
    previous = json.loads((out / "pabee_results.json").read_text()) if (out / "pabee_results.json").is_file() else []
    rows = list({key(r): r for r in previous + rows}.values())
    write_json(out / "pabee_results.json", rows)
    (out / "pabee_results.md").write_text(markdown_table(rows))
    plot_tradeoff(rows, out / "pabee_tradeoff.png")
    log_rows_to_tensorboard(args, rows)


def markdown_table(rows):
    metrics = list(dict.fromkeys(k for r in rows for k in metrics_of(r)))
    timed = any("wallclock_speed_up" in r for r in rows)
    header = ["checkpoint", "task", "criterion", "setting", *metrics, "mean exit layer", "speed-up"]
    header += ["wall-clock speed-up"] if timed else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["checkpoint"], r["task"], r["criterion"], r["setting"],
                 *[f"{r[m]:.4f}" if m in r else "" for m in metrics],
                 f"{r['mean_exit_layer']:.2f}", f"{r['speed_up']:.2f}x"]
        cells += [f"{r['wallclock_speed_up']:.2f}x" if "wallclock_speed_up" in r else ""] if timed else []
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot_tradeoff(rows, path):
    """The task's main metric against speed-up: a line per criterion, a point per layer's own
    head; one panel per task, for the final model (else the first checkpoint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checkpoint = "final" if any(r["checkpoint"] == "final" for r in rows) else rows[0]["checkpoint"]
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["checkpoint"] == checkpoint))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.4 * len(tasks), 4.8), squeeze=False)
    for ax, name in zip(axes[0], tasks):
        metric = glue.TASKS[name].metric
        mine = [r for r in rows if r["checkpoint"] == checkpoint and r["task"] == name]
        for k, criterion in enumerate(dict.fromkeys(r["criterion"] for r in mine)):
            points = sorted((r for r in mine if r["criterion"] == criterion), key=lambda r: r["speed_up"])
            x, y = [r["speed_up"] for r in points], [r[metric] for r in points]
            if criterion == "layer":
                ax.scatter(x, y, marker="x", color="grey", label="single layer (internal classifier)", zorder=3)
                for r in points:
                    ax.annotate(f"L{r['setting']}", (r["speed_up"], r[metric]), fontsize=7,
                                textcoords="offset points", xytext=(3, -9), color="grey")
            else:
                ax.plot(x, y, marker="o", label=criterion, color=f"C{k}")
                for r in points:
                    ax.annotate(str(r["setting"]), (r["speed_up"], r[metric]), fontsize=7, color=f"C{k}",
                                textcoords="offset points", xytext=(3, 3 + 8 * k))  # criteria overlap
        ax.set_xlabel("speed-up (layers: L / mean exit layer)")
        ax.set_ylabel(f"dev {metric}")
        ax.set_title(f"{name}: {metric} against speed-up ({checkpoint})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_rows_to_tensorboard(args, rows):
    """Each row's metrics and speed-up, tagged by task and exit setting, at its checkpoint's step."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(args.output_dir) / "runs")) as writer:
        for r in rows:
            step = int(r["checkpoint"].split("-")[1]) if r["checkpoint"].startswith("checkpoint-") else final_step(args)
            for name, value in {**metrics_of(r), "speed_up": r["speed_up"]}.items():
                writer.add_scalar(f"pabee/{r['task']}/{r['criterion']}={r['setting']}/{name}", value, step)


def final_step(args):
    state = Path(args.output_dir) / "trainer_state.json"
    return json.loads(state.read_text())["global_step"] if state.is_file() else 0


def models_to_evaluate(args):
    """(name, folder) pairs: the trained or given model, then every checkpoint-N if asked."""
    out = Path(args.output_dir)
    main = out if (out / "config.json").is_file() else Path(args.model_name_or_path)
    found = [("final", str(main) if main == out else args.model_name_or_path)]
    if args.eval_all_checkpoints:
        checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        found += [(p.name, str(p)) for p in checkpoints if (p / "config.json").is_file()]
    return found


# --- main -----------------------------------------------------------------------------------

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


def run(args):
    check_paths(args)
    setup_device(args)
    set_seed(args.seed)
    if not (args.do_train or args.do_eval or args.do_predict):
        raise UsageError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    to_evaluate = [] if args.do_train else models_to_evaluate(args)
    for name in [args.config_name or args.model_name_or_path] if args.do_train else [f for _, f in to_evaluate]:
        load_config(args, name)
    tokenizer = load_tokenizer(args, args.model_name_or_path if args.do_train else to_evaluate[0][1])
    data = prepare_data(args, tokenizer)  # bad data stops us before anything is written
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if args.is_main else logging.WARNING)
    logger.info("device %s, %d GPUs, distributed %s, amp %s", args.device, args.n_gpu, args.distributed, args.amp_dtype)
    if args.do_train:
        model = load_model(args, args.model_name_or_path)
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        if args.is_main:
            write_json(Path(args.output_dir) / "training_args.json", args_as_json(args))
        steps = train(args, model, tokenizer, data, resume_folder(args))
        if args.is_main:
            unwrap(model).save_pretrained(args.output_dir)
            tokenizer.save_pretrained(args.output_dir)
            write_json(Path(args.output_dir) / "trainer_state.json", {"global_step": steps})
            logger.info("Trained %d steps; model saved to %s", steps, args.output_dir)
        barrier(args)
    results = []
    if (args.do_eval or args.do_predict) and args.is_main:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        for name, folder in models_to_evaluate(args):
            model = load_model(args, folder)
            tokenizer = load_tokenizer(args, folder)
            if args.do_eval:
                results += evaluate(args, model, tokenizer, data, name)
            if args.do_predict and name == "final":
                predict(args, model, tokenizer, data)
        if args.do_eval:
            write_json(Path(args.output_dir) / "eval_results.json", [r for r in results if r["criterion"] != "layer"])
            write_report(args, results)
    if args.distributed:
        torch.distributed.destroy_process_group()
    return results


if __name__ == "__main__":
    sys.exit(main())
