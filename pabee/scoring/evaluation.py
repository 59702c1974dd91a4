"""Running a model over a dev or test set and turning what it answers into result rows. Nothing
here prints or writes: the report does."""

import dataclasses
import functools
import statistics
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from pabee.data import glue
from pabee.data.features import eval_loader, to_device
from pabee.early_exit.compiled_step import compiled_step, compiles
from pabee.early_exit.engine import Shapes, layer_step, stream
from pabee.early_exit.rules import PatienceRule
from pabee.early_exit.sweep import answers_at_exit, exit_counts, exit_layers_from_logits, exit_stats
from pabee.scoring.result_rows import ResultRow


@dataclass(frozen=True)
class EvalSet:
    """One task's dev or test features: batched for full-depth passes, and as examples (longest
    first, as the batches) for the exit engine's stream."""

    task: glue.Task
    loader: object
    order: torch.Tensor  # dataset index of each example in loader order
    labels: np.ndarray | None
    index: list  # the examples' ids, for submission files
    features: object  # the tokenized dataset
    pad_id: int
    batch_size: int
    buckets: tuple = ("auto", "auto")  # the engine's row and length buckets (engine.Shapes.of)
    step: str = "auto"  # the engine's step: base.choices.ENGINE_STEPS

    @classmethod
    def of(cls, task, features, pad_id, batch_size, buckets=("auto", "auto"), step="auto"):
        loader, order = eval_loader(features, pad_id, batch_size)
        labels = np.array(features["label"]) if "label" in features.column_names else None
        return cls(task, loader, order, labels, list(features["index"]), features, pad_id, batch_size, buckets, step)

    @functools.cached_property
    def examples(self):
        """The tokenized examples in loader order, as the engine takes them: built when a set is
        first streamed (a test set swept in one full-depth pass never needs them)."""
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in self.features.column_names]
        return self.features.select_columns(columns).select(self.order.tolist()).to_list()

    def shapes(self, fixed):
        longest = max((len(e["input_ids"]) for e in self.examples), default=1)
        return Shapes.of(self.batch_size, longest, *self.buckets, fixed=fixed)


class LayerOutputs(NamedTuple):
    """Every layer's logits, [N, L, C], and (learning to exit) uncertainty, [N, L] or None."""

    logits: torch.Tensor
    uncertainty: torch.Tensor | None


class Inference(NamedTuple):
    """What a pass over a set gives, in dataset order: each example's answer (or every layer's
    outputs, a LayerOutputs), its exit layer, the wall-clock seconds, and the exit engine's layer
    calls (flow.Launch; empty for a full-depth pass of every layer's heads)."""

    logits: object
    exit_layers: torch.Tensor
    seconds: float
    launches: list


def run_inference(runtime, model, eval_set, rule=None, all_layers=False):
    """Runs the set once: every layer's outputs (all_layers), or each example exiting by `rule`
    through the exit engine's stream (DataParallel: batch by batch, as the original). Nothing
    waits for the device but the engine's own reads."""
    model.eval()
    runtime.synchronize()
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(runtime.device.type, dtype=runtime.amp_dtype,
                                                enabled=runtime.amp_dtype is not None):
        if all_layers or isinstance(model, torch.nn.DataParallel):
            logits, exits, uncertainty = batch_by_batch(runtime, model, eval_set, rule, all_layers)
            launches = []
        else:
            logits, exits, launches = streamed(runtime, model, eval_set, rule or model.exit_rule())
    seconds = time.perf_counter() - start
    back = torch.empty_like(eval_set.order)
    back[eval_set.order] = torch.arange(len(eval_set.order))
    if all_layers:
        learned = None if uncertainty is None else uncertainty[back]
        return Inference(LayerOutputs(logits[back], learned), exits[back], seconds, launches)
    return Inference(logits[back], exits[back], seconds, launches)


