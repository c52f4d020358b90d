#!/usr/bin/env bash
# One command, end to end on this machine (no broker): set up, then run GloPER (CPU
# profile) on a labelled pattern set the project generates, and on the shared example
# photos when they are there. Ends with the Dice tables and where the masks are.
# Everything it writes goes under ./demo (store: demo/gloper.db, masks: demo/results).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GLOPER_DATABASE_URL="sqlite:///$PWD/demo/gloper.db"
export GLOPER_RESULTS_DIR="$PWD/demo/results"
G=.venv/bin/gloper

$G make-synthetic demo/synthetic --per-species 1
$G run demo/synthetic --method gloper

EXAMPLES=${GLOPER_EXAMPLES_DIR:-../shared/datasets/gloper-examples}
if [ -d "$EXAMPLES" ]; then
  $G run "$EXAMPLES" --method gloper
else
  echo "(no example photos at $EXAMPLES: set GLOPER_EXAMPLES_DIR to include them)"
fi
$G report --html demo/report.html        # the newest job as one self-contained page
$G export "$($G jobs | tail -n 1 | awk '{print $1}')" --format parquet --out demo/masks.parquet
echo
echo "store: $GLOPER_DATABASE_URL   masks: $GLOPER_RESULTS_DIR   (run it again: everything is skipped)"
echo "report: demo/report.html   masks as COCO RLE: demo/masks.parquet"
