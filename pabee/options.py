"""The choices a PABEE model's config takes: what its heads read of a layer and how it is
fine-tuned. No torch here, so that flag parsing lists them at once."""

EXIT_POOLING = ("first", "mean")  # what the pooler reads of a layer: its first token, or the masked mean

# How a model is fine-tuned: the loss of each stage. pabee: the weighted loss over every head; last:
# the last head alone (vanilla); internal: stage 2 of DeeBERT, each internal head's own loss on a
# frozen model; distill: stage 2 of FastBERT, internal heads towards the last layer's predictions;
# alternate: BERxiT's alternating objectives (the last head's loss, then every head's, batch by
# batch); alternate_lte: the same with BERxiT's learning-to-exit head; equilibrium: ElasticBERT,
# every head's loss with gradient equilibrium; cosee: COSEE's sample-weighted loss with signal calibration
# (classification only). pabee.losses says what each one computes.
STAGES = {"pabee": ("pabee",), "last": ("last",), "two_stage": ("last", "internal"), "self_distill": ("last", "distill"),
          "alternate": ("alternate",), "alternate_lte": ("alternate_lte",), "equilibrium": ("equilibrium",),
          "cosee": ("cosee",)}
EXIT_TRAINING = tuple(STAGES)
LEARNS_TO_EXIT = ("alternate_lte",)  # regimes whose model has BERxiT's learning-to-exit head
CLASSIFICATION_ONLY = ("cosee",)  # regimes whose loss reads class logits

HEAD_BIAS_INIT = ("zero", "label_prior")  # new heads' bias: zero (the original) or the training labels' prior

# The exit engine's step (pabee/compiled.py): compiled on CUDA and eager on the CPU (auto), or as said.
ENGINE_STEPS = ("auto", "eager", "compiled")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
