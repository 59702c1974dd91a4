#!/usr/bin/env bash
# The paper's table in one command: every method fine-tuned over a grid and seeds, one table.
#   reproduce_paper.sh BACKBONE [TASK ...] [reproduce_paper.py flags, e.g. --seeds 5 --max_steps 1000]
# BACKBONE: bert or albert (model from MODEL_NAME_OR_PATH, default bert-base-uncased / albert-base-v2);
# TASK: GLUE tasks (default the paper's eight). GLUE_DIR (default ./glue_data) holds the task folders;
# OUTPUT_DIR (default ./output/paper/BACKBONE) gets runs, paper_table.md/.json/.tex, plots, submission/.
# Restartable: call it again after a crash. --dry_run prints the plan. Runs go to a local Ray (one per GPU);
# --ray_address, --launcher slurm and their flags pass through (docs/cluster.md).
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: reproduce_paper.sh BACKBONE [TASK ...] [flags]  (see: reproduce_paper.py --help)" >&2
  exit 2
fi
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
exec "$PYTHON" reproduce_paper.py "$@" --do_lower_case ${OUTPUT_DIR:+--output_dir "$OUTPUT_DIR"}
