"""The exit engine on ONNX Runtime: the model cut where examples can exit, each cut exported once with
torch.onnx's exporter and cached beside the model, then driven by the engine's own stream and every
exit rule (pabee/engine.py), in place of the torch model.

The cuts: the embedding (token ids to the first hidden states), then one graph per layer that runs
layer i and its head (pooler and linear head, and BERxiT's uncertainty where the model has one) and
returns both, so that an exit costs no extra call. Each layer graph takes the padding mask and builds
what its layer reads from it (attention masks, rotary or relative-position tables), so that rows
leave or join a call with their mask alone. The rule's state stays in torch on the host: it is a few
numbers per row, and any rule of pabee/exit_rules.py runs on it unchanged.

`quantize="int8"`: ONNX Runtime's dynamic quantization of the layer graphs (int8 weights, activations
quantized per call); the embedding stays fp32. It changes the answers: run_glue's exit table with
--quantize int8 says by how much, beside fp32's.
"""

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pabee.errors import UsageError, first_line
from pabee.exit_graph import patience_graph
from pabee.exit_rules import PatienceRule
from pabee.exits import answers_at_exit, exit_layers_from_logits
from pabee.onnx_export import TOLERANCE, check_graph, export_graph, feed, fuses, quantize_graph
from pabee.rows import LayerInputs

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


