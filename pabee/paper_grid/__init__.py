"""The paper's table in one command (reproduce_paper.py): its settings, the run plan, each job's
body, the grid driver and its launchers (local, Ray, Slurm: a new launcher goes beside them), the
table, its outputs, and the cost estimate of a plan."""

from pabee.base.lazy import lazy_exports

ENTRY_POINTS = {"reproduce": "whole_table", "Grid": "driver"}  # name -> its module here
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
