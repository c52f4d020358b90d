"""k-means' restarts on a pixel sample against restarts on every pixel, side by side.

    python bench/kmeans_sample.py --dataset DIR [--dataset DIR2] [--json OUT.json] [--sample 4096]

The two-colour split of the foreground (``choice.colour_split``: GloPER's read-out and
the label-free polarity rule; k-means' ``cluster_0``) is 2-means of the foreground's RGB
pixels at 256x256 with 20 restarts. For every photo (u2netp foreground) this runs it with
the restarts on all pixels (``sample=0``) and on a seeded sample (``--sample``), and
writes seconds of each, their ratio, the share of foreground pixels whose cluster
differs, and for comparison the share that differs between two seeds of the all-pixel
run (the stopping tolerance's own spread). Labelled photos also get the Dice of the
darker cluster both ways.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.quality import write_report  # noqa: E402
from gloper_jobs.data.datasets import scan_dataset  # noqa: E402
from gloper_jobs.data.images import load_image, resize_mask, resize_rgb_uint8  # noqa: E402
from gloper_jobs.data.labels import load_label  # noqa: E402
from gloper_jobs.foreground import ForegroundExtractor  # noqa: E402
from gloper_jobs.methods.choice import EVIDENCE_SIZE, KMEANS_SEED, cluster_colours  # noqa: E402
from gloper_jobs.scoring.metrics import scores_at  # noqa: E402
from gloper_jobs.settings import Settings  # noqa: E402

REPEATS = 5


def timed(pixels: np.ndarray, sample: int, seed: int = KMEANS_SEED) -> tuple[np.ndarray, float]:
    """Darkest-cluster labels and the best of ``REPEATS`` timings (seconds)."""
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        labels, _ = cluster_colours(pixels, 2, seed=seed, sample=sample)
        best = min(best, time.perf_counter() - t0)
    return labels, best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, type=Path, action="append")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--sample", type=int, default=4096)
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    fg_fn = ForegroundExtractor(settings.models_dir, settings.foreground_model)
    rows = []
    load_before = os.getloadavg()
    for dataset in args.dataset:
        for it in scan_dataset(dataset):
            img = load_image(it.path, settings.max_image_pixels)
            size = (EVIDENCE_SIZE, EVIDENCE_SIZE)
            small, fg = resize_rgb_uint8(img, size), resize_mask(fg_fn(img).mask, size)
            pixels = small[fg].astype(np.float32)
            if len(pixels) < 2:
                continue
            full, full_s = timed(pixels, 0)
            sampled, sampled_s = timed(pixels, args.sample)
            other_seed, _ = timed(pixels, 0, KMEANS_SEED + 1)
            row: dict[str, Any] = {
                "photo": it.rel_path, "pixels": len(pixels), "all_s": round(full_s, 5),
                "sampled_s": round(sampled_s, 5),
                "differ_sampled": round(float((full != sampled).mean()), 5),
                "differ_other_seed": round(float((full != other_seed).mean()), 5)}
            if it.label_path is not None:
                label = load_label(it.label_path)
                for name, labels in (("all", full), ("sampled", sampled)):
                    mask = np.zeros(size, dtype=bool)
                    mask[fg] = labels == 0
                    row[f"dice_{name}"] = round(scores_at(mask, label, settings.eval_size).dice, 4)
            rows.append(row)
            print(row, flush=True)
    labelled = [r for r in rows if "dice_all" in r]
    report = {
        "sample": args.sample, "photos": len(rows), "machine": f"{os.cpu_count()} cores",
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "all_s_per_photo": round(float(np.mean([r["all_s"] for r in rows])), 5),
        "sampled_s_per_photo": round(float(np.mean([r["sampled_s"] for r in rows])), 5),
        "ratio": round(float(np.mean([r["all_s"] for r in rows]) / np.mean([r["sampled_s"] for r in rows])), 2),
        "mean_differ_sampled": round(float(np.mean([r["differ_sampled"] for r in rows])), 5),
        "max_differ_sampled": max(r["differ_sampled"] for r in rows),
        "mean_differ_other_seed": round(float(np.mean([r["differ_other_seed"] for r in rows])), 5),
        "max_differ_other_seed": max(r["differ_other_seed"] for r in rows),
        "mean_dice_all": round(float(np.mean([r["dice_all"] for r in labelled])), 4) if labelled else None,
        "mean_dice_sampled": round(float(np.mean([r["dice_sampled"] for r in labelled])), 4) if labelled else None,
        "images": rows,
    }
    print({k: v for k, v in report.items() if k != "images"})
    write_report(report, args.json, "kmeans-sample")
    return report


if __name__ == "__main__":
    main()
