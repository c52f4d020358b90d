"""Polarity per species, judged on species the choice never saw (leave-one-species-out).

    python -m bench.polarity_species --dataset ../shared/datasets/gloper-examples \\
        [--synthetic DIR] [--methods gloper,kmeans] [--model gloper-model=M.pt] \\
        [--photos FILE.json] [--out FILE.json]

Step 1 (skipped with ``--photos``, a previous run's JSON): every labelled photo of the
datasets (the shared ten and a synthetic set in both polarities, ``gloper make-synthetic
--polarity both``, made in a scratch folder unless ``--synthetic``) runs through the
pipeline every job uses (:func:`process_photo`, u2netp foreground) with each method at
its defaults; per photo the Dice of every candidate and every polarity rule's score are
kept. ``--model NAME=M.pt`` adds a dataset model (GloPER with ``model=M.pt``) as method NAME.

The synthetic set has ``--per-species`` photos (12) of every kind in both polarities and
the ``Holstein`` species (``contrary``: pale islands enclosed in a dark coat whose label is
the dark, so every rule calls the wrong colour, as on the black-and-white cow of the
photos nobody here has), so the evidence policies below have photos to act on and a
species to be wrong about.

Step 2: per method, the Dice of
  * ``oracle``: the best non-derived candidate per photo (the paper's figure);
  * ``darker``: the label-free candidate in the darker reading (the paper's rule);
  * ``oracle-polarity``: the label-free candidate in the better polarity per photo;
  * ``evidence:N:A``: the vote flips a species only with >= N photos, a share >= A of them
    suggesting lighter on their own, and lighter at every local size (GloPER);
  * every polarity policy: a species vote (the mean of a rule's scores over the
    species' photos, lighter only below ``-margin``, :func:`species_call`) per
    rule and margin, and ``darker``;
  * ``LOSO``: each species scored with the policy that is best on all *other* species
    (in-sample: the policy best on all species, scored on them);
  * ``calibrated``: per species, the best candidate (both polarities, every size
    choice) on one half of its photos, scored on the other half (two folds; species
    with one photo have no figure).
It prints in-sample and held-out-species figures side by side, per group (the shared
photos, the synthetic ones, all) and per species, and writes JSON
(``bench/out/polarity-species-<time>.json`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench import examples, machine
from bench.quality import SYNTHETIC_SEED, calibrated_two_fold, mean_or_none, write_report
from gloper_jobs.jobs.polarity import species_call
from gloper_jobs.methods.choice import POLARITY_RULES, SPECIES_MARGIN, SPECIES_RULES

MARGINS = (0.0, 0.1, 0.2, 0.3, 0.5)
#: a species-level policy may not lose more than this Dice to the darker reading on any
#: species it is selected on (the ``safe`` selection)
SAFE_LOSS = 0.05
#: the rules the bench combines (agreement needs several local sizes' masks: always 0 here)
RULES = [r for r in POLARITY_RULES if r != "agreement"]


def collect(datasets: list[Path], methods: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Per photo and method: species, group, Dice of every candidate, rule scores, seconds."""
    from gloper_jobs.data.datasets import scan_dataset
    from gloper_jobs.data.images import load_image
    from gloper_jobs.devices import configure_torch
    from gloper_jobs.foreground import ForegroundExtractor
    from gloper_jobs.jobs.pipeline import process_photo
    from gloper_jobs.methods.registry import build_segmenter
    from gloper_jobs.settings import Settings

    settings = Settings.from_env()
    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    fg_fn = ForegroundExtractor(settings.models_dir, settings.foreground_model)
    segmenters = {}
    for name, spec in methods.items():
        params = dict(spec)
        segmenters[name] = build_segmenter(params.pop("method"), settings, None, params)
    photos: list[dict[str, Any]] = []
    for group, root in zip(("shared", "synthetic"), datasets, strict=False):
        for it in scan_dataset(root):
            if it.label_path is None:
                continue
            fg = fg_fn(load_image(it.path, settings.max_image_pixels))
            row: dict[str, Any] = {"rel_path": it.rel_path, "species": it.species, "group": group, "methods": {}}
            def fixed(_image: np.ndarray, fg: Any = fg) -> Any:
                return fg  # the foreground computed once per photo for every method

            for name, seg in segmenters.items():
                with tempfile.TemporaryDirectory(prefix="bench-pol-") as scratch:
                    out = process_photo(it.path, seg, Path(scratch), fixed, it.label_path,
                                        it.species, settings.eval_size, foreground_rim=settings.foreground_rim)
                pol = out.info["polarity"]
                assert isinstance(pol, dict)
                row["methods"][name] = {
                    "dice": {c.name: round((c.scores or {})["dice"], 4) for c in out.candidates},
                    "derived": sorted(c.name for c in out.candidates if c.derived),
                    "candidates": pol["candidates"], "rule_scores": pol["rule_scores"],
                    "scale_scores": pol.get("scale_scores") or {},
                    "seconds": round(float(out.info["timings"]["segment"]), 3),  # type: ignore[index]
                }
                print(f"  {name:<12} {it.rel_path:<50} {out.info['timings']['segment']:.2f}s", flush=True)  # type: ignore[index]
            photos.append(row)
    return photos


