"""Run a fine-tuned PABEE model on new text, each example exiting at its own layer.

    python predict.py --model_dir DIR [--patience P | --exit_criterion C --exit_thresholds T]
                      [--input FILE|-] [--output FILE|-] [--output_format jsonl|tsv]

Input: plain text, one example per line (a tab separates the two texts of a pair), or a
.csv/.tsv/.json/.jsonl file with text columns (--text_columns, else the usual names). Output, in
input order: the text(s), the label name and its probability (classification) or the value
(regression), and the exit layer. Reading standard input, each batch is answered as soon as it
fills, or when the input pauses. Bad input: one line on stderr, exit code 2.
"""

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path

from exit_rules import RULES, make_rule
from runtime import UsageError, first_line

PLAIN = (".txt", "")  # one example per line


def build_parser():
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--model_dir", required=True, help="A folder run_glue.py trained (or any of its checkpoint-N).")
    add("--patience", type=int, default=None, help="Patience of the exit (default: the model config's).")
    add("--exit_criterion", choices=list(RULES), default="patience", help="The exit criterion (as run_glue.py).")
    add("--exit_thresholds", default=None, help="The criterion's one setting (entropy / confidence threshold, fixed layer).")
    add("--regression_threshold", type=float, default=None, help="Regression agreement threshold (default: the config's).")
    add("--input", default="-", help="A file (.txt, .csv, .tsv, .json, .jsonl) or - for standard input (plain text).")
    add("--output", default="-", help="Where answers go: a file or - for standard output.")
    add("--output_format", choices=["jsonl", "tsv"], default="jsonl", help="One JSON object per line, or TSV with a header.")
    add("--batch_size", type=int, default=32, help="Examples per batch; each exits at its own layer.")
    add("--text_columns", default=None, help="Text column(s) of a CSV/TSV/JSON input, comma-separated for pairs.")
    add("--max_seq_length", type=int, default=None, help="Longest input in tokens (default: the training run's).")
    add("--pause", type=float, default=0.2, help="Seconds without input after which a partial batch is answered.")
    add("--no_cuda", action="store_true", help="Run on the CPU even when a GPU is there.")
    return p


def main(argv=None):
    flags = build_parser().parse_args(argv)
    try:
        check_flags(flags)
        predictor = Predictor.load(flags)
        examples, columns, total = read_input(flags)
        with open_output(flags.output) as out:
            stats = predictor.run(examples, columns, out, flags.output_format, total)
    except UsageError as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): nothing left to say
        sys.stdout = open(os.devnull, "w")
        return 0
    n, seconds, mean_exit, layers = stats
    if n:
        print(f"predict.py: {n} examples in {seconds:.2f} s ({n / seconds:.1f} examples/s), mean exit layer "
              f"{mean_exit:.2f} of {layers}, speed-up {layers / mean_exit:.2f}x", file=sys.stderr)
    return 0


def check_flags(flags):
    if flags.batch_size < 1 or flags.pause <= 0 or (flags.max_seq_length is not None and flags.max_seq_length < 1):
        raise UsageError("--batch_size and --max_seq_length must be >= 1 and --pause > 0")
    if not (Path(flags.model_dir) / "config.json").is_file():
        raise UsageError(f"--model_dir {flags.model_dir} holds no config.json: give a folder run_glue.py wrote")
    if flags.input != "-":
        path = Path(flags.input)
        if not path.is_file():
            raise UsageError(f"--input {path} is not a file: give a text, CSV, TSV, JSON or JSONL file, or -")


