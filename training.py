"""Fine-tuning: the optimizer and schedule, the loop (logging, evaluation during training),
stopping on a signal, checkpoints and resuming from them bitwise."""

import json
import logging
import math
import random
import re
import shutil
import signal
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from data import to_device, train_loader
from evaluation import full_depth_metrics
from exit_rules import STAGES
from runtime import UsageError, write_json

logger = logging.getLogger("run_glue")


def train(flags, runtime, model, tokenizer, features, dev_sets=(), resume_from=None):
    """Fine-tunes `model` in place, stage by stage (exit_rules.STAGES of its exit_training: one
    stage, or two for two_stage and self_distill, whose second stage trains only the internal
    heads for --second_stage_steps); returns the number of optimizer steps done. Steps count on
    across stages, so checkpoint-N names one point of the whole run and a resume lands in its
    stage. `flags` are run_glue's parsed flags; `dev_sets`, when given, are evaluated at full
    depth at every log."""
    from torch.utils.tensorboard import SummaryWriter

    batch_size = flags.per_gpu_train_batch_size * max(1, runtime.n_gpu)
    loader, sampler = train_loader(features, tokenizer.pad_token_id, batch_size, runtime, flags.seed)
    steps_per_epoch = len(loader) // flags.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise UsageError(f"{len(features)} training examples do not fill one step: "
                         "lower --per_gpu_train_batch_size or --gradient_accumulation_steps")
    first = flags.max_steps if flags.max_steps > 0 else steps_per_epoch * int(flags.num_train_epochs)
    regimes = STAGES[model.config.exit_training]
    lengths = [first] + [flags.second_stage_steps or first] * (len(regimes) - 1)
    resume = training_state(resume_from) if resume_from is not None else None
    writer = SummaryWriter(str(Path(flags.output_dir) / "runs")) if runtime.is_main else None
    done = 0
    for number, (regime, length) in enumerate(zip(regimes, lengths), start=1):
        stage = Stage(number if len(regimes) > 1 else None, regime, done, done + length)
        if resume is not None and resume["global_step"] >= stage.end:
            done = stage.end  # finished before the checkpoint
            continue
        if resume is not None and resume["global_step"] == stage.start:
            restore_rng(resume_from, runtime)  # the checkpoint closed the stage before this one
        inside = resume is not None and resume["global_step"] > stage.start
        done = run_stage(flags, runtime, model, tokenizer, stage, loader, sampler, steps_per_epoch,
                         dev_sets, writer, resume_from if inside else None)
        resume = None
    if writer:
        writer.close()
    return done


@dataclass(frozen=True)
class Stage:
    """Steps start+1 .. end of a run, trained with one loss (`regime`); `number` is None when the
    run has one stage."""

    number: int | None
    regime: str
    start: int
    end: int


def trainable(model, regime):
    """The names of the parameters a regime trains, and requires_grad set to match."""
    internal = {id(p) for p in model.internal_head_parameters()}
    names = set()
    for name, p in model.named_parameters():
        p.requires_grad_(regime == "pabee" or (id(p) in internal) != (regime == "last"))
        if p.requires_grad:
            names.add(name)
    return names


