"""A dataset-level GloPER model against per-photo GloPER: quality, speed, training cost.

    python -m bench.gloper_model [--examples DIR] [--synthetic DIR] [--steps 300] [--out FILE.json]

Trains one model on the shared example photos plus the synthetic set, and one on each
alone (``gloper train``'s library path; no labels), at GloPER's ``cpu`` profile size and
local sizes (S=128, 8/16). Then, on every labelled photo of each set, with the same
u2netp foregrounds: seconds of the method per photo and mean Dice (oracle over the
local sizes and the label-free ``fused`` choice) of per-photo GloPER (``cpu`` profile,
25 steps) and of each model with warm starts of 0, 5 and 10 per-photo steps.
Per-photo results and models are cached under ``bench/out/`` (delete them to redo).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import OUT, machine
from bench import examples as default_examples
from bench.quality import evaluate_segmenter, write_report
from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.data.images import load_image, resize_mask, resize_rgb_uint8
from gloper_jobs.data.labels import load_label
from gloper_jobs.devices import configure_torch
from gloper_jobs.foreground.extractor import ForegroundExtractor
from gloper_jobs.jobs.training import model_params
from gloper_jobs.methods.gloper.dataset_model.train import PhotoSet, train_model
from gloper_jobs.methods.registry import build_segmenter
from gloper_jobs.settings import Settings

SIZE, LOCAL_SIZES = 128, "8,16"
WARM_STARTS = (0, 5, 10)


def prepare(dataset: Path, fg_fn: ForegroundExtractor, settings: Settings) -> list[tuple[Any, ...]]:
    """``(item, image HxWx3 uint8, Foreground, label HxW bool)`` for each labelled photo."""
    out = []
    for it in scan_dataset(dataset):
        if it.label_path is None:
            continue
        img = load_image(it.path, settings.max_image_pixels)
        out.append((it, img, fg_fn(img), load_label(it.label_path)))
    return out


def for_eval(prepared: list[tuple[Any, ...]], group: str) -> list[tuple[Any, ...]]:
    """Prepared photos as :func:`bench.quality.evaluate_segmenter` takes them: ``(item, group, foreground, label)``."""
    return [(it, group, fg, label) for it, _img, fg, label in prepared]


def photo_set(prepared: list[tuple[Any, ...]], size: int) -> PhotoSet:
    """The training tensors of prepared photos (the same foregrounds; labels unused)."""
    images = [torch.from_numpy(resize_rgb_uint8(img, (size, size)).copy()).permute(2, 0, 1).contiguous()
              for _, img, _, _ in prepared]
    masks = [torch.from_numpy(resize_mask(fg.mask, (size, size))) for _, _, fg, _ in prepared]
    return PhotoSet(torch.stack(images), torch.stack(masks), [str(p[0].path) for p in prepared], [])


def per_photo(name: str, prepared: list[tuple[Any, ...]], settings: Settings) -> dict[str, Any]:
    """Per-photo GloPER, ``cpu`` profile, cached in ``bench/out/gm-perphoto-<name>.json``."""
    cache = OUT / f"gm-perphoto-{name}.json"
    if cache.exists():
        return dict(json.loads(cache.read_text()))
    result = evaluate_segmenter("gloper", build_segmenter("gloper", settings, "cpu", {}), for_eval(prepared, name),
                                settings.eval_size, settings.foreground_rim)
    cache.write_text(json.dumps(result))
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("mean_oracle_dice", "mean_choice_dice", "mean_seconds")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=Path, default=None, help="default: GLOPER_EXAMPLES_DIR")
    ap.add_argument("--synthetic", type=Path, default=OUT / "synthetic", help="made with `gloper make-synthetic`")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", default="both,examples,synthetic", help="which trainings (comma-separated)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    configure_torch(settings.torch_threads)
    if not args.synthetic.exists():
        from gloper_jobs.data.synthetic import make_dataset

        make_dataset(args.synthetic)
    fg_fn = ForegroundExtractor(settings.models_dir, settings.foreground_model)
    examples = args.examples or default_examples()
    sets = {"examples": prepare(examples, fg_fn, settings),
            "synthetic": prepare(args.synthetic, fg_fn, settings)}
    t0 = time.perf_counter()
    for _, img, _, _ in sets["examples"]:
        fg_fn(img)
    u2netp_s = (time.perf_counter() - t0) / len(sets["examples"])
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {"size": SIZE, "local_sizes": LOCAL_SIZES, "train_steps": args.steps, "batch": args.batch,
                     "eval_size": settings.eval_size, "foreground": settings.foreground_model,
                     "foreground_rim": settings.foreground_rim},
        "u2netp_seconds_per_photo": round(u2netp_s, 3),
        "per_photo": {}, "models": {},
    }
    for name, prepared in sets.items():
        print(f"\nper-photo GloPER (cpu profile) on {name}")
        report["per_photo"][name] = per_photo(name, prepared, settings)
    trainings = {"both": sets["examples"] + sets["synthetic"], "examples": sets["examples"],
                 "synthetic": sets["synthetic"]}
    for name, prepared in trainings.items():
        if name not in args.models.split(","):
            continue
        params = model_params(settings, {"size": SIZE, "local_sizes": LOCAL_SIZES, "steps": args.steps,
                                         "batch": args.batch})
        path = OUT / f"gm-{name}-b{args.batch}.pt"  # more --steps later continue it
        print(f"\ntraining on {name} ({len(prepared)} photos) -> {path}")
        tr = train_model(photo_set(prepared, SIZE), params, path, dataset=f"bench:{name}",
                         device=torch.device("cpu"), progress=True)
        entry: dict[str, Any] = {"photos": len(prepared), "steps": tr.step, "train_seconds": round(tr.seconds, 1),
                                 "train_photos_per_second": round(tr.step * args.batch / tr.seconds, 2),
                                 "train_seconds_per_step": round(tr.seconds / tr.step, 3),
                                 "final_loss": tr.losses[-1], "loss_curve_every_10": tr.losses[::10], "eval": {}}
        for set_name, eval_set in sets.items():
            warm = WARM_STARTS if set_name in name or name == "both" else (0,)
            for k in warm:
                print(f"\nmodel {name} on {set_name}, warm start {k}")
                seg = build_segmenter("gloper", settings, "cpu", {"model": str(path), "finetune_steps": k})
                res = evaluate_segmenter(f"model-{name}", seg, for_eval(eval_set, set_name), settings.eval_size,
                                         settings.foreground_rim)
                base = report["per_photo"][set_name]
                entry["eval"][f"{set_name}/warm{k}"] = {
                    **summary(res), "speedup_vs_per_photo": round(base["mean_seconds"] / res["mean_seconds"], 1),
                    "dice_gap_oracle": round(res["mean_oracle_dice"] - base["mean_oracle_dice"], 4),
                    "dice_gap_choice": round(res["mean_choice_dice"] - base["mean_choice_dice"], 4),
                    "images": res["images"]}
        report["models"][name] = entry
    print("\nmodel / eval set / warm | oracle | label-free | s/photo | x faster | gap oracle / label-free")
    for name, entry in report["models"].items():
        for key, ev in entry["eval"].items():
            print(f"{name:<9} {key:<18} | {ev['mean_oracle_dice']:.3f} | {ev['mean_choice_dice']:.3f} | "
                  f"{ev['mean_seconds']:.3f} | {ev['speedup_vs_per_photo']:>7} | "
                  f"{ev['dice_gap_oracle']:+.3f} / {ev['dice_gap_choice']:+.3f}")
    for name, pp in report["per_photo"].items():
        print(f"per-photo {name:<10} | {pp['mean_oracle_dice']:.3f} | {pp['mean_choice_dice']:.3f} | "
              f"{pp['mean_seconds']:.3f}")
    write_report(report, args.out, "gloper-model")
    return report


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
