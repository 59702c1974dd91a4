"""PABEE ("BERT Loses Patience: Fast and Robust Inference with Early Exit", Zhou et al., NeurIPS
2020) as a library: per-layer heads on any of the backbones in `pabee.backbones`, the weighted
training loss and the baselines' regimes, per-example early exit, and everything run_glue.py,
predict.py and reproduce_paper.py do with them. docs/layout.md lists the modules in the order
their imports run (each imports only modules listed before it).

This file stays empty of imports: the entry points parse their flags before torch loads."""