class Predictor:
    """A loaded model, its tokenizer and the exit rule, answering batches of texts."""

    def __init__(self, model, tokenizer, rule, max_seq_length, device):
        self.model, self.tokenizer, self.rule = model, tokenizer, rule
        self.max_seq_length, self.device = max_seq_length, device

    @classmethod
    def load(cls, flags):
        from transformers import AutoConfig
        from transformers.utils import logging as hf_logging

        import torch
        from backbones import BACKBONES, load_tokenizer

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        folder = Path(flags.model_dir)
        config = AutoConfig.from_pretrained(folder)
        if config.model_type not in BACKBONES:
            raise UsageError(f"{folder} holds a '{config.model_type}' model, not one of {', '.join(BACKBONES)}")
        backbone = BACKBONES[config.model_type]
        device = "cuda" if torch.cuda.is_available() and not flags.no_cuda else "cpu"
        try:
            model = backbone.load_model_class().from_pretrained(folder).to(device).eval()
        except Exception as e:  # missing or truncated weights: the loaders raise many kinds
            raise UsageError(f"cannot load the model in {folder} ({first_line(e)}): give a folder run_glue.py wrote")
        tokenizer = load_tokenizer(backbone, str(folder))
        length = min(flags.max_seq_length or trained_length(folder), config.max_position_embeddings,
                     tokenizer.model_max_length)  # as run_glue.py clamps it
        return cls(model, tokenizer, exit_rule(flags, config), length, device)

    def answer(self, batch):
        """(label or value, probability or None, exit layer) for each (text_a, text_b) of `batch`."""
        import torch
        from data import collate, to_device

        features = [dict(self.tokenizer(a, b, truncation=True, max_length=self.max_seq_length,
                                        return_token_type_ids=True)) for a, b in batch]  # pairs and singles may mix
        with torch.inference_mode():
            out = self.model(**to_device(collate(features, self.tokenizer.pad_token_id), self.device),
                             exit_rule=self.rule)
        layers = out.exit_layers.tolist()
        if self.model.config.num_labels == 1:
            return [(float(v), None, k) for v, k in zip(out.logits[:, 0].tolist(), layers)]
        probs = out.logits.float().softmax(-1)
        best = probs.argmax(-1).tolist()
        names = self.model.config.id2label
        return [(names[c], float(probs[i, c]), k) for i, (c, k) in enumerate(zip(best, layers))]

    def run(self, batches, columns, out, output_format, total):
        """Answers every batch as it comes and writes it at once; returns (examples, seconds,
        mean exit layer, layers)."""
        from tqdm import tqdm

        write = Writer(out, output_format, columns, self.model.config.num_labels == 1)
        bar = tqdm(total=total, unit="ex", disable=total is None, file=sys.stderr)
        n, exits, start = 0, 0, time.perf_counter()
        for batch in batches:
            answers = self.answer(batch)
            write(batch, answers)
            n, exits = n + len(batch), exits + sum(a[2] for a in answers)
            bar.update(len(batch))
        bar.close()
        return n, time.perf_counter() - start, exits / max(n, 1), self.model.config.num_hidden_layers


def exit_rule(flags, config):
    threshold = config.regression_threshold if flags.regression_threshold is None else flags.regression_threshold
    if flags.exit_criterion == "patience":
        if flags.exit_thresholds:
            raise UsageError("--exit_thresholds is for the baseline criteria: give --patience")
        setting = config.patience if flags.patience is None else flags.patience
    else:
        if flags.exit_thresholds is None:
            raise UsageError(f"--exit_criterion {flags.exit_criterion} needs --exit_thresholds (one value)")
        setting = flags.exit_thresholds
    try:
        rule = make_rule(flags.exit_criterion, setting, threshold)
    except ValueError as e:
        raise UsageError(f"bad exit setting {setting!r} ({first_line(e)})") from None
    if rule.needs_probabilities and config.num_labels == 1:
        raise UsageError(f"--exit_criterion {flags.exit_criterion} needs class probabilities; this model does regression")
    return rule


def trained_length(folder):
    """The --max_seq_length of the run that wrote `folder` (or its parent, for a checkpoint), else 128."""
    for args in (folder / "training_args.json", folder.parent / "training_args.json"):
        if args.is_file():
            return json.loads(args.read_text()).get("max_seq_length", 128)
    return 128


