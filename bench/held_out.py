"""[quality]'s "done" on photos nobody tuned to, measured through the tool's own commands.

    python -m bench.held_out --dataset OTHER [--model M.pt | --train-param K=V ...]
        [--calibrate-on LABELLED] [--baseline kmeans] [--grid NAME=V1,V2 ...]
        [--narrow-grid NAME=V ...] [--out FILE.json]

Whoever holds labelled photos the project never saw (the "other ten") runs this once
and gets every figure the issue's done-criteria name, from one run on one machine.
On a scratch SQLite store and results folder (nothing touches the user's store) it runs
what a user runs, through the same job path (:func:`~gloper_jobs.jobs.runner.run_dataset`):

0. without ``--model``: ``gloper train OTHER --out M.pt`` with ``gloper train``'s defaults
   (``--train-param K=V`` overrides one), the model the issue names: trained, without
   labels, on the archive it then extracts. It is kept beside the JSON report
   (``OUT.model.pt`` for ``--out OUT.json``); a second run with the same ``--out``
   continues it, or reuses it when it is finished;
1. ``gloper run OTHER --method gloper --param model=M.pt``: the label-free figure, each
   species in the polarity its photos voted for, as the job stores it;
2. ``gloper run OTHER --method BASELINE`` (k-means by default): its oracle and
   label-free figures in the same run;
3. ``gloper calibrate LABELLED --method gloper --param model=M.pt [--grid ...]``
   (``LABELLED``: the example photos unless ``--calibrate-on``);
4. ``gloper run OTHER --method gloper --param model=M.pt --settings-from <3>``: the
   calibrated figure (species without a calibration keep the label-free settings and
   are listed);
5. the same two with a one-setting grid (``--narrow-grid``, default ``rho=0.5``, GloPER's
   own): the calibration then learns only each species' mask and polarity, which is
   what carried over from a few photos on synthetic species (docs/benchmarks.md); its
   figure (``calibrated_narrow``) stands beside the other, the criteria keep the issue's
   grid. When ``--grid`` is that one setting already, nothing runs twice.

Per species (means weigh species equally): the dataset model's label-free, darker
reading, oracle polarity, oracle, calibrated and narrowly calibrated Dice; the baseline's oracle and
label-free. Then each criterion of the issue, with its figure and whether it holds:
label-free >= ``LABEL_FREE_MIN``; label-free >= the baseline's oracle; calibrated >=
``CALIBRATED_MIN``; no species' label-free below its darker reading by more than
``FLIP_TOLERANCE``. Photos that fail are counted and named, not scored. Writes JSON
(``bench/out/held-out-<time>.json`` unless ``--out``); the wall clock of each stage is
in it beside the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import select

from bench import OUT, examples, machine
from bench.quality import mean_or_none, write_report
from gloper_jobs.exceptions import GloperError
from gloper_jobs.jobs.calibration import calibration_of
from gloper_jobs.jobs.runner import RunSummary, run_dataset
from gloper_jobs.jobs.training import train_dataset
from gloper_jobs.methods.gloper.params import GloperParams
from gloper_jobs.settings import Settings
from gloper_jobs.store import Calibration, Item, ItemStatus, Store
from gloper_jobs.store.repository import get_job, item_candidates

#: what a calibration chose per species, as the report shows it (the rest is the job's own settings)
CALIBRATED_KEYS = ("choice", "polarity", "rho", "size", "local_sizes")
#: the issue's thresholds: label-free mean Dice, calibrated mean Dice, and how far a
#: species' label-free Dice may fall below its darker reading (a wrong flip)
LABEL_FREE_MIN = 0.60
CALIBRATED_MIN = 0.65
FLIP_TOLERANCE = 0.05
#: the one-setting grid of step 5: GloPER's own rho, so only the mask and the polarity are learnt
NARROW_GRID = (f"rho={GloperParams.rho}",)


def photo_figures(store: Store, job_id: int) -> tuple[dict[str, dict[str, float | None]], dict[str, str]]:
    """Per labelled done photo of job ``job_id``: its species and the Dice of its choice
    (``chosen``), of the darker and lighter readings of the method's default mask, of the
    better of the two (``oracle_polarity``) and of its best non-derived candidate
    (``oracle``); and the photos that failed (``rel_path -> error``)."""
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"dice": {}})
    with store.session() as s:
        for item, cand in item_candidates(s, job_id):
            if item.label_path is None or cand.dice is None:
                continue
            row = per[item.rel_path]
            row["species"] = item.species
            row["dice"][cand.name] = cand.dice
            if cand.is_choice:
                row["chosen"] = cand.dice
            row.setdefault("derived", set())
            if cand.derived:
                row["derived"].add(cand.name)
            polarity = (item.info or {}).get("polarity")
            row["readings"] = polarity.get("candidates", {}) if isinstance(polarity, dict) else {}
        failed = {i.rel_path: i.error or "failed" for i in
                  s.exec(select(Item).where(Item.job_id == job_id, Item.status == ItemStatus.failed.value)).all()}
    out: dict[str, dict[str, Any]] = {}
    for rel, row in per.items():
        dice, readings = row["dice"], row["readings"]
        plain = [d for n, d in dice.items() if n not in row["derived"]] or list(dice.values())
        darker, lighter = (dice.get(readings.get(p, "")) for p in ("darker", "lighter"))
        out[rel] = {"species": row["species"], "chosen": row.get("chosen"), "darker": darker, "lighter": lighter,
                    "oracle_polarity": max(darker, lighter) if darker is not None and lighter is not None else None,
                    "oracle": max(plain)}
    return out, failed


def species_means(photos: dict[str, dict[str, Any]], field: str) -> dict[str, float | None]:
    """Species -> the mean of ``field`` over its photos (None when a photo has no figure)."""
    by: dict[str, list[float | None]] = defaultdict(list)
    for row in photos.values():
        by[row["species"]].append(row[field])
    return {sp: (None if None in v else round(float(np.mean(v)), 4)) for sp, v in sorted(by.items())}  # type: ignore[arg-type]


def verdicts(fig: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's criteria: each with its figure, its bar and whether it holds (None: no figure)."""
    lf, base, cal = fig["label_free"], fig["baseline_oracle"], fig["calibrated"]
    worst = fig["worst_vs_darker"]
    rows = [
        (f"label-free >= {LABEL_FREE_MIN:.2f}", lf, LABEL_FREE_MIN),
        (f"label-free >= {fig['baseline']}'s oracle (same run)", lf, base),
        (f"calibrated >= {CALIBRATED_MIN:.2f}", cal, CALIBRATED_MIN),
        (f"worst species, label-free - darker >= {-FLIP_TOLERANCE:.2f}", worst, -FLIP_TOLERANCE),
    ]
    return [{"criterion": name, "figure": value, "bar": bar,
             "holds": None if value is None or bar is None else bool(value >= bar - 1e-9)}
            for name, value, bar in rows]


