#!/usr/bin/env bash
# Installs llmrelease with its test extras (CPU) into ./.venv and runs the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not e2e" for the fast unit tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The browser test drives Debian's Chromium through Playwright; nothing downloads a browser build.
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser test"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; } \
    || echo "could not install chromium: the browser test will fail and say so" >&2
fi
VENV="${LLMRELEASE_VENV:-.venv}"
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest "$@"
