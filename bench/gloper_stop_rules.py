"""How early may GloPER stop? Replays early-stop rules on full training runs.

    python bench/gloper_stop_rules.py --dataset ../shared/datasets/gloper-examples
        [--limit N] [--profile target] [--json OUT]

Trains every local size for the whole step budget once per photo, reading the mask
out after every step (free: the engine reads it from the next step's forward pass),
and caches the masks under ``bench/out/stop-rules/``. Training up to a stop is the
same trajectory whatever the rule, so each rule (read-out every k steps, stop when
IoU with the previous read-out > t) is replayed exactly on the cached masks: the
step it stops at and its Dice against the full budget's, per local size.
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

from bench.gloper_speed import PROFILES, prepare, to_tensors  # noqa: E402
from bench.quality import write_report  # noqa: E402
from gloper_jobs.devices import configure_torch  # noqa: E402
from gloper_jobs.methods.gloper import GloperParams  # noqa: E402
from gloper_jobs.methods.gloper_engine import EngineOptions, train_sizes  # noqa: E402
from gloper_jobs.scoring.metrics import scores_at  # noqa: E402
from gloper_jobs.settings import Settings  # noqa: E402

RULES = [(k, t) for k in (2, 5, 10) for t in (0.9, 0.95, 0.97, 0.98, 0.99, 0.995)]


def trajectory(photo: dict[str, Any], p: GloperParams, cache: Path) -> dict[int, np.ndarray]:
    """``steps+1 x S x S bool`` masks per local size (index = optimizer steps taken), cached."""
    path = cache / f"{photo['name'].replace('/', '__')}-{p.size}-{p.steps}.npz"
    if path.exists():
        with np.load(path) as z:
            return {int(k): np.unpackbits(z[k], axis=-1)[..., : p.size].astype(bool) for k in z.files}
    rgb, fg = to_tensors(photo, torch.device("cpu"))
    opts = EngineOptions(steps=p.steps, tau=p.tau, lr=p.lr, seed=p.seed, rho=p.rho)
    t0 = time.perf_counter()
    res = train_sizes(rgb, fg, p.local_sizes, opts, torch.device("cpu"), readout_steps=range(1, p.steps))
    print(f"  trained {photo['name']} in {time.perf_counter() - t0:.1f}s", flush=True)
    out = {}
    for ls, r in res.items():
        w = torch.stack([r.snapshots[s] for s in range(1, p.steps + 1)])
        out[ls] = np.concatenate([np.zeros((1, p.size, p.size), bool), ((w > p.rho) & (fg > 0.5)).numpy()])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{str(ls): np.packbits(m, axis=-1) for ls, m in out.items()})
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def stop_step(masks: np.ndarray, k: int, t: float, steps: int) -> int:
    """Where the engine stops with read-outs every ``k`` steps and IoU threshold ``t``."""
    for s in range(2 * k, steps, k):
        if iou(masks[s], masks[s - k]) > t:
            return s
    return steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="target")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    p = GloperParams.build(**{**PROFILES[args.profile], "device": "cpu"})
    assert isinstance(p, GloperParams)
    photos = prepare(args.dataset, p.size, args.limit, settings)
    cache = REPO / "bench" / "out" / "stop-rules"
    full: dict[str, dict[int, float]] = {}
    rules: dict[str, Any] = {}
    trajectories = {ph["name"]: trajectory(ph, p, cache) for ph in photos}
    for ph in photos:
        full[ph["name"]] = {ls: scores_at(m[p.steps], ph["label"], settings.eval_size).dice
                            for ls, m in trajectories[ph["name"]].items()}
    for k, t in RULES:
        per_size: dict[str, Any] = {}
        oracle_full, oracle_stop = [], []
        for ph in photos:
            traj = trajectories[ph["name"]]
            stopped = {}
            for ls in p.local_sizes:
                s = stop_step(traj[ls], k, t, p.steps)
                d = scores_at(traj[ls][s], ph["label"], settings.eval_size).dice
                stopped[ls] = d
                e = per_size.setdefault(f"local_{ls}", {"steps": [], "dice_cost": []})
                e["steps"].append(s)
                e["dice_cost"].append(full[ph["name"]][ls] - d)
            oracle_full.append(max(full[ph["name"]].values()))
            oracle_stop.append(max(stopped.values()))
        rules[f"k={k},iou>{t}"] = {
            "mean_steps": {n: round(float(np.mean(e["steps"])), 1) for n, e in per_size.items()},
            "mean_dice_cost": {n: round(float(np.mean(e["dice_cost"])), 4) for n, e in per_size.items()},
            "worst_dice_cost": {n: round(float(np.max(e["dice_cost"])), 4) for n, e in per_size.items()},
            "oracle_dice_full": round(float(np.mean(oracle_full)), 4),
            "oracle_dice_stop": round(float(np.mean(oracle_stop)), 4),
            "work_fraction": round(float(np.mean([np.mean(e["steps"]) for e in per_size.values()])) / p.steps, 3),
        }
        r = rules[f"k={k},iou>{t}"]
        print(f"k={k:<2} iou>{t:<6} work {r['work_fraction']:.2f}  oracle {r['oracle_dice_full']:.4f} -> "
              f"{r['oracle_dice_stop']:.4f}  steps {r['mean_steps']}  cost {r['mean_dice_cost']}")
    report = {"profile": args.profile, "params": p.identity(), "photos": [ph["name"] for ph in photos],
              "rules": rules}
    write_report(report, args.json, "gloper-stop-rules")
    return report


if __name__ == "__main__":
    main()
