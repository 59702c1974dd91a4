#!/usr/bin/env bash
# Builds .gpu/ (ignored by git) for a lent GPU machine, which has no network, no `datasets` and no
# model weights (../shared/GPU.md): all-MiniLM-L6-v2 as float16 safetensors that load back in
# float32, MRPC and SST-2's dev set, and wheels of `datasets` for the device's Python 3.12.
#   usage: benchmarks/gpu_prepare.sh [--no_wheels] [GLUE_DIR]        (default ../shared/glue_data)
# Then, with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"]).
# Environment: GPU_DIR (default .gpu), MODEL_DIR (default all-MiniLM-L6-v2 from its package). The
# suite's smoke run builds a tiny model's folder elsewhere with --no_wheels (no package index there).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=1; [ "${1:-}" = "--no_wheels" ] && { WHEELS=0; shift; }
GLUE=${1:-../shared/glue_data}
PY=${PYTHON:-.venv/bin/python}
export GPU_DIR=${GPU_DIR:-.gpu} MODEL_DIR=${MODEL_DIR:-}
if [ -e "$GPU_DIR" ]; then echo "gpu_prepare.sh: $GPU_DIR already exists; remove it first to build it again" >&2; exit 2; fi
for f in "$GLUE/MRPC/train.tsv" "$GLUE/MRPC/dev.tsv" "$GLUE/SST-2/dev.tsv"; do
  [ -f "$f" ] || { echo "gpu_prepare.sh: $f is missing; give the folder holding MRPC/ and SST-2/" >&2; exit 2; }
done
mkdir -p "$GPU_DIR/glue/MRPC" "$GPU_DIR/glue/SST-2" "$GPU_DIR/whl"
cp "$GLUE"/MRPC/*.tsv "$GPU_DIR/glue/MRPC/"
cp "$GLUE/SST-2/dev.tsv" "$GPU_DIR/glue/SST-2/"

# float16 halves the model to travel (45 MB); "dtype": "float32" makes transformers load it back in float32
"$PY" - <<'EOF'
import json, os, shutil
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
from demo import default_model_dir

source, target = Path(os.environ["MODEL_DIR"] or default_model_dir()), Path(os.environ["GPU_DIR"]) / "model"
target.mkdir()
state = load_file(source / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, target / "model.safetensors")
config = json.loads((source / "config.json").read_text())
(target / "config.json").write_text(json.dumps({**config, "dtype": "float32"}, indent=2))
for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    if (source / name).is_file():
        shutil.copy(source / name, target / name)
EOF

if [ $WHEELS = 1 ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$GPU_DIR/whl" \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 xxhash
fi
du -sh "$GPU_DIR"