def ort_model(model, folder, quantize="none", threads=None):
    """`model` (a PABEE model, on any device) as an OrtModel, from the cuts cached under
    `folder`/onnx_cuts, exported or quantized first when missing or made from other weights."""
    cuts = cached_cuts(model, Path(folder) / FOLDER, quantize)
    try:
        return OrtModel(model.config, cuts, threads or torch.get_num_threads())
    except Exception as e:  # a damaged or truncated graph: ONNX Runtime raises its own kinds
        raise UsageError(f"ONNX Runtime cannot load the graphs in {cuts} ({first_line(e)}): delete that folder "
                         "and they are exported again") from None


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
    """One cut to `path` (pabee/onnx_export.py, fused where the backbone's layers fuse), exported from
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
    """The layer graphs of `fp32` with int8 weights (pabee/onnx_export.quantize_graph); the embedding as
    it is."""
    shutil.copy(fp32 / "embed.onnx", out / "embed.onnx")
    for i in range(layers):
        try:
            quantize_graph(fp32 / f"layer_{i}.onnx", out / f"layer_{i}.onnx")
        except Exception as e:  # the quantizer raises many kinds
            raise UsageError(f"ONNX Runtime cannot quantize layer {i + 1}'s graph ({first_line(e)}): use --quantize "
                             "none") from None


def session_options(threads):
    """How every session here runs: `threads` threads, which do not spin after a call (ONNX Runtime's
    default spinning took the cores from the torch work between calls: a torch full-depth pass
    measured 76 ms an example beside spinning sessions, 13 without)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3  # quantized graphs note their missing shape inference at every load
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OrtModel:
    """The cuts on ONNX Runtime, with what the exit engine asks of a model: embed, layer inputs (the
    padding mask alone), token weights (none: each layer graph pools by itself), and a step
    (`engine_step`) in place of engine.layer_step. Called with output_all_layer_logits it returns
    every layer's outputs, as the torch model does, for the one-pass sweep."""

    device = torch.device("cpu")
    training = False

    def __init__(self, config, folder, threads):
        import onnxruntime

        options = session_options(threads)
        self.config, self.num_layers, self.folder = config, config.num_hidden_layers, Path(folder)
        self.one_graph, self.answers = {}, {}  # sessions by full depth, answering functions by setting
        self.session = lambda graph: onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.embedding = self.session(str(folder / "embed.onnx"))
        self.layers = [self.session(str(folder / f"layer_{i}.onnx")) for i in range(self.num_layers)]

    def eval(self):
        return self

    def one_call(self, rule, batch_size):
        """A function answering a padded batch (numpy arrays) in one session call under `rule` with
        numpy (logits, exit layers), or None: at batch size 1 PABEE's patience rule
        (pabee/exit_graph.py: one graph for every patience), at any batch size its full depth
        (patience 0: every row leaves at the last layer, so no row is freed to refill and the batch
        runs as one graph); each made on first use. None for the other rules, or for a graph ONNX
        Runtime would not take (said once; layer by layer then)."""
        if type(rule) is not PatienceRule or (batch_size > 1 and rule.patience != 0):
            return None
        setting = (rule.patience, rule.regression_threshold)
        if setting not in self.answers:  # a stream an example (a server's) pays no setup
            self.answers[setting] = self.one_call_of(rule)
        return self.answers[setting]

    def one_call_of(self, rule):
        """one_call's function for `rule`'s setting, or None."""
        full = rule.patience == 0
        if full not in self.one_graph:
            self.one_graph[full] = self.patience_session(full)
        session = self.one_graph[full]
        if not session:
            return None
        names = [entry.name for entry in session.get_inputs()]
        setting = {"patience": np.array([rule.patience], dtype=np.int64),
                   "regression_threshold": np.array([rule.regression_threshold], dtype=np.float32)}

        def answer(batch):  # numpy alone: beside ONNX Runtime's work each torch call pays cold caches
            given = batch | setting
            ids = given["input_ids"]
            logits, exit_layer = session.run(None, {n: given[n] if n in given else np.zeros_like(ids) for n in names})
            return logits, np.repeat(exit_layer, len(ids))  # full depth's one exit layer, every row's

        return answer

    def patience_session(self, full_depth):
        """The session of the patience graph over these cuts; False where it cannot be made."""
        try:
            graph = patience_graph(*self.cut_graphs(), self.config.num_labels, full_depth)
            return self.session(graph.SerializeToString())
        except Exception as e:  # joining, serializing or loading the graph: each raises its own kinds
            logger.warning("ONNX Runtime does not take the patience graph over %s (%s): each example runs layer by "
                           "layer", self.folder, first_line(e))
            return False

    def cut_graphs(self):
        import onnx

        return (onnx.load(str(self.folder / "embed.onnx")),
                [onnx.load(str(self.folder / f"layer_{i}.onnx")) for i in range(self.num_layers)])

    def embed(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        values = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return torch.from_numpy(self.embedding.run(None, feed(self.embedding, values))[0])

    def layer_inputs(self, hidden, attention_mask, position_ids):
        return LayerInputs({"attention_mask": attention_mask})

    def token_weights(self, attention_mask, hidden):
        return None

    def run_cut(self, i, hidden, attention_mask):
        """(states, logits, uncertainty or None) of layer i (0-based)."""
        out = self.layers[i].run(None, {"hidden": hidden.cpu().contiguous().numpy(),  # batches may come from a GPU
                                        "attention_mask": attention_mask.cpu().contiguous().numpy()})
        return torch.from_numpy(out[0]), torch.from_numpy(out[1]), torch.from_numpy(out[2]) if len(out) > 2 else None

    @staticmethod
    def engine_step(model, rule, layer, hidden, rows, shared, weights, state, with_heads):
        """engine.layer_step on the cuts: the layer graph already ran the head."""
        hidden, logits, uncertainty = model.run_cut(layer, hidden, rows["attention_mask"])
        if not with_heads:
            return hidden, state, None, None
        state = rule.step(logits, state, uncertainty)
        return hidden, state, rule.answer(logits, state), rule.waits(state)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, exit_rule=None,
                 output_all_layer_logits=False, **unused):
        """Every layer's logits of a batch, with the exits `exit_rule` takes (engine sweeps)."""
        from pabee.model import PabeeOutput

        if not output_all_layer_logits:
            raise ValueError("OrtModel answers a batch at full depth only: stream examples through pabee.engine")
        hidden = self.embed(input_ids, attention_mask, token_type_ids, None, None)
        attention_mask = attention_mask.cpu()
        logits, uncertainty = [], []
        for i in range(self.num_layers):
            hidden, layer_logits, layer_uncertainty = self.run_cut(i, hidden, attention_mask)
            logits.append(layer_logits)
            uncertainty.append(layer_uncertainty)
        all_logits = torch.stack(logits, dim=1)
        learned = None if uncertainty[0] is None else torch.stack(uncertainty, dim=1)
        if exit_rule is None:  # the sweep reads every layer: no exit to take
            exits, answers = torch.full((len(all_logits),), self.num_layers), all_logits[:, -1]
        else:
            exits = exit_layers_from_logits(all_logits, exit_rule, learned)
            answers = answers_at_exit(all_logits, exits, exit_rule)
        return PabeeOutput(logits=answers, exit_layers=exits,
                           all_layer_logits=all_logits, all_layer_uncertainty=learned)
