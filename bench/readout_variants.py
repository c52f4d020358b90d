"""Can a dataset model's masks get better after the network? Read-out variants, judged on held-out species.

    python -m bench.readout_variants --model M.pt [--dataset DIR] [--synthetic N]
        [--scales 256,320,384,448,512] [--finetune 0,10] [--out FILE.json]

The network of a dataset model (``gloper train``) gives per local size the weight ``w``
of each pixel's darker window colour; GloPER's read-out
(:func:`~gloper_jobs.methods.gloper.readout.read_out`) thresholds it at rho, fuses the
sizes and keeps what the photo's global two-colour split agrees with (``consensus``).
This bench runs the network once per photo and input scale and tries, on the same
weights, what could be changed after it:

* ``sigma=K``: the weight maps smoothed (Gaussian, K pixels at the read-out's 256);
* ``rho=R``: another threshold; ``fuse=mean``: the sizes' mean weight thresholded,
  not the vote of each size's mask; ``choice=fused``: no global split;
* ``open`` / ``close``: a 3x3 opening / closing of the mask; ``minarea=F``: pieces
  smaller than F of the foreground dropped; ``erode=K``: the mask kept K pixels inside the
  foreground's outline (the foreground model's rim of background left out; k-means is
  scored with the same rims beside it). ``erode=3`` won every fold and is what a job's
  pipeline does since (``GLOPER_FOREGROUND_RIM``, :mod:`gloper_jobs.foreground.rim`);
  ``default`` stays the segmenter's read-out before that trim;
* ``alpha>T``: the mask kept where the foreground model's alpha exceeds T (0-255), a
  stricter foreground than the paper's ``alpha != 0`` instead of a rim of fixed width;
* ``inner=3``: the read-out given the foreground less its 3 px rim from the start: the
  global split, the consensus and the polarity rules (so the species vote) on the inner
  outline, not only the mask trimmed after;
* ``choice=local_L``: one local size's mask alone (no vote of sizes, no global split);
  ``consensus=L``: one local size's mask and the global split (the consensus of that size
  alone): for each of the model's local sizes (what ``gloper calibrate`` most often picks
  per species is the smallest size alone, in-sample);
* ``split=3``: the consensus against the darkest (lightest) of three colour clusters of the
  foreground instead of the darker (lighter) of two; ``split=auto``: per photo and reading,
  the two- or three-cluster split whose extreme cluster agrees best (Matthews'
  correlation over the foreground) with the local sizes' fused mask; ``split=vote``: the
  consensus against the reading's extreme of three clusters plus the middle cluster where
  the fused mask covers more than half of it;
* ``scale=S``: the photo fed to the (fully convolutional) network at S instead of its
  training size, the weights read out at 256 (a finer window relative to the animal);
* ``tta=flip``: the mean of the weights and of the mirrored photo's weights mirrored back;
* ``finetune=K``: K per-photo steps of the dataset model first (``--param finetune_steps``).

Photos: the labelled ones of ``--dataset`` (the example photos: ``shared``) and a
synthetic set of other species in both polarities (``synthetic``), u2netp foreground.
Per variant: the label-free Dice (the default mask in the species vote's polarity),
the oracle-polarity Dice, per species; k-means' oracle and label-free beside them.
Leave-one-species-out, pairwise against the default read-out: for each species, the
variant is picked when it beats the default on the mean of the *other* species, and
the held-out figure is that species scored with the pick. A variant is worth a default
only where it wins on held-out species of both groups. Writes JSON
(``bench/out/readout-variants-<time>.json`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from sklearn.metrics import matthews_corrcoef

from bench import examples, machine
from bench.quality import SYNTHETIC_SEED, write_report
from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.data.images import load_image, resize_mask, resize_rgb, resize_rgb_uint8
from gloper_jobs.data.labels import load_label
from gloper_jobs.devices import configure_torch
from gloper_jobs.foreground import ForegroundExtractor
from gloper_jobs.foreground.rim import inner_foreground
from gloper_jobs.jobs.polarity import species_call
from gloper_jobs.methods.choice import SPECIES_MARGIN, SPECIES_RULES, cluster_colours
from gloper_jobs.methods.gloper.dataset_model.extract import ModelExtractor, pattern_weights
from gloper_jobs.methods.gloper.readout import candidate_name, read_out
from gloper_jobs.methods.gloper.segmenter import GloperSegmenter
from gloper_jobs.methods.registry import build_segmenter
from gloper_jobs.scoring.metrics import scores_at
from gloper_jobs.settings import Settings

#: the side every variant is read out and scored at (a dataset model's default read-out)
READOUT = 256
DEFAULT = "default"
KERNEL = np.ones((3, 3), np.uint8)

Masks = dict[str, np.ndarray]  # polarity -> SxS bool


def _morph(op: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda m, fg: cv2.morphologyEx(m.astype(np.uint8), op, KERNEL).astype(bool) & fg


def _min_area(fraction: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def drop(m: np.ndarray, fg: np.ndarray) -> np.ndarray:
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        keep = np.zeros(n, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= fraction * fg.sum()
        return keep[lab]
    return drop


def _erode_foreground(pixels: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The mask within the foreground shrunk by ``pixels`` (at 256): the foreground model's rim
    of background (shadow, grass) left out of the pattern."""
    return lambda m, fg: m & cv2.erode(fg.astype(np.uint8), KERNEL, iterations=pixels).astype(bool)


