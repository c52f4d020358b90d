"""Training jobs: calibration sweeps of GloPER's settings on the labelled photos.

Its items go to ``train.<device class>`` (GloPER's ``gpu``, or ``--device-class``).

A training job tries every setting of a grid (over S, local sizes, steps, tau,
rho, ...) on every labelled photo, one (photo, setting) per item and task. When
it is done, the setting whose label-free choice scores the best mean Dice on a
species' photos is stored as that species' calibration; an extract job submitted
with ``--settings-from JOB`` then runs each photo with its species' settings
(species without a calibration keep the job's own settings).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlmodel import Session, col, select

from gloper_jobs.data.datasets import DatasetItem, iter_dataset
from gloper_jobs.exceptions import DatasetError, InvalidParameterError, JobNotFoundError
from gloper_jobs.jobs.kinds.base import JobKind, Submission, SubmitRequest, device_class, job_spec
from gloper_jobs.jobs.queues import queue_name
from gloper_jobs.store import Calibration, Candidate, Item, ItemStatus, Job, JobStatus
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo
from gloper_jobs.store.models import utcnow
from gloper_jobs.store.repository import JobSpec, insert_statement

if TYPE_CHECKING:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.pipeline import ItemOutcome
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Store

#: a training item's rel_path is "<photo rel_path><SETTING_MARK><index into the grid>"
SETTING_MARK = "#setting="
TRAIN_METHOD = "gloper"
#: job.params keys of an extract job that uses a calibration
PER_SPECIES = "per_species"
SETTINGS_FROM = "settings_from"


class TrainKind(JobKind):
    """A calibration sweep: every ``--grid`` setting of GloPER on every labelled photo.

    When it drains, the best setting per species is stored (:func:`best_settings`)
    for ``gloper submit extract --settings-from JOB``.
    """

    name = "train"
    summary = ("a calibration sweep: every --grid setting of GloPER on every labelled photo; the best "
               "settings per species are stored when it finishes, for `submit extract --settings-from JOB`")
    options: ClassVar[frozenset[str]] = frozenset({"grid", "model"})

    def record(self, store: Store, settings: Settings, request: SubmitRequest) -> Submission:
        if request.model is not None:  # `submit train --model NAME`: a dataset model, not a sweep
            from gloper_jobs.jobs.kinds.train_model import TrainModelKind

            return TrainModelKind().record(store, settings, request)
        self.check_request(request)
        if request.method != TRAIN_METHOD:
            raise InvalidParameterError(f"training jobs calibrate {TRAIN_METHOD} (--method {TRAIN_METHOD})")
        return record_train_job(store, settings, Path(request.dataset), parse_grid(request.grid, request.params),
                                request.foreground, request.on_device)

    def run_item(self, ctx: WorkerContext, job: Job, item: Item) -> ItemOutcome:
        from gloper_jobs.jobs.pipeline import item_output_dir

        params, photo = setting_of(job, item)
        out_dir = item_output_dir(Path(job.results_dir), photo) / f"setting-{item.rel_path.rpartition('=')[2]}"
        return ctx.process(job, item, ctx.segmenter(job.method, None, params), out_dir)

    def on_drained(self, session: Session, job: Job) -> None:
        best_settings(session, job)


def record_train_job(store: Store, settings: Settings, dataset: Path, grid: list[dict[str, Any]],
                     foreground: bool = True, on_device: str | None = None) -> Submission:
    """Record a training (calibration) job: every labelled photo x every setting of ``grid``
    (from :func:`parse_grid`), one item each (idempotent).

    Its items go to ``train.<device class>`` (GloPER's ``gpu``, or ``on_device``).
    Raises :class:`DatasetError` when the dataset has no labelled photo.
    """
    spec = train_spec(job_spec(settings, dataset, TRAIN_METHOD, None, None, foreground), grid)
    items = train_items(Path(dataset), len(grid))
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        added = repo.add_items(s, job, items, batch=settings.submit_batch)
        job.queue = queue_name(job.kind, on_device or device_class(TRAIN_METHOD))
        dl.reopen_job(s, job)
    return Submission(job, created, added)


def parse_grid(pairs: Sequence[str], base: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The settings of a grid, validated: the product of every ``NAME=V1,V2`` pair.

    ``local_sizes`` alternatives are separated by ``;`` (``local_sizes=8,16;16,32``),
    every other parameter's by ``,``. ``base`` holds the fixed parameters. Returns
    each setting's result-determining parameters (a GloPER identity dict).
    Raises :class:`InvalidParameterError` naming the bad pair or setting.
    """
    from gloper_jobs.methods.gloper import GloperParams
    axes: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, values = pair.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise InvalidParameterError(f"--grid {pair!r}: use NAME=V1,V2 (e.g. --grid steps=25,50)")
        if name not in GloperParams.field_names():
            raise InvalidParameterError(f"--grid {name!r}: valid names: {', '.join(GloperParams.field_names())}")
        alternatives = values.split(";") if name == "local_sizes" else values.split(",")
        axes[name] = [v.strip() for v in alternatives if v.strip()]
    if not axes:
        raise InvalidParameterError("a training job needs at least one --grid NAME=V1,V2")
    settings: list[dict[str, Any]] = []
    for combo in itertools.product(*axes.values()):
        setting: dict[str, Any] = {**(base or {}), **dict(zip(axes, combo, strict=True))}
        try:
            settings.append(GloperParams.build(**setting).identity())
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"grid setting {setting}: {exc}") from exc
    unique = {repr(sorted(s.items())): s for s in settings}
    return list(unique.values())