#: the evidence policies' thresholds: a species flips only with at least N photos, a share A
#: of them suggesting lighter on their own, and the vote lighter at every local size too
EVIDENCE_PHOTOS = (3, 8, 12)
EVIDENCE_AGREE = (1.0, 0.8)
#: the library's default (gloper_jobs.jobs.polarity): the paper's darker reading; the vote
#: is shown as a suggestion and flips nothing (tests/test_bench_polarity_species.py ties them)
LIBRARY_POLICY = "darker"


def policies() -> list[str]:
    """``darker`` (the library's default), then the evidence policies (``evidence:N:A``, the
    default rules at the margin 0.1, most demanding first), then species votes from the
    most to the least demanding: every rule must agree, two rules (``a+b``), one rule; each
    at every margin, largest first. Ties in a selection go to the earlier (more
    conservative) policy."""
    sets = ["+".join(RULES)] + [f"{a}+{b}" for i, a in enumerate(RULES) for b in RULES[i + 1:]] + RULES
    evidence = [f"evidence:{n}:{a}" for n in sorted(EVIDENCE_PHOTOS, reverse=True) for a in EVIDENCE_AGREE]
    return ["darker", *evidence] + [f"{rules}>{m}" for rules in sets for m in sorted(MARGINS, reverse=True)]


def _evidence(rows: list[dict[str, Any]], photos: int, agree: float) -> str:
    """``evidence:N:A``: lighter only when the species vote (the library's rules at its margin)
    says lighter, the species has >= ``photos`` photos, a share >= ``agree`` of them suggest
    lighter on their own, and the vote says lighter at every local size the method has."""
    rules, margin = SPECIES_RULES, SPECIES_MARGIN
    vote = species_call({r: [row["rule_scores"][r] for row in rows] for r in rules}, margin)
    if vote.polarity != "lighter" or len(rows) < photos:
        return "darker"
    own = [species_call({r: [row["rule_scores"][r]] for r in rules}, margin).polarity for row in rows]
    if own.count("lighter") / len(own) < agree:
        return "darker"
    scales = set.intersection(*(set(row.get("scale_scores") or {}) for row in rows))
    for ls in scales:
        if species_call({r: [row["scale_scores"][ls][r] for row in rows] for r in rules}, margin).polarity != "lighter":
            return "darker"
    return "lighter"


def species_polarity(rows: list[dict[str, Any]], policy: str) -> str:
    """The polarity ``policy`` calls for one species' photos (``rows``: one method's blocks)."""
    if policy in ("darker", "lighter"):
        return policy
    if policy.startswith("evidence:"):
        _, photos, agree = policy.split(":")
        return _evidence(rows, int(photos), float(agree))
    rules, _, margin = policy.partition(">")
    scores = {r: [row["rule_scores"][r] for row in rows] for r in rules.split("+")}
    return species_call(scores, float(margin)).polarity