#: foreground rims (pixels at 256) tried, for GloPER's read-out and k-means alike
ERODE = (1, 2, 3, 4, 6)

#: read-out variants on the same weights: (weights transform, read_out kwargs, mask post-process)
VARIANTS: dict[str, dict[str, Any]] = {
    DEFAULT: {},
    "sigma=1": {"sigma": 1.0}, "sigma=2": {"sigma": 2.0},
    "rho=0.45": {"rho": 0.45}, "rho=0.55": {"rho": 0.55},
    "fuse=mean": {"mean": True}, "choice=fused": {"choice": "fused"},
    "open": {"post": _morph(cv2.MORPH_OPEN)}, "close": {"post": _morph(cv2.MORPH_CLOSE)},
    "minarea=0.002": {"post": _min_area(0.002)},
    **{f"erode={k}": {"post": _erode_foreground(k)} for k in ERODE},
    **{f"alpha>{t}": {"alpha": t} for t in (16, 64, 128, 192)},
    "inner=3": {"inner": 3},
    "split=3": {"split": 3}, "split=auto": {"split": "auto"}, "split=vote": {"split": "vote"},
}


def _extreme_cluster(image: np.ndarray, fg: np.ndarray, k: int, polarity: str) -> np.ndarray:
    """The darkest (``darker``) or lightest (``lighter``) of ``k`` colour clusters of the foreground."""
    img = resize_rgb_uint8(image, fg.shape)
    labels = np.full(fg.shape, -1)
    if fg.sum() >= k:
        labels[fg] = cluster_colours(img[fg].astype(np.float32), k)[0]
    return np.asarray(labels == (0 if polarity == "darker" else k - 1))


def _cluster_vote(image: np.ndarray, fg: np.ndarray, fused: np.ndarray, polarity: str) -> np.ndarray:
    """The reading's extreme of three colour clusters, and the middle one where the network's
    fused mask covers most of it (the network, not a score, says whether a coat has two colours)."""
    img = resize_rgb_uint8(image, fg.shape)
    labels = np.full(fg.shape, -1)
    if fg.sum() >= 3:
        labels[fg] = cluster_colours(img[fg].astype(np.float32), 3)[0]
    keep = labels == (0 if polarity == "darker" else 2)
    middle = labels == 1
    if middle.any() and fused[middle].mean() > 0.5:
        keep |= middle
    return np.asarray(keep)


def variants(local_sizes: Sequence[int]) -> dict[str, dict[str, Any]]:
    """:data:`VARIANTS` and, per local size of the model, that size alone with and without the split."""
    out = dict(VARIANTS)
    for ls in local_sizes:
        out[f"choice=local_{ls}"] = {"choice": f"local_{ls}"}
        out[f"consensus={ls}"] = {"sizes": [ls]}
    return out