def batch_by_batch(runtime, model, eval_set, rule, all_layers):
    logits, exits, uncertainty = [], [], []
    for batch in tqdm(eval_set.loader, desc="Evaluating", disable=not runtime.is_main, leave=False):
        batch.pop("labels", None)
        out = model(**to_device(batch, runtime.device), exit_rule=rule, output_all_layer_logits=all_layers)
        logits.append(out.all_layer_logits if all_layers else out.logits)
        exits.append(out.exit_layers)
        uncertainty.append(out.all_layer_uncertainty)
    learned = None if uncertainty[0] is None else torch.cat(uncertainty).float().cpu()
    return torch.cat(logits).float().cpu(), torch.cat(exits).cpu(), learned


def streamed(runtime, model, eval_set, rule):
    """(answers, exit layers, launches) of the exit engine over the set, in loader order."""
    size = eval_set.batch_size
    chunks = (eval_set.examples[i:i + size] for i in range(0, len(eval_set.examples), size))
    bar = tqdm(total=len(eval_set.examples), desc="Evaluating", disable=not runtime.is_main, leave=False)
    on_ort = hasattr(model, "engine_step")  # a deploy.ort_model.OrtModel brings its own step, on the CPU
    compiled = not on_ort and compiles(eval_set.step, runtime.device.type)
    shapes = eval_set.shapes(fixed=compiled or (runtime.device.type == "cuda" and not on_ort))
    step = model.engine_step if on_ort else compiled_step(model.num_layers, shapes, runtime.device.type) if compiled \
        else layer_step
    logits, exits, launches = [], [], []
    for answered in stream(model, rule, chunks, shapes, eval_set.pad_id, step):
        logits.append(answered.logits)
        exits.append(answered.exit_layers)
        launches += answered.launches
        bar.update(len(answered.exit_layers))
    bar.close()
    return torch.cat(logits), torch.cat(exits), launches


def swept(layers, rule):
    """(answers, exit layers) of `rule` read from every layer's outputs (the one-pass sweep)."""
    exits = exit_layers_from_logits(layers.logits, rule, layers.uncertainty)
    return answers_at_exit(layers.logits, exits, rule), exits


def predictions_of(task, logits):
    return logits.squeeze(-1).numpy() if task.is_regression else logits.argmax(-1).numpy()


def for_inference(model, runtime):
    """Several GPUs without torchrun share each batch (DataParallel), as the original; ONNX Runtime's
    model (deploy.ort_model.OrtModel) runs as it is."""
    return torch.nn.DataParallel(model) if runtime.data_parallel and isinstance(model, torch.nn.Module) else model


def evaluate(runtime, plan, model, dev_sets, checkpoint, repeats=0):
    """Rows for every exit setting of `plan` on every dev set, then one row per layer's own head,
    each saying whether its answers ignore the input (`collapse`). One full-depth pass serves every
    setting; with `repeats` > 0 each setting also runs real early exit and is timed against full
    depth (`time_settings`)."""
    wrapped = for_inference(model, runtime)
    num_layers = model.config.num_hidden_layers
    rows = []
    for dev in dev_sets:

        def row(criterion, setting, logits, exits, *, dev=dev, **timing):
            predictions = predictions_of(dev.task, logits)
            metrics = glue.compute_metrics(dev.task, predictions, dev.labels)
            threshold = plan.exits.regression_threshold if dev.task.is_regression and criterion == "patience" else None
            return ResultRow(checkpoint, dev.task.name, criterion, setting, len(dev.labels),
                             **exit_stats(exits, num_layers), exits_per_layer=exit_counts(exits, num_layers),
                             metrics=metrics, main_metric=dev.task.metric,
                             training=getattr(model.config, "exit_training", None), regression_threshold=threshold,
                             ignores_input=collapse(dev.task, predictions, dev.labels), **timing)

        layers = run_inference(runtime, wrapped, dev, all_layers=True).logits
        answers = {setting: swept(layers, plan.rule(setting)) for setting in plan.settings}
        timings = {}
        if repeats and plan.settings:
            timings, timed_answers = time_settings(runtime, wrapped, dev, plan, repeats, num_layers)
            answers.update(timed_answers)  # the same answers (tested); these come from real early exit
        for setting in plan.settings:
            rows.append(row(plan.criterion, setting, *answers[setting], **timings.get(setting, {})))
        for layer in range(1, num_layers + 1):
            rows.append(row("layer", layer, layers.logits[:, layer - 1], torch.full((len(dev.labels),), layer)))
    return rows


