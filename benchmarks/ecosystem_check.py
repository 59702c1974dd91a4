"""A run folder as transformers runs it, beside the project, on a whole dev set.

    python benchmarks/ecosystem_check.py --model_dir RUN --data_dir GLUE/SST-2 --task SST-2
                                         [--layers K] [--onnx] [--limit N] [--json PATH]

- early exit: pipeline("text-classification", trust_remote_code=True) and the folder's own model
  class (its generated code) against predict.py's answers at the folder's default exit: labels and
  exit layers that agree, and the largest probability (regression: value) difference;
- plain: where the folder keeps its backbone's model_type, transformers' own class (no
  trust_remote_code) against the project's full depth, largest logit difference; else "refused";
- export (--layers K): export.py's K-layer plain model on dev, its metric beside the run's own
  layer-K figure, and with --onnx ONNX Runtime's largest logit difference from torch's.
--limit N reads the first N dev rows (the suite's smoke run uses a tiny folder and a few rows).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pabee.data import glue  # noqa: E402
from pabee.deploy.plain_export import ONNX_FILE, export, layer_table, reads  # noqa: E402
from pabee.deploy.predictor import Predictor  # noqa: E402
from pabee.early_exit.rules import PatienceRule  # noqa: E402
from pabee.modeling.backbones import EARLY_EXIT, backbone_of_folder, load_model, load_tokenizer  # noqa: E402
from pabee.scoring.default_exit import chosen_exit  # noqa: E402

BATCH = 32


def batches(rows):
    return [rows[i:i + BATCH] for i in range(0, len(rows), BATCH)]


def encode(tokenizer, batch, max_length, tensors="pt"):
    """One batch of (text_a, text_b or None) rows, as run_glue tokenizes it (token types asked for)."""
    return tokenizer([a for a, _ in batch], [b for _, b in batch] if batch[0][1] else None, padding=True,
                     truncation=True, max_length=max_length, return_token_type_ids=True, return_tensors=tensors)


def early_exit(folder, rows):
    """pipeline and the folder's own class (trust_remote_code) against predict.py's answers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    predictor, answers = Predictor.load(folder, chosen_exit(folder)[0], no_cuda=True), []
    predictor.run(batches(rows), lambda batch, got: answers.extend(got), len(rows))
    texts = [{"text": a, "text_pair": b} if b else a for a, b in rows]
    piped = pipeline("text-classification", model=str(folder), trust_remote_code=True, batch_size=BATCH)(
        texts, truncation=True, max_length=predictor.max_seq_length)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    exits = []
    with torch.no_grad():
        for batch in batches(rows):
            exits += model(**encode(tokenizer, batch, predictor.max_seq_length)).exit_layers.tolist()
    regression = model.config.num_labels == 1  # predict.py answers the value; the pipeline's score is it
    ours = [a[0] if regression else a[1] for a in answers]
    return {"early_exit_rows": len(rows),
            "early_exit_same_labels": len(rows) if regression else sum(p["label"] == a[0] for p, a in zip(piped, answers, strict=True)),
            "early_exit_same_exits": sum(e == a[2] for e, a in zip(exits, answers, strict=True)),
            f"early_exit_max_{'value' if regression else 'probability'}_diff": max(abs(p["score"] - v)
                                                                                 for p, v in zip(piped, ours, strict=True)),
            "mean_exit_layer": sum(exits) / len(exits)}


def logits_of(model, tokenizer, rows, max_length):
    out = []
    with torch.no_grad():
        for batch in batches(rows):
            encoded = encode(tokenizer, batch, max_length)
            out.append(model(**{k: v for k, v in encoded.items() if k in reads(model)}).logits)
    return torch.cat(out)


def plain(folder, rows):
    """transformers' own class against the project's full depth, where the folder keeps its type."""
    from transformers import AutoModelForSequenceClassification

    if json.loads((Path(folder) / "config.json").read_text())["model_type"].startswith(EARLY_EXIT):
        return {"plain": "refused (model type pabee-...: heads that transformers' own class does not read so)"}
    backbone = backbone_of_folder(folder)
    tokenizer = load_tokenizer(backbone, str(folder))
    ours = load_model(backbone, str(folder), None, "cpu")[0].eval()
    with torch.no_grad():
        expected = torch.cat([ours(**encode(tokenizer, b, 128), exit_rule=PatienceRule(0)).logits for b in batches(rows)])
    theirs = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False).eval()
    return {"plain": type(theirs).__name__,
            "plain_max_logit_diff": (logits_of(theirs, tokenizer, rows, 128) - expected).abs().max().item()}


def exported(folder, rows, labels, task, layers, onnx):
    """The K-layer export's dev metric beside the run's layer-K figure; ONNX Runtime against torch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with tempfile.TemporaryDirectory() as where:
        out = Path(where) / "export"
        differences = export(folder, out, layers, onnx)
        model = AutoModelForSequenceClassification.from_pretrained(out).eval()
        tokenizer = AutoTokenizer.from_pretrained(out)
        logits = logits_of(model, tokenizer, rows, 128)
        found = {"export_layers": layers, "export_check_max_diff": differences["torch"]}
        if task.num_labels > 1:
            metric = glue.compute_metrics(task, logits.argmax(-1).tolist(), labels)
            run = {layer: (name, value) for layer, name, value, _ in layer_table(folder)}.get(layers)
            found |= {"export_metric": metric[run[0]] if run else metric, "run_layer_metric": run and run[1]}
        if onnx:
            import onnxruntime
            session = onnxruntime.InferenceSession(str(out / ONNX_FILE))
            names = [i.name for i in session.get_inputs()]
            diffs = []
            for batch, part in zip(batches(rows), logits.split(BATCH), strict=True):
                encoded = encode(tokenizer, batch, 128, "np")
                diffs.append(abs(session.run(None, {n: encoded[n] for n in names})[0] - part.numpy()).max())
            found["onnx_max_logit_diff"] = float(max(diffs))
    return found


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True, help="A folder run_glue.py saved.")
    p.add_argument("--data_dir", required=True, help="The task's GLUE folder (its dev.tsv is read).")
    p.add_argument("--task", required=True, help="The GLUE task name (SST-2, MRPC, ...).")
    p.add_argument("--layers", type=int, default=None, help="Also export the first K layers and score them.")
    p.add_argument("--onnx", action="store_true", help="With --layers: also the ONNX export, run by ONNX Runtime.")
    p.add_argument("--limit", type=int, default=None, help="Only the first N dev rows.")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    task = glue.find_task(args.task)
    dev = glue.read_split(task, Path(args.data_dir) / task.dev_file, "dev")
    rows = list(zip(dev["text_a"], dev["text_b"], strict=True))[:args.limit]
    results = {"model_dir": args.model_dir, **early_exit(args.model_dir, rows), **plain(args.model_dir, rows)}
    if args.layers:
        results |= exported(args.model_dir, rows, dev["label"][:len(rows)], task, args.layers, args.onnx)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
