"""The exit rules: when an example may stop, decided layer by layer from the heads' logits, and
the registry of them that --exit_criterion names. PABEE's patience, the paper's baselines (entropy,
confidence, a fixed layer) and the later methods: divergence patience (F-PABEE), entropy patience
(PCEE-BERT), the past layers' ensemble (GPFEE's past part), learning to exit (BERxiT's LTE) and the
normalized energy score (COSEE); docs/methods.md cites each. No torch is imported here (the rules
call methods of the tensors they are given): entry points check flags before anything heavy loads.
"""


def check_setting(name, value):
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def zeros(batch_size, device, dtype):
    """A rule's per-example state at the start of a batch."""
    import torch  # only once a batch runs: this module stays light
    return torch.zeros(batch_size, dtype=getattr(torch, dtype), device=device)


class Rule:
    """What every rule says of itself, and the defaults most take. `start(batch_size, device)`
    gives the state of a batch (a tuple of tensors, one row per example), `step(logits, state,
    uncertainty)` reads one layer (its logits, and for rules that need it the learned uncertainty
    of that layer), and `waits(state)` says for each example how many more layers must run before
    it could exit (0: it exits at this layer), never more than the true number. `earliest_exit` is
    the first layer where an exit is possible. An example answers with the logits of its exit
    layer, unless the rule answers from its state (`answer` in the exit loop, `layer_answers` for
    a sweep over every layer's logits).

    Class attributes for the drivers: `name` (the --exit_criterion value), `log_name` (the console
    line), `setting_type`, `min_setting` and `max_setting` (None: no bound) of its settings,
    `uses_patience` (its settings pair every --patience with every --exit_thresholds value),
    `needs_probabilities` (refused on regression tasks), `needs_uncertainty` (needs a model with a
    learning-to-exit head), an `example` list of settings, and `from_setting(setting,
    regression_threshold)` builds it."""

    min_setting, max_setting = 0, None
    uses_patience = needs_probabilities = needs_uncertainty = answers_from_state = False
    log_name = None  # the name, unless the originals' console line spells it otherwise

    def answer(self, logits, state):
        return logits

    def heads_before_last(self, num_layers):
        """Whether the heads below the last layer can change an answer or an exit: not when no
        example could exit before layer `num_layers` (patience L-1 or more on L layers) and the
        answer reads the last head alone. Full depth then costs what it costs without exits."""
        return self.exits_early and (self.earliest_exit < num_layers or self.answers_from_state)

    def layer_answers(self, all_layer_logits):
        return all_layer_logits


class PatienceRule(Rule):
    """PABEE's exit rule, example by example (Zhou et al., 2020, Section 3.1).

    A counter goes up when a layer's prediction agrees with the previous layer's (argmax
    equal; regression: |difference| < threshold, strict) and resets otherwise; it is 0 at
    layer 1. An example exits at the first layer where the counter equals `patience`.
    Patience 0 never exits early: full depth, last head (as the original)."""

    name = "patience"
    log_name = "Patience"  # the originals' console line
    setting_type = int
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

    def step(self, logits, state, uncertainty=None):
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


class ThresholdRule(Rule):
    """A rule that looks at one layer alone: the state is whether that layer's `passes` holds,
    and an example exits at the first layer where it does."""

    exits_early = True
    earliest_exit = 1
    setting_type = float
    needs_probabilities = True
    example = "0.1,0.2,0.4"

    def __init__(self, threshold):
        self.threshold = check_setting(f"{self.name} threshold", threshold)

    @classmethod
    def from_setting(cls, setting, regression_threshold):
        return cls(float(setting))

    def start(self, batch_size, device):
        return (zeros(batch_size, device, "bool"),)

    def step(self, logits, state, uncertainty=None):
        return (self.passes(logits.float(), uncertainty),)

    def waits(self, state):
        return (~state[0]).long()


def entropy(logits):
    log_p = logits.float().log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1)


class EntropyRule(ThresholdRule):
    """DeeBERT (Xin et al., 2020) / BranchyNet: exit once the softmax entropy falls below `threshold`."""

    name = "entropy"

    def passes(self, logits, uncertainty):
        return entropy(logits) < self.threshold


class ConfidenceRule(ThresholdRule):
    """Shallow-Deep (Kaya et al., 2019): exit once the top softmax probability reaches `threshold`."""

    name = "confidence"
    max_setting = 1  # a probability
    example = "0.8,0.9,0.95"

    def passes(self, logits, uncertainty):
        return logits.softmax(-1).max(-1).values >= self.threshold


class LearnedExitRule(ThresholdRule):
    """BERxiT's learning to exit (Xin et al., EACL 2021; "LTE"): a head shared by every layer
    predicts how likely that layer's answer is wrong (its uncertainty, in [0, 1]); exit once it
    falls below `threshold`. Needs a model trained with --exit_training alternate_lte; works for
    regression too."""

    name = "lte"
    max_setting = 1
    needs_probabilities = False
    needs_uncertainty = True
    example = "0.1,0.3,0.5"

    def passes(self, logits, uncertainty):
        return uncertainty < self.threshold


def normalized_energy(logits):
    """COSEE's exit signal, the energy score squashed into (0, 1): 1 / (1 + sum_c exp(logit_c)),
    that is sigmoid(-logsumexp(logits)) (the authors' code, He-Jianing/COSEE, function `energy`, at
    temperature 1 as its scripts run it). Confident heads have large logits and a signal near 0."""
    return (-logits.float().logsumexp(-1)).sigmoid()


