"""What a model's answers are worth: inference over a set at every exit setting, the result rows and
their files, reports and the tradeoff plot, the exit a run answers with by default, and the choice of
a setting on held-out rows."""

from pabee.base.lazy import lazy_exports

ENTRY_POINTS = {"evaluate": "evaluation", "run_inference": "evaluation", "chosen_exit": "default_exit"}  # name -> its module here
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
