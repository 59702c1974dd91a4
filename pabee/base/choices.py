"""The choices a PABEE model's config takes: what its heads read of a layer and how it is
fine-tuned, and where its layers run at inference. No torch here, so that flag parsing lists them at once."""

import importlib.util

from pabee.base.errors import UsageError

EXIT_POOLING = ("first", "mean")  # what the pooler reads of a layer: its first token, or the masked mean

# How a model is fine-tuned: the loss of each stage. pabee: the weighted loss over every head; last:
# the last head alone (vanilla); internal: stage 2 of DeeBERT, each internal head's own loss on a
# frozen model; distill: stage 2 of FastBERT, internal heads towards the last layer's predictions;
# alternate: BERxiT's alternating objectives (the last head's loss, then every head's, batch by
# batch); alternate_lte: the same with BERxiT's learning-to-exit head; equilibrium: ElasticBERT,
# every head's loss with gradient equilibrium; cosee: COSEE's sample-weighted loss with signal calibration
# (classification only). pabee.modeling.losses says what each one computes.
STAGES = {"pabee": ("pabee",), "last": ("last",), "two_stage": ("last", "internal"), "self_distill": ("last", "distill"),
          "alternate": ("alternate",), "alternate_lte": ("alternate_lte",), "equilibrium": ("equilibrium",),
          "cosee": ("cosee",)}
EXIT_TRAINING = tuple(STAGES)
LEARNS_TO_EXIT = ("alternate_lte",)  # regimes whose model has BERxiT's learning-to-exit head
CLASSIFICATION_ONLY = ("cosee",)  # regimes whose loss reads class logits

HEAD_BIAS_INIT = ("zero", "label_prior")  # new heads' bias: zero (the original) or the training labels' prior

# The exit engine's step (pabee/early_exit/compiled_step.py): compiled on CUDA and eager on the CPU (auto), or as said.
ENGINE_STEPS = ("auto", "eager", "compiled")

# Where the exit engine's layers run (pabee/deploy/ort_model.py): torch, or ONNX Runtime with its layer graphs
# in fp32 or quantized to int8.
RUNTIMES = ("torch", "onnxruntime")
QUANTIZE = ("none", "int8")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_runtime(runtime, quantize):
    """The runtime and quantization asked for (RUNTIMES, QUANTIZE), or one line saying what is wrong."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime}: give one of {', '.join(RUNTIMES)}")
    if quantize not in QUANTIZE:
        raise UsageError(f"--quantize {quantize}: give one of {', '.join(QUANTIZE)}")
    if quantize != "none" and runtime != "onnxruntime":
        raise UsageError(f"--quantize {quantize} quantizes ONNX Runtime's graphs: add --runtime onnxruntime")
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if runtime == "onnxruntime" and missing:
        raise UsageError(f"--runtime onnxruntime needs {', '.join(missing)}: pip install -r requirements.txt")