def masks(image: np.ndarray, foreground: np.ndarray, weights: dict[int, np.ndarray], fg: np.ndarray,
          spec: dict[str, Any], alpha: np.ndarray | None = None) -> tuple[Masks, dict[str, Any]]:
    """The variant's label-free mask in each polarity, and the polarity evidence."""
    if spec.get("inner"):  # the method given the foreground less its rim (split and rules on it too)
        foreground = inner_foreground(foreground, foreground.shape, spec["inner"] / READOUT)
        fg = inner_foreground(fg, fg.shape, spec["inner"] / READOUT)
    if spec.get("sizes"):
        weights = {ls: weights[ls] for ls in spec["sizes"]}
    if spec.get("sigma"):
        weights = {ls: cv2.GaussianBlur(w, (0, 0), spec["sigma"]) for ls, w in weights.items()}
    if spec.get("mean"):
        weights = {0: np.mean(list(weights.values()), axis=0)}
    choice = spec.get("choice", "consensus")
    out = read_out(image, foreground, weights, fg, spec.get("rho", 0.5), choice, "darker")
    readings = out.info["polarity"]["candidates"]
    post = spec.get("post", lambda m, _fg: m)
    chosen = {pol: out.candidates[name] for pol, name in readings.items()}
    if spec.get("split"):  # the consensus against the darkest / lightest of k colour clusters
        chosen = {}
        for pol in ("darker", "lighter"):
            fused = out.candidates[candidate_name("fused", pol)]
            if spec["split"] == "vote":
                chosen[pol] = fused & _cluster_vote(image, fg, fused, pol)
                continue
            splits = [_extreme_cluster(image, fg, k, pol) for k in ((2, 3) if spec["split"] == "auto" else (spec["split"],))]
            # auto: the split that agrees best with the local windows' own mask (Matthews'
            # correlation over the foreground: neither the larger nor the smaller cluster is favoured)
            best = max(splits, key=lambda c: matthews_corrcoef(fused[fg], c[fg]))
            chosen[pol] = fused & best
    if spec.get("alpha") is not None and alpha is not None:  # a stricter foreground than alpha != 0
        confident = resize_mask(alpha > spec["alpha"], fg.shape) | fg.all()  # (a whole-frame fallback stays)
        chosen = {pol: m & confident for pol, m in chosen.items()}
    return {pol: post(m, fg) for pol, m in chosen.items()}, out.info["polarity"]


def collect(ext: ModelExtractor, groups: list[tuple[str, Path]], scales: list[int], finetune: list[int],
            settings: Settings) -> list[dict[str, Any]]:
    """Per photo: species, group, per variant the Dice of each polarity; k-means' Dice; rule scores."""
    fg_fn = ForegroundExtractor(settings.models_dir, settings.foreground_model)
    kmeans = build_segmenter("kmeans", settings, None, {})
    rows = []
    for group, root in groups:
        for it in scan_dataset(root):
            if it.label_path is None:
                continue
            image = load_image(it.path, settings.max_image_pixels)
            foreground = fg_fn(image).mask
            alpha = fg_fn.alpha(image)  # the foreground model's confidence (the mask is alpha != 0)
            label = load_label(it.label_path)
            fg = resize_mask(foreground, (READOUT, READOUT))
            maps: dict[str, dict[int, np.ndarray]] = {}
            for s in scales:
                rgb = torch.from_numpy(resize_rgb(image, (s, s))).permute(2, 0, 1).unsqueeze(0).contiguous()
                maps[f"scale={s}"] = {ls: w.numpy() for ls, w in pattern_weights(ext.net, rgb).items()}
            # test-time flip: the weights of the mirrored photo, mirrored back, averaged with the plain ones
            rgb = torch.from_numpy(resize_rgb(image, (ext.size, ext.size))).permute(2, 0, 1).unsqueeze(0).contiguous()
            mirrored = pattern_weights(ext.net, rgb.flip(-1).contiguous())
            maps["tta=flip"] = {ls: (w + mirrored[ls].flip(-1).numpy()) / 2
                                for ls, w in maps[f"scale={ext.size}"].items()}
            for k in finetune:
                maps[f"finetune={k}"] = ext.weight_maps(image, foreground, k)[0]
            row: dict[str, Any] = {"rel_path": it.rel_path, "species": it.species, "group": group, "dice": {}}
            for name, w in maps.items():
                w256 = {ls: cv2.resize(x, (READOUT, READOUT), interpolation=cv2.INTER_LINEAR) for ls, x in w.items()}
                specs = variants(ext.local_sizes) if name == f"scale={ext.size}" else {DEFAULT: {}}
                for vname, spec in specs.items():
                    m, evidence = masks(image, foreground, w256, fg, spec, alpha)
                    key = vname if name == f"scale={ext.size}" else name
                    row["dice"][key] = {pol: round(scores_at(x, label, settings.eval_size).dice, 4) for pol, x in m.items()}
                    if spec.get("inner"):  # its own polarity evidence (on the inner outline)
                        row.setdefault("rule_scores_of", {})[key] = evidence["rule_scores"]
                    else:
                        row["rule_scores"] = evidence["rule_scores"]
            km = kmeans.segment(image, foreground)
            km_dice = {n: scores_at(x, label, settings.eval_size).dice for n, x in km.candidates.items()}
            readings = km.info["polarity"]["candidates"]
            row["kmeans"] = {pol: round(km_dice[n], 4) for pol, n in readings.items()}
            row["kmeans_oracle"] = round(max(km_dice.values()), 4)
            # k-means with the same foreground rim left out as the erode=K variants (a fair comparison)
            row["kmeans_erode"] = {}
            for k in ERODE:
                inner = _erode_foreground(k)
                kd = {n: scores_at(inner(resize_mask(x, fg.shape), fg), label, settings.eval_size).dice
                      for n, x in km.candidates.items()}
                row["kmeans_erode"][str(k)] = {**{pol: round(kd[n], 4) for pol, n in readings.items()},
                                               "oracle": round(max(kd.values()), 4)}
            rows.append(row)
            print(f"  {group[:5]} {it.rel_path:<45} default {row['dice'][DEFAULT]}", flush=True)
    return rows