def run_stage(flags, runtime, model, tokenizer, stage, loader, sampler, steps_per_epoch, dev_sets, writer,
              resume_from):
    """One stage's loop: its own optimizer and schedule over the parameters it trains."""
    from transformers import get_linear_schedule_with_warmup

    names = trainable(model, stage.regime)
    optimizer = make_optimizer(model, flags.learning_rate, flags.weight_decay, flags.adam_epsilon, names)
    scheduler = get_linear_schedule_with_warmup(optimizer, flags.warmup_steps, stage.end - stage.start)
    scaler = torch.amp.GradScaler("cuda") if runtime.amp_dtype == torch.float16 else None
    global_step, loss_since_log = stage.start, 0.0
    if resume_from is not None:
        global_step, loss_since_log = load_training_state(resume_from, runtime, optimizer, scheduler, scaler)
        logger.info("Resuming from %s at step %d", resume_from, global_step)
    wrapped = model
    if runtime.data_parallel:
        wrapped = torch.nn.DataParallel(model)
    if runtime.distributed:
        ids = [runtime.local_rank] if runtime.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    accumulation = flags.gradient_accumulation_steps
    epochs = math.ceil((stage.end - stage.start) / steps_per_epoch)
    label = f"stage {stage.number} ({stage.regime}) " if stage.number else ""
    logger.info("Training%s: %d examples, %d epochs, %d steps, batch %d x %d processes x %d accumulation%s",
                f" {label.strip()}" if label else "", len(loader.dataset), epochs, stage.end - stage.start,
                flags.per_gpu_train_batch_size * max(1, runtime.n_gpu), runtime.world_size, accumulation,
                f" (steps {stage.start + 1} to {stage.end})" if stage.number else "")
    try:
        with StopOnSignal() as stop:
            wrapped.zero_grad()
            for epoch in range((global_step - stage.start) // steps_per_epoch, epochs):
                sampler.set_epoch(epoch)
                local = global_step - stage.start
                skip = (local - epoch * steps_per_epoch) * accumulation
                end = min(steps_per_epoch, stage.end - stage.start - epoch * steps_per_epoch) * accumulation
                bar = tqdm(islice(loader, skip, end), desc=f"{label}Epoch {epoch + 1}/{epochs}", initial=skip,
                           total=end, disable=not runtime.is_main)
                for step, batch in enumerate(bar, start=skip):
                    loss_since_log += backward(runtime, wrapped, batch, scaler, accumulation, stage.regime)
                    if (step + 1) % accumulation:
                        continue
                    optimizer_step(wrapped, optimizer, scheduler, scaler, flags.max_grad_norm)
                    global_step += 1
                    if global_step % flags.logging_steps == 0:
                        logs = {"loss": mean_over_processes(runtime, loss_since_log) / flags.logging_steps,
                                "learning_rate": scheduler.get_last_lr()[0], "step": global_step}
                        logs.update({"stage": stage.number} if stage.number else {})
                        loss_since_log = 0.0
                        if dev_sets and not runtime.distributed:
                            logs.update(eval_logs(runtime, model, dev_sets))
                        log_training(logs, writer)
                    stopping = stop.requested(runtime)
                    if global_step % flags.save_steps == 0 or stopping:
                        save_checkpoint(flags, runtime, model, tokenizer, optimizer, scheduler, scaler, global_step,
                                        mean_over_processes(runtime, loss_since_log), stage.number)
                    if stopping:
                        raise Interrupted(stop.signal, global_step)
                    if global_step >= stage.end:
                        return global_step
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return global_step


def make_optimizer(model, learning_rate, weight_decay, epsilon, names=None):
    """AdamW over the parameters `names` (default: all), with no weight decay on biases and
    LayerNorm weights, as the original."""
    no_decay = ("bias", "LayerNorm.weight")
    chosen = [(n, p) for n, p in model.named_parameters() if names is None or n in names]
    groups = [
        {"params": [p for n, p in chosen if not any(k in n for k in no_decay)], "weight_decay": weight_decay},
        {"params": [p for n, p in chosen if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, eps=epsilon)


def backward(runtime, model, batch, scaler, accumulation, regime):
    """Forward and backward of one batch under the stage's loss; returns the loss as a float."""
    model.train()
    with torch.autocast(runtime.device.type, dtype=runtime.amp_dtype, enabled=runtime.amp_dtype is not None):
        loss = model(**to_device(batch, runtime.device), training_regime=regime).loss
    if runtime.data_parallel:
        loss = loss.mean()
    loss = loss / accumulation
    (scaler.scale(loss) if scaler else loss).backward()
    return loss.item()


def optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm):
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    model.zero_grad()


def eval_logs(runtime, model, dev_sets):
    """Full-depth dev metrics as eval_* entries; a second dev set (MNLI mismatched) as
    eval_<task>_*."""
    logs = {}
    for i, (task, metrics) in enumerate(full_depth_metrics(runtime, model, dev_sets).items()):
        prefix = "eval_" if i == 0 else f"eval_{task}_"
        logs.update({prefix + key: value for key, value in metrics.items()})
    return logs


def log_training(logs, writer):
    """One JSON line on stdout and the same scalars in TensorBoard (main process only)."""
    if writer is None:
        return
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

    def requested(self, runtime):
        """True on every process once any process was signalled (they must stop together)."""
        if not runtime.distributed:
            return self.signal is not None
        flag = torch.tensor([self.signal or 0], dtype=torch.long, device=runtime.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self.signal = int(flag) or None
        return self.signal is not None


def mean_over_processes(runtime, value):
    if not runtime.distributed:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    torch.distributed.all_reduce(total)
    return float(total) / runtime.world_size


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def save_checkpoint(flags, runtime, model, tokenizer, optimizer, scheduler, scaler, step, loss_since_log, stage=None):
    """Written to a temporary folder then renamed, so a crash never leaves a checkpoint-N
    that looks complete. Every process adds its own RNG state. `loss_since_log` (the loss summed
    since the last log, averaged over processes) lets a resumed run log what an uninterrupted
    one would."""
    final = Path(flags.output_dir) / f"checkpoint-{step}"
    tmp = Path(flags.output_dir) / f".checkpoint-{step}.tmp"
    if runtime.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        write_json(tmp / "training_args.json", vars(flags))
        write_json(tmp / "trainer_state.json", {"global_step": step, "loss_since_log": loss_since_log,
                                                **({"stage": stage} if stage else {})})
    runtime.barrier()
    save_rng_state(tmp, runtime.rank)
    runtime.barrier()
    if runtime.is_main:
        if final.exists():  # only reachable with --overwrite_output_dir
            shutil.rmtree(final)
        tmp.rename(final)
        logger.info("Saved %s", final)
    runtime.barrier()


def save_rng_state(folder, rank):
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(folder / f"rng_state_{rank}.safetensors"))
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    write_json(folder / f"rng_state_{rank}.json",
               {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]})


def load_training_state(folder, runtime, optimizer, scheduler, scaler):
    folder = Path(folder)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=runtime.device, weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    if scaler and (folder / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    restore_rng(folder, runtime)
    state = training_state(folder)
    return state["global_step"], state.get("loss_since_log", 0.0)


def training_state(folder):
    return json.loads((Path(folder) / "trainer_state.json").read_text())


def restore_rng(folder, runtime):
    folder = Path(folder)
    tensors = load_file(str(folder / f"rng_state_{runtime.rank}.safetensors"))
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    states = json.loads((folder / f"rng_state_{runtime.rank}.json").read_text())
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def resume_folder(model_name_or_path):
    """A checkpoint-N folder given as --model_name_or_path resumes training there."""
    path = Path(model_name_or_path)
    if re.fullmatch(r"checkpoint-\d+", path.name) and (path / "trainer_state.json").is_file():
        return path
    return None
