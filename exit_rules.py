"""The exit rules: when an example may stop, decided layer by layer from the heads' logits, and
the registry of them that --exit_criterion names. Also the choices a PABEE model's config takes.

This module imports no torch (the rules only call methods of the tensors they are given), so that
run_glue.py can list the choices and check flags before anything heavy is loaded.
"""

# How a model is fine-tuned: the loss of each stage. pabee: the weighted loss over every head; last:
# the last head alone (vanilla); internal: stage 2 of DeeBERT, each internal head's own loss on a
# frozen model; distill: stage 2 of FastBERT, internal heads towards the last layer's predictions.
STAGES = {"pabee": ("pabee",), "last": ("last",), "two_stage": ("last", "internal"), "self_distill": ("last", "distill")}
EXIT_TRAINING = tuple(STAGES)
EXIT_POOLING = ("first", "mean")  # what the pooler reads of a layer: its first token, or the masked mean


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_setting(name, value):
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def zeros(batch_size, device, dtype):
    """A rule's per-example state at the start of a batch."""
    import torch  # only once a batch runs: this module stays light

    return torch.zeros(batch_size, dtype=getattr(torch, dtype), device=device)


class PatienceRule:
    """PABEE's exit rule, example by example.

    A counter goes up when a layer's prediction agrees with the previous layer's (argmax
    equal; regression: |difference| < threshold, strict) and resets otherwise; it is 0 at
    layer 1. An example exits at the first layer where the counter equals `patience`.
    Patience 0 never exits early: full depth, last head (as the original).

    Every rule has the same interface: `start` gives the state of a batch (a tuple of tensors,
    one row per example), `step` reads one layer's logits, and `waits` says for each example
    how many more layers must run before it could exit (0: it exits at this layer), never
    more than the true number. `earliest_exit` is the first layer where an exit is possible.
    """

    name = "patience"
    log_name = "Patience"  # the originals' console line
    setting_type = int
    min_setting, max_setting = 0, None
    needs_probabilities = False
    example = "3,4,5"

    def __init__(self, patience, regression_threshold=0.0):
        self.patience = check_setting("patience", patience)
        self.regression_threshold = check_setting("regression_threshold", regression_threshold)

    @classmethod
    def from_setting(cls, setting, regression_threshold):
        return cls(int(setting), regression_threshold)

    @property
    def exits_early(self):
        return self.patience > 0

    @property
    def earliest_exit(self):
        return self.patience + 1

    def start(self, batch_size, device):
        return None, zeros(batch_size, device, "long")

    def step(self, logits, state):
        """The state keeps the previous layer's prediction (class index, or the value for
        regression) and the counter."""
        previous, counter = state
        prediction = logits.view(-1) if logits.shape[-1] == 1 else logits.argmax(-1)
        if previous is None:
            return prediction, counter
        if logits.shape[-1] == 1:
            agree = (prediction - previous).abs() < self.regression_threshold
        else:
            agree = prediction == previous
        return prediction, (counter + 1) * agree

    def waits(self, state):
        return self.patience - state[1]


class ThresholdRule:
    """A rule that looks at one layer's softmax alone: the state is whether that layer's
    `passes` holds, and an example exits at the first layer where it does."""

    exits_early = True
    earliest_exit = 1
    setting_type = float
    min_setting, max_setting = 0, None
    needs_probabilities = True
    example = "0.1,0.2,0.4"

    def __init__(self, threshold):
        self.threshold = check_setting(f"{self.name} threshold", threshold)

    @classmethod
    def from_setting(cls, setting, regression_threshold):
        return cls(float(setting))

    def start(self, batch_size, device):
        return (zeros(batch_size, device, "bool"),)

    def step(self, logits, state):
        return (self.passes(logits.float()),)

    def waits(self, state):
        return (~state[0]).long()


class EntropyRule(ThresholdRule):
    """DeeBERT / BranchyNet: exit once the softmax entropy falls below `threshold`."""

    name = log_name = "entropy"

    def passes(self, logits):
        log_p = logits.log_softmax(-1)
        return -(log_p.exp() * log_p).sum(-1) < self.threshold


class ConfidenceRule(ThresholdRule):
    """Shallow-Deep: exit once the top softmax probability reaches `threshold`."""

    name = log_name = "confidence"
    max_setting = 1  # a probability
    example = "0.8,0.9,0.95"

    def passes(self, logits):
        return logits.softmax(-1).max(-1).values >= self.threshold


class FixedRule:
    """The static baseline: every example exits at layer `layer` (1-based)."""

    exits_early = True
    name = log_name = "fixed"
    setting_type = int
    min_setting, max_setting = 1, None  # at most the model's depth, checked once it is known
    needs_probabilities = False
    example = "2,4,6"

    def __init__(self, layer):
        if layer < 1:
            raise ValueError(f"fixed exit layer must be >= 1, got {layer}")
        self.layer = self.earliest_exit = layer

    @classmethod
    def from_setting(cls, setting, regression_threshold):
        return cls(int(setting))

    def start(self, batch_size, device):
        return (zeros(batch_size, device, "long"),)

    def step(self, logits, state):
        return (state[0] + 1,)

    def waits(self, state):
        return self.layer - state[0]


# Each rule class declares what the driver needs to know of it: `name` (the --exit_criterion
# value), `log_name` (in the console line), `setting_type` and `min_setting` (what its settings
# are, `max_setting` None for no bound), `needs_probabilities` (refused on regression tasks), an `example` list of settings, and
# `from_setting(setting, regression_threshold)` builds it.
RULES = {rule.name: rule for rule in (PatienceRule, EntropyRule, ConfidenceRule, FixedRule)}


def make_rule(criterion, setting, regression_threshold=0.0):
    return RULES[criterion].from_setting(setting, regression_threshold)


def patience_line(setting, stats, criterion="patience"):
    """The originals' log line (their "Speed Up" is 1 - avg/L), with the true ratio beside it."""
    return (
        f"*** {RULES[criterion].log_name} = {setting} Avg. Inference Layers = {stats['mean_exit_layer']:.2f} "
        f"Speed Up = {stats['original_speed_up']:.2f} *** (speed-up L/avg = {stats['speed_up']:.2f}x)"
    )