def beside_fp32(rows, fp32_rows):
    """`rows` (of a quantized model) with each one's main metric at fp32 (`fp32_rows`, the same
    settings measured on the model itself) beside it."""
    fp32 = {r.key: r.metrics[r.main] for r in fp32_rows}
    return [dataclasses.replace(r, fp32_metric=fp32[r.key]) for r in rows]


def time_settings(runtime, model, dev, plan, repeats, num_layers):
    """{setting: timing fields}, and {setting: (logits, exit layers)} of its real early exit.
    After a warm-up pass, each round runs full depth and then every setting with real early exit;
    a setting's speed-up is the median over rounds of that round's full-depth time over its own,
    so that the machine's drift hits both alike. A setting that cannot exit before the last of
    `num_layers` layers is full depth: speed-up 1, not timed against itself."""
    full_depth = PatienceRule(0)
    run_inference(runtime, model, dev, full_depth)
    rules = {s: plan.rule(s) for s in plan.settings}
    full, seconds, answers = [], {s: [] for s in plan.settings}, {}
    for _ in range(repeats):
        full.append(run_inference(runtime, model, dev, full_depth).seconds)
        for setting, rule in rules.items():
            elapsed = full[-1]
            if rule.heads_before_last(num_layers):
                logits, exits, elapsed, _ = run_inference(runtime, model, dev, rule)
                answers[setting] = logits, exits
            seconds[setting].append(elapsed)
    timings = {}
    for setting, times in seconds.items():
        ratios = [f / t for f, t in zip(full, times, strict=True)]
        timings[setting] = {"seconds": statistics.median(times), "full_depth_seconds": statistics.median(full),
                            "wallclock_speed_up": statistics.median(ratios), "wallclock_min": min(ratios),
                            "wallclock_max": max(ratios)}
    return timings, answers


def full_depth_predictions(runtime, model, dev_sets):
    """{task name: the last head's predictions}, in dataset order."""
    wrapped = for_inference(model, runtime)
    return {dev.task.name: predictions_of(dev.task, run_inference(runtime, wrapped, dev, PatienceRule(0))[0])
            for dev in dev_sets}


def full_depth_metrics(runtime, model, dev_sets):
    """{task name: metrics of the last head}, for evaluation during training."""
    predictions = full_depth_predictions(runtime, model, dev_sets)
    return {dev.task.name: glue.compute_metrics(dev.task, predictions[dev.task.name], dev.labels) for dev in dev_sets}


def collapse(task, predictions, labels):
    """What shows that a model's answers ignore its input (one class for nearly every example;
    regression: no correlation, or almost no spread), or None when they do not."""
    predictions, labels = np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float)
    if not task.is_regression:
        values, counts = np.unique(predictions, return_counts=True)
        share, label_share = counts.max() / len(predictions), np.unique(labels, return_counts=True)[1].max() / len(labels)
        if share >= 0.99 and label_share < 0.95:
            return (f"it predicts class {task.labels[int(values[counts.argmax()])]} for {share:.1%} of the "
                    f"{len(predictions)} dev examples (the most frequent label covers {label_share:.1%})")
        return None
    spread, label_spread = predictions.std(), labels.std()
    pearson = glue.compute_metrics(task, predictions, labels)["pearson"] if spread > 0 else 0.0
    if spread < 0.05 * label_spread or not pearson > 0.1:
        return (f"dev Pearson {pearson:.3f}, predictions spread {spread:.4f} against the labels' "
                f"{label_spread:.4f}")
    return None


def predict_test_sets(runtime, plan, model, test_sets):
    """{(setting, task name): predictions in dataset order} for every exit setting, from one
    full-depth pass per test set."""
    predictions = {}
    for test in test_sets:
        layers = run_inference(runtime, model, test, all_layers=True).logits
        for setting in plan.settings:
            predictions[setting, test.task.name] = predictions_of(test.task, swept(layers, plan.rule(setting))[0])
    return predictions
