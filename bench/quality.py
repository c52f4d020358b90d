"""Quality and speed of every registered method on a labelled folder tree.

    python -m bench.quality --dataset ../shared/datasets/gloper-examples [--out FILE.json]
        [--methods gloper,kmeans] [--profile cpu|paper] [--param gloper.steps=50 ...]

Each method runs at its defaults (the ``cpu`` profile, GloPER's CPU profile
included) on the same u2netp foreground. Writes JSON with, per image, the Dice of
every candidate, the oracle (best non-derived candidate), the label-free choice, the
label-free choice in the better polarity (``oracle_polarity``, methods with two readings)
and the seconds; prints per-species tables per method. Methods whose weights are missing
are reported as skipped, not failed. The polarity policies on held-out species and the
calibrated figures per species: ``python -m bench.polarity_species``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import OUT
from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.data.images import load_image
from gloper_jobs.data.labels import load_label
from gloper_jobs.devices import configure_torch
from gloper_jobs.exceptions import WeightsMissingError
from gloper_jobs.foreground import ForegroundExtractor
from gloper_jobs.jobs.pipeline import process_photo
from gloper_jobs.methods import Segmenter, list_segmenters
from gloper_jobs.methods.registry import build_segmenter
from gloper_jobs.scoring.reports import ItemScore, format_species_table, species_rows
from gloper_jobs.settings import Settings


def parse_params(pairs: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        method, _, name = key.partition(".")
        if not name or not _:
            raise SystemExit(f"--param {pair!r}: use METHOD.NAME=VALUE, e.g. gloper.steps=50")
        out.setdefault(method, {})[name] = value
    return out


def evaluate_segmenter(name: str, seg: Segmenter, prepared: list[tuple[Any, Any, Any, Any]],
                       eval_size: int) -> dict[str, Any]:
    """Run every prepared ``(item, image, foreground, label)`` through the pipeline every job
    uses (:func:`process_photo`: masks written to a scratch folder, every candidate scored).

    The foreground is computed once per photo for all methods; the seconds are the
    method's own (``timings.segment``). Returns the method's JSON block (per photo: Dice
    of each candidate, oracle, choice, seconds; means; per-species rows) and prints its
    per-species table.
    """
    rows, scores = [], []
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as scratch:
        for it, _img, fg, _lab in prepared:
            out = process_photo(it.path, seg, Path(scratch) / it.rel_path, lambda _image, fg=fg: fg,
                                it.label_path, it.species, eval_size)
            sec = float(out.info["timings"]["segment"])  # type: ignore[index]
            dice = {c.name: round((c.scores or {})["dice"], 4) for c in out.candidates}
            oracle = max((c.name for c in out.candidates if not c.derived), key=lambda c: dice[c])
            info = {k: v for k, v in out.info.items() if k not in ("device", "timings")}
            polarity = info.get("polarity")
            readings: dict[str, str] = polarity.get("candidates", {}) if isinstance(polarity, dict) else {}
            rows.append({"rel_path": it.rel_path, "species": it.species, "dice": dice, "oracle": oracle,
                         "oracle_dice": dice[oracle], "choice": out.choice, "choice_dice": dice[out.choice],
                         "oracle_polarity_dice": max((dice[c] for c in readings.values()), default=None),
                         "seconds": round(sec, 3), "info": info})
            scores.append(ItemScore(it.rel_path, it.species, oracle, dice[oracle], out.choice, dice[out.choice]))
            print(f"  {name:<10} {it.rel_path:<45} oracle {dice[oracle]:.3f} ({oracle})  "
                  f"choice {dice[out.choice]:.3f} ({out.choice})  {sec:.2f}s", flush=True)
    seg.close()
    n = len(rows)
    result = {
        "params": seg.params.identity(), "images": rows,
        "mean_oracle_dice": round(sum(r["oracle_dice"] for r in rows) / n, 4),
        "mean_choice_dice": round(sum(r["choice_dice"] for r in rows) / n, 4),
        "mean_seconds": round(sum(r["seconds"] for r in rows) / n, 3),
        "species": [r.__dict__ for r in species_rows(scores)],
    }
    if all(r["oracle_polarity_dice"] is not None for r in rows):
        result["mean_oracle_polarity_dice"] = round(sum(r["oracle_polarity_dice"] for r in rows) / n, 4)
    print(format_species_table(species_rows(scores), f"\n{name} ({result['mean_seconds']} s/photo) · "
                                                     f"Dice at {eval_size}x{eval_size}"))
    if "mean_oracle_polarity_dice" in result:
        print(f"label-free choice in the better polarity per photo: {result['mean_oracle_polarity_dice']:.3f}")
    return result


def unless_weights_missing(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s result, or a ``skipped`` entry when the method's weights are missing
    (pretrained methods locate them lazily, on the first photo)."""
    try:
        return run()
    except WeightsMissingError as exc:
        print(f"\n{name}: skipped ({exc})")
        return {"skipped": str(exc)}


def write_report(report: dict[str, Any], out: Path | None, prefix: str) -> Path:
    """Write the JSON report to ``out`` (default ``bench/out/<prefix>-<time>.json``)."""
    path = out or OUT / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default bench/out/quality-<time>.json)")
    ap.add_argument("--methods", default=None, help="comma-separated subset (default: all registered)")
    ap.add_argument("--profile", default=None, help="parameter profile for every method (default cpu)")
    ap.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE")
    args = ap.parse_args(argv)

    settings = Settings.from_env()
    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    methods = args.methods.split(",") if args.methods else list_segmenters()
    overrides = parse_params(args.param)
    items = [it for it in scan_dataset(args.dataset) if it.label_path is not None]
    if not items:
        raise SystemExit(f"no labelled photos under {args.dataset}")
    fg_fn = ForegroundExtractor(settings.models_dir, settings.foreground_model)

    prepared = []
    for it in items:
        img = load_image(it.path, settings.max_image_pixels)
        t0 = time.perf_counter()
        fg = fg_fn(img)
        prepared.append((it, img, fg, load_label(it.label_path), time.perf_counter() - t0))

    import torch

    report: dict[str, Any] = {
        "dataset": str(args.dataset.resolve()), "eval_size": settings.eval_size,
        "foreground_model": settings.foreground_model, "profile": args.profile or "cpu",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "foreground": {it.rel_path: {"seconds": round(sec, 3), "fraction": round(fg.fraction, 4),
                                     "fallback": fg.fallback} for it, _, fg, _, sec in prepared},
        "methods": {},
    }
    for name in methods:
        try:
            seg = build_segmenter(name, settings, args.profile, overrides.get(name, {}))
        except WeightsMissingError as exc:
            report["methods"][name] = {"skipped": str(exc)}
            print(f"\n{name}: skipped ({exc})")
            continue
        report["methods"][name] = unless_weights_missing(
            name, partial(evaluate_segmenter, name, seg, [p[:4] for p in prepared], settings.eval_size))
    write_report(report, args.out, "quality")
    return report


if __name__ == "__main__":
    main()
