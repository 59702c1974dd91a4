"""Fine-tuning, to be read top to bottom. `train` runs the stages of the model's regime (one, or two
for two_stage and self_distill) over one data order; steps count on across stages, so
checkpoint-N names one point of the whole run and a resume lands in its stage. `run_stage` is one
stage's loop: its optimizer and schedule, where a resume lands, then per step forward and backward
under the stage's loss, clipping, AdamW, logging (with dev metrics), checkpoints and a stop on a
signal. The arithmetic of which batches a stage reads is `stage_batches`; files are
pabee.fine_tuning.checkpoints'."""

import json
import logging
import math
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
from tqdm import tqdm

from pabee.base.choices import STAGES
from pabee.base.errors import Interrupted, UsageError
from pabee.data.features import to_device, train_loader
from pabee.fine_tuning.checkpoints import load_states, restore_rng, save_checkpoint, training_state
from pabee.modeling.cosee import CoseeSchedule
from pabee.modeling.losses import batch_regime
from pabee.scoring.evaluation import full_depth_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """Steps start+1 .. end of a run, trained with one loss (`regime`); `number` is None when the
    run has one stage."""

    number: int | None
    regime: str
    start: int
    end: int

    @property
    def label(self):
        return f"stage {self.number} ({self.regime}) " if self.number else ""


@dataclass(frozen=True)
class Job:
    """What every stage of a run shares: the settings (run_settings.TrainingSettings), where it runs,
    the model and tokenizer, the batches, the dev sets evaluated at each log, and where it writes
    (`record`: the run's settings, saved in every checkpoint)."""

    settings: object
    runtime: object
    model: object
    tokenizer: object
    loader: object
    sampler: object
    steps_per_epoch: int
    dev_sets: tuple
    writer: object
    output_dir: Path
    record: dict


def train(settings, runtime, model, tokenizer, features, output_dir, seed, record, dev_sets=(), resume_from=None):
    """Fine-tunes `model` in place, stage by stage; returns the number of optimizer steps done.
    `dev_sets`, when given, are evaluated at full depth at every log; `resume_from` is a
    checkpoint-N folder to continue from."""
    from torch.utils.tensorboard import SummaryWriter

    batch_size = settings.per_gpu_train_batch_size * max(1, runtime.n_gpu)
    loader, sampler = train_loader(features, tokenizer.pad_token_id, batch_size, runtime, seed)
    steps_per_epoch = len(loader) // settings.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise UsageError(f"{len(features)} training examples do not fill one step: "
                         "lower --per_gpu_train_batch_size or --gradient_accumulation_steps")
    writer = SummaryWriter(str(Path(output_dir) / "runs")) if runtime.is_main else None
    job = Job(settings, runtime, model, tokenizer, loader, sampler, steps_per_epoch, tuple(dev_sets), writer,
              Path(output_dir), record)
    resumed = training_state(resume_from)["global_step"] if resume_from is not None else None
    step = 0
    try:
        for stage in plan_stages(settings, model.config.exit_training, steps_per_epoch):
            if resumed is not None and resumed >= stage.end:
                step = stage.end  # finished before the checkpoint
                continue
            if resumed is not None and resumed == stage.start:
                restore_rng(resume_from, runtime)  # the checkpoint closed the stage before this one
            inside = resumed is not None and resumed > stage.start
            step = run_stage(job, stage, resume_from if inside else None)
            resumed = None
    finally:
        if writer:
            writer.close()
    return step


def plan_stages(settings, exit_training, steps_per_epoch):
    """The stages of the regime: the first trains --max_steps (else the epochs), a second stage
    --second_stage_steps (else as many)."""
    regimes = STAGES[exit_training]
    first = settings.max_steps if settings.max_steps > 0 else steps_per_epoch * int(settings.num_train_epochs)
    stages, start = [], 0
    for number, regime in enumerate(regimes, start=1):
        length = first if number == 1 else settings.second_stage_steps or first
        stages.append(Stage(number if len(regimes) > 1 else None, regime, start, start + length))
        start += length
    return stages


