#!/usr/bin/env bash
# Evaluate a fine-tuned PABEE BERT (every checkpoint) at several patience values.
#   usage: patience_infer_bert.sh TASK STEPS [more run_glue.py flags]     e.g. patience_infer_bert.sh MRPC 50
# Environment: GLUE_DIR (folder holding TASK/), OUTPUT_DIR (the fine-tuned run), MODEL_NAME_OR_PATH
# (defaults to OUTPUT_DIR), PATIENCE (default 3,4,5,6,7,8), PYTHON.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 TASK STEPS [run_glue.py flags...]  (TASK: a GLUE folder name such as MRPC; STEPS: logging steps)" >&2
  exit 2
fi
TASK=$1; STEPS=$2; shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
GLUE_DIR=${GLUE_DIR:-./glue_data}
OUTPUT_DIR=${OUTPUT_DIR:-./output/bert/$TASK}
MODEL_NAME_OR_PATH=${MODEL_NAME_OR_PATH:-$OUTPUT_DIR}
PATIENCE=${PATIENCE:-3,4,5,6,7,8}
if [ -x "$HERE/.venv/bin/python" ]; then PYTHON=${PYTHON:-$HERE/.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi

exec "$PYTHON" "$HERE/run_glue.py" \
  --model_type bert \
  --model_name_or_path "$MODEL_NAME_OR_PATH" \
  --task_name "$TASK" \
  --do_eval \
  --do_lower_case \
  --data_dir "$GLUE_DIR/$TASK" \
  --max_seq_length 128 \
  --per_gpu_eval_batch_size 1 \
  --learning_rate 2e-5 \
  --logging_steps "$STEPS" \
  --num_train_epochs 15 \
  --output_dir "$OUTPUT_DIR" \
  --eval_all_checkpoints \
  --patience "$PATIENCE" \
  "$@"