# --- input ------------------------------------------------------------------------------------

def read_input(flags):
    """(batches, column names, number of examples or None when streaming)."""
    if flags.input == "-" or Path(flags.input).suffix.lower() in PLAIN:
        source = sys.stdin if flags.input == "-" else open(flags.input, encoding="utf-8")
        lines = (line.rstrip("\n") for line in source)
        examples = (split_pair(line) for line in lines if line.strip())
        if flags.input == "-":
            return batches_as_they_come(examples, flags.batch_size, flags.pause), ("text", None), None
        examples = list(examples)
        return in_batches(examples, flags.batch_size), ("text", None), len(examples)
    examples, columns = table_examples(flags)
    return in_batches(examples, flags.batch_size), columns, len(examples)


def split_pair(line):
    a, _, b = line.partition("\t")
    return a, b or None


def table_examples(flags):
    import own_data
    from glue import DataError

    try:
        table = own_data.read_file(flags.input)
        texts = own_data.choose_texts(table.column_names, flags.input, flags.text_columns)
        own_data.check_columns(table, flags.input, texts, "fix --text_columns")
        rows = list(range(len(table)))
        a = own_data.texts_of(table, rows, flags.input, texts[0])
        b = own_data.texts_of(table, rows, flags.input, texts[1]) if texts[1] else [None] * len(a)
    except DataError as e:
        raise UsageError(str(e)) from None
    return list(zip(a, b)), texts


def in_batches(examples, size):
    for i in range(0, len(examples), size):
        yield examples[i:i + size]


def batches_as_they_come(examples, size, pause):
    """Batches of at most `size`; a partial batch goes out when no example came for `pause`
    seconds, so a slow producer gets its answers without waiting for a full batch."""
    arrived = queue.Queue()

    def read():
        for example in examples:
            arrived.put(example)
        arrived.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        first = arrived.get()
        if first is None:
            return
        batch = [first]
        while len(batch) < size:
            try:
                example = arrived.get(timeout=pause)
            except queue.Empty:
                break
            if example is None:
                yield batch
                return
            batch.append(example)
        yield batch


# --- output -----------------------------------------------------------------------------------

class Writer:
    """Writes answers in input order, one line per example, flushed after every batch."""

    def __init__(self, out, output_format, columns, regression):
        self.out, self.format, self.columns, self.regression = out, output_format, columns, regression
        self.pair = None  # whether the answers show a second text: decided by the first batch

    def __call__(self, batch, answers):
        lines = []
        started = self.pair is not None
        if not started:
            self.pair = self.columns[1] is not None or any(b is not None for _, b in batch)
        names = [self.columns[0], self.columns[1] or "text_b"][:2 if self.pair else 1]
        score = "value" if self.regression else "probability"
        if self.format == "tsv" and not started:
            lines.append("\t".join(names + ([] if self.regression else ["label"]) + [score, "exit_layer"]))
        for (a, b), (label, probability, layer) in zip(batch, answers):
            texts = [a, b][:len(names)]
            if self.format == "tsv":
                values = [t or "" for t in texts] + ([f"{label:.6g}"] if self.regression else
                                                    [label, f"{probability:.6f}"]) + [str(layer)]
                lines.append("\t".join(values))
            else:
                answer = {"value": label} if self.regression else {"label": label, "probability": probability}
                shown = {name: text for name, text in zip(names, texts) if text is not None}
                lines.append(json.dumps({**shown, **answer, "exit_layer": layer}, ensure_ascii=False))
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()


class open_output:
    """Standard output for -, else the file (written only once the model and input are ready)."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.file = sys.stdout if self.path == "-" else open(self.path, "w", encoding="utf-8")
        return self.file

    def __exit__(self, *exc):
        if self.file is not sys.stdout:
            self.file.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