def run_stage(job, stage, resume_from):
    """One stage's loop; returns the step it ended at."""
    settings, runtime = job.settings, job.runtime
    with trainable(job.model, stage.regime) as names:
        optimizer = make_optimizer(job.model, settings.learning_rate, settings.weight_decay, settings.adam_epsilon,
                                   names)
        scheduler = linear_schedule(optimizer, settings.warmup_steps, stage.end - stage.start)
        scaler = torch.amp.GradScaler("cuda") if runtime.amp_dtype == torch.float16 else None
        step, loss_since_log, state = stage.start, 0.0, {}
        if resume_from is not None:
            load_states(resume_from, runtime, optimizer, scheduler, scaler)
            state = training_state(resume_from)
            step, loss_since_log = state["global_step"], state.get("loss_since_log", 0.0)
            logger.info("Resuming from %s at step %d", resume_from, step)
        cosee = CoseeSchedule.from_state(state.get("cosee")) if stage.regime == "cosee" else None
        wrapped = for_training(job.model, runtime)
        log_start(job, stage)
        with StopOnSignal() as stop:
            wrapped.zero_grad()
            for number, batch in stage_batches(job, stage, step):
                regime = (cosee.batch(number, (step - stage.start) / (stage.end - stage.start)) if cosee
                          else batch_regime(stage.regime, number))
                loss, logits = backward(runtime, wrapped, batch, scaler, settings.gradient_accumulation_steps, regime,
                                        keep_logits=cosee is not None)
                loss_since_log += loss
                if cosee:
                    cosee.observe(logits)
                if (number + 1) % settings.gradient_accumulation_steps:
                    continue
                optimizer_step(wrapped, optimizer, scheduler, scaler, settings.max_grad_norm)
                step += 1
                if step % settings.logging_steps == 0:
                    log_progress(job, stage, step, loss_since_log, scheduler.get_last_lr()[0])
                    loss_since_log = 0.0
                stopping = stop.requested(runtime)
                if step % settings.save_steps == 0 or stopping:
                    states = {"optimizer.pt": optimizer.state_dict(), "scheduler.pt": scheduler.state_dict(),
                              **({"scaler.pt": scaler.state_dict()} if scaler else {})}
                    trainer_state = {"global_step": step, "loss_since_log": mean_over_processes(runtime, loss_since_log),
                                     **({"stage": stage.number} if stage.number else {}),
                                     **({"cosee": cosee.state()} if cosee else {})}
                    save_checkpoint(job.output_dir, step, runtime, job.model, job.tokenizer, states, job.record,
                                    trainer_state)
                if stopping:
                    raise Interrupted(stop.signal, step)
                if step >= stage.end:
                    break
    return step


def stage_batches(job, stage, step):
    """(batch number within its epoch, batch) for the rest of the stage from `step`: the epoch a
    resumed step falls in is skipped to where it stood (the sampler orders each epoch from the
    seed and the epoch number, so the batches are those an uninterrupted run sees)."""
    accumulation, per_epoch = job.settings.gradient_accumulation_steps, job.steps_per_epoch
    length = stage.end - stage.start
    epochs = math.ceil(length / per_epoch)
    first = (step - stage.start) // per_epoch
    for epoch in range(first, epochs):
        job.sampler.set_epoch(epoch)
        skip = (step - stage.start - epoch * per_epoch) * accumulation if epoch == first else 0
        end = min(per_epoch, length - epoch * per_epoch) * accumulation
        bar = tqdm(islice(job.loader, skip, end), desc=f"{stage.label}Epoch {epoch + 1}/{epochs}", initial=skip,
                   total=end, disable=not job.runtime.is_main)
        yield from enumerate(bar, start=skip)