def _timed(stages: dict[str, float], name: str, run: Any) -> RunSummary:
    t0 = time.perf_counter()
    summary: RunSummary = run()
    stages[name] = round(time.perf_counter() - t0, 1)
    if summary.job.status != "done":
        raise SystemExit(f"{name}: job {summary.job.id} ended {summary.job.status}:\n{summary.report}")
    return summary


def train_on(dataset: Path, out: Path, params: dict[str, str]) -> dict[str, Any]:
    """``gloper train DATASET --out OUT`` with ``params`` over its defaults (continuing a
    checkpoint at ``out``); what the report records of it."""
    settings = Settings.from_env()
    t0 = time.perf_counter()
    result = train_dataset(dataset, out, settings, dict(params), progress=True)
    return {"trained_on": str(dataset), "params": dict(params), "steps": result.step,
            "seconds": round(time.perf_counter() - t0, 1), "train_seconds": round(result.seconds, 1),
            "photos": result.photos, "out": str(out)}


def held_out(model: Path, dataset: Path, calibrate_on: Path, baseline: str = "kmeans",
             grid: tuple[str, ...] = (), workdir: Path | None = None,
             narrow_grid: tuple[str, ...] = NARROW_GRID) -> dict[str, Any]:
    """Run the jobs of the module doc on a scratch store under ``workdir`` (a temporary
    folder when None) and return the report (figures per species, criteria)."""
    with tempfile.TemporaryDirectory(prefix="bench-held-out-") as tmp:
        root = Path(workdir or tmp)
        settings = Settings.from_env(database_url=f"sqlite:///{root / 'held-out.db'}", results_dir=root / "results")
        store = Store(settings.database_url)
        params = {"model": str(model)}
        run: dict[str, Any] = {"settings": settings, "store": store, "progress": False}
        stages: dict[str, float] = {}
        t_start = time.perf_counter()
        lf = _timed(stages, "label-free", lambda: run_dataset(dataset, "gloper", params=params, **run))
        base = _timed(stages, baseline, lambda: run_dataset(dataset, baseline, **run))
        cal = _timed(stages, "calibrate", lambda: run_dataset(calibrate_on, "gloper", params=params,
                                                               kind="calibrate", grid=grid, **run))
        assert cal.job.id is not None
        with store.session() as s:
            calibrated_species = sorted(calibration_of(s, cal.job.id, "gloper"))
            learnt = {c.species: {"params": {k: c.params[k] for k in CALIBRATED_KEYS if k in c.params},
                                  "dice_in_sample": round(c.dice, 4), "photos": c.photos}
                      for c in s.exec(select(Calibration).where(Calibration.job_id == cal.job.id)).all()}
        calr = _timed(stages, "calibrated", lambda: run_dataset(dataset, "gloper", params=params,
                                                                settings_from=cal.job.id, **run))
        narrow_job = calr.job.id
        if tuple(narrow_grid) != tuple(grid):
            cal_n = _timed(stages, "calibrate narrow", lambda: run_dataset(
                calibrate_on, "gloper", params=params, kind="calibrate", grid=narrow_grid, **run))
            narrow_job = _timed(stages, "calibrated narrow", lambda: run_dataset(
                dataset, "gloper", params=params, settings_from=cal_n.job.id, **run)).job.id
        seconds = round(time.perf_counter() - t_start, 1)
        photos, failed = photo_figures(store, lf.job.id)  # type: ignore[arg-type]
        base_photos, base_failed = photo_figures(store, base.job.id)  # type: ignore[arg-type]
        cal_photos, cal_failed = photo_figures(store, calr.job.id)  # type: ignore[arg-type]
        narrow_photos, _ = photo_figures(store, narrow_job)  # type: ignore[arg-type]
        with store.session() as s:
            calls = (get_job(s, lf.job.id).species_polarity or {}).get("calls", {})
        store.dispose()
    if not photos:
        raise SystemExit(f"no labelled photo of {dataset} was scored: each needs a label/ or labels/ file")
    table = {
        "label_free": species_means(photos, "chosen"), "darker": species_means(photos, "darker"),
        "oracle_polarity": species_means(photos, "oracle_polarity"), "oracle": species_means(photos, "oracle"),
        "calibrated": species_means(cal_photos, "chosen"),
        "calibrated_narrow": species_means(narrow_photos, "chosen"),
        "baseline_oracle": species_means(base_photos, "oracle"),
        "baseline_label_free": species_means(base_photos, "chosen"),
    }
    species = list(table["label_free"])
    gaps = {sp: round(table["label_free"][sp] - table["darker"][sp], 4) for sp in species  # type: ignore[operator]
            if table["label_free"][sp] is not None and table["darker"][sp] is not None}
    figures: dict[str, object] = {name: mean_or_none(list(col.values())) for name, col in table.items()}
    figures["baseline"] = baseline
    figures["worst_vs_darker"] = min(gaps.values()) if gaps else None
    return {
        "model": str(model), "dataset": str(dataset), "calibrate_on": str(calibrate_on), "baseline": baseline,
        "grid": list(grid), "narrow_grid": list(narrow_grid), "photos": len(photos), "species": species,
        "per_species": {sp: {**{name: col.get(sp) for name, col in table.items()}, "vs_darker": gaps.get(sp),
                             "calibrated_from": sp in calibrated_species,
                             "polarity": calls.get(sp, {}).get("polarity"), "how": calls.get(sp, {}).get("how"),
                             "suggestion": (calls.get(sp, {}).get("suggestion") or {}).get("polarity"),
                             "vote_score": calls.get(sp, {}).get("score")}
                        for sp in species},
        "calibrated_species": calibrated_species, "calibration": learnt,
        "uncalibrated_species": [sp for sp in species if sp not in calibrated_species],
        "figures": figures, "criteria": verdicts(figures),
        "failed": {"label-free": failed, baseline: base_failed, "calibrated": cal_failed},
        "stages_seconds": stages, "seconds": seconds,
    }


