"""Regression benchmarks: quality, speed, cost and faults, run as ``python -m bench.NAME --help``.

Each writes JSON under ``bench/out/``; the figures the README and ``docs/`` cite as current
are kept in ``bench/results/``; what each measured, and the experiments behind today's
defaults, are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

from pathlib import Path

from gloper_jobs.settings import Settings

REPO = Path(__file__).resolve().parents[1]
#: where the benches write their JSON (results worth keeping are copied to bench/results/)
OUT = REPO / "bench" / "out"


def examples() -> Path:
    """The example photos: ``GLOPER_EXAMPLES_DIR``, else ``../shared/datasets/gloper-examples`` beside the checkout."""
    path = Settings.from_env().examples_dir or REPO.parent / "shared" / "datasets" / "gloper-examples"
    if not path.is_dir():
        raise SystemExit(f"example photos not found at {path}: set GLOPER_EXAMPLES_DIR")
    return path
