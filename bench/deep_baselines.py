"""Dice and seconds of the pretrained baselines (SAM, CLIPSeg, DINOv2) on a labelled folder tree.

    python -m bench.deep_baselines --dataset ../shared/datasets/gloper-examples
        [--methods sam,clipseg,dino] [--profile cpu|paper] [--param sam.points_per_side=64 ...]
        [--limit N] [--out FILE.json]

Weights come from the settings (GLOPER_SAM_CHECKPOINT, GLOPER_CLIPSEG_WEIGHTS,
GLOPER_DINO_WEIGHTS, GLOPER_WEIGHTS_DIR, GLOPER_ALLOW_DOWNLOADS) or
``--param METHOD.weights=PATH``; a method whose weights are missing is reported
as skipped with the message that says how to get them. Loading the weights is
timed apart from the photos. Every method gets the same u2netp foreground.

``tests/test_deep_methods.py`` runs it with tiny randomly initialised models of the real
architectures (``--param METHOD.weights=...``): that checks the whole path on a machine
without the weights, and its Dice figures mean nothing.

Writes JSON with, per photo, the Dice of every candidate, the oracle (best
candidate), the label-free choice and the seconds; prints a per-species table.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench import machine
from bench.quality import (
    evaluate_segmenter,
    parse_params,
    prepare,
    unless_weights_missing,
    write_report,
)
from gloper_jobs.devices import configure_torch
from gloper_jobs.methods.pretrained import PretrainedSegmenter
from gloper_jobs.methods.registry import build_segmenter
from gloper_jobs.settings import Settings

DEEP_METHODS = ("sam", "clipseg", "dino")


def run_method(name: str, seg: PretrainedSegmenter, prepared: list[tuple[Any, ...]], eval_size: int,
               foreground_rim: float) -> dict[str, Any]:
    """Load ``seg`` (timed), then score it like every method (:func:`bench.quality.evaluate_segmenter`)."""
    t0 = time.perf_counter()
    seg.load()
    load_seconds = round(time.perf_counter() - t0, 3)
    device = str(seg._device)
    result = evaluate_segmenter(name, seg, prepared, eval_size, foreground_rim)
    return {"weights": str(getattr(seg.params, "weights", "")), "device": device,
            "load_seconds": load_seconds, **result}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default bench/out/deep-<time>.json)")
    ap.add_argument("--methods", default=",".join(DEEP_METHODS), help="comma-separated subset of sam,clipseg,dino")
    ap.add_argument("--profile", default=None, help="parameter profile for every method (default cpu)")
    ap.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE")
    ap.add_argument("--limit", type=int, default=None, help="only the first N labelled photos")
    args = ap.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(DEEP_METHODS))
    if unknown:
        raise SystemExit(f"--methods: {', '.join(unknown)} not among {', '.join(DEEP_METHODS)} (see bench/quality.py)")
    settings = Settings.from_env()
    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    overrides = parse_params(args.param)
    prepared = [p[:4] for p in prepare(settings, [("shared", args.dataset)], args.limit)]


    report: dict[str, Any] = {
        "dataset": str(args.dataset.resolve()), "eval_size": settings.eval_size,
        "foreground_model": settings.foreground_model, "foreground_rim": settings.foreground_rim,
        "profile": args.profile or "cpu",
        "machine": machine(),
        "methods": {},
    }
    for name in methods:
        seg = build_segmenter(name, settings, args.profile, overrides.get(name, {}))
        if not isinstance(seg, PretrainedSegmenter):  # the registry maps these names to them
            raise SystemExit(f"{name} is not a pretrained baseline")
        report["methods"][name] = unless_weights_missing(
            name, partial(run_method, name, seg, prepared, settings.eval_size, settings.foreground_rim))
    write_report(report, args.out, "deep")
    return report


if __name__ == "__main__":
    main()
