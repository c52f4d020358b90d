#!/usr/bin/env bash
# One command: install what a fresh machine lacks, set up (with the test, queue,
# pretrained-baseline and S3 extras), then ruff, mypy and every test. The queue tests start
# their own redis-server and PostgreSQL from the installed binaries, the S3 tests their own
# moto server on 127.0.0.1, the report and review tests a headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)  # the HTML report test renders the page headless
command -v chromedriver >/dev/null || need+=(chromium-driver)  # selenium drives it in the review page's tests
command -v ip >/dev/null || need+=(iproute2)       # the partition tests' network namespaces
command -v nft >/dev/null || need+=(nftables)      # and the faults on their links
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi

bash scripts/setup.sh "dev,queue,deep,s3"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
