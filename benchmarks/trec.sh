#!/usr/bin/env bash
# PABEE on own data: TREC question classification (6 classes) from its CSV files, all-MiniLM-L6-v2.
# Fine-tunes vanilla (--exit_training last) and PABEE for the same steps on train.csv with 10% of it
# carved as the dev set, then evaluates every patience and every layer on test.csv (timed), then
# predicts a few typed questions with predict.py.
#
#   benchmarks/trec.sh [TREC_DIR] [OUT]     (defaults: ../shared/text_data/TREC, /tmp/pabee-trec)
# Environment: STEPS (default 300), MODEL_DIR (default all-MiniLM-L6-v2 from its package); the suite's
# smoke run gives a tiny model, a few steps and a small TREC-format folder.
set -euo pipefail
cd "$(dirname "$0")/.."
TREC=${1:-../shared/text_data/TREC}
OUT=${2:-/tmp/pabee-trec}
PY=${PYTHON:-.venv/bin/python}
MODEL=${MODEL_DIR:-$("$PY" -c "import demo; print(demo.default_model_dir())")}
STEPS=${STEPS:-300}
mkdir -p "$OUT"

for method in vanilla pabee; do
  extra=()
  [ "$method" = vanilla ] && extra=(--exit_training last)
  start=$(date +%s)
  "$PY" run_glue.py --model_type bert --model_name_or_path "$MODEL" --task_name trec \
    --train_file "$TREC/train.csv" --validation_split_percentage 10 --text_columns text --label_column label \
    --do_train --do_eval --do_lower_case --max_seq_length 64 --per_gpu_train_batch_size 32 \
    --per_gpu_eval_batch_size 64 --learning_rate 1e-4 --warmup_steps 30 --max_steps "$STEPS" \
    --logging_steps 100 --save_steps 100000 --exit_pooling mean --head_bias_init label_prior \
    --patience 1,2,3,4,5 --output_dir "$OUT/$method" --overwrite_output_dir "${extra[@]}" > "$OUT/$method.log" 2>&1
  echo "$method: trained and evaluated on the dev part in $(( $(date +%s) - start )) s"
  start=$(date +%s)
  "$PY" run_glue.py --model_type bert --model_name_or_path "$OUT/$method" --task_name trec-test \
    --validation_file "$TREC/test.csv" --text_columns text --label_column label --do_eval \
    --per_gpu_eval_batch_size 64 --patience 0,1,2,3,4,5 --timed_inference \
    --output_dir "$OUT/$method-test" > "$OUT/$method-test.log" 2>&1
  echo "$method: test set evaluated (timed) in $(( $(date +%s) - start )) s"
  cat "$OUT/$method-test/pabee_results.md"
done

printf 'What is the capital of Peru ?\nWho wrote Hamlet ?\nHow many legs does a spider have ?\nWhat does NASA stand for ?\nWhy is the sky blue ?\n' \
  | "$PY" predict.py --model_dir "$OUT/pabee" --patience 2
