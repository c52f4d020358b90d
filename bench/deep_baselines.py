"""Dice and seconds of the pretrained baselines (SAM, CLIPSeg, DINOv2) on a labelled folder tree.

    python bench/deep_baselines.py --dataset ../shared/datasets/gloper-examples
        [--methods sam,clipseg,dino] [--profile cpu|paper] [--param sam.points_per_side=64 ...]
        [--limit N] [--tiny] [--out FILE.json]

Weights come from the settings (GLOPER_SAM_CHECKPOINT, GLOPER_CLIPSEG_WEIGHTS,
GLOPER_DINO_WEIGHTS, GLOPER_WEIGHTS_DIR, GLOPER_ALLOW_DOWNLOADS) or
``--param METHOD.weights=PATH``; a method whose weights are missing is reported
as skipped with the message that says how to get them. Loading the weights is
timed apart from the photos. Every method gets the same u2netp foreground.

``--tiny`` runs tiny randomly initialised models of the real architectures
(``tests/deep_fixtures.py``) instead: it checks the whole path on a machine
without the weights, and its Dice figures mean nothing.

Writes JSON with, per photo, the Dice of every candidate, the oracle (best
candidate), the label-free choice and the seconds; prints a per-species table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.quality import parse_params  # noqa: E402
from gloper_jobs.datasets import scan_dataset  # noqa: E402
from gloper_jobs.exceptions import WeightsMissingError  # noqa: E402
from gloper_jobs.foreground import ForegroundExtractor  # noqa: E402
from gloper_jobs.images import load_image  # noqa: E402
from gloper_jobs.labels import load_label  # noqa: E402
from gloper_jobs.methods import SegmentContext  # noqa: E402
from gloper_jobs.methods.pretrained import PretrainedSegmenter  # noqa: E402
from gloper_jobs.metrics import scores_at  # noqa: E402
from gloper_jobs.reports import ItemScore, format_species_table, species_rows  # noqa: E402
from gloper_jobs.runner import build_segmenter, configure_torch  # noqa: E402
from gloper_jobs.settings import Settings  # noqa: E402

DEEP_METHODS = ("sam", "clipseg", "dino")


def run_method(name: str, seg: PretrainedSegmenter, prepared: list, eval_size: int) -> dict[str, Any]:
    """Load ``seg`` (timed), segment every prepared photo, score every candidate."""
    t0 = time.perf_counter()
    seg.load()
    load_seconds = time.perf_counter() - t0
    rows, scores = [], []
    for it, img, fg, lab in prepared:
        t0 = time.perf_counter()
        out = seg.segment(img, fg.mask, SegmentContext(species=it.species, name=it.path.name))
        sec = time.perf_counter() - t0
        dice = {c: round(scores_at(m, lab, eval_size).dice, 4) for c, m in out.candidates.items()}
        oracle = max(out.oracle_names(), key=lambda c: dice[c])
        rows.append({"rel_path": it.rel_path, "species": it.species, "dice": dice, "oracle": oracle,
                     "oracle_dice": dice[oracle], "choice": out.choice, "choice_dice": dice[out.choice],
                     "seconds": round(sec, 3), "info": {k: v for k, v in out.info.items() if k != "device"}})
        scores.append(ItemScore(it.rel_path, it.species, oracle, dice[oracle], out.choice, dice[out.choice]))
        print(f"  {name:<8} {it.rel_path:<45} oracle {dice[oracle]:.3f} ({oracle})  "
              f"choice {dice[out.choice]:.3f} ({out.choice})  {sec:.2f}s", flush=True)
    n = len(rows)
    result = {
        "params": seg.params.identity(), "weights": str(getattr(seg.params, "weights", "")),
        "device": str(seg._device), "load_seconds": round(load_seconds, 3), "images": rows,
        "mean_oracle_dice": round(sum(r["oracle_dice"] for r in rows) / n, 4),
        "mean_choice_dice": round(sum(r["choice_dice"] for r in rows) / n, 4),
        "mean_seconds": round(sum(r["seconds"] for r in rows) / n, 3),
        "species": [r.__dict__ for r in species_rows(scores)],
    }
    print(format_species_table(species_rows(scores),
                               f"\n{name} (load {result['load_seconds']} s, {result['mean_seconds']} s/photo) · "
                               f"Dice at {eval_size}x{eval_size}"))
    seg.close()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default bench/out/deep-<time>.json)")
    ap.add_argument("--methods", default=",".join(DEEP_METHODS), help="comma-separated subset of sam,clipseg,dino")
    ap.add_argument("--profile", default=None, help="parameter profile for every method (default cpu)")
    ap.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE")
    ap.add_argument("--limit", type=int, default=None, help="only the first N labelled photos")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (pipeline check; Dice meaningless)")
    args = ap.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(DEEP_METHODS))
    if unknown:
        raise SystemExit(f"--methods: {', '.join(unknown)} not among {', '.join(DEEP_METHODS)} (see bench/quality.py)")
    settings = Settings.from_env()
    configure_torch(settings)
    overrides = parse_params(args.param)
    if args.tiny:
        from tests.deep_fixtures import tiny_params

        for m in methods:
            overrides[m] = {**tiny_params(m), **overrides.get(m, {})}
    items = [it for it in scan_dataset(args.dataset) if it.label_path is not None][: args.limit]
    if not items:
        raise SystemExit(f"no labelled photos under {args.dataset}")
    fg_fn = ForegroundExtractor(settings.models_dir, settings.foreground_model)
    prepared = []
    for it in items:
        img = load_image(it.path, settings.max_image_pixels)
        prepared.append((it, img, fg_fn(img), load_label(it.label_path)))  # type: ignore[arg-type]

    import torch

    report: dict[str, Any] = {
        "dataset": str(args.dataset.resolve()), "eval_size": settings.eval_size,
        "foreground_model": settings.foreground_model, "profile": args.profile or "cpu",
        "weights": "tiny random models of the real architectures (Dice meaningless)" if args.tiny else "settings",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "methods": {},
    }
    for name in methods:
        seg = build_segmenter(name, settings, args.profile, overrides.get(name, {}))
        if not isinstance(seg, PretrainedSegmenter):  # the registry maps these names to them
            raise SystemExit(f"{name} is not a pretrained baseline")
        try:
            report["methods"][name] = run_method(name, seg, prepared, settings.eval_size)
        except WeightsMissingError as exc:
            report["methods"][name] = {"skipped": str(exc)}
            print(f"\n{name}: skipped ({exc})")
    out_path = args.out or REPO / "bench" / "out" / f"deep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out_path}")
    return report


if __name__ == "__main__":
    main()