def analyse(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Species x variant tables (label-free under the species vote, oracle polarity), group
    means and the pairwise leave-one-species-out against the default read-out."""
    keys = list(dict.fromkeys((r["group"], r["species"]) for r in rows))
    variants = list(rows[0]["dice"])
    lf = np.zeros((len(keys), len(variants)))
    orp = np.zeros_like(lf)
    km = np.zeros((len(keys), 2))
    km_erode = {k: np.zeros((len(keys), 2)) for k in rows[0].get("kmeans_erode", {})}
    for i, key in enumerate(keys):
        sp = [r for r in rows if (r["group"], r["species"]) == key]
        pol = species_call({rule: [r["rule_scores"][rule] for r in sp] for rule in SPECIES_RULES},
                           SPECIES_MARGIN).polarity
        for j, v in enumerate(variants):
            own = pol  # a variant with its own evidence votes with it
            if any(v in r.get("rule_scores_of", {}) for r in sp):
                own = species_call({rule: [r["rule_scores_of"][v][rule] for r in sp] for rule in SPECIES_RULES},
                                   SPECIES_MARGIN).polarity
            lf[i, j] = np.mean([r["dice"][v][own] for r in sp])
            orp[i, j] = np.mean([max(r["dice"][v].values()) for r in sp])
        km[i] = [np.mean([r["kmeans"][pol] for r in sp]), np.mean([r["kmeans_oracle"] for r in sp])]
        for k, arr in km_erode.items():
            arr[i] = [np.mean([r["kmeans_erode"][k][pol] for r in sp]), np.mean([r["kmeans_erode"][k]["oracle"] for r in sp])]
    groups = np.array([k[0] for k in keys])
    out: dict[str, Any] = {"variants": {}, "species": [f"{g}/{s}" for g, s in keys]}
    for j, v in enumerate(variants):
        entry: dict[str, Any] = {"by_species": {f"{g}/{s}": round(float(lf[i, j]), 4) for i, (g, s) in enumerate(keys)}}
        for g in dict.fromkeys(groups):
            sel = groups == g
            entry[g] = {"label-free": round(float(lf[sel, j].mean()), 4),
                        "oracle-polarity": round(float(orp[sel, j].mean()), 4)}
        # pairwise LOSO: the variant is picked for a species when it beats the default on the others
        picked = [bool(np.delete(lf[:, j], i).mean() > np.delete(lf[:, 0], i).mean()) for i in range(len(keys))]
        held = np.array([lf[i, j] if p else lf[i, 0] for i, p in enumerate(picked)])
        entry["loso"] = {g: {"picked_in": int(sum(p for p, gg in zip(picked, groups, strict=True) if gg == g)),
                             "species": int((groups == g).sum()),
                             "held-out": round(float(held[groups == g].mean()), 4)} for g in dict.fromkeys(groups)}
        out["variants"][v] = entry
    out["kmeans"] = {g: {"label-free": round(float(km[groups == g, 0].mean()), 4),
                         "oracle": round(float(km[groups == g, 1].mean()), 4)} for g in dict.fromkeys(groups)}
    # the rim's width chosen under leave-one-species-out among the default and every erode=K
    family = [j for j, v in enumerate(variants) if v == DEFAULT or v.startswith("erode=")]
    if len(family) > 1:
        picks = [family[int(np.argmax([np.delete(lf[:, j], i).mean() for j in family]))] for i in range(len(keys))]
        held = np.array([lf[i, j] for i, j in enumerate(picks)])
        out["loso_erode"] = {g: {"picks": [variants[j] for j, gg in zip(picks, groups, strict=True) if gg == g],
                                 "held-out": round(float(held[groups == g].mean()), 4)} for g in dict.fromkeys(groups)}
    out["kmeans_erode"] = {k: {g: {"label-free": round(float(arr[groups == g, 0].mean()), 4),
                                   "oracle": round(float(arr[groups == g, 1].mean()), 4)} for g in dict.fromkeys(groups)}
                           for k, arr in km_erode.items()}
    return out


def print_table(res: dict[str, Any]) -> None:
    groups = list(res["kmeans"])
    print(f"\n{'variant':<16}" + "".join(f"{g + ' LF':>16}{'orac-pol':>10}{'LOSO picks':>12}{'held-out':>10}"
                                         for g in groups))
    for v, e in res["variants"].items():
        print(f"{v:<16}" + "".join(f"{e[g]['label-free']:>16.3f}{e[g]['oracle-polarity']:>10.3f}"
                                   f"{e['loso'][g]['picked_in']:>8}/{e['loso'][g]['species']:<3}"
                                   f"{e['loso'][g]['held-out']:>10.3f}" for g in groups))
    print(f"{'kmeans':<16}" + "".join(f"{res['kmeans'][g]['label-free']:>16.3f}{res['kmeans'][g]['oracle']:>10.3f}"
                                      f"{'(oracle)':>12}{'':>10}" for g in groups))
    for g, e in res.get("loso_erode", {}).items():
        print(f"rim width picked on the other species, {g}: held-out {e['held-out']:.3f} "
              f"(picks: {', '.join(sorted(set(e['picks'])))})")
    for k, e in res.get("kmeans_erode", {}).items():
        print(f"{'kmeans erode=' + k:<16}" + "".join(f"{e[g]['label-free']:>16.3f}{e[g]['oracle']:>10.3f}"
                                                     f"{'(oracle)':>12}{'':>10}" for g in groups))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a checkpoint of gloper train")
    ap.add_argument("--dataset", type=Path, default=None, help="default: the example photos")
    ap.add_argument("--synthetic", type=int, default=2, metavar="N", help="photos per synthetic species (0: none)")
    ap.add_argument("--scales", default="256,320,384,448,512", help="input sides to feed the network at")
    ap.add_argument("--finetune", default="", help="per-photo fine-tuning steps to try, comma-separated")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"--model {args.model}: no such checkpoint; train one with `gloper train DATASET --out M.pt`")
    settings = Settings.from_env()
    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    shape = GloperSegmenter.model_defaults({"model": str(args.model)})  # S and local sizes, as a job reads them
    ext = ModelExtractor(args.model, shape["size"], shape["local_sizes"], torch.device("cpu"))
    scales = sorted({ext.size, *(int(s) for s in args.scales.split(",") if s)})
    finetune = [int(k) for k in args.finetune.split(",") if k and int(k) > 0]
    t0, load_before = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-readout-") as tmp:
        groups = [("shared", (args.dataset or examples()).resolve())]
        if args.synthetic:
            from gloper_jobs.data.synthetic import make_dataset

            make_dataset(Path(tmp) / "synthetic", per_species=args.synthetic, seed=SYNTHETIC_SEED, polarity="both")
            groups.append(("synthetic", Path(tmp) / "synthetic"))
        rows = collect(ext, groups, scales, finetune, settings)
    res = analyse(rows)
    print_table(res)
    report = {"model": str(args.model.resolve()), "dataset": str(groups[0][1]), "synthetic_per_species": args.synthetic,
              "machine": machine(),
              "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
              "seconds": round(time.time() - t0, 1), **res, "photos": rows}
    print(f"\nload before {report['load_before']}, after {report['load_after']}, {report['seconds']} s")
    write_report(report, args.out, "readout-variants")
    return report


if __name__ == "__main__":
    main()
