"""A fine-tuned model answering new text (predict.py): the model, its tokenizer and an exit rule on
torch or ONNX Runtime (`Predictor`), answering batches in input order with each example's exit
layer, and a summary of what it did."""

import collections
import sys
import time
from pathlib import Path
from typing import NamedTuple

from pabee.base.file_io import read_json
from pabee.modeling.backbones import backbone_of_folder, load_config, load_model, load_tokenizer, usable_length

ONE_CLASS_INPUT, ONE_CLASS_SHARE = 100, 0.99  # as large an input, and as large a share, as make one class suspect


class Predictor:
    """A loaded model, its tokenizer and the exit rule, answering a stream of texts through the exit
    engine (`shapes`: its call shapes, engine.Shapes)."""

    def __init__(self, model, tokenizer, rule, max_seq_length, device, shapes, step):
        self.model, self.tokenizer, self.rule = model, tokenizer, rule
        self.max_seq_length, self.device, self.shapes, self.step = max_seq_length, device, shapes, step

    @classmethod
    def load(cls, folder, exits, max_seq_length=None, no_cuda=False, batch_size=32, buckets=("auto", "auto"),
             step="auto", runtime="torch", quantize="none"):
        """The model run_glue wrote in `folder`, exiting by `exits` (early_exit.exit_settings.ExitSettings, one
        setting), at the training run's --max_seq_length unless told (clamped as run_glue does);
        the engine's calls take at most `batch_size` rows, in `buckets` (engine.Shapes.of), with
        its step compiled or not (base.choices.ENGINE_STEPS), its layers on torch or ONNX Runtime
        (base.choices.RUNTIMES, QUANTIZE; ONNX Runtime runs on the CPU)."""
        import torch

        from pabee.early_exit.compiled_step import compiled_step, compiles
        from pabee.early_exit.engine import Shapes, layer_step

        backbone = backbone_of_folder(folder)
        config = load_config(backbone, str(folder))
        on_ort = runtime == "onnxruntime"
        device = "cuda" if torch.cuda.is_available() and not no_cuda and not on_ort else "cpu"
        model = load_model(backbone, str(folder), None, device)[0].eval()
        exits.check_task(config.num_labels == 1, "this model's task")
        exits.check_learned_exit(getattr(config, "exit_training", "pabee"))
        tokenizer = load_tokenizer(backbone, str(folder))
        length = usable_length(max_seq_length or trained_length(Path(folder)), [config], tokenizer)[0]
        rule = exits.rule(exits.settings[0])
        if on_ort:
            from pabee.deploy.ort_model import ort_model

            model = ort_model(model, folder, quantize)
            return cls(model, tokenizer, rule, length, device, Shapes.of(batch_size, length, *buckets), model.engine_step)
        compiled = compiles(step, device)
        shapes = Shapes.of(batch_size, length, *buckets, fixed=compiled or device == "cuda")
        return cls(model, tokenizer, rule, length, device, shapes,
                   compiled_step(config.num_hidden_layers, shapes, device) if compiled else layer_step)

    def tokenized(self, batch):
        """The model's input for each (text_a, text_b) of `batch` (pairs and singles may mix)."""
        return [dict(self.tokenizer(a, b, truncation=True, max_length=self.max_seq_length, return_token_type_ids=True))
                for a, b in batch]

    def answers(self, answered):
        """(label or value, probability or None, exit layer) of each example of an engine.Answered."""
        layers = answered.exit_layers.tolist()
        if self.model.config.num_labels == 1:
            return [(float(v), None, k) for v, k in zip(answered.logits[:, 0].tolist(), layers, strict=True)]
        probs = answered.logits.softmax(-1)
        best = probs.argmax(-1).tolist()
        names = self.model.config.id2label
        return [(names[c], float(probs[i, c]), k) for i, (c, k) in enumerate(zip(best, layers, strict=True))]

    def run(self, batches, write, total):
        """Answers the examples as they come (a short batch, after a pause in the input, is answered
        before more is read) and writes each answer as soon as those before it are written; returns
        a Summary."""
        import torch
        from tqdm import tqdm

        from pabee.early_exit.engine import stream

        texts = collections.deque()

        def chunks():
            for batch in batches:
                texts.extend(batch)
                yield self.tokenized(batch)

        bar = tqdm(total=total, unit="ex", disable=total is None, file=sys.stderr)
        n, exits, classes, start = 0, 0, collections.Counter(), time.perf_counter()
        with torch.inference_mode():
            for answered in stream(self.model, self.rule, chunks(), self.shapes, self.tokenizer.pad_token_id,
                                   self.step):
                answers = self.answers(answered)
                write([texts.popleft() for _ in answers], answers)
                n, exits = n + len(answers), exits + sum(a[2] for a in answers)
                classes.update(a[0] for a in answers if a[1] is not None)
                bar.update(len(answers))
        bar.close()
        return Summary(n, time.perf_counter() - start, exits / max(n, 1), self.model.config.num_hidden_layers, classes)


class Summary(NamedTuple):
    """What a Predictor.run answered: how many examples, in how many seconds, their mean exit layer
    of how many, and how many got each class (empty for regression)."""

    examples: int
    seconds: float
    mean_exit: float
    layers: int
    classes: collections.Counter

    def one_class(self):
        """A line saying that nearly every answer of a large input is one class (what a model that
        ignores its input, or an exit whose heads do, answers), else None."""
        if self.examples < ONE_CLASS_INPUT or not self.classes:
            return None
        label, count = self.classes.most_common(1)[0]
        if count < ONE_CLASS_SHARE * self.examples:
            return None
        return (f"{count} of the {self.examples} answers ({count / self.examples:.1%}) are {label}: at this exit the "
                f"model may ignore its input; compare full depth (--patience 0) on labelled data")


def trained_length(folder):
    """The --max_seq_length of the run that wrote `folder` (or its parent, for a checkpoint), else 128."""
    for saved in (folder / "training_args.json", folder.parent / "training_args.json"):
        if saved.is_file():
            record = read_json(saved)
            return record.get("data", record).get("max_seq_length", 128)
    return 128