def select(table: np.ndarray, allowed: np.ndarray) -> int:
    """The allowed policy (column) with the best mean over the species (rows), among
    those that lose at most SAFE_LOSS to darker (column 0) on every one of them (darker
    itself always qualifies)."""
    ok = allowed & ((table - table[:, [0]]).min(axis=0) >= -SAFE_LOSS)
    return int(np.argmax(np.where(ok, table.mean(axis=0), -np.inf)))  # ties: the earlier policy


def per_species(photos: list[dict[str, Any]], method: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in photos:
        if method in p["methods"]:
            groups[p["species"]].append({**p["methods"][method], "group": p["group"]})
    return dict(sorted(groups.items()))


def dice_in(row: dict[str, Any], polarity: str) -> float:
    return float(row["dice"][row["candidates"][polarity]])


def analyse(photos: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Species -> figures, and the in-sample / held-out summary of one method."""
    species = per_species(photos, method)
    pols = policies()
    # species x policy: mean Dice of the species' photos under the species' call
    table = np.array([[np.mean([dice_in(r, species_polarity(rows, pol)) for r in rows]) for pol in pols]
                      for rows in species.values()])
    names = list(species)
    every = np.ones(len(pols), dtype=bool)
    fixed = np.array([p == "darker" or p.startswith("evidence:") or p.endswith(f">{SPECIES_MARGIN}") for p in pols])
    in_best, in_safe = select(table, every), select(table, fixed)
    default_name = LIBRARY_POLICY
    default = pols.index(default_name)
    out: dict[str, Any] = {"species": {}, "policies": pols, "in_sample_policy": pols[in_best],
                           "in_sample_safe_policy": pols[in_safe], "default_policy": default_name}
    for i, sp in enumerate(names):
        rows = species[sp]
        others = np.delete(table, i, axis=0)
        held, held_safe = select(others, every), select(others, fixed)
        out["species"][sp] = {
            "group": rows[0]["group"], "photos": len(rows),
            "oracle": round(float(np.mean([max(v for k, v in r["dice"].items() if k not in r["derived"])
                                           for r in rows])), 4),
            "darker": round(float(table[i, 0]), 4),
            "oracle-polarity": round(float(np.mean([max(dice_in(r, "darker"), dice_in(r, "lighter"))
                                                    for r in rows])), 4),
            "default-vote": round(float(table[i, default]), 4),
            "in-sample": round(float(table[i, in_best]), 4), "held-out": round(float(table[i, held]), 4),
            "in-safe": round(float(table[i, in_safe]), 4), "held-safe": round(float(table[i, held_safe]), 4),
            "held-out-policy": pols[held], "held-safe-policy": pols[held_safe], "calibrated": calibrated_two_fold(rows),
            "seconds": round(float(np.mean([r["seconds"] for r in rows])), 3),
            "by_policy": {pol: round(float(table[i, j]), 4) for j, pol in enumerate(pols)},
        }
    summary: dict[str, dict[str, float | None]] = {}
    for group in ("shared", "synthetic", "all"):
        rows_g = [v for v in out["species"].values() if group == "all" or v["group"] == group]
        if not rows_g:
            continue
        summary[group] = {c: mean_or_none([v[c] for v in rows_g]) for c in COLS}
        summary[group]["worst-loss-default"] = round(min(v["default-vote"] - v["darker"] for v in rows_g), 4)
        summary[group]["worst-loss-held-safe"] = round(min(v["held-safe"] - v["darker"] for v in rows_g), 4)
    out["summary"] = summary
    out["policy_worst"] = policy_worst(out["species"], REPORTED_POLICIES)
    return out


#: the fixed policies whose mean and worst species every run reports: the library's default,
#: the evidence rules, and the earlier default (the vote flips a species by itself)
REPORTED_POLICIES = ("darker", "evidence:12:1.0", "evidence:8:0.8", "evidence:3:1.0", f"minority+enclosed>{SPECIES_MARGIN}")


def policy_worst(species: dict[str, dict[str, Any]], names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per policy (and the two held-out selections) and group: mean Dice over species, and
    the species that loses most against the darker reading, with its loss."""
    out: dict[str, dict[str, Any]] = {}
    columns: dict[str, tuple[str, str]] = {name: ("by_policy", name) for name in names}
    columns["held-out (rules x margins)"] = ("held-out", "")
    columns[f"held-out (rules at {SPECIES_MARGIN}, evidence)"] = ("held-safe", "")

    def get(v: dict[str, Any], where: tuple[str, str]) -> float:
        return float(v[where[0]][where[1]] if where[1] else v[where[0]])

    for name, where in columns.items():
        out[name] = {}
        for group in ("shared", "synthetic", "all"):
            rows = {sp: v for sp, v in species.items() if group == "all" or v["group"] == group}
            if not rows:
                continue
            losses = {sp: get(v, where) - v["darker"] for sp, v in rows.items()}
            worst = min(losses, key=lambda sp: losses[sp])
            out[name][group] = {"mean": round(float(np.mean([get(v, where) for v in rows.values()])), 4),
                                "worst_species": worst, "worst_loss": round(losses[worst], 4)}
    return out


def mask_choice(photos: list[dict[str, Any]], method: str) -> dict[str, Any] | None:
    """GloPER's mask choice (``consensus``, ``fused``, ``local_<l>``) in the polarity the
    default species vote calls: each base's mean Dice per group, the base selected on all
    species (in-sample) and each species scored with the base selected on the others."""
    species = per_species(photos, method)
    first = next(iter(species.values()))[0]
    if "consensus" not in first["dice"]:
        return None
    bases = [n for n in first["dice"] if not n.endswith("_lighter")]
    default = f"{'+'.join(SPECIES_RULES)}>{SPECIES_MARGIN}"
    table = np.array([[np.mean([r["dice"][b + ("_lighter" if species_polarity(rows, default) == "lighter" else "")]
                                for r in rows]) for b in bases] for rows in species.values()])
    groups = [rows[0]["group"] for rows in species.values()]
    held = [float(table[i, int(np.argmax(np.delete(table, i, axis=0).mean(axis=0)))]) for i in range(len(groups))]
    out: dict[str, Any] = {"bases": bases, "in_sample": bases[int(np.argmax(table.mean(axis=0)))]}
    for group in ("shared", "synthetic", "all"):
        idx = [i for i, g in enumerate(groups) if group == "all" or g == group]
        if idx:
            out[group] = {**{b: round(float(table[idx, j].mean()), 4) for j, b in enumerate(bases)},
                          "held-out": round(float(np.mean([held[i] for i in idx])), 4)}
    return out


def _fmt(v: float | None) -> str:
    return f"{v:>9.3f}" if v is not None else f"{'-':>9}"


COLS = ("oracle", "darker", "oracle-polarity", "default-vote", "in-sample", "held-out", "in-safe", "held-safe",
        "calibrated")
HEADS = ("oracle", "darker", "orac-pol", "default", "in:r x m", "held:rxm", f"in:r@{SPECIES_MARGIN}",
         f"held:r@{SPECIES_MARGIN}", "calib")


def print_policies(res: dict[str, Any]) -> None:
    print("  policy                              group       mean  worst species vs darker")
    for pol, groups in res["policy_worst"].items():
        for group, g in groups.items():
            print(f"  {pol:<36}{group:<10}{g['mean']:>7.3f}  {g['worst_species']} {g['worst_loss']:+.3f}")


def print_method(name: str, res: dict[str, Any]) -> None:
    print(f"\n== {name}: mean Dice per species (species weigh equally). Selected (no species of the "
          f"selection set may lose > {SAFE_LOSS} to darker) among rules x margins: in-sample "
          f"{res['in_sample_policy']}; among rules at margin {SPECIES_MARGIN}: {res['in_sample_safe_policy']}; "
          f"library default {res['default_policy']}")
    print(f"{'':<14}" + "".join(f"{c:>9}" for c in HEADS)
          + f"  held-out policy: rules x margins / rules at {SPECIES_MARGIN}")
    for sp, v in res["species"].items():
        print(f"{sp:<14}" + "".join(_fmt(v[c]) for c in COLS) + f"  {v['held-out-policy']} / {v['held-safe-policy']}")
    for group, s in res["summary"].items():
        print(f"{'MEAN ' + group:<14}" + "".join(_fmt(s[c]) for c in COLS)
              + f"  worst loss vs darker: default {s['worst-loss-default']:+.3f}, "
                f"held-out r@{SPECIES_MARGIN} {s['worst-loss-held-safe']:+.3f}")


def markdown(report: dict[str, Any]) -> str:
    """The README's table: per method and group, the figures side by side (Markdown)."""
    lines = ["| method | photos | oracle | darker | oracle polarity | label-free (default) | in-sample, rules x margins "
             f"| held-out species, rules x margins | in-sample, rules at {SPECIES_MARGIN} "
             f"| held-out species, rules at {SPECIES_MARGIN} | calibrated (other half) | worst species vs darker |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in report["methods"].items():
        for group, s in res["summary"].items():
            cells = [_fmt(s[c]).strip() for c in COLS]
            lines.append(f"| {name} | {group} | " + " | ".join(cells) + f" | {s['worst-loss-default']:+.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=None, help="default: the example photos (GLOPER_EXAMPLES_DIR)")
    ap.add_argument("--synthetic", type=Path, default=None,
                    help="default: make one (--polarity both, the contrary species, --per-species photos each)")
    ap.add_argument("--per-species", type=int, default=12,
                    help="synthetic photos per species (enough for the evidence policies to act)")
    ap.add_argument("--methods", default="gloper,kmeans")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=M.pt")
    ap.add_argument("--photos", type=Path, default=None, help="reuse step 1 of a previous run's JSON")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    args.dataset = args.dataset or examples()
    t0 = time.time()
    load_before = os.getloadavg()
    if args.photos:
        photos = json.loads(args.photos.read_text())["photos"]
    else:
        methods: dict[str, dict[str, str]] = {m: {"method": m} for m in args.methods.split(",")}
        for spec in args.model:
            name, _, path = spec.partition("=")
            methods[name] = {"method": "gloper", "model": path}
        with tempfile.TemporaryDirectory(prefix="bench-syn-") as tmp:
            synthetic = args.synthetic
            if synthetic is None:
                from gloper_jobs.data.synthetic import make_dataset

                synthetic = Path(tmp) / "synthetic"
                make_dataset(synthetic, per_species=args.per_species, seed=SYNTHETIC_SEED, polarity="both",
                             contrary=True)
            photos = collect([args.dataset, synthetic], methods)
    names = list(dict.fromkeys(m for p in photos for m in p["methods"]))
    report: dict[str, Any] = {
        "dataset": str(args.dataset), "machine": machine(),
        "load_before": [round(x, 2) for x in load_before], "photos": photos, "methods": {},
    }
    for name in names:
        report["methods"][name] = analyse(photos, name)
        print_method(name, report["methods"][name])
        print_policies(report["methods"][name])
        choice = mask_choice(photos, name)
        if choice:
            report["methods"][name]["mask_choice"] = choice
            print(f"  mask choice in the voted polarity (in-sample best: {choice['in_sample']}; held-out: each "
                  "species with the mask best on the others)")
            for group in ("shared", "synthetic", "all"):
                if group in choice:
                    print(f"    {group:<10} " + "  ".join(f"{k} {v:.3f}" for k, v in choice[group].items()))
    print("\n" + markdown(report))
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = round(time.time() - t0, 1)
    print(f"\nload before {report['load_before']}, after {report['load_after']}, {report['seconds']} s")
    write_report(report, args.out, "polarity-species")
    return report


if __name__ == "__main__":
    main()
