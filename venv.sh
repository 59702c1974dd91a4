# Sourced by run_tests.sh and demo.sh: sets VENV and builds it from requirements.txt on first use.
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "Setting up $VENV from requirements.txt (first use only)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r requirements.txt
fi