def train_spec(base: JobSpec, grid: list[dict[str, Any]]) -> JobSpec:
    """The job spec of a training job over ``grid`` (its identity includes the grid)."""
    return replace(base, kind=TrainKind.name, method=TRAIN_METHOD, params={"grid": grid})


def train_items(dataset: Path, n_settings: int) -> list[DatasetItem]:
    """One item per (labelled photo, setting); raises :class:`DatasetError` without labels."""
    photos = [it for it in iter_dataset(Path(dataset)) if it.label_path is not None]
    if not photos:
        raise DatasetError(f"no labelled photos under {dataset}: a training job needs label/ or labels/ folders")
    return [replace(it, rel_path=f"{it.rel_path}{SETTING_MARK}{k}") for it in photos for k in range(n_settings)]


def setting_of(job: Job, item: Item) -> tuple[dict[str, Any], str]:
    """The GloPER parameters a training item runs with, and its photo's rel_path."""
    photo, sep, index = item.rel_path.rpartition(SETTING_MARK)
    grid = job.params.get("grid", [])
    if not sep or not index.isdigit() or int(index) >= len(grid):
        raise InvalidParameterError(f"training item {item.rel_path!r} names no setting of job {job.id}'s grid")
    return dict(grid[int(index)]), photo


def item_params(job: Job, item: Item) -> dict[str, Any]:
    """The method parameters an extract item runs with: its species' calibration if the
    job was submitted with ``--settings-from``, else the job's own."""
    params = {k: v for k, v in job.params.items() if k not in (PER_SPECIES, SETTINGS_FROM)}
    return {**params, **job.params.get(PER_SPECIES, {}).get(item.species, {})}


def best_settings(session: Session, job: Job) -> list[Calibration]:
    """Compute and store (upsert) the best setting per species of a finished training job.

    The score of a setting on a species is the mean Dice of the label-free choice
    over the species' photos (what an unlabelled archive would get); ties keep the
    earlier setting of the grid.
    """
    if job.id is None or job.kind != TrainKind.name:
        raise JobNotFoundError(f"job {job.id} is not a training job")
    rows = session.exec(
        select(Item, Candidate).join(Candidate, col(Candidate.item_id) == col(Item.id))
        .where(Item.job_id == job.id, Item.status == ItemStatus.done.value, col(Candidate.is_choice))
    ).all()
    scores: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for item, cand in rows:
        if cand.dice is None:
            continue
        index = int(item.rel_path.rpartition(SETTING_MARK)[2])
        scores[item.species][index].append(cand.dice)
    grid = job.params["grid"]
    out: list[Calibration] = []
    for species, per_setting in sorted(scores.items()):
        means = {k: sum(v) / len(v) for k, v in per_setting.items()}
        best = min(means, key=lambda k: (-means[k], k))
        values = {"job_id": job.id, "species": species, "params": grid[best], "dice": means[best],
                  "photos": len(per_setting[best]), "settings_tried": len(means), "created_at": utcnow()}
        stmt = insert_statement(session, Calibration).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["job_id", "species"],
            set_={k: stmt.excluded[k] for k in values if k not in ("job_id", "species")})
        session.execute(stmt)
        out.append(Calibration(**values))
    return out


def calibration_of(session: Session, job_id: int) -> dict[str, dict[str, Any]]:
    """Species -> best GloPER parameters of training job ``job_id`` (which must be done)."""
    job = session.get(Job, job_id)
    if job is None or job.kind != TrainKind.name:
        raise JobNotFoundError(f"job {job_id} is not a training job; `gloper jobs` lists them")
    if job.status != JobStatus.done.value:
        raise JobNotFoundError(f"training job {job_id} is not finished ({job.status}); "
                               f"see `gloper status {job_id}`")
    stored = session.exec(select(Calibration).where(Calibration.job_id == job_id)).all()
    rows = stored or best_settings(session, job)
    if not rows:
        raise JobNotFoundError(f"training job {job_id} scored no photo; nothing to calibrate from")
    return {c.species: dict(c.params) for c in rows}


def format_calibration(rows: Sequence[Calibration]) -> str:
    lines = [f"{'species':<14} {'photos':>6} {'tried':>5} {'Dice':>6}  settings"]
    for c in rows:
        settings = ", ".join(f"{k}={v}" for k, v in c.params.items())
        lines.append(f"{c.species:<14} {c.photos:>6} {c.settings_tried:>5} {c.dice:>6.3f}  {settings}")
    return "\n".join(lines)