@contextmanager
def trainable(model, regime):
    """The names of the parameters a regime trains, with requires_grad set to match for the stage
    (every parameter trainable again after it)."""
    internal = {id(p) for p in model.internal_head_parameters()}
    only = {"last": "the rest", "internal": "internal", "distill": "internal"}.get(regime)  # else: everything
    names = set()
    for name, p in model.named_parameters():
        p.requires_grad_(only is None or (id(p) in internal) == (only == "internal"))
        if p.requires_grad:
            names.add(name)
    try:
        yield names
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


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


def linear_schedule(optimizer, warmup_steps, total_steps):
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)


def for_training(model, runtime):
    """Several GPUs without torchrun share each batch (DataParallel); torchrun's processes
    synchronise gradients (DistributedDataParallel)."""
    if runtime.data_parallel:
        return torch.nn.DataParallel(model)
    if runtime.distributed:
        ids = [runtime.local_rank] if runtime.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def backward(runtime, model, batch, scaler, accumulation, regime, keep_logits=False):
    """Forward and backward of one batch under the stage's loss; returns the loss, a float64 tensor
    on the device (the host reads it only when it logs, so it never waits for the device per step),
    and with `keep_logits` every layer's logits, detached (else None)."""
    model.train()
    with torch.autocast(runtime.device.type, dtype=runtime.amp_dtype, enabled=runtime.amp_dtype is not None):
        outputs = model(**to_device(batch, runtime.device), training_regime=regime, output_all_layer_logits=keep_logits)
    loss = outputs.loss.mean() if runtime.data_parallel else outputs.loss
    loss = loss / accumulation
    (scaler.scale(loss) if scaler else loss).backward()
    return loss.detach().double(), outputs.all_layer_logits.detach() if keep_logits else None


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


def log_start(job, stage):
    settings, runtime = job.settings, job.runtime
    logger.info("Training%s: %d examples, %d epochs, %d steps, batch %d x %d processes x %d accumulation%s",
                f" {stage.label.strip()}" if stage.label else "", len(job.loader.dataset),
                math.ceil((stage.end - stage.start) / job.steps_per_epoch), stage.end - stage.start,
                settings.per_gpu_train_batch_size * max(1, runtime.n_gpu), runtime.world_size,
                settings.gradient_accumulation_steps, f" (steps {stage.start + 1} to {stage.end})" if stage.number else "")


def log_progress(job, stage, step, loss_since_log, learning_rate):
    """One JSON line on stdout (main process) and the same scalars in TensorBoard: the loss averaged
    over the steps since the last log and over processes, and the full-depth dev metrics (a second
    dev set, MNLI mismatched, as eval_<task>_*)."""
    logs = {"loss": mean_over_processes(job.runtime, loss_since_log) / job.settings.logging_steps,
            "learning_rate": learning_rate, "step": step, **({"stage": stage.number} if stage.number else {})}
    if job.dev_sets and not job.runtime.distributed:
        for i, (task, metrics) in enumerate(full_depth_metrics(job.runtime, job.model, job.dev_sets).items()):
            prefix = "eval_" if i == 0 else f"eval_{task}_"
            logs.update({prefix + key: value for key, value in metrics.items()})
    if job.writer is None:
        return
    print(json.dumps(logs), flush=True)
    for key, value in logs.items():
        if key != "step":
            job.writer.add_scalar(key, value, step)


class StopOnSignal:
    """SIGINT or SIGTERM during training asks for a stop: the step under way finishes, a
    checkpoint is saved, and the run ends with Interrupted (a pre-empted job loses nothing)."""

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
    """A loss summed on this process (a float, or a tensor on the device), as a float averaged over
    processes."""
    if not runtime.distributed:
        return float(value)
    total = torch.as_tensor(value, dtype=torch.float64, device=runtime.device).reshape(1).clone()
    torch.distributed.all_reduce(total)
    return float(total) / runtime.world_size


def unwrap(model):
    return model.module if hasattr(model, "module") else model
