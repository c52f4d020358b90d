"""Which dataset model should ``gloper train`` make by default? A sweep, judged on held-out species.

    python -m bench.model_sweep [--dataset DIR] [--config NAME:K=V,K=V ...] [--grid default]
        [--out FILE.json]

For each configuration (``gloper train --param K=V`` settings: size, local_sizes written
``8+16``, steps, batch, crop, ...) a model is trained with ``gloper train`` on the
labelled photos of ``--dataset`` (the shared ten by default: the archive a user trains
on; no labels are read), cached under ``bench/out/sweep/`` by its settings. Then, in one
run, every photo of the dataset and of a synthetic set whose species differ (``gloper
make-synthetic --polarity both``; the models never saw it) goes through the job pipeline
(:func:`bench.polarity_species.collect`, u2netp foreground computed once per photo) with
k-means and with each model (read out at each ``--readouts`` side: ``auto``, max(S, 256),
or ``S``, the model's own). Per configuration it reports, per group (shared, synthetic,
all):

* ``label-free``: what a user without labels gets (the model's default mask, the
  species vote on polarity), the ``oracle`` (best local size, either polarity),
  ``oracle-polarity`` (the default mask in the better polarity) and ``darker``;
* each mask base (``consensus``, ``fused``, ``local_<l>``) in the voted polarity;
* the worst species' loss of ``label-free`` against ``darker`` (a wrong flip);
* training seconds (from the checkpoint) and extraction seconds per photo.

Leave-one-species-out: for each species, the configuration (and, separately, the
configuration x mask base) with the best label-free mean over all *other* species is
picked and scored on it; the in-sample pick (best over all species) is printed beside
it; the same among the real species only (``loso_real``: the synthetic ones are easy for
every configuration and would outvote them). A default is worth changing only where its
held-out figure wins too. ``--photos`` re-analyses a previous run's extraction. Machine and
load are recorded before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import OUT, examples
from bench.polarity_species import (
    analyse,
    collect,
    mask_choice,
    per_species,
    species_polarity,
)
from bench.quality import SYNTHETIC_SEED, write_report
from gloper_jobs.methods.choice import SPECIES_MARGIN, SPECIES_RULES

GLOPER = [sys.executable, "-m", "gloper_jobs.cli"]
#: S, local sizes, steps, batch and crop, each moved from the S=128, 8/16, 300 steps, batch 8
#: (crop 96) model (`gloper train`'s default until this sweep; every setting spelled out, so
#: the grid means the same whatever the defaults are); S=256 and 384 keep the cost per step
#: near that one's with smaller batches
S128 = "size=128,local_sizes=8+16,batch=8"
GRIDS: dict[str, list[str]] = {
    "default": [
        f"s128:{S128}",
        f"s128-steps100:{S128},steps=100",
        f"s128-steps1000:{S128},steps=1000",
        "s128-l8-16-32:size=128,local_sizes=8+16+32,batch=8",
        "s128-l4-8-16:size=128,local_sizes=4+8+16,batch=8",
        "s128-batch16:size=128,local_sizes=8+16,batch=16",
        f"s128-crop128:{S128},crop=128",
        "s256-l16-32-b4:size=256,local_sizes=16+32,batch=4",
        "s256-l8-16-32-b4:size=256,local_sizes=8+16+32,batch=4",
        "s256-l16-32-64-b4:size=256,local_sizes=16+32+64,batch=4",
        "s384-l16-32-b2:size=384,local_sizes=16+32,batch=2",
    ],
    "quick": [f"s128:{S128}", "s256-l16-32-b4:size=256,local_sizes=16+32,batch=4"],
}


def parse_config(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME:K=V,K=V`` -> (name, params); ``+`` separates list values (local_sizes=8+16)."""
    name, _, rest = spec.partition(":")
    params = {}
    for kv in filter(None, rest.split(",")):
        key, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"--config {spec!r}: write NAME:KEY=VALUE,KEY=VALUE")
        params[key.strip()] = value.strip().replace("+", ",")
    return name, params


def train(dataset: Path, params: dict[str, str], cache: Path) -> tuple[Path, dict[str, Any]]:
    """A model trained by ``gloper train`` with ``params`` (cached by dataset and settings)."""
    from gloper_jobs.methods.gloper.dataset_model.checkpoint import load_checkpoint

    key = hashlib.sha256(json.dumps([str(dataset), sorted(params.items())]).encode()).hexdigest()[:12]
    path = cache / f"model-{key}.pt"
    cache.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "GLOPER_DATABASE_URL": f"sqlite:///{tmp}/train.db"}
            args = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
            subprocess.run([*GLOPER, "train", str(dataset), "--out", str(tmp) + "/m.pt", "--no-progress", *args],
                           env=env, check=True)
            os.replace(Path(tmp) / "m.pt", path)
    ckpt = load_checkpoint(path)
    return path, {"seconds": round(ckpt.seconds, 1), "steps": ckpt.step, "final_loss": round(ckpt.losses[-1], 4),
                  "settings": ckpt.settings, "load_when_trained": [round(x, 2) for x in load]}


