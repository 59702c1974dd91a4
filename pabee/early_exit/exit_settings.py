"""The exit flags' grammar: a rule and its settings (`--exit_criterion entropy --exit_thresholds
0.1,0.2`, or `--patience 0,1,2`), checked at once and kept as frozen ExitSettings, and the engine's
bucket flags. No torch here: flags are checked before it loads."""

import re
from dataclasses import dataclass

from pabee.base.choices import LEARNS_TO_EXIT
from pabee.base.errors import UsageError
from pabee.early_exit.rules import RULES, PatienceRule, make_rule


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
        """Patience settings from `patience`; a threshold rule's from `thresholds`; a rule that
        counts layers (uses_patience) pairs every patience with every threshold: "2_0.05"."""
        rule = RULES[criterion]
        patience_values = parse_settings(patience, PatienceRule, "--patience")
        if criterion == "patience":
            if thresholds:
                raise UsageError("--exit_thresholds is for the baseline criteria and the later methods: give patience values with --patience")
            return cls(criterion, patience_values, regression_threshold)
        if not thresholds:
            raise UsageError(f"--exit_criterion {criterion} needs --exit_thresholds, e.g. {rule.example}")
        values = parse_settings(thresholds, rule, "--exit_thresholds")
        if rule.uses_patience:
            values = tuple(f"{p}_{t:g}" for p in patience_values for t in values)
        return cls(criterion, values, regression_threshold)

    def rule(self, setting):
        return make_rule(self.criterion, setting, self.regression_threshold)

    def check_task(self, is_regression, name):
        """Criteria that read class probabilities have none on a regression task (`name`)."""
        if RULES[self.criterion].needs_probabilities and is_regression:
            raise UsageError(f"--exit_criterion {self.criterion} needs class probabilities and "
                             f"{name} is a regression task: use patience or fixed")

    def check_learned_exit(self, exit_training):
        """Learning to exit reads a head that only models trained to learn it have."""
        if RULES[self.criterion].needs_uncertainty and exit_training not in LEARNS_TO_EXIT:
            raise UsageError(f"--exit_criterion {self.criterion} needs a model trained with --exit_training "
                             f"{' or '.join(LEARNS_TO_EXIT)} (BERxiT's learning-to-exit head); this one was trained "
                             f"with {exit_training}")

    def check_depth(self, depth):
        if self.criterion == "fixed" and max(self.settings) > depth:
            raise UsageError(f"--exit_thresholds {','.join(map(str, self.settings))}: fixed exit layer "
                             f"{max(self.settings)} is beyond the model's {depth} layers: give layers from 1 to {depth}")


def parse_buckets(text, flag):
    """The exit engine's buckets as engine.Shapes.of takes them: "auto" (fixed buckets on a GPU,
    exact sizes on the CPU), None for "exact" (every size its own bucket), else the sizes."""
    if text in ("auto", "exact"):
        return None if text == "exact" else text
    parts = [part.strip() for part in str(text).split(",")]
    if not all(re.fullmatch(r"\d+", part) and int(part) >= 1 for part in parts):
        raise UsageError(f"bad {flag} '{text}': give auto, exact or a comma list of sizes >= 1, e.g. 1,8,32,64")
    return tuple(sorted({int(part) for part in parts}))
