"""Quality and speed of every registered method on a labelled folder tree.

    python -m bench.quality [--dataset DIR] [--out FILE.json] [--methods gloper,kmeans]
        [--model NAME=M.pt ...] [--synthetic N] [--profile cpu|paper] [--param gloper.steps=50 ...]

Each method runs at its defaults (the ``cpu`` profile, GloPER's CPU profile included) on
the same u2netp foreground, through the pipeline every job uses; ``--model NAME=M.pt``
adds a dataset model (GloPER with ``model=M.pt``) as method NAME. The photos are the
labelled ones of ``--dataset`` (the example photos by default: group ``shared``) and,
unless ``--synthetic 0``, N photos per species of a synthetic set in both polarities
whose species differ (``gloper make-synthetic --polarity both``: group ``synthetic``).

Per method, photo and species it reports:

* ``oracle``: the best non-derived candidate per photo (the paper's figure);
* ``label-free``: what a user without labels gets: the method's default mask in the
  polarity the species vote calls (:func:`~gloper_jobs.jobs.polarity.species_call`, as a
  job decides it; a method with one reading: its choice);
* ``oracle-polarity``: the default mask in the better polarity per photo;
* ``calibrated``: ``gloper calibrate``'s pick (the candidate, both polarities, with the
  best mean Dice, :func:`calibrated_pick`) learnt on one half
  of a species' photos and scored on the other, two folds (a species with one photo has
  no figure; rho stays at its default);
* seconds per photo (the method's own).

Means weigh species equally, per group. Methods whose weights are missing are reported
as skipped, not failed. Polarity policies on held-out species: ``python -m
bench.polarity_species``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench import OUT, examples, machine
from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.data.images import load_image
from gloper_jobs.data.labels import load_label
from gloper_jobs.devices import configure_torch
from gloper_jobs.exceptions import WeightsMissingError
from gloper_jobs.foreground import Foreground, ForegroundExtractor
from gloper_jobs.jobs.pipeline import process_photo
from gloper_jobs.jobs.polarity import species_call
from gloper_jobs.methods import Segmenter, list_segmenters
from gloper_jobs.methods.choice import SPECIES_MARGIN, SPECIES_RULES
from gloper_jobs.methods.registry import build_segmenter
from gloper_jobs.scoring.reports import ItemScore, species_rows
from gloper_jobs.settings import Settings

#: the synthetic set's seed (every bench makes the same photos)
SYNTHETIC_SEED = 7


def calibrated_pick(rows: Sequence[Mapping[str, Any]]) -> str:
    """The candidate with the best mean Dice over ``rows`` (each ``{"dice": {name: Dice}}``);
    ties: the first name in the first row's order."""
    names = list(rows[0]["dice"])
    means = {n: float(np.mean([r["dice"][n] for r in rows])) for n in names}
    return max(names, key=lambda n: means[n])


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
                       eval_size: int, foreground_rim: float) -> dict[str, Any]:
    """Run every prepared ``(item, group, foreground, label)`` through the pipeline every job
    uses (:func:`process_photo`: masks written to a scratch folder, every candidate scored,
    ``foreground_rim`` trimmed off as a job's settings say).

    The foreground is computed once per photo for all methods; the seconds are the
    method's own (``timings.segment``). Returns the method's JSON block (per photo: Dice
    of each candidate, oracle, choice, the polarity evidence, seconds; per-photo means over
    every photo; per species and group: :func:`species_figures`) and prints its table.
    """
    rows, scores = [], []
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as scratch:
        for it, group, fg, _lab in prepared:
            out = process_photo(it.path, seg, Path(scratch) / group / it.rel_path, _fixed(fg),
                                it.label_path, it.species, eval_size, foreground_rim=foreground_rim)
            sec = float(out.info["timings"]["segment"])  # type: ignore[index]
            dice = {c.name: round((c.scores or {})["dice"], 4) for c in out.candidates}
            derived = sorted(c.name for c in out.candidates if c.derived)
            oracle = max((c for c in dice if c not in derived), key=lambda c: dice[c])
            info = {k: v for k, v in out.info.items() if k not in ("device", "timings")}
            polarity = info.get("polarity")
            readings: dict[str, str] = polarity.get("candidates", {}) if isinstance(polarity, dict) else {}
            rows.append({"rel_path": it.rel_path, "species": it.species, "group": group, "dice": dice,
                         "derived": derived, "oracle": oracle, "oracle_dice": dice[oracle], "choice": out.choice,
                         "choice_dice": dice[out.choice], "readings": readings,
                         "rule_scores": polarity.get("rule_scores", {}) if isinstance(polarity, dict) else {},
                         "oracle_polarity_dice": max((dice[c] for c in readings.values()), default=None),
                         "seconds": round(sec, 3), "info": info})
            scores.append(ItemScore(it.rel_path, it.species, oracle, dice[oracle], out.choice, dice[out.choice]))
            print(f"  {name:<10} {group[:5]} {it.rel_path:<40} oracle {dice[oracle]:.3f} ({oracle})  "
                  f"choice {dice[out.choice]:.3f} ({out.choice})  {sec:.2f}s", flush=True)
    seg.close()
    n = len(rows)
    figures = species_figures(rows)
    result: dict[str, Any] = {
        "params": seg.params.identity(), "images": rows,
        "mean_oracle_dice": round(sum(r["oracle_dice"] for r in rows) / n, 4),
        "mean_choice_dice": round(sum(r["choice_dice"] for r in rows) / n, 4),
        "mean_seconds": round(sum(r["seconds"] for r in rows) / n, 3),
        "species": [r.__dict__ for r in species_rows(scores)],
        **figures,
    }
    if all(r["oracle_polarity_dice"] is not None for r in rows):
        result["mean_oracle_polarity_dice"] = round(sum(r["oracle_polarity_dice"] for r in rows) / n, 4)
    print(f"\n{name} ({result['mean_seconds']} s/photo) · mean Dice at {eval_size}x{eval_size}")
    print(format_figures(figures))
    return result


