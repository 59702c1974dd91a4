"""Plain and shallow exports of a saved model (export.py): the first k layers and layer k's head as
transformers' own XForSequenceClassification of k layers, a folder any tool loads without this
project's code, and that model as ONNX (torch.onnx's exporter; ONNX Runtime runs it). Each export
is checked before it is kept: it loads in transformers with no missing or unexpected weights, and
its logits equal the early-exit model's layer-k logits on a few rows (within TOLERANCE; ONNX
Runtime's within pabee.deploy.onnx_graph.TOLERANCE of torch's), else nothing is written."""

import importlib.util
import inspect
import random
import shutil
import tempfile
from pathlib import Path

from pabee.base.errors import UsageError
from pabee.modeling.backbones import backbone_name, backbone_of_folder, beyond, load_model, load_tokenizer
from pabee.modeling.remote_code import config_class
from pabee.modeling.saved_folder import answers_as_plain_class, declare_token_types
from pabee.scoring.result_rows import dev_rows

# The export against the early-exit model's layer k, both in torch at fp32: 0 measured on most runs, but
# the export's weights are read back from disk, and where they lie in memory can move the last bits of
# a product (1.4e-5 once in six runs of all-MiniLM-L6-v2's layer 5 on the same rows).
TOLERANCE = 1e-4
ONNX_FILE = "model.onnx"


def export(folder, out, layers=None, onnx=False):
    """Writes `out` from the model in `folder`; returns the largest differences measured
    ({"torch": ..., "onnx": ...})."""
    import torch

    out = Path(out)
    check_output(folder, out, onnx)
    backbone = backbone_of_folder(folder)
    model = load_model(backbone, str(folder), None, "cpu")[0].eval()
    tokenizer = load_tokenizer(backbone, str(folder))
    k = model.num_layers if layers is None else layers
    check_exportable(folder, model, k)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        plain = plain_model(model, k)
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        declare_token_types(tokenizer, plain.config, tmp)
        rows = check_rows(tokenizer)
        with torch.no_grad():
            expected = layer_logits(model, rows, k)
        differences = {"torch": check_plain(tmp, rows, expected)}
        if onnx:
            differences["onnx"] = write_onnx(tmp, plain, rows)[0]
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return differences


def check_output(folder, out, onnx=False):
    """What is refused before any work: an output folder that is the run or holds files, --onnx
    without its libraries."""
    out = Path(out)
    if out.resolve() == Path(folder).resolve():
        raise UsageError(f"--output_dir {out} is the run itself: give a new folder (nothing is overwritten)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--output_dir {out} exists and is not empty: give a new folder (nothing is overwritten)")
    if onnx:
        check_onnx_installed()


def check_exportable(folder, model, k):
    """What transformers' own class cannot reproduce is refused in one line."""
    config, name = model.config, backbone_name(model.config.model_type)
    plain = config_class(name).__name__.replace("Config", "ForSequenceClassification")
    if not 1 <= k <= model.num_layers:
        raise UsageError(f"--layers {k}: give 1 to {model.num_layers}, the model's layers")
    if not answers_as_plain_class(model):
        raise UsageError(f"{folder}: its heads read the {'mean of the tokens' if config.exit_pooling == 'mean' else 'first token'}, "
                         f"which transformers' {plain} does not: load the folder itself with trust_remote_code=True "
                         "(docs/export.md)")
    groups, layers = getattr(config, "num_hidden_groups", 1), model.num_layers
    kept = [n for n in range(1, layers + 1) if all(int(i / (n / groups)) == int(i / (layers / groups)) for i in range(n))]
    if k not in kept:
        raise UsageError(f"{folder}: with {groups} layer groups, {plain} of {k} layers would give its layers other "
                         f"groups than these {layers} do: give --layers {' or '.join(map(str, kept))}")


def layer_logits(model, rows, k):
    """The early-exit model's layer-k logits, its head run on that layer alone (as the export runs it)."""
    hidden = model.embed(rows["input_ids"], rows["attention_mask"], rows.get("token_type_ids"), None, None)
    inputs = model.layer_inputs(hidden, rows["attention_mask"], None)
    weights = model.token_weights(rows["attention_mask"], hidden)
    for i in range(k):
        hidden = model.run_layer(i, hidden, inputs)
    return model.classify(k - 1, hidden, weights)


