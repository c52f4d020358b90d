"""Calibration: GloPER's settings swept over the labelled photos, the best per species kept.

The one home of what the ``calibrate`` kind (:mod:`gloper_jobs.jobs.kinds.calibrate`), the
``extract`` kind (``--settings-from JOB``) and ``gloper calibration JOB`` share, so no
kind imports another.

A calibration job tries every setting of a grid (over S, local sizes, steps, tau,
rho, ...) on every labelled photo, one (photo, setting) per item and task. When
it is done, the setting whose label-free choice scores the best mean Dice on a
species' photos is stored as that species' calibration (table ``calibration``); an
extract job submitted with ``--settings-from JOB`` then runs each photo with its
species' settings (species without a calibration keep the job's own settings).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from gloper_jobs.data.datasets import DatasetItem, iter_dataset
from gloper_jobs.exceptions import DatasetError, InvalidParameterError, JobNotFoundError
from gloper_jobs.store import Calibration, Candidate, Item, ItemStatus, Job, JobStatus
from gloper_jobs.store.models import utcnow
from gloper_jobs.store.repository import JobSpec, insert_statement

if TYPE_CHECKING:
    from gloper_jobs.settings import Settings

#: ``job.kind`` of a calibration job (the name of :class:`~gloper_jobs.jobs.kinds.calibrate.CalibrateKind`)
KIND = "calibrate"
#: the method calibrated when none is named
CALIBRATED_METHOD = "gloper"
#: species calibrated from fewer photos than this over several settings get a warning: on
#: held-out synthetic photos, settings picked from two photos per species cost 0.021 in one
#: direction and gained 0.001 in the other, while the polarity carried over
#: (docs/benchmarks.md, "How much of a calibration carries over")
FEW_PHOTOS = 3
#: a calibration item's rel_path is "<photo rel_path><SETTING_MARK><index into the grid>"
SETTING_MARK = "#setting="
#: job.params keys of an extract job that uses a calibration
PER_SPECIES = "per_species"
SETTINGS_FROM = "settings_from"


def parse_grid(pairs: Sequence[str], base: dict[str, Any] | None = None,
               method: str = CALIBRATED_METHOD) -> list[dict[str, Any]]:
    """The settings of a grid, validated: the product of every ``NAME=V1,V2`` pair.

    ``local_sizes`` alternatives are separated by ``;`` (``local_sizes=8,16;16,32``),
    every other parameter's by ``,``. ``base`` holds the fixed parameters; no pair at
    all is the one setting ``base``. Returns each setting's result-determining
    parameters (``method``'s identity dict). Raises :class:`InvalidParameterError`
    naming the bad pair or setting.
    """
    from gloper_jobs.methods.registry import get_segmenter_class

    params_cls = get_segmenter_class(method).Params
    axes: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, values = pair.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise InvalidParameterError(f"--grid {pair!r}: use NAME=V1,V2 (e.g. --grid steps=25,50)")
        if name not in params_cls.field_names():
            raise InvalidParameterError(f"--grid {name!r}: valid names: {', '.join(params_cls.field_names())}")
        alternatives = values.split(";") if name == "local_sizes" else values.split(",")
        axes[name] = [v.strip() for v in alternatives if v.strip()]
    settings: list[dict[str, Any]] = []
    for combo in itertools.product(*axes.values()):
        setting: dict[str, Any] = {**(base or {}), **dict(zip(axes, combo, strict=True))}
        try:
            settings.append(params_cls.build(**setting).identity())
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"grid setting {setting}: {exc}") from exc
    unique = {repr(sorted(s.items())): s for s in settings}
    return list(unique.values())


def calibration_spec(settings: Settings, dataset: Path, grid: list[dict[str, Any]], foreground: bool,
                     method: str = CALIBRATED_METHOD) -> JobSpec:
    """The job spec of a calibration job of ``method`` over ``grid`` (its identity includes the grid)."""
    from gloper_jobs.jobs.spec import job_spec

    base = job_spec(settings, dataset, method, None, None, foreground)
    return replace(base, kind=KIND, method=method, params={"grid": grid})


def calibration_items(dataset: Path, n_settings: int) -> list[DatasetItem]:
    """One item per (labelled photo, setting); raises :class:`DatasetError` without labels."""
    photos = [it for it in iter_dataset(Path(dataset)) if it.label_path is not None]
    if not photos:
        raise DatasetError(f"no labelled photos under {dataset}: a calibration job needs label/ or labels/ "
                           "folders")
    return [replace(it, rel_path=f"{it.rel_path}{SETTING_MARK}{k}") for it in photos for k in range(n_settings)]


def setting_of(job: Job, item: Item) -> tuple[dict[str, Any], str]:
    """The GloPER parameters a calibration item runs with, and its photo's rel_path."""
    photo, sep, index = item.rel_path.rpartition(SETTING_MARK)
    grid = job.params.get("grid", [])
    if not sep or not index.isdigit() or int(index) >= len(grid):
        raise InvalidParameterError(f"calibration item {item.rel_path!r} names no setting of job {job.id}'s grid")
    return dict(grid[int(index)]), photo


def item_params(job: Job, item: Item) -> dict[str, Any]:
    """The method parameters an extract item runs with: its species' calibration if the
    job was submitted with ``--settings-from``, else the job's own."""
    params = {k: v for k, v in job.params.items() if k not in (PER_SPECIES, SETTINGS_FROM)}
    return {**params, **job.params.get(PER_SPECIES, {}).get(item.species, {})}


def best_settings(session: Session, job: Job) -> list[Calibration]:
    """Compute and store (upsert) the best setting and candidate per species of a finished calibration job.

    For every species, every (setting, candidate) pair whose candidate the method can
    make its label-free choice (:meth:`~gloper_jobs.methods.base.Segmenter.choice_params`:
    for GloPER the size choice and the polarity, for k-means the polarity) is scored
    by its mean Dice over the species' photos; the best pair's setting plus the
    parameters that choose its candidate are stored. Ties keep the earlier setting of
    the grid, then the candidate the method chose itself.
    """
    from gloper_jobs.methods.registry import get_segmenter_class

    if job.id is None or job.kind != KIND:
        raise JobNotFoundError(f"job {job.id} is not a calibration job; `gloper jobs` lists them")
    method = get_segmenter_class(job.method)
    rows = session.exec(
        select(Item, Candidate).join(Candidate, col(Candidate.item_id) == col(Item.id))
        .where(Item.job_id == job.id, Item.status == ItemStatus.done.value)
    ).all()
    grid = job.params["grid"]
    scores: dict[str, dict[tuple[int, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    chosen: set[tuple[str, int, str]] = set()
    for item, cand in rows:
        if cand.dice is None:
            continue
        index = int(item.rel_path.rpartition(SETTING_MARK)[2])
        if cand.is_choice or method.choice_params(cand.name, grid[index]) is not None:
            scores[item.species][(index, cand.name)].append(cand.dice)
        if cand.is_choice:
            chosen.add((item.species, index, cand.name))
    out: list[Calibration] = []
    for species, per_pair in sorted(scores.items()):
        n_photos = max(len(v) for v in per_pair.values())
        means = {k: sum(v) / len(v) for k, v in per_pair.items() if len(v) == n_photos}
        best = min(means, key=lambda k: (-round(means[k], 9), k[0], (species, *k) not in chosen, k[1]))
        index, name = best
        params = {**grid[index], **(method.choice_params(name, grid[index]) or {})}
        values: dict[str, Any] = {"job_id": job.id, "species": species, "params": params, "dice": means[best],
                  "photos": n_photos, "settings_tried": len({k[0] for k in means}), "created_at": utcnow()}
        stmt = insert_statement(session, Calibration).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["job_id", "species"],
            set_={k: stmt.excluded[k] for k in values if k not in ("job_id", "species")})
        session.execute(stmt)
        out.append(Calibration(**values))
    return out


def calibration_of(session: Session, job_id: int, method: str | None = None) -> dict[str, dict[str, Any]]:
    """Species -> best parameters of calibration job ``job_id`` (which must be done, and
    have calibrated ``method`` when given)."""
    job = session.get(Job, job_id)
    if job is None or job.kind != KIND:
        raise JobNotFoundError(f"job {job_id} is not a calibration job; `gloper jobs` lists them")
    if method is not None and job.method != method:
        raise InvalidParameterError(f"calibration job {job_id} calibrated --method {job.method}, not {method}: "
                                    f"run with --method {job.method} or calibrate {method}")
    if job.status != JobStatus.done.value:
        raise JobNotFoundError(f"calibration job {job_id} is not finished ({job.status}); "
                               f"see `gloper status {job_id}`")
    stored = session.exec(select(Calibration).where(Calibration.job_id == job_id)).all()
    rows = stored or best_settings(session, job)
    if not rows:
        raise JobNotFoundError(f"calibration job {job_id} scored no photo; nothing to calibrate from")
    return {c.species: dict(c.params) for c in rows}


def format_calibration(rows: Sequence[Calibration], method: str = CALIBRATED_METHOD) -> str:
    """The printable table of ``gloper calibration JOB``: the settings every species shares
    once, then one line per species with its Dice and the settings it chose. Settings that
    do nothing with the others (a dataset model's per-photo training steps) are left out."""
    from gloper_jobs.methods.registry import get_segmenter_class

    if not rows:
        return "no species calibrated"
    idle = get_segmenter_class(method).Params.idle
    acting = [{k: v for k, v in c.params.items() if k not in idle(c.params)} for c in rows]
    shared = {k: v for k, v in acting[0].items() if all(p.get(k) == v for p in acting)}
    lines = ["settings of every species: " + ", ".join(f"{k}={v}" for k, v in shared.items()),
             f"{'species':<14} {'photos':>6} {'tried':>5} {'Dice':>6}  settings"]
    for c, params in zip(rows, acting, strict=True):
        own = ", ".join(f"{k}={v}" for k, v in params.items() if k not in shared) or "-"
        lines.append(f"{c.species:<14} {c.photos:>6} {c.settings_tried:>5} {c.dice:>6.3f}  {own}")
    few = [c.species for c in rows if c.photos < FEW_PHOTOS and c.settings_tried > 1]
    if few:
        who = "every species" if len(few) == len(rows) > 1 else ", ".join(few)
        lines.append(f"note: {who} chose among {max(c.settings_tried for c in rows)} settings from fewer "
                     f"than {FEW_PHOTOS} photos each: such a pick fits those photos (on other photos of the same "
                     f"species it gained nothing in our checks) while the polarity carries over; label more "
                     f"photos, or calibrate only mask and polarity with a one-setting grid (--grid rho=0.5)")
    return "\n".join(lines)
