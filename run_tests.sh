#!/usr/bin/env bash
# Runs the test suite; on first use builds a virtual environment from requirements.txt.
set -euo pipefail
cd "$(dirname "$0")"
source ./venv.sh
exec "$VENV/bin/python" -m pytest -q "$@" tests
