#!/usr/bin/env bash
# Set up gloper-jobs in ./.venv: the right torch build, the package, the u2netp weights.
#   bash scripts/setup.sh [EXTRAS]      e.g. bash scripts/setup.sh dev,queue
# torch is installed first and pinned (2.13.0): here pip takes the local CPU wheel; on a
# GPU node PyPI's Linux wheel is the CUDA build. On another CPU-only machine, set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to avoid the CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
if [ -n "$EXTRAS" ]; then
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
else
  .venv/bin/python -m pip install -q -e .
fi
# the foreground weights (u2netp, md5-checked, idempotent)
.venv/bin/gloper models install
