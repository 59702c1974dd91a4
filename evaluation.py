"""Running a model over a dev or test set and turning what it answers into result rows. Nothing
here prints or writes: the report does."""

import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from tqdm import tqdm

import glue
from data import eval_loader, to_device
from pabee import PatienceRule, exit_layers_from_logits, exit_stats, logits_at_exit


@dataclass(frozen=True)
class ResultRow:
    """One exit setting (or one layer's own head: criterion "layer") of one checkpoint on one
    task. As JSON its metrics sit beside the other keys, and patience rows repeat their
    setting as "patience", as the files have always had it."""

    checkpoint: str
    task: str
    criterion: str
    setting: int | float
    n: int
    mean_exit_layer: float
    speed_up: float  # L / mean exit layer
    original_speed_up: float  # the originals' "Speed Up", 1 - mean / L
    metrics: dict = field(default_factory=dict)
    seconds: float | None = None  # with --timed_inference
    full_depth_seconds: float | None = None
    wallclock_speed_up: float | None = None

    @property
    def key(self):
        return self.checkpoint, self.task, self.criterion, self.setting

    @property
    def timed(self):
        return self.wallclock_speed_up is not None

    def to_json(self):
        row = {k: v for k, v in asdict(self).items() if k != "metrics" and v is not None}
        head = {k: row.pop(k) for k in ("checkpoint", "task", "criterion", "setting")}
        patience = {"patience": self.setting} if self.criterion == "patience" else {}
        timing = {k: row.pop(k) for k in ("seconds", "full_depth_seconds", "wallclock_speed_up") if k in row}
        return {**head, **patience, **row, **self.metrics, **timing}

    @classmethod
    def from_json(cls, row):
        own = {f.name for f in fields(cls)} - {"metrics"}
        return cls(**{k: v for k, v in row.items() if k in own},
                   metrics={k: v for k, v in row.items() if k not in own and k != "patience"})


@dataclass(frozen=True)
class EvalSet:
    """One task's dev or test features, batched for inference."""

    task: glue.Task
    loader: object
    order: torch.Tensor  # dataset index of each example in loader order
    labels: np.ndarray | None
    index: list  # the examples' ids, for submission files

    @classmethod
    def of(cls, task, features, pad_id, batch_size):
        loader, order = eval_loader(features, pad_id, batch_size)
        labels = np.array(features["label"]) if "label" in features.column_names else None
        return cls(task, loader, order, labels, list(features["index"]))


def run_inference(runtime, model, eval_set, rule=None, all_layers=False):
    """Runs the set once. Returns, in dataset order, the logits at each example's exit layer
    (all_layers: every layer's, [N, L, C]) and its exit layer, and the wall-clock seconds.
    Nothing waits for the device inside the loop but the exit loop's own sync."""
    model.eval()
    logits, exits = [], []
    runtime.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in tqdm(eval_set.loader, desc="Evaluating", disable=not runtime.is_main, leave=False):
            batch.pop("labels", None)
            with torch.autocast(runtime.device.type, dtype=runtime.amp_dtype, enabled=runtime.amp_dtype is not None):
                out = model(**to_device(batch, runtime.device), exit_rule=rule, output_all_layer_logits=all_layers)
            logits.append(out.all_layer_logits if all_layers else out.logits)
            exits.append(out.exit_layers)
        logits, exits = torch.cat(logits).float().cpu(), torch.cat(exits).cpu()
    seconds = time.perf_counter() - start
    back = torch.empty_like(eval_set.order)
    back[eval_set.order] = torch.arange(len(eval_set.order))
    return logits[back], exits[back], seconds


def predictions_of(task, logits):
    return logits.squeeze(-1).numpy() if task.is_regression else logits.argmax(-1).numpy()


def for_inference(model, runtime):
    """Several GPUs without torchrun share each batch (DataParallel), as the original."""
    return torch.nn.DataParallel(model) if runtime.data_parallel else model


def evaluate(runtime, plan, model, dev_sets, checkpoint, timed=False):
    """Rows for every exit setting of `plan` on every dev set, then one row per layer's own head.
    By default one full-depth pass serves every setting; `timed` runs real early exit for each
    setting and times it against full depth."""
    wrapped = for_inference(model, runtime)
    num_layers = model.config.num_hidden_layers
    rows = []
    for dev in dev_sets:

        def row(criterion, setting, logits, exits, **timing):
            metrics = glue.compute_metrics(dev.task, predictions_of(dev.task, logits), dev.labels)
            return ResultRow(checkpoint, dev.task.name, criterion, setting, len(dev.labels),
                             **exit_stats(exits, num_layers), metrics=metrics, **timing)

        all_logits, _, _ = run_inference(runtime, wrapped, dev, all_layers=True)
        if timed and plan.settings:
            full_depth = run_inference(runtime, wrapped, dev, PatienceRule(0))[2]
            for setting in plan.settings:
                logits, exits, seconds = run_inference(runtime, wrapped, dev, plan.rule(setting))
                rows.append(row(plan.criterion, setting, logits, exits, seconds=seconds,
                                full_depth_seconds=full_depth, wallclock_speed_up=full_depth / seconds))
        else:
            for setting in plan.settings:
                exits = exit_layers_from_logits(all_logits, plan.rule(setting))
                rows.append(row(plan.criterion, setting, logits_at_exit(all_logits, exits), exits))
        for layer in range(1, num_layers + 1):
            rows.append(row("layer", layer, all_logits[:, layer - 1], torch.full((len(dev.labels),), layer)))
    return rows


def full_depth_metrics(runtime, model, dev_sets):
    """{task name: metrics of the last head}, for evaluation during training."""
    wrapped = for_inference(model, runtime)
    metrics = {}
    for dev in dev_sets:
        logits = run_inference(runtime, wrapped, dev, PatienceRule(0))[0]
        metrics[dev.task.name] = glue.compute_metrics(dev.task, predictions_of(dev.task, logits), dev.labels)
    return metrics


def predict_test_sets(runtime, plan, model, test_sets):
    """{(setting, task name): predictions in dataset order} for every exit setting, from one
    full-depth pass per test set."""
    predictions = {}
    for test in test_sets:
        all_logits, _, _ = run_inference(runtime, model, test, all_layers=True)
        for setting in plan.settings:
            logits = logits_at_exit(all_logits, exit_layers_from_logits(all_logits, plan.rule(setting)))
            predictions[setting, test.task.name] = predictions_of(test.task, logits)
    return predictions
