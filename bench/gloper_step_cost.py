"""Seconds per training step of GloPER's engine under each precision/kernel option.

    python bench/gloper_step_cost.py [--size 256] [--local-sizes 8,16,32] [--steps 5]
        [--device cpu] [--options fp32,channels_last,bf16,...] [--json OUT]

One photo-sized random image, every option timed on the same process after one
warm-up step (``compile`` options include their compile time in ``warmup_s``).
Batched options train all local sizes at once; their time is per step of all sizes,
the others' per step of one size, so ``per_size_step_s`` compares them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.quality import write_report  # noqa: E402
from gloper_jobs.devices import configure_torch  # noqa: E402
from gloper_jobs.methods.gloper_engine import EngineOptions, train_sizes  # noqa: E402
from gloper_jobs.settings import Settings  # noqa: E402

OPTIONS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
    "tf32": {"precision": "tf32"},
    "batched": {"batched": True},
    "batched+bf16": {"batched": True, "precision": "bf16"},
    "compile": {"compile": "default"},
    "compile+bf16": {"compile": "default", "precision": "bf16"},
    "cuda_graphs": {"compile": "reduce-overhead"},
}


def time_option(name: str, size: int, sizes: tuple[int, ...], steps: int, device: torch.device) -> dict[str, Any]:
    """Warm-up run of 1 step, then ``steps`` steps; seconds per step and per size-step."""
    img = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    fg = torch.ones(1, size, size, device=device)
    opts = OPTIONS[name]
    run_sizes = sizes if opts.get("batched") else sizes[:1]

    def run(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        train_sizes(img, fg, run_sizes, EngineOptions(steps=n, **opts), device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    warm = run(1)
    total = run(steps + 1) - run(1)  # steps, without the final read-out and set-up
    per_step = total / steps
    return {"warmup_s": round(warm, 2), "step_s": round(per_step, 4),
            "per_size_step_s": round(per_step / len(run_sizes), 4), "sizes": list(run_sizes)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--local-sizes", default="8,16,32")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--options", default="fp32,channels_last,bf16,bf16+channels_last,batched")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    device = torch.device(args.device)
    sizes = tuple(int(s) for s in args.local_sizes.split(","))
    load_before = os.getloadavg()
    results = {}
    for name in args.options.split(","):
        results[name] = time_option(name, args.size, sizes, args.steps, device)
        print(f"{name:<22} {results[name]}", flush=True)
    report = {"size": args.size, "local_sizes": list(sizes), "device": str(device),
              "torch_threads": torch.get_num_threads(), "loadavg_before": load_before,
              "loadavg_after": os.getloadavg(), "options": results}
    write_report(report, args.json, "gloper-step-cost")
    return report


if __name__ == "__main__":
    main()
