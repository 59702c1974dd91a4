"""PABEE ("BERT Loses Patience: Fast and Robust Inference with Early Exit", Zhou et al., NeurIPS
2020) as a library: per-layer heads on any of the backbones in `pabee.modeling.backbones`, the
weighted training loss and the baselines' regimes, per-example early exit, and everything
run_glue.py, predict.py, serve.py, export.py and reproduce_paper.py do with them. Nine subpackages,
each one concern, their imports pointing one way (docs/layout.md draws them in that order): base,
early_exit, modeling, data, scoring, deploy, fine_tuning, paper_grid, serving.

This file stays empty of imports: the entry points parse their flags before torch loads."""
