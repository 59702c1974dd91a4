"""Early exit itself: the exit rules (PABEE's patience and the later criteria, each citing its paper),
their flags' grammar, the one-pass sweep of every setting over every layer's logits, and the exit
engine that runs a stream of examples layer by layer, refilling the rows freed by exits. A new exit
rule goes in rules.py."""

from pabee.base.lazy import lazy_exports

ENTRY_POINTS = {"stream": "engine", "Shapes": "engine", "make_rule": "rules", "PatienceRule": "rules",
                "ExitSettings": "exit_settings"}  # name -> its module here
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
