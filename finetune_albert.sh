#!/usr/bin/env bash
# Fine-tune ALBERT with PABEE on one GLUE task, saving and logging every STEPS steps.
#   usage: finetune_albert.sh TASK STEPS [more run_glue.py flags]     e.g. finetune_albert.sh MRPC 50
# Environment: GLUE_DIR (folder holding TASK/), OUTPUT_DIR, MODEL_NAME_OR_PATH, PYTHON.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 TASK STEPS [run_glue.py flags...]  (TASK: a GLUE folder name such as MRPC; STEPS: save/logging steps)" >&2
  exit 2
fi
TASK=$1; STEPS=$2; shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
GLUE_DIR=${GLUE_DIR:-./glue_data}
MODEL_NAME_OR_PATH=${MODEL_NAME_OR_PATH:-albert-base-v2}
OUTPUT_DIR=${OUTPUT_DIR:-./output/albert/$TASK}
if [ -x "$HERE/.venv/bin/python" ]; then PYTHON=${PYTHON:-$HERE/.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi

exec "$PYTHON" "$HERE/run_glue.py" \
  --model_type albert \
  --model_name_or_path "$MODEL_NAME_OR_PATH" \
  --task_name "$TASK" \
  --do_train \
  --do_eval \
  --do_lower_case \
  --data_dir "$GLUE_DIR/$TASK" \
  --max_seq_length 128 \
  --per_gpu_train_batch_size 32 \
  --per_gpu_eval_batch_size 32 \
  --learning_rate 2e-5 \
  --save_steps "$STEPS" \
  --logging_steps "$STEPS" \
  --num_train_epochs 5 \
  --output_dir "$OUTPUT_DIR" \
  --evaluate_during_training \
  "$@"
