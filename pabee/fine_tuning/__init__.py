"""A run of run_glue.py: its settings, the processes (one or torchrun's), the training loop with its
regimes, checkpoints to resume from bitwise, and the pipeline that trains, evaluates, reports and
publishes one run."""

from pabee.base.lazy import lazy_exports

ENTRY_POINTS = {"run": "pipeline", "RunSettings": "run_settings"}  # name -> its module here
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
