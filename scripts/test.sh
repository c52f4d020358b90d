#!/usr/bin/env bash
# One command: install what a fresh machine lacks, set up (with the test, queue and
# pretrained-baseline extras), then ruff, mypy and every test. The queue tests start
# their own redis-server and PostgreSQL from the installed binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi

bash scripts/setup.sh "dev,queue,deep"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
