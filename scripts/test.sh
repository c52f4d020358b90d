#!/usr/bin/env bash
# One command: set up (with the test, queue and pretrained-baseline extras) and run the checks and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "dev,queue,deep"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
