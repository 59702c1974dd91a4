#!/usr/bin/env bash
# Evaluate a fine-tuned PABEE BERT (every checkpoint) at several patience values.
#   usage: patience_infer_bert.sh TASK STEPS [more run_glue.py flags]     e.g. patience_infer_bert.sh MRPC 50
# Environment: GLUE_DIR (folder holding TASK/), OUTPUT_DIR (the fine-tuned run), MODEL_NAME_OR_PATH
# (defaults to OUTPUT_DIR), PATIENCE (default 3,4,5,6,7,8), PYTHON.
# The run_glue.py flags are in scripts/classic.sh; flags given here win over them.
MODEL_TYPE=bert
source "$(dirname "$0")/scripts/classic.sh"
patience_infer "$@"
