#!/usr/bin/env bash
# Installs llmrelease with its test extras (CPU) into ./.venv and runs the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not e2e" for the fast unit tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
VENV="${LLMRELEASE_VENV:-.venv}"
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest "$@"
