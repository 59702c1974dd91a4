# The part the four classic scripts share (finetune_{bert,albert}.sh, patience_infer_{bert,albert}.sh),
# sourced by them after they set MODEL_TYPE (bert or albert) and DEFAULT_MODEL (its hub checkpoint).
# Defines `finetune TASK STEPS [flags]` and `patience_infer TASK STEPS [flags]`; flags after STEPS go
# to run_glue.py and win over the ones below.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

classic_setup() {  # usage check, then the environment's defaults
  local what=$1 script=$2; shift 2
  if [ $# -lt 2 ] || ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $script TASK STEPS [run_glue.py flags...]  (TASK: a GLUE folder name such as MRPC; STEPS: $what steps, a positive integer)" >&2
    exit 2
  fi
  TASK=$1; STEPS=$2
  GLUE_DIR=${GLUE_DIR:-./glue_data}
  OUTPUT_DIR=${OUTPUT_DIR:-./output/$MODEL_TYPE/$TASK}
  if [ -x "$HERE/.venv/bin/python" ]; then PYTHON=${PYTHON:-$HERE/.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi
}

finetune() {
  classic_setup "save/logging" "$(basename "$0")" "$@"; shift 2
  if [ -z "${MODEL_NAME_OR_PATH:-}" ]; then MODEL_NAME_OR_PATH=$DEFAULT_MODEL; export PABEE_DEFAULT_MODEL=$DEFAULT_MODEL; fi
  exec "$PYTHON" "$HERE/run_glue.py" \
    --model_type "$MODEL_TYPE" \
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
    --head_bias_init label_prior \
    "$@"
}

patience_infer() {
  classic_setup "logging" "$(basename "$0")" "$@"; shift 2
  MODEL_NAME_OR_PATH=${MODEL_NAME_OR_PATH:-$OUTPUT_DIR}
  PATIENCE=${PATIENCE:-3,4,5,6,7,8}
  exec "$PYTHON" "$HERE/run_glue.py" \
    --model_type "$MODEL_TYPE" \
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
}
