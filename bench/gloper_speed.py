"""GloPER at archive speed: the authors' plain loop against the project's engine, one run.

    python -m bench.gloper_speed --dataset ../shared/datasets/gloper-examples --json OUT.json
        [--limit N] [--profile target|cpu|paper] [--device cpu|cuda] [--param NAME=VALUE ...]

On the same photos, at the same size S, local sizes and step budget, photo by photo:

- ``plain``: the authors' loop: the project's one network, loss and loop with every engine
  option off (one fresh fp32 network per local size, AdamW, every step, no early stop),
  then the project's read-out (``readout.read_out``, so both have the same candidates);
- ``fast``: the project's GloPER segmenter with its default engine (early stop,
  and on CUDA all sizes in one pass, channels_last), plus any ``--param``.

Profiles: ``target`` (default) S=256, local sizes 8/16/32, 100 steps (the issue's CPU
target); ``cpu`` the project's CPU profile; ``paper`` S=1024, sizes 4..256, 1000 steps
(GPU). Writes ``plain_s_per_photo``, ``fast_s_per_photo``, ``ratio``, ``plain_dice``,
``fast_dice`` (mean oracle Dice: best local size in either polarity per photo) and
``device``, the label-free Dice of each (the same read-out on both: ``choice`` and
``polarity``), per-size Dice, the step each size stopped at, the engine options, the
machine's load average before and after, and on CUDA the fraction of the card's dense
bf16 peak reached.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import machine, processor
from bench.quality import write_report
from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.data.images import load_image, resize_mask, resize_rgb
from gloper_jobs.data.labels import load_label
from gloper_jobs.devices import configure_torch
from gloper_jobs.foreground import ForegroundExtractor
from gloper_jobs.methods import create_segmenter
from gloper_jobs.methods.gloper.engine import train_sizes
from gloper_jobs.methods.gloper.net import GloperNet
from gloper_jobs.methods.gloper.params import EngineOptions, GloperParams
from gloper_jobs.methods.gloper.readout import read_out
from gloper_jobs.scoring.metrics import scores_at
from gloper_jobs.settings import Settings

PROFILES: dict[str, dict[str, Any]] = {
    "target": {"size": 256, "local_sizes": (8, 16, 32), "steps": 100},
    "cpu": {},
    "paper": {"size": 1024, "local_sizes": (4, 8, 16, 32, 64, 128, 256), "steps": 1000},
}
# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s), by name fragment.
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12,
             "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12}


def plain_loop(image: torch.Tensor, fg: torch.Tensor, p: GloperParams, device: torch.device) -> dict[int, np.ndarray]:
    """The authors' algorithm: per local size a fresh seeded fp32 network, AdamW, every step.

    The project's one network, loss and training loop with every engine option off
    (:meth:`EngineOptions.plain`: no early stop, no size chain, one size at a time, fp32,
    no channels_last or compile). ``image`` ``1x3xSxS float32``, ``fg`` ``1xSxS float32``
    on ``device``; returns the ``SxS float32`` pattern weight map per local size (the
    same read-out makes the masks).
    """
    opts = EngineOptions.plain(size=p.size, local_sizes=p.local_sizes, steps=p.steps, tau=p.tau, lr=p.lr,
                               seed=p.seed, rho=p.rho)
    return {ls: r.weight.numpy() for ls, r in train_sizes(image, fg, p.local_sizes, opts, device).items()}


def step_flops(size: int, device: torch.device) -> float:
    """FLOPs of one training step (forward + backward) of GloperNet at ``size``."""
    from torch.utils.flop_counter import FlopCounterMode

    net = GloperNet((8,)).to(device)
    x = torch.rand(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        logits, a, b = net(x)[8]
        (logits.sum() + a.sum() + b.sum()).backward()
    return float(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare(dataset: Path, size: int, limit: int | None, settings: Settings) -> list[dict[str, Any]]:
    """Labelled photos at ``size``: ``image`` ``SxSx3 uint8``, ``fg`` ``SxS bool``, ``label`` ``HxW bool``."""
    items = [it for it in scan_dataset(dataset) if it.label_path is not None][:limit]
    if not items:
        raise SystemExit(f"no labelled photos under {dataset}")
    fg_fn = ForegroundExtractor(settings.models_dir, settings.foreground_model)
    out = []
    for it in items:
        assert it.label_path is not None  # filtered above
        img = load_image(it.path, settings.max_image_pixels)
        fg = fg_fn(img).mask
        small = (resize_rgb(img, (size, size)) * 255).round().astype(np.uint8)
        out.append({"name": it.rel_path, "species": it.species, "image": small,
                    "fg": resize_mask(fg, (size, size)), "label": load_label(it.label_path)})
    return out


def to_tensors(photo: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rgb = torch.from_numpy(photo["image"].astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    fg = torch.from_numpy(photo["fg"].astype(np.float32))[None]
    return rgb.to(device), fg.to(device)


def dice_block(masks: dict[str, np.ndarray], label: np.ndarray, eval_size: int) -> dict[str, float]:
    return {n: round(scores_at(m, label, eval_size).dice, 4) for n, m in masks.items()}


def mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 4) if values else float("nan")


def summarise(rows: list[dict[str, Any]], p: GloperParams, engine: dict[str, Any], flops: float,
              device: torch.device, profile: str, load_before: tuple[float, ...]) -> dict[str, Any]:
    """The JSON report over the photos done so far."""
    n = len(rows)
    plain_sp, fast_sp = sum(r["plain_s"] for r in rows) / n, sum(r["fast_s"] for r in rows) / n
    sizes = [f"local_{ls}" for ls in p.local_sizes]
    steps_fast = sum(sum(r["stop_step"].values()) for r in rows)
    cpu_name = f"cpu ({processor()}, {os.cpu_count()} cores)"
    report: dict[str, Any] = {
        "plain_s_per_photo": round(plain_sp, 2), "fast_s_per_photo": round(fast_sp, 2),
        "ratio": round(plain_sp / fast_sp, 2),
        "plain_dice": mean([r["plain_oracle"] for r in rows]), "fast_dice": mean([r["fast_oracle"] for r in rows]),
        "plain_label_free_dice": mean([r["plain_choice"] for r in rows]),
        "fast_label_free_dice": mean([r["fast_choice"] for r in rows]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name,
        "photos": n, "profile": profile, "params": p.identity(), "engine": engine,
        "plain_dice_per_size": {s: mean([r["plain_dice"][s] for r in rows]) for s in sizes},
        "fast_dice_per_size": {s: mean([r["fast_dice"][s] for r in rows]) for s in sizes},
        "mean_stop_step": {s: mean([r["stop_step"][s] for r in rows]) for s in sizes},
        "machine": machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "step_tflop": round(flops / 1e12, 4),
        "plain_tflops": round(flops * p.steps * len(sizes) / plain_sp / 1e12, 4),
        "fast_tflops": round(flops * steps_fast / (fast_sp * n) / 1e12, 4),
        "images": rows,
    }
    if device.type == "cuda":
        peak = next((v for k, v in BF16_PEAK.items() if k in report["device"]), None)
        report["bf16_peak_tflops"] = peak / 1e12 if peak else None
        report["fraction_bf16_peak"] = {k: round(report[f"{k}_tflops"] * 1e12 / peak, 4) if peak else None
                                        for k in ("plain", "fast")}
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--json", type=Path, default=None, help="output (default bench/out/gloper-speed-<time>.json)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N labelled photos")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="target")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="GloPER parameter for both runs (size, steps ...) or the engine (stop_every ...)")
    args = ap.parse_args(argv)

    settings = Settings.from_env()
    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    device = torch.device(args.device)
    overrides = dict(pair.split("=", 1) for pair in args.param)
    seg = create_segmenter("gloper", **{**PROFILES[args.profile], "device": args.device, **overrides})
    p: GloperParams = seg.params  # type: ignore[assignment]
    photos = prepare(args.dataset, p.size, args.limit, settings)
    flops = step_flops(p.size, device)
    load_before = os.getloadavg()
    rows = []
    for photo in photos:
        rgb, fg = to_tensors(photo, device)
        sync(device)
        t0 = time.perf_counter()
        plain_w = plain_loop(rgb, fg, p, device)
        plain = read_out(photo["image"], photo["fg"], plain_w, photo["fg"], p.rho, p.choice, p.polarity)
        sync(device)
        plain_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = seg.segment(photo["image"], photo["fg"])
        sync(device)
        fast_s = time.perf_counter() - t0
        pd = dice_block(plain.candidates, photo["label"], settings.eval_size)
        fd = dice_block(out.candidates, photo["label"], settings.eval_size)
        stops = out.info["stop_step"]
        oracle = out.oracle_names()  # every local size in both polarities, for both
        rows.append({"photo": photo["name"], "plain_s": round(plain_s, 2), "fast_s": round(fast_s, 2),
                     "plain_dice": pd, "fast_dice": fd, "stop_step": stops,
                     "plain_oracle": max(pd[k] for k in oracle), "fast_oracle": max(fd[k] for k in oracle),
                     "plain_choice": pd[plain.choice], "fast_choice": fd[out.choice]})
        r = rows[-1]
        print(f"{photo['name']:<40} plain {plain_s:6.1f}s oracle {r['plain_oracle']:.3f} label-free "
              f"{r['plain_choice']:.3f} | fast {fast_s:6.1f}s oracle {r['fast_oracle']:.3f} label-free "
              f"{r['fast_choice']:.3f} stops {stops}", flush=True)
        if args.json:  # the photos done so far, in case the run is cut short
            partial = summarise(rows, p, out.info["engine"], flops, device, args.profile, load_before)
            write_report({**partial, "partial": True}, args.json, "gloper-speed")
    report = summarise(rows, p, out.info["engine"], flops, device, args.profile, load_before)
    print({k: v for k, v in report.items() if k != "images"})
    write_report(report, args.json, "gloper-speed")
    return report


if __name__ == "__main__":
    main()