def markdown(report: dict[str, Any]) -> str:
    """Per species and mean: the model's figures, the calibrated one, the baseline's; then the criteria."""
    cols = ("label_free", "darker", "oracle_polarity", "oracle", "calibrated", "calibrated_narrow",
            "baseline_oracle", "baseline_label_free")
    head = ["label-free", "darker", "oracle polarity", "oracle", "calibrated",
            f"calibrated ({', '.join(report['narrow_grid'])})",
            f"{report['baseline']} oracle", f"{report['baseline']} label-free"]

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = ["| species | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for sp, row in report["per_species"].items():
        mark = "" if row["calibrated_from"] else " (no calibration)"
        lines.append(f"| {sp}{mark} | " + " | ".join(cell(row[c]) for c in cols) + " |")
    lines.append("| **mean** | " + " | ".join(cell(report["figures"][c]) for c in cols) + " |")
    lines.append("")
    for c in report["criteria"]:
        state = {True: "holds", False: "FAILS", None: "no figure"}[c["holds"]]
        lines.append(f"- {c['criterion']}: {cell(c['figure'])} (bar {cell(c['bar'])}): {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None,
                    help="a checkpoint of gloper train (default: train one on --dataset with its defaults)")
    ap.add_argument("--train-param", action="append", default=[], metavar="K=V",
                    help="without --model: a gloper train --param for the model trained on --dataset")
    ap.add_argument("--dataset", type=Path, required=True, help="labelled photos the model and rules never saw")
    ap.add_argument("--calibrate-on", type=Path, default=None,
                    help="labelled photos to calibrate on (default: the example photos, GLOPER_EXAMPLES_DIR)")
    ap.add_argument("--baseline", default="kmeans", help="the method whose oracle is the bar (default kmeans)")
    ap.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                    help="calibration grid axis (default: gloper calibrate's own, rho=0.4,0.5,0.6)")
    ap.add_argument("--narrow-grid", action="append", default=None, metavar="NAME=V",
                    help=f"the one-setting grid of the second calibration (default: {' '.join(NARROW_GRID)})")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default bench/out/held-out-<time>.json)")
    args = ap.parse_args(argv)
    for flag, path in (("--model", args.model), ("--dataset", args.dataset), ("--calibrate-on", args.calibrate_on)):
        if path is not None and not path.exists():
            raise SystemExit(f"{flag} {path}: no such file or folder")
    if args.model is not None and args.train_param:
        raise SystemExit("--train-param trains a model on --dataset; with --model there is none to train")
    bad = [p for p in args.train_param if "=" not in p]
    if bad:
        raise SystemExit(f"--train-param {bad[0]!r} is not K=V (e.g. --train-param steps=600)")
    train_params = dict(p.split("=", 1) for p in args.train_param)
    load_before = [round(x, 2) for x in os.getloadavg()]
    out = args.out or OUT / f"held-out-{time.strftime('%Y%m%d-%H%M%S')}.json"
    training = None
    model = args.model
    if model is None:  # the model: gloper train's defaults on the photos it then extracts
        model = out.with_suffix(".model.pt")
        model.parent.mkdir(parents=True, exist_ok=True)
        print(f"training {model} on {args.dataset} (gloper train's defaults"
              + (f", {' '.join(args.train_param)}" if args.train_param else "") + ")", flush=True)
        try:
            training = train_on(args.dataset.resolve(), model, train_params)
        except GloperError as e:
            raise SystemExit(f"training on {args.dataset}: {e}") from None
    report = held_out(model.resolve(), args.dataset.resolve(), (args.calibrate_on or examples()).resolve(),
                      args.baseline, tuple(args.grid), narrow_grid=tuple(args.narrow_grid or NARROW_GRID))
    report["training"] = training
    report["machine"] = machine()
    report["load_before"] = load_before
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(markdown(report))
    if training is not None:
        print(f"\nmodel: trained on {training['trained_on']} ({training['photos']} photos, {training['steps']} steps, "
              f"{training['train_seconds']} s of training in all)")
    print(f"\n{report['photos']} photos, stages {report['stages_seconds']} s, "
          f"load before {load_before}, after {report['load_after']}")
    write_report(report, out, "held-out")
    return report


if __name__ == "__main__":
    main()
