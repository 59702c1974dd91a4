"""The project's one ONNX exporter: a module to a graph whose batch and sequence are dynamic, its
attention in the implementation asked for, fused where ONNX Runtime's transformer optimizer knows the
backbone, and checked against torch before it is kept. The exit engine's cuts (pabee/deploy/onnx_cuts.py),
the plain exports (pabee/deploy/plain_export.py) and the benchmarks' full-depth peer all come from here.

Fused: the graph is traced with torch's TorchScript exporter from the model in eager attention, the
form whose subgraphs ONNX Runtime's optimizer (onnxruntime.transformers.optimizer, what optimum's
optimization levels run) recognises, and its fusions applied: EmbedLayerNormalization, Attention,
BiasGelu and SkipLayerNormalization for BERT-like layers. Unfused: torch's dynamo exporter, as the
model's attention is set. Either way ONNX Runtime must answer within TOLERANCE of torch on rows of
another shape than the ones exported with, else nothing is kept and one line says so."""

import contextlib
import warnings

import torch

from pabee.base.errors import UsageError, first_line
from pabee.base.logs import quiet_exporter

TOLERANCE = 1e-4  # ONNX Runtime against torch at fp32, at every position a layer reads
# Backbones whose layers ONNX Runtime's optimizer fuses, and the optimizer's name for their kind.
FUSED_KINDS = {"bert": "bert", "albert": "bert", "roberta": "bert", "electra": "bert", "distilbert": "bert"}


class NamedInputs(torch.nn.Module):
    """A model whose forward takes its inputs by name (transformers' classes), as the exporter takes a
    module: the inputs `names` (of input_ids, attention_mask, token_type_ids) in that order, its logits out."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(**{name: given[name] for name in self.names}).logits


def quantize_graph(source, out):
    """ONNX Runtime's dynamic quantization of the graph at `source` into `out`: int8 weights per output
    channel (per tensor, its default, cost all-MiniLM-L6-v2 a point of SST-2 dev: docs/onnx.md),
    activations quantized per call; fused operators (Attention) become their quantized forms. Heads are
    quantized too: at batch 1 a layer's fp32 pooler streams 4x the bytes from memory (measured: 2% of an
    example's time at patience 2 on all-MiniLM-L6-v2), and exits at int8 moved no more (docs/onnx.md)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_exporter():
        quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fused operators' outputs


def fuses(config):
    """Whether graphs of this backbone are exported fused."""
    return config.model_type.removeprefix("pabee-") in FUSED_KINDS


def export_graph(model, module, example, path, inputs, outputs, fuse=False, instead="use --runtime torch"):
    """`module` (whose forward takes `example`, the inputs named `inputs`, their first two dimensions
    the dynamic `batch` and `sequence`) to `path`, part of `model` (whose config says its attention).
    Returns the fused operators found, by name ({} unfused); a failure is one line ending in `instead`."""
    try:
        with warnings.catch_warnings(), quiet_exporter(), attention(model, "eager" if fuse else None):
            warnings.simplefilter("ignore")  # the exporters' notes on their own internals, not on this model
            if fuse:
                traced(module, example, path, inputs, outputs)
                return optimized(model.config, path)
            batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
            torch.onnx.export(module.eval(), example, str(path), input_names=list(inputs), output_names=list(outputs),
                              dynamic_shapes=tuple({0: batch, 1: length} for _ in example),
                              dynamo=True, external_data=False, verbose=False)
            return {}
    except UsageError:
        raise
    except Exception as e:  # the exporters and the optimizer raise many kinds
        raise UsageError(f"{model.config.model_type} does not export to ONNX ({first_line(e)}): {instead}") from None


@contextlib.contextmanager
def attention(model, implementation):
    """`model` with its attention in `implementation` (None: as it is) for the time of an export."""
    before = model.config._attn_implementation
    try:
        if implementation is not None and implementation != before:
            model.set_attn_implementation(implementation)
        yield
    finally:
        if model.config._attn_implementation != before:
            model.set_attn_implementation(before)


def traced(module, example, path, inputs, outputs):
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    with contextlib.redirect_stdout(None):
        torch.onnx.export(module.eval(), example, str(path), input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def optimized(config, path):
    """Applies ONNX Runtime's transformer fusions to the graph at `path` in place; the fused operators
    found, by name."""
    from onnxruntime.transformers.optimizer import optimize_model

    graph = optimize_model(str(path), model_type=FUSED_KINDS[config.model_type.removeprefix("pabee-")],
                           num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
    graph.save_model_to_file(str(path))
    return {name: n for name, n in graph.get_fused_operator_statistics().items() if n}


def check_graph(session, module, inputs, rows, padding_mask):
    """The largest difference between the session's outputs and torch's on `rows`, at the positions
    `padding_mask` marks real (padded positions' states are never read: as keys they are masked, in a
    pooling their weight is 0)."""
    got = session.run(None, feed(session, dict(zip(inputs, rows, strict=True))))
    with torch.no_grad():
        expected = module(*rows)
    expected = expected if isinstance(expected, tuple) else (expected,)
    real = padding_mask.bool()
    return max(float((torch.from_numpy(g) - e)[real if e.dim() > 2 else slice(None)].abs().max())
               for g, e in zip(got, expected, strict=True))


def feed(session, values):
    """The session's inputs from `values` (numpy or torch), token types as zeros where not given."""
    out = {}
    for entry in session.get_inputs():
        value = values.get(entry.name)
        if value is None:  # a graph reading token types, fed a batch without them
            value = torch.zeros_like(values["input_ids"])
        out[entry.name] = value.cpu().numpy() if isinstance(value, torch.Tensor) else value
    return out
