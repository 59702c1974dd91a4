"""The exit engine on ONNX Runtime: the cuts of pabee/deploy/onnx_cuts.py driven by the engine's own
stream and every exit rule (pabee/early_exit/engine.py), in place of the torch model. The rule's
state stays on the host: it is a few numbers per row, and any rule of pabee/early_exit/rules.py runs
on it unchanged. Under PABEE's patience rule at batch size 1, and at full depth, one graph answers a
batch in one call (pabee/deploy/patience_graph.py)."""

import logging
from pathlib import Path

import numpy as np
import torch

from pabee.base.errors import UsageError, first_line
from pabee.deploy.onnx_cuts import FOLDER, cached_cuts
from pabee.deploy.onnx_graph import feed
from pabee.deploy.patience_graph import patience_graph
from pabee.early_exit.batch_rows import LayerInputs
from pabee.early_exit.rules import PatienceRule
from pabee.early_exit.sweep import answers_at_exit, exit_layers_from_logits

logger = logging.getLogger(__name__)


def ort_model(model, folder, quantize="none", threads=None):
    """`model` (a PABEE model, on any device) as an OrtModel, from the cuts cached under
    `folder`/onnx_cuts, exported or quantized first when missing or made from other weights."""
    cuts = cached_cuts(model, Path(folder) / FOLDER, quantize)
    try:
        return OrtModel(model.config, cuts, threads or torch.get_num_threads())
    except Exception as e:  # a damaged or truncated graph: ONNX Runtime raises its own kinds
        raise UsageError(f"ONNX Runtime cannot load the graphs in {cuts} ({first_line(e)}): delete that folder "
                         "and they are exported again") from None


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
        (pabee/deploy/patience_graph.py: one graph for every patience), at any batch size its full depth
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
        from pabee.modeling.model import PabeeOutput

        if not output_all_layer_logits:
            raise ValueError("OrtModel answers a batch at full depth only: stream examples through pabee.early_exit.engine")
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