class EnergyRule(ThresholdRule):
    """COSEE (He et al., "COSEE: Consistency-Oriented Signal-Based Early Exiting via Calibrated
    Sample Weighting Mechanism", AAAI 2025): exit at the first layer whose normalized energy score
    falls below `threshold` (strict, as its code compares). Its training is --exit_training cosee
    (pabee.modeling.cosee); the rule reads any model's heads."""

    name = "energy"
    max_setting = 1  # the signal lies in (0, 1)
    example = "0.05,0.1,0.2"

    def passes(self, logits, uncertainty):
        return normalized_energy(logits) < self.threshold


class PastEnsembleRule(ThresholdRule):
    """The past part of GPFEE (Liao et al., NAACL 2021): a layer's answer is the average of the
    softmax distributions of layers 1..i (equal weights), and an example exits once the entropy of
    that average falls below `threshold`, answering with it (its log as the logits)."""

    name = "past_entropy"
    answers_from_state = True

    def start(self, batch_size, device):
        return None, zeros(batch_size, device, "long"), zeros(batch_size, device, "bool")

    def step(self, logits, state, uncertainty=None):
        total, count, _ = state
        probabilities = logits.float().softmax(-1)
        total = probabilities if total is None else total + probabilities
        count = count + 1
        average = total / count.unsqueeze(-1)
        return total, count, -(average * average.log()).sum(-1) < self.threshold

    def waits(self, state):
        return (~state[2]).long()

    def answer(self, logits, state):
        total, count, _ = state
        return (total / count.unsqueeze(-1)).log()

    def layer_answers(self, all_layer_logits):
        total = all_layer_logits.float().softmax(-1).cumsum(1)
        count = all_layer_logits.new_tensor(range(1, all_layer_logits.shape[1] + 1), dtype=total.dtype)
        return (total / count[None, :, None]).log()


class CountingRule(Rule):
    """A rule that counts consecutive layers where a test holds (`holds(logits, previous)`), and
    exits an example once the count reaches `patience` (patience 0: full depth). Its settings pair
    a patience with a threshold, written "<patience>_<threshold>" (e.g. 2_0.05)."""

    setting_type = float  # of the threshold; the patience comes from --patience
    uses_patience = True
    needs_probabilities = True
    example = "0.05,0.1,0.2"

    def __init__(self, patience, threshold):
        self.patience = check_setting("patience", patience)
        self.threshold = check_setting(f"{self.name} threshold", threshold)

    @classmethod
    def from_setting(cls, setting, regression_threshold):
        patience, threshold = str(setting).split("_")
        return cls(int(patience), float(threshold))

    @property
    def exits_early(self):
        return self.patience > 0

    def start(self, batch_size, device):
        return None, zeros(batch_size, device, "long")

    def step(self, logits, state, uncertainty=None):
        previous, counter = state
        log_p = logits.float().log_softmax(-1)
        return log_p, (counter + 1) * self.holds(log_p, previous)

    def waits(self, state):
        return self.patience - state[1]


class DivergencePatienceRule(CountingRule):
    """F-PABEE (Gao et al., ICASSP 2023): PABEE's counter, with "agree" softened to "the class
    distribution is within `threshold` of the previous layer's" by a divergence; the count is 0 at
    layer 1 (no previous layer), so the earliest exit is layer patience + 1."""

    @property
    def earliest_exit(self):
        return self.patience + 1

    def holds(self, log_p, previous):
        if previous is None:
            return log_p.new_zeros(log_p.shape[0], dtype=bool)
        return self.divergence(log_p, previous) < self.threshold


class KLPatienceRule(DivergencePatienceRule):
    name = "kl_patience"

    @staticmethod
    def divergence(log_p, log_q):
        """KL(p_i || p_i-1): the current layer's distribution against the previous one's."""
        return (log_p.exp() * (log_p - log_q)).sum(-1)


class JSPatienceRule(DivergencePatienceRule):
    name = "js_patience"

    @staticmethod
    def divergence(log_p, log_q):
        """Jensen-Shannon: the mean KL of both to their average (symmetric, at most log 2)."""
        log_m = ((log_p.exp() + log_q.exp()) / 2).log()
        return ((log_p.exp() * (log_p - log_m)).sum(-1) + (log_q.exp() * (log_q - log_m)).sum(-1)) / 2


class EntropyPatienceRule(CountingRule):
    """PCEE-BERT (Zhang et al., Findings of NAACL 2022): count the consecutive layers that are
    confident (softmax entropy below `threshold`); exit once `patience` of them follow each other,
    so the earliest exit is layer `patience`."""

    name = "entropy_patience"

    @property
    def earliest_exit(self):
        return max(self.patience, 1)

    def holds(self, log_p, previous):
        return -(log_p.exp() * log_p).sum(-1) < self.threshold


class FixedRule(Rule):
    """The static baseline: every example exits at layer `layer` (1-based)."""

    exits_early = True
    name = "fixed"
    setting_type = int
    min_setting = 1  # at most the model's depth, checked once it is known
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

    def step(self, logits, state, uncertainty=None):
        return (state[0] + 1,)

    def waits(self, state):
        return self.layer - state[0]


RULES = {rule.name: rule for rule in (PatienceRule, EntropyRule, ConfidenceRule, FixedRule, KLPatienceRule,
                                      JSPatienceRule, EntropyPatienceRule, PastEnsembleRule, LearnedExitRule,
                                      EnergyRule)}


def make_rule(criterion, setting, regression_threshold=0.0):
    return RULES[criterion].from_setting(setting, regression_threshold)


def example_rule(criterion, patience):
    """`criterion` at its first example setting (at `patience` where it counts): the benchmarks run each so."""
    rule, first = RULES[criterion], RULES[criterion].example.split(",")[0]
    return make_rule(criterion, patience if rule is PatienceRule else f"{patience}_{first}" if rule.uses_patience else first)
