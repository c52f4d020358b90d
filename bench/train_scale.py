"""What ``gloper train`` costs on an archive bigger than its draws: photos prepared when first drawn, against every photo first.

    python -m bench.train_scale [--photos 200] [--megapixels 12] [--steps 10] [--json OUT.json]
        [--examples DIR] [--archive DIR]

Builds (or reuses, under ``bench/out/``) the archive of :mod:`bench.archive_throughput`
(``--photos`` photos from the shared examples, every other one re-encoded at
``--megapixels``), then trains a dataset model on it twice, each in its own process, one
after the other:

* ``first-drawn``: ``gloper train ARCHIVE --param steps=N`` as shipped: each photo is
  prepared (decoded, u2netp foreground, resized) when a step first draws it;
* ``all-first``: what ``gloper train`` did until 2026-12-06, through the same library
  calls: every photo prepared up front (:func:`prepare_photos`), then the same training.

Per variant: wall clock from the process's start (imports included), the peak resident
memory of the process, and the final loss (the same draws give the same curve, up to
float rounding between processes). The peak
is ``RUSAGE_CHILDREN``'s, which keeps the largest child so far: the smaller variant runs
first, and ``peak_rss_own`` says whether the second's figure is its own (larger) one.
Both train ``steps`` steps of ``gloper train``'s default batch, so they draw ``steps x
batch`` photos; with 10 steps of 4 that is 40 of the 200. The machine and its load before
and after are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import OUT, machine
from bench import examples as default_examples
from bench.archive_throughput import build_archive

#: the old path, run in a child process: every photo prepared, then gloper train's training
ALL_FIRST = """
import sys, torch
from pathlib import Path
from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.devices import configure_torch, resolve_device
from gloper_jobs.foreground.extractor import build_foreground
from gloper_jobs.jobs.training import model_params
from gloper_jobs.methods.gloper.dataset_model.train import prepare_photos, train_model
from gloper_jobs.settings import Settings
archive, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
settings = Settings.from_env()
configure_torch(settings.torch_threads)
p = model_params(settings, {"steps": steps})
items = scan_dataset(archive, with_labels=False)
photos = prepare_photos([it.path for it in items], p.size, build_foreground(settings), settings.max_image_pixels)
r = train_model(photos, p, out, dataset=str(archive.resolve()), device=resolve_device(p.device), progress=False)
print(f"model {out}: step {r.step}, {r.photos} photos, final loss {r.losses[-1]:.4f}")
"""


def run_variant(name: str, archive: Path, steps: int, workdir: Path) -> dict[str, Any]:
    """One training in its own process: wall clock, peak memory, its checkpoint's step and loss."""
    import resource

    import torch

    out = workdir / f"{name}.pt"
    env = {**os.environ, "GLOPER_DATABASE_URL": f"sqlite:///{workdir / name}.db"}
    if name == "first-drawn":
        cmd = [sys.executable, "-m", "gloper_jobs.cli", "train", str(archive), "--out", str(out),
               "--param", f"steps={steps}", "--no-progress"]
    else:
        cmd = [sys.executable, "-c", ALL_FIRST, str(archive), str(out), str(steps)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    ck = torch.load(out, weights_only=True)
    shown = " ".join(cmd[1:4]) if name == "first-drawn" else "python -c ALL_FIRST (bench/train_scale.py)"
    return {"command": shown, "wall_s": round(wall, 1),
            "printed": done.stdout.strip().splitlines()[-1], "step": ck["step"], "photos": ck["photos"],
            "final_loss": ck["losses"][-1], "peak_rss_mb": round(after / 1024, 1),
            "peak_rss_own": before == 0 or after > before}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--examples", type=Path, default=None, help="photos the archive is made of (default: the examples)")
    ap.add_argument("--archive", type=Path, default=None, help="where the archive is built (default: under bench/out/)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.photos < 1 or args.steps < 1:
        raise SystemExit("--photos and --steps must be >= 1")
    archive = build_archive(args.archive or OUT / f"archive-{args.photos}-{args.megapixels:g}mp", args.photos,
                            args.megapixels,
                            args.examples or default_examples())
    load_before = [round(x, 2) for x in os.getloadavg()]
    report: dict[str, Any] = {"machine": machine(), "archive": str(archive), "photos": args.photos,
                              "megapixels": args.megapixels, "steps": args.steps, "load_before": load_before,
                              "variants": {}}
    with tempfile.TemporaryDirectory(prefix="bench-train-scale-") as tmp:
        for name in ("first-drawn", "all-first"):  # the smaller first: its peak memory is exact
            report["variants"][name] = run_variant(name, archive, args.steps, Path(tmp))
            report["variants"][name]["load_after"] = [round(x, 2) for x in os.getloadavg()]
            print(name, json.dumps(report["variants"][name]), flush=True)
    a, b = report["variants"]["all-first"], report["variants"]["first-drawn"]
    report["wall_ratio"] = round(a["wall_s"] / b["wall_s"], 2)
    # the same draws: the same curve, up to float rounding between two processes (6 digits stored)
    report["loss_rel_diff"] = abs(a["final_loss"] - b["final_loss"]) / max(abs(b["final_loss"]), 1e-12)
    report["same_loss"] = report["loss_rel_diff"] < 1e-4
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"all-first / first-drawn wall clock: {report['wall_ratio']}x; same final loss: {report['same_loss']}")
    path = args.json or OUT / f"train-scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