def plain_model(model, k):
    """transformers' own class of the backbone with the first k layers and layer k's head."""
    from transformers import AutoModelForSequenceClassification

    config = plain_config(model.config, k, model.config_fields)
    plain = AutoModelForSequenceClassification.from_config(config).eval()
    state = {name: value for name, value in model.state_dict().items()
             if not name.startswith(("classifiers.", "lte.", model.final_head_name + ".")) and not beyond(name, k)}
    state |= {f"{model.final_head_name}.{name}": value for name, value in model.exit_head(k - 1).state_dict().items()}
    plain.load_state_dict(state, strict=True)
    return plain


def plain_config(config, k, added):
    """The backbone's own config of k layers, without the fields the early-exit model `added`."""
    base = config_class(backbone_name(config.model_type))
    plain = base.from_dict({key: value for key, value in config.to_dict().items()
                            if key not in (*added, "auto_map", "model_type")})
    plain.num_hidden_layers = k
    if getattr(plain, "layer_types", None):  # ModernBERT: one attention kind per layer
        plain.layer_types = list(plain.layer_types[:k])
    return plain


def check_rows(tokenizer, n=6, seed=0):
    """A few pairs of words from the vocabulary, of several lengths (so padding is checked too)."""
    rng = random.Random(seed)
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha()) or ["a"]
    texts = [(" ".join(rng.choices(words, k=rng.randint(2, 12))), " ".join(rng.choices(words, k=rng.randint(1, 6))))
             for _ in range(n)]
    return dict(tokenizer([a for a, _ in texts], [b for _, b in texts], padding=True, truncation=True, max_length=64,
                          return_token_type_ids=True, return_tensors="pt"))


def check_plain(folder, rows, expected):
    """The export loads in transformers with nothing missing or unexpected, and answers as layer k."""
    import torch
    from transformers import AutoModelForSequenceClassification

    loaded, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    extra = {key: sorted(values) for key, values in info.items() if key != "error_msgs" and values}
    if extra:
        raise UsageError(f"the export does not load cleanly in transformers ({extra}): nothing written; please report it")
    with torch.no_grad():
        difference = (loaded.eval()(**rows).logits - expected).abs().max().item()
    if difference > TOLERANCE:
        raise UsageError(f"the export's logits differ from the model's by {difference:.2g}: nothing written; please "
                         "report it")
    return difference


def write_onnx(folder, plain, rows, fuse=False, name=ONNX_FILE):
    """`name` (model.onnx) in `folder` from transformers' own class `plain`, through the project's one
    exporter (pabee/deploy/onnx_graph.py; `fuse`: ONNX Runtime's transformer fusions, whose operators only ONNX
    Runtime runs); ONNX Runtime must answer as torch does on rows of another shape than the ones it was
    exported with. Returns (the largest difference, the fused operators found)."""
    import onnxruntime

    from pabee.deploy.onnx_graph import TOLERANCE as ONNX_TOLERANCE
    from pabee.deploy.onnx_graph import NamedInputs, check_graph, export_graph

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in rows and n in reads(plain)]
    logits = NamedInputs(plain, names)
    path = Path(folder) / name
    fused = export_graph(plain, logits, tuple(rows[n][:2, :-1].contiguous() for n in names), path, names, ["logits"],
                         fuse=fuse, instead="export without --onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    difference = check_graph(session, logits, names, tuple(rows[n] for n in names), rows["attention_mask"])
    if difference > ONNX_TOLERANCE:
        raise UsageError(f"ONNX Runtime's logits differ from torch's by {difference:.2g}: nothing written; please "
                         "report it")
    return difference, fused


def check_onnx_installed():
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--onnx needs {', '.join(missing)}: pip install -r requirements.txt")


def reads(model):
    """The inputs a model's forward takes by name."""
    return inspect.signature(model.forward).parameters


def layer_table(folder):
    """Each layer's own head on dev (the first task), as the run measured it: (layer, metric name,
    value, speed-up)."""
    rows = [r for r in dev_rows(folder) if r.criterion == "layer"]
    rows = [r for r in rows if r.task == rows[0].task]
    return [(r.setting, r.main, r.metrics[r.main], r.speed_up) for r in sorted(rows, key=lambda r: r.setting)]
