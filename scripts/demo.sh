#!/usr/bin/env bash
# Installs llmrelease (CPU) into ./.venv and runs the demo: three releases of the bundled
# support-triage app on a fresh local MLflow store, ending with the gate report and the MLflow UI command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${LLMRELEASE_VENV:-.venv}/bin/llmrelease" demo "$@"
