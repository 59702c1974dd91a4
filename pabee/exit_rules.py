"""The exit rules: when an example may stop, decided layer by layer from the heads' logits; the
registry of them that --exit_criterion names; and `ExitSettings`, a criterion with its settings
parsed once from the text a user gives.

This module imports no torch (the rules only call methods of the tensors they are given), so that
the entry points can list the choices and check flags before anything heavy is loaded.
"""

import re
from dataclasses import dataclass

from pabee.errors import UsageError


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


def parse_settings(text, rule, flag):
    """A comma list of the criterion's settings, each of its type and within its bounds."""
    pattern = r"\d+" if rule.setting_type is int else r"\d+(\.\d*)?|\.\d+"
    parts = [part.strip() for part in str(text).split(",")]

    def valid(part):
        value = rule.setting_type(part)
        return value >= rule.min_setting and (rule.max_setting is None or value <= rule.max_setting)

    if not all(re.fullmatch(pattern, part) and valid(part) for part in parts):
        kind = "integers" if rule.setting_type is int else "numbers"
        bounds = f">= {rule.min_setting}" if rule.max_setting is None else f"from {rule.min_setting} to {rule.max_setting}"
        raise UsageError(f"bad {flag} '{text}': give a comma list of {kind} {bounds}, e.g. {rule.example}")
    return tuple(rule.setting_type(part) for part in parts)


@dataclass(frozen=True)
class ExitSettings:
    """The exit criterion and the settings every evaluation reports. Patience settings come from
    `patience`, the other criteria's from `thresholds` (text, as the flags give them)."""

    criterion: str = "patience"
    settings: tuple = (0,)
    regression_threshold: float = 0.0

    @classmethod
    def parse(cls, criterion="patience", patience="0", thresholds="", regression_threshold=0.0):
        rule = RULES[criterion]
        patience_values = parse_settings(patience, PatienceRule, "--patience")
        if criterion == "patience":
            if thresholds:
                raise UsageError("--exit_thresholds is for the baseline criteria: give patience values with --patience")
            return cls(criterion, patience_values, regression_threshold)
        if not thresholds:
            raise UsageError(f"--exit_criterion {criterion} needs --exit_thresholds, e.g. {rule.example}")
        return cls(criterion, parse_settings(thresholds, rule, "--exit_thresholds"), regression_threshold)

    def rule(self, setting):
        return make_rule(self.criterion, setting, self.regression_threshold)

    def check_task(self, is_regression, name):
        """Criteria that read class probabilities have none on a regression task (`name`)."""
        if RULES[self.criterion].needs_probabilities and is_regression:
            raise UsageError(f"--exit_criterion {self.criterion} needs class probabilities and "
                             f"{name} is a regression task: use patience or fixed")

    def check_depth(self, depth):
        if self.criterion == "fixed" and max(self.settings) > depth:
            raise UsageError(f"--exit_thresholds {','.join(map(str, self.settings))}: fixed exit layer "
                             f"{max(self.settings)} is beyond the model's {depth} layers: give layers from 1 to {depth}")
