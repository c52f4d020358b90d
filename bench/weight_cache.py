"""Cache GloPER's per-size weight maps per photo, so label-free rules are scored offline.

    python bench/weight_cache.py --dataset DIR [--dataset DIR2] --tag cpu \\
        [--param size=256 --param local_sizes=8,16,32 --param steps=50] [--readout 25]

For every labelled photo, trains GloPER once per local size (the library's
``train_local_size``) and writes ``bench/out/weights/<tag>/<species>__<stem>.npz``:
``w_<l>_<steps>`` (``SxS float32``, darker-is-pattern weight after ``steps``), ``fg``
(``SxS bool``, u2netp as the pipeline uses it), ``image`` (``SxSx3 uint8``), ``image256``
and ``fg256`` (for k-means at its default size), ``label256`` (``256x256 bool``), and
``seconds``. Photos already cached are skipped. Run it under the heavy-job lock.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gloper_jobs.data.datasets import scan_dataset  # noqa: E402
from gloper_jobs.data.images import load_image, resize_mask, resize_rgb, resize_rgb_uint8  # noqa: E402
from gloper_jobs.data.labels import load_label  # noqa: E402
from gloper_jobs.devices import configure_torch  # noqa: E402
from gloper_jobs.foreground import ForegroundExtractor  # noqa: E402
from gloper_jobs.methods.gloper import GloperParams, train_local_size  # noqa: E402
from gloper_jobs.settings import Settings  # noqa: E402

OUT = REPO / "bench" / "out" / "weights"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", action="append", required=True, type=Path)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--readout", action="append", type=int, default=[], help="also keep the map after N steps")
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    configure_torch(settings.torch_threads)
    params = GloperParams.build(**dict(p.split("=", 1) for p in args.param), device="cpu")
    folder = OUT / args.tag
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps({**params.identity(), "readout": args.readout}))
    fg_fn = ForegroundExtractor(settings.models_dir, settings.foreground_model)
    s = params.size
    for dataset in args.dataset:
        for it in scan_dataset(dataset):
            if it.label_path is None:
                continue
            path = folder / f"{it.species}__{Path(it.rel_path).stem}.npz"
            if path.exists():
                continue
            img = load_image(it.path, settings.max_image_pixels)
            fg = fg_fn(img).mask
            fg_s = resize_mask(fg, (s, s))
            rgb = torch.from_numpy(resize_rgb(img, (s, s))).permute(2, 0, 1).unsqueeze(0).contiguous()
            arrays: dict[str, np.ndarray] = {}
            t0 = time.perf_counter()
            for ls in params.local_sizes:
                _, _, snaps = train_local_size(rgb, torch.from_numpy(fg_s.astype(np.float32)).unsqueeze(0),
                                               ls, params, torch.device("cpu"), tuple(args.readout))
                for step, w in snaps.items():
                    arrays[f"w_{ls}_{step}"] = w.numpy().astype(np.float32)
            sec = time.perf_counter() - t0
            np.savez_compressed(
                path, fg=fg_s, image=resize_rgb_uint8(img, (s, s)), image256=resize_rgb_uint8(img, (256, 256)),
                fg256=resize_mask(fg, (256, 256)), label256=resize_mask(load_label(it.label_path), (256, 256)),
                seconds=np.float64(sec), species=np.str_(it.species), **arrays)
            print(f"{args.tag} {it.rel_path}: {sec:.1f}s", flush=True)


if __name__ == "__main__":
    main()
