"""The model cut where examples can exit, each cut exported once to ONNX (pabee/deploy/onnx_graph.py)
and cached beside the model, made again when the weights, the config or the libraries change.

The cuts: the embedding (token ids to the first hidden states), then one graph per layer that runs
layer i and its head (pooler and linear head, and BERxiT's uncertainty where the model has one) and
returns both, so that an exit costs no extra call. Each layer graph takes the padding mask and builds
what its layer reads from it (attention masks, rotary or relative-position tables), so that rows
leave or join a call with their mask alone. `quantize="int8"`: ONNX Runtime's dynamic quantization of
the layer graphs (int8 weights, activations quantized per call); the embedding stays fp32. It changes
the answers: run_glue's exit table with --quantize int8 says by how much, beside fp32's."""

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from pabee.base.errors import UsageError, first_line
from pabee.deploy.onnx_graph import TOLERANCE, check_graph, export_graph, fuses, quantize_graph

logger = logging.getLogger(__name__)
FOLDER = "onnx_cuts"  # beside the model: onnx_cuts/fp32, onnx_cuts/int8 (a hub folder's onnx/ is someone else's)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class EmbedCut(nn.Module):
    """Token ids to the states layer 1 reads."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model.embed(input_ids, attention_mask, token_type_ids, None, None)


class LayerCut(nn.Module):
    """Layer i (0-based) and its head: (states, logits[, uncertainty])."""

    def __init__(self, model, i):
        super().__init__()
        self.model, self.i = model, i

    def forward(self, hidden, attention_mask):
        model = self.model
        hidden = model.run_layer(self.i, hidden, model.layer_inputs(hidden, attention_mask, None))
        weights = model.token_weights(attention_mask, hidden)
        logits, uncertainty = model.heads([model.summary(hidden, weights, as_product=True)], self.i)
        return (hidden, logits[0]) + (() if uncertainty is None else (uncertainty[:, 0],))


# How the cuts are made: cuts made an earlier way (2: mean pooling as a sum and a division; 1: unfused,
# by the dynamo exporter) are made again.
CUTS_FORMAT = 3
# What a saved config says of its default exit: it changes when run_glue publishes a run's chosen
# exit, and no graph reads it.
EXIT_FIELDS = ("patience", "exit_criterion", "exit_setting", "regression_threshold", "distill_temperature")


def fingerprint(model):
    """What the cuts depend on: every weight, the config but its default exit, and the versions of
    the libraries that write and run the graphs."""
    import onnxruntime
    import transformers

    digest = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if k not in EXIT_FIELDS}
    digest.update(json.dumps([CUTS_FORMAT, config, torch.__version__, transformers.__version__, onnxruntime.__version__],
                             sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_cuts(model, root, quantize):
    """The folder of the cuts of `model` at `quantize`, made if missing or stale."""
    key = fingerprint(model)
    fp32 = root / "fp32"
    if read_key(fp32) != key:
        logger.info("Exporting the model to ONNX graphs in %s (once for these weights; later runs load them)", fp32)
        write_atomically(fp32, lambda tmp: export_cuts(on_cpu(model), tmp), key)
    if quantize == "none":
        return fp32
    int8 = root / quantize
    if read_key(int8) != key:
        logger.info("Quantizing the ONNX graphs to int8 in %s (once for these weights)", int8)
        write_atomically(int8, lambda tmp: quantize_cuts(fp32, tmp, model.num_layers), key)
    return int8


def on_cpu(model):
    """`model` in fp32 on the CPU, where the exporter runs; the caller's model stays where it is."""
    first = next(model.parameters())
    if first.device.type == "cpu" and first.dtype == torch.float32:
        return model.eval()
    copy = type(model)(model.config)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    return copy.eval()


def read_key(folder):
    manifest = folder / "cuts.json"
    try:
        return json.loads(manifest.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def write_atomically(folder, make, key):
    """Makes the cuts in a new folder beside `folder` and puts it in place only once complete. Cuts
    of other weights are replaced; a folder there without a manifest is not ours and stays."""
    if folder.exists() and read_key(folder) is None:
        raise UsageError(f"{folder} exists and holds no cuts.json: it is not this project's, move it away "
                         "(nothing is overwritten)")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as e:
        raise UsageError(f"cannot write ONNX graphs under {folder.parent} ({first_line(e)}): make the model's "
                         "folder writable or copy it somewhere writable") from None
    try:
        make(tmp)
        (tmp / "cuts.json").write_text(json.dumps({"fingerprint": key}) + "\n")
        if read_key(folder) != key:  # another process may have put the same cuts there meanwhile
            shutil.rmtree(folder, ignore_errors=True)  # ours (checked above), of other weights
            try:
                tmp.rename(folder)
            except OSError:  # another process's cuts took the place first
                if read_key(folder) != key:
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_cuts(model, out):
    """embed.onnx and layer_{i}.onnx in `out`, batch and sequence dynamic, each checked against torch
    on rows of another shape than the ones it was exported with."""
    ids, mask = check_rows(model.config)
    types = torch.zeros_like(ids)
    with torch.no_grad():
        hidden = model.embed(ids, mask, types, None, None)
        export(model, EmbedCut(model), (ids, mask, types), MODEL_INPUTS, ("hidden",), out / "embed.onnx")
        for i in range(model.num_layers):
            cut = LayerCut(model, i)
            outputs = ("next_hidden", "logits") + (("uncertainty",) if hasattr(model, "lte") else ())
            export(model, cut, (hidden, mask), ("hidden", "attention_mask"), outputs, out / f"layer_{i}.onnx")
            hidden = cut(hidden, mask)[0]


def check_rows(config, n=5, longest=13):
    """Token ids of several lengths (so padding is checked too), inside the vocabulary."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, longest + 1, (n,), generator=g)
    lengths[0] = longest
    mask = (torch.arange(longest)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, min(config.vocab_size, 1000), (n, longest), generator=g) * mask
    return ids, mask


def export(model, cut, example, inputs, outputs, path):
    """One cut to `path` (pabee/deploy/onnx_graph.py, fused where the backbone's layers fuse), exported from
    rows 2 and 3 shorter by one token, then checked on every row and on one (example[1] is the padding
    mask)."""
    import onnxruntime

    small = tuple(x[1:3, :-1].contiguous() for x in example)  # a view's strides would be symbols
    export_graph(model, cut, small, path, inputs, outputs, fuse=fuses(model.config))
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        difference = max(check_graph(session, cut, inputs, rows, rows[1])
                         for rows in (example, tuple(x[:1] for x in example)))
    except Exception as e:  # ONNX Runtime refusing the graph raises its own kinds
        raise UsageError(f"ONNX Runtime cannot run {model.config.model_type}'s {path.stem} ({first_line(e)}): use "
                         "--runtime torch, and please report it") from None
    if difference > TOLERANCE:
        raise UsageError(f"{model.config.model_type}'s {path.stem} on ONNX Runtime differs from torch by "
                         f"{difference:.2g}: use --runtime torch, and please report it")


def quantize_cuts(fp32, out, layers):
    """The layer graphs of `fp32` with int8 weights (pabee/deploy/onnx_graph.quantize_graph); the embedding as
    it is."""
    shutil.copy(fp32 / "embed.onnx", out / "embed.onnx")
    for i in range(layers):
        try:
            quantize_graph(fp32 / f"layer_{i}.onnx", out / f"layer_{i}.onnx")
        except Exception as e:  # the quantizer raises many kinds
            raise UsageError(f"ONNX Runtime cannot quantize layer {i + 1}'s graph ({first_line(e)}): use --quantize "
                             "none") from None
