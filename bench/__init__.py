"""Regression benchmarks: quality, speed, cost and faults, run as ``python -m bench.NAME --help``.

Each writes JSON under ``bench/out/``; the figures the README and ``docs/`` cite as current
are kept in ``bench/results/``; what each measured, and the experiments behind today's
defaults, are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from gloper_jobs.devices import cpu_info
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


def processor() -> str:
    """The CPU's model name and, on Linux, its vendor, family and model: a virtual machine's
    ``AMD EPYC`` names several generations whose kernels (and timings) differ."""
    info = cpu_info()
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        name += f" ({info.get('vendor_id', '?')} family {info['cpu family']} model {info.get('model', '?')})"
    return name


def machine() -> dict[str, Any]:
    """What a figure was measured on: platform, CPU model, cores, torch, its threads now, the GPU if any."""
    import torch

    cuda = torch.cuda.is_available()
    return {"platform": platform.platform(), "processor": processor(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cuda": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None}
