#!/usr/bin/env bash
# Fine-tune BERT with PABEE on one GLUE task, saving and logging every STEPS steps.
#   usage: finetune_bert.sh TASK STEPS [more run_glue.py flags]     e.g. finetune_bert.sh MRPC 50
# Environment: GLUE_DIR (folder holding TASK/), OUTPUT_DIR, MODEL_NAME_OR_PATH (default bert-base-uncased), PYTHON.
# The run_glue.py flags are in scripts/classic.sh; flags given here win over them.
MODEL_TYPE=bert
DEFAULT_MODEL=bert-base-uncased
source "$(dirname "$0")/scripts/classic.sh"
finetune "$@"