def label_free_table(photos: list[dict[str, Any]], methods: list[str],
                     base: str | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """species x method: mean Dice of the default species vote's polarity, in each method's
    default mask (``base``: that mask instead)."""
    default = f"{'+'.join(SPECIES_RULES)}>{SPECIES_MARGIN}"
    species = per_species(photos, methods[0])
    names = list(species)
    groups = [rows[0]["group"] for rows in species.values()]
    table = np.zeros((len(names), len(methods)))
    for j, m in enumerate(methods):
        sp = per_species(photos, m)
        for i, name in enumerate(names):
            rows = sp[name]
            pol = species_polarity(rows, default)
            if base is None:
                table[i, j] = np.mean([r["dice"][r["candidates"][pol]] for r in rows])
            else:
                table[i, j] = np.mean([r["dice"][base + ("_lighter" if pol == "lighter" else "")] for r in rows])
    return names, groups, table


def loso(table: np.ndarray) -> tuple[int, list[int], np.ndarray]:
    """In-sample pick (column best over every row), and per row the column best over the
    others with that row's score under it."""
    in_sample = int(np.argmax(table.mean(axis=0)))
    picks = [int(np.argmax(np.delete(table, i, axis=0).mean(axis=0))) for i in range(len(table))]
    return in_sample, picks, np.array([table[i, p] for i, p in enumerate(picks)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=None, help="default: the example photos")
    ap.add_argument("--config", action="append", default=[], metavar="NAME:K=V,...")
    ap.add_argument("--grid", choices=sorted(GRIDS), default=None, help="default: 'default' unless --config")
    ap.add_argument("--readouts", default="auto",
                    help="read-out sides to extract every model at: auto (the default, max(S, 256)), S "
                         "(the model's size) or a number; comma-separated")
    ap.add_argument("--synthetic", type=Path, default=None)
    ap.add_argument("--photos", type=Path, default=None, help="reuse a previous run's extraction (its JSON)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    dataset = (args.dataset or examples()).resolve()
    specs = list(args.config) + (GRIDS[args.grid or "default"] if args.grid or not args.config else [])
    configs = dict(parse_config(s) for s in specs)
    t0 = time.time()
    report: dict[str, Any] = {
        "dataset": str(dataset),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": os.environ.get("GLOPER_TORCH_THREADS")},
        "load_before": [round(x, 2) for x in os.getloadavg()], "configs": {},
    }
    models: dict[str, dict[str, str]] = {"kmeans": {"method": "kmeans"}}
    for name, params in configs.items():
        print(f"training {name}: {params or 'defaults'}", flush=True)
        path, info = train(dataset, params, OUT / "sweep")
        report["configs"][name] = {"params": params, "model": str(path), "training": info}
        print(f"  {info['steps']} steps in {info['seconds']} s, final loss {info['final_loss']}", flush=True)
        readouts = args.readouts.split(",")
        for ro in readouts:
            side = {"auto": "0", "S": str(info["settings"]["size"])}.get(ro, ro)
            label = name if len(readouts) == 1 else f"{name}@{ro}"
            models[label] = {"method": "gloper", "model": str(path), "readout_size": side}
            if label != name:
                report["configs"][label] = {**report["configs"][name], "readout": ro}
    load_extract = os.getloadavg()
    if args.photos:
        photos = json.loads(args.photos.read_text())["photos"]
        missing = set(models) - set(photos[0]["methods"])
        if missing:
            raise SystemExit(f"{args.photos} has no extraction of {', '.join(sorted(missing))}")
    else:
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            synthetic = args.synthetic
            if synthetic is None:
                from gloper_jobs.data.synthetic import make_dataset

                synthetic = Path(tmp) / "synthetic"
                make_dataset(synthetic, per_species=2, seed=SYNTHETIC_SEED, polarity="both")
            photos = collect([dataset, synthetic], models)
    report["load_extract"] = [round(x, 2) for x in load_extract]
    report["photos"] = photos
    names = list(models)
    sp_names, groups, table = label_free_table(photos, names)
    for j, name in enumerate(names):
        res = analyse(photos, name)
        entry = report["configs"].setdefault(name, {"params": {}, "model": None, "training": None})
        entry = report["configs"][name] = dict(entry)  # readout variants share their training entry
        entry["summary"] = res["summary"]
        entry["mask_choice"] = mask_choice(photos, name)
        entry["label_free_by_species"] = {s: round(float(table[i, j]), 4) for i, s in enumerate(sp_names)}
        entry["darker_by_species"] = {s: v["darker"] for s, v in res["species"].items()}
        entry["extract_seconds"] = round(float(np.mean([p["methods"][name]["seconds"] for p in photos])), 3)
    # leave-one-species-out over the models (k-means is the yardstick, not a candidate)
    mcols = [j for j, n in enumerate(names) if n != "kmeans"]
    sub = table[:, mcols]
    in_pick, picks, held = loso(sub)
    # and over model x mask base
    bases = sorted({b for n in names[1:] for b in (report["configs"][n]["mask_choice"] or {}).get("bases", [])})
    combos, cols = [], []
    for b in bases:
        if not all(b in (report["configs"][n]["mask_choice"] or {}).get("bases", []) for n in names[1:]):
            continue  # a base every model has (local_32 only some do)
        _, _, t_b = label_free_table(photos, names[1:], base=b)
        for j, n in enumerate(names[1:]):
            combos.append(f"{n}/{b}")
            cols.append(t_b[:, j])
    combo_table = np.stack(cols, axis=1)
    c_in, c_picks, c_held = loso(combo_table)

    def by_group(values: np.ndarray) -> dict[str, float]:
        out = {}
        for g in ("shared", "synthetic", "all"):
            idx = [i for i, gg in enumerate(groups) if g == "all" or gg == g]
            out[g] = round(float(values[idx].mean()), 4)
        return out

    model_names = [names[j] for j in mcols]
    # the same pick among real photos only (the synthetic species are easy for every config
    # and would outvote the real ones): each shared species with the config best on the other
    # shared species
    real = [i for i, g in enumerate(groups) if g == "shared"]
    r_in, r_picks, r_held = loso(sub[real])
    report["loso_real"] = {
        "in_sample_config": model_names[r_in], "in_sample": round(float(sub[real, r_in].mean()), 4),
        "held_out": round(float(r_held.mean()), 4),
        "held_out_picks": {sp_names[i]: model_names[p] for i, p in zip(real, r_picks, strict=True)},
        "held_out_by_species": {sp_names[i]: round(float(v), 4) for i, v in zip(real, r_held, strict=True)},
    }
    report["loso"] = {
        "in_sample_config": model_names[in_pick],
        "in_sample": by_group(sub[:, in_pick]),
        "held_out": by_group(held),
        "held_out_picks": {s: model_names[p] for s, p in zip(sp_names, picks, strict=True)},
        "in_sample_config_x_mask": combos[c_in],
        "in_sample_x_mask": by_group(combo_table[:, c_in]),
        "held_out_x_mask": by_group(c_held),
        "held_out_x_mask_picks": {s: combos[p] for s, p in zip(sp_names, c_picks, strict=True)},
        "kmeans_oracle": report["configs"]["kmeans"]["summary"],
    }
    # the table
    print(f"\n{'config':<22}{'train s':>8}{'s/photo':>8}  " + "  ".join(
        f"{g}: lf / orac / pol / drk / worst" for g in ("shared", "synthetic")))
    for name in names:
        e = report["configs"][name]
        tr = e["training"]["seconds"] if e["training"] else 0.0
        cells = []
        for g in ("shared", "synthetic"):
            s = e["summary"][g]
            cells.append(f"{s['default-vote']:.3f} {s['oracle']:.3f} {s['oracle-polarity']:.3f} {s['darker']:.3f} "
                         f"{s['worst-loss-default']:+.3f}")
        print(f"{name:<22}{tr:>8.0f}{e['extract_seconds']:>8.3f}  " + "   ".join(cells))
        if e["mask_choice"]:
            print(f"{'':<38}masks (voted polarity), shared: " + " ".join(
                f"{k} {v:.3f}" for k, v in e["mask_choice"]["shared"].items() if k != "held-out")
                + " | synthetic: " + " ".join(f"{k} {v:.3f}" for k, v in e["mask_choice"]["synthetic"].items()
                                           if k != "held-out"))
    lo = report["loso"]
    print(f"\nconfig picked in-sample: {lo['in_sample_config']} {lo['in_sample']}; "
          f"held-out species (each scored with the config best on the others): {lo['held_out']}")
    print(f"config x mask picked in-sample: {lo['in_sample_config_x_mask']} {lo['in_sample_x_mask']}; "
          f"held-out: {lo['held_out_x_mask']}")
    lr = report["loso_real"]
    print(f"among the real (shared) species only: in-sample {lr['in_sample_config']} {lr['in_sample']}; "
          f"held-out {lr['held_out']} (picks: {', '.join(sorted(set(lr['held_out_picks'].values())))})")
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = round(time.time() - t0, 1)
    print(f"load before {report['load_before']}, at extraction {report['load_extract']}, after "
          f"{report['load_after']}; {report['seconds']} s")
    write_report(report, args.out, "model-sweep")
    return report


if __name__ == "__main__":
    main()