#: the per-species figures, in the order they are printed
FIGURES = ("oracle", "label-free", "oracle-polarity", "calibrated")


def mean_or_none(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def calibrated_two_fold(rows: list[dict[str, Any]]) -> float | None:
    """``gloper calibrate``'s pick learnt on one half of a species' photos (every other
    photo) and scored on the other half, two folds; None with fewer than two photos."""
    if len(rows) < 2:
        return None
    picks = [calibrated_pick([r for j, r in enumerate(rows) if j % 2 != k]) for k in (0, 1)]
    return round(float(np.mean([r["dice"][picks[j % 2]] for j, r in enumerate(rows)])), 4)


def voted_label_free(rows: list[dict[str, Any]]) -> list[float]:
    """Per photo of one species, the Dice of the default mask in the polarity the species
    vote calls over every photo's rule scores (a method with one reading: its choice)."""
    if not all(r["readings"] and r["rule_scores"] for r in rows):
        return [r["choice_dice"] for r in rows]
    call = species_call({rule: [r["rule_scores"][rule] for r in rows] for rule in SPECIES_RULES}, SPECIES_MARGIN)
    return [r["dice"][r["readings"][call.polarity]] for r in rows]


def species_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per species (``by_species``) and per group (``by_group``, species weighing equally):
    oracle, label-free (the species vote), oracle-polarity and calibrated (two folds); the
    group's seconds per photo (the method's own)."""
    by_species: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys((r["group"], r["species"]) for r in rows):
        sp_rows = [r for r in rows if (r["group"], r["species"]) == key]
        orpol = [r["oracle_polarity_dice"] for r in sp_rows]
        by_species[f"{key[0]}/{key[1]}"] = {
            "group": key[0], "species": key[1], "photos": len(sp_rows),
            "oracle": mean_or_none([r["oracle_dice"] for r in sp_rows]),
            "label-free": mean_or_none(list(voted_label_free(sp_rows))),
            "oracle-polarity": mean_or_none(orpol) if None not in orpol else None,
            "calibrated": calibrated_two_fold(sp_rows),
        }
    by_group = {}
    for group in dict.fromkeys(v["group"] for v in by_species.values()):
        vals = [v for v in by_species.values() if v["group"] == group]
        by_group[group] = {f: mean_or_none([v[f] for v in vals]) for f in FIGURES}
        by_group[group]["seconds"] = round(float(np.mean([r["seconds"] for r in rows if r["group"] == group])), 3)
        by_group[group]["species"] = len(vals)
        by_group[group]["calibrated_species"] = sum(v["calibrated"] is not None for v in vals)
    return {"by_species": by_species, "by_group": by_group}


def format_figures(figures: dict[str, Any]) -> str:
    """The per-species table of :func:`species_figures` and its group means (``-``: no figure)."""
    def cell(v: float | None) -> str:
        return f"{v:>16.3f}" if v is not None else f"{'-':>16}"

    lines = [f"{'species':<24}{'photos':>7}" + "".join(f"{f:>16}" for f in FIGURES)]
    for name, v in figures["by_species"].items():
        lines.append(f"{name:<24}{v['photos']:>7}" + "".join(cell(v[f]) for f in FIGURES))
    for group, v in figures["by_group"].items():
        lines.append(f"{'MEAN ' + group:<24}{v['species']:>7}" + "".join(cell(v[f]) for f in FIGURES))
    return "\n".join(lines)


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


def _fixed(foreground: Foreground) -> Callable[[np.ndarray], Foreground]:
    """A foreground function that returns the one already computed for the photo."""
    return lambda _image: foreground


def prepare(settings: Settings, groups: list[tuple[str, Path]],
            limit: int | None = None) -> list[tuple[Any, str, Any, Any, float]]:
    """Every labelled photo (the first ``limit``) of each ``(group, folder)``: ``(item, group,
    foreground, label, foreground seconds)``, the u2netp foreground computed once for every method."""
    fg_fn = ForegroundExtractor(settings.models_dir, settings.foreground_model)
    prepared = []
    for group, root in groups:
        items = [it for it in scan_dataset(root) if it.label_path is not None][:limit]
        if not items:
            raise SystemExit(f"no labelled photos under {root}")
        for it in items:
            img = load_image(it.path, settings.max_image_pixels)
            t0 = time.perf_counter()
            fg = fg_fn(img)
            assert it.label_path is not None  # filtered above
            prepared.append((it, group, fg, load_label(it.label_path), time.perf_counter() - t0))
    return prepared


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=None, help="default: the example photos (GLOPER_EXAMPLES_DIR)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default bench/out/quality-<time>.json)")
    ap.add_argument("--methods", default=None, help="comma-separated subset (default: all registered)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=M.pt",
                    help="add a dataset model (gloper train's checkpoint) as method NAME")
    ap.add_argument("--synthetic", type=int, default=2, metavar="N",
                    help="photos per species of the synthetic set in both polarities (0: none; default 2)")
    ap.add_argument("--profile", default=None, help="parameter profile for every method (default cpu)")
    ap.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE")
    args = ap.parse_args(argv)
    dataset = (args.dataset or examples()).resolve()
    if args.synthetic < 0:
        raise SystemExit(f"--synthetic {args.synthetic}: give a number of photos per species, 0 for none")
    models: dict[str, str] = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise SystemExit(f"--model {spec!r}: write NAME=PATH to a checkpoint of gloper train")
        models[name] = str(Path(path).resolve())

    settings = Settings.from_env()
    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    methods = args.methods.split(",") if args.methods else list_segmenters()
    overrides = parse_params(args.param)
    load_before = os.getloadavg()
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        groups = [("shared", dataset)]
        if args.synthetic:
            from gloper_jobs.data.synthetic import make_dataset

            make_dataset(Path(tmp) / "synthetic", per_species=args.synthetic, seed=SYNTHETIC_SEED, polarity="both")
            groups.append(("synthetic", Path(tmp) / "synthetic"))
        prepared = prepare(settings, groups)

        report: dict[str, Any] = {
            "dataset": str(dataset), "synthetic_per_species": args.synthetic, "eval_size": settings.eval_size,
            "foreground_model": settings.foreground_model, "foreground_rim": settings.foreground_rim,
            "profile": args.profile or "cpu",
            "machine": machine(),
            "load_before": [round(x, 2) for x in load_before],
            "foreground": {f"{group}/{it.rel_path}": {"seconds": round(sec, 3), "fraction": round(fg.fraction, 4),
                                                      "fallback": fg.fallback}
                           for it, group, fg, _, sec in prepared},
            "methods": {},
        }
        runs = [(name, name, overrides.get(name, {})) for name in methods]
        runs += [(name, "gloper", {**overrides.get("gloper", {}), "model": path}) for name, path in models.items()]
        for name, method, params in runs:
            try:
                seg = build_segmenter(method, settings, args.profile, params)
            except WeightsMissingError as exc:
                report["methods"][name] = {"skipped": str(exc)}
                print(f"\n{name}: skipped ({exc})")
                continue
            report["methods"][name] = unless_weights_missing(
                name, partial(evaluate_segmenter, name, seg, [p[:4] for p in prepared], settings.eval_size,
                                         settings.foreground_rim))
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = round(time.time() - t_start, 1)
    print("\n" + markdown(report))
    print(f"\nload before {report['load_before']}, after {report['load_after']}, {report['seconds']} s")
    write_report(report, args.out, "quality")
    return report


def markdown(report: dict[str, Any]) -> str:
    """Per method and group: oracle / label-free / oracle polarity / calibrated and seconds (Markdown)."""
    lines = ["| method | photos | oracle | label-free | oracle polarity | calibrated (other half) | s/photo |",
             "|---|---|---|---|---|---|---|"]
    for name, res in report["methods"].items():
        for group, v in res.get("by_group", {}).items():
            cells = [f"{v[f]:.3f}" if v[f] is not None else "-" for f in FIGURES]
            lines.append(f"| {name} | {group} ({v['species']} species) | " + " | ".join(cells) + f" | {v['seconds']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
