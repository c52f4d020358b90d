"""Warm start from the previous photo's weights: its Dice cost and the steps it saves.

    python bench/gloper_warm_start.py --dataset ../shared/datasets/gloper-examples
        [--profile cpu|target] [--limit N] [--param NAME=VALUE ...] [--json OUT]

Photos in archive order; each is trained cold (fresh seeded models) and warm (every
local size starts from the weights that size ended with on the previous photo, the
chain of warm runs, as an archive run would go). Same engine options otherwise
(the project's defaults: early stop). Reports mean oracle Dice, seconds and stop
steps of both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gloper_speed import PROFILES, mean, prepare, to_tensors  # noqa: E402
from bench.quality import write_report  # noqa: E402
from gloper_jobs.devices import configure_torch  # noqa: E402
from gloper_jobs.methods.gloper import GloperParams  # noqa: E402
from gloper_jobs.methods.gloper_engine import SizeResult, train_sizes  # noqa: E402
from gloper_jobs.scoring.metrics import scores_at  # noqa: E402
from gloper_jobs.settings import Settings  # noqa: E402


def oracle(results: dict[int, SizeResult], fg: np.ndarray, label: np.ndarray, rho: float, eval_size: int) -> float:
    return max(scores_at((r.weight.numpy() > rho) & fg, label, eval_size).dice for r in results.values())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    overrides = dict(pair.split("=", 1) for pair in args.param)
    p = GloperParams.build(**{**PROFILES[args.profile], "device": "cpu", **overrides})
    assert isinstance(p, GloperParams)
    cpu = torch.device("cpu")
    opts = p.engine_options(cpu)
    photos = prepare(args.dataset, p.size, args.limit, settings)
    rows = []
    previous: dict[int, dict[str, torch.Tensor]] | None = None
    for ph in photos:
        rgb, fg = to_tensors(ph, cpu)
        t0 = time.perf_counter()
        cold = train_sizes(rgb, fg, p.local_sizes, opts, cpu)
        t1 = time.perf_counter()
        warm = train_sizes(rgb, fg, p.local_sizes, opts, cpu, initial_states=previous, keep_state=True)
        t2 = time.perf_counter()
        previous = {ls: r.state for ls, r in warm.items() if r.state is not None}
        row = {"photo": ph["name"], "cold_s": round(t1 - t0, 2), "warm_s": round(t2 - t1, 2),
               "cold_dice": round(oracle(cold, ph["fg"], ph["label"], p.rho, settings.eval_size), 4),
               "warm_dice": round(oracle(warm, ph["fg"], ph["label"], p.rho, settings.eval_size), 4),
               "cold_steps": {ls: r.stop_step for ls, r in cold.items()},
               "warm_steps": {ls: r.stop_step for ls, r in warm.items()}}
        rows.append(row)
        print(row, flush=True)
    rest = rows[1:]  # the first photo has no previous photo
    report = {"profile": args.profile, "params": p.identity(), "engine": opts.to_info(),
              "photos_warm_started": len(rest),
              "cold_dice": mean([r["cold_dice"] for r in rest]), "warm_dice": mean([r["warm_dice"] for r in rest]),
              "cold_s": mean([r["cold_s"] for r in rest]), "warm_s": mean([r["warm_s"] for r in rest]),
              "cold_steps": mean([float(np.mean(list(r["cold_steps"].values()))) for r in rest]),
              "warm_steps": mean([float(np.mean(list(r["warm_steps"].values()))) for r in rest]),
              "images": rows}
    print({k: v for k, v in report.items() if k != "images"})
    write_report(report, args.json, "gloper-warm-start")
    return report


if __name__ == "__main__":
    main()
