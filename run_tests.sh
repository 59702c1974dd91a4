#!/usr/bin/env bash
# Runs the test suite; on first use builds a virtual environment from requirements.txt.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r requirements.txt
fi
exec "$VENV/bin/python" -m pytest -q "$@" tests
