#!/usr/bin/env bash
# Fine-tune ALBERT with PABEE on one GLUE task, saving and logging every STEPS steps.
#   usage: finetune_albert.sh TASK STEPS [more run_glue.py flags]     e.g. finetune_albert.sh MRPC 50
# Environment: GLUE_DIR (folder holding TASK/), OUTPUT_DIR, MODEL_NAME_OR_PATH (default albert-base-v2), PYTHON.
# The run_glue.py flags are in scripts/classic.sh; flags given here win over them.
MODEL_TYPE=albert
DEFAULT_MODEL=albert-base-v2
source "$(dirname "$0")/scripts/classic.sh"
finetune "$@"
