"""Extract jobs: segment every photo of a dataset with one method and its settings.

An extract job submitted with ``--settings-from JOB`` (a finished calibration job)
runs each photo with its species' calibrated GloPER settings
(:func:`gloper_jobs.jobs.calibration.item_params`).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from gloper_jobs.exceptions import DatasetError
from gloper_jobs.jobs import calibration as cal
from gloper_jobs.jobs.kinds.base import (
    MANIFEST,
    JobKind,
    Submission,
    SubmitOption,
    SubmitRequest,
    device_class,
    warn_if_another_rim_was_meant,
)
from gloper_jobs.jobs.polarity import (
    check_overrides,
    decide_species_polarity,
    parse_overrides,
    store_overrides,
)
from gloper_jobs.jobs.spec import job_spec
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo
from gloper_jobs.store.models import Item, Job

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from sqlmodel import Session

    from gloper_jobs.data.datasets import DatasetItem
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.pipeline import ItemOutcome
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Store


class ExtractKind(JobKind):
    """Segment every photo; its items go to ``extract.<device class>``."""

    name = "extract"
    summary = "segment every photo"
    submit_options: ClassVar[tuple[SubmitOption, ...]] = (
        SubmitOption("settings_from", type=int, metavar="JOB",
                     help="Run each photo with its species' best GloPER settings from calibration job JOB."),
        SubmitOption("polarity", metavar="SPECIES=darker|lighter,...",
                     help="Which colour is the pattern for these species, over their photos' vote "
                          "(`gloper polarity JOB` changes it later without re-running)."),
        MANIFEST,
    )
    # GloPER's paper profile on one large photo takes minutes on a GPU
    time_limits: ClassVar[tuple[int, int]] = (1800, 1860)
    remote_datasets: ClassVar[bool] = True

    def record(self, store: Store, settings: Settings, request: SubmitRequest) -> Submission:
        self.check_request(request)
        return record_extract_job(store, settings, request.dataset, request.method, request.profile,
                                  request.params, request.foreground, request.on_device,
                                  request.settings_from, request.manifest, request.origin,
                                  parse_overrides(request.extra.get("polarity")))

    def run_item(self, ctx: WorkerContext, job: Job, item: Item) -> ItemOutcome:
        from gloper_jobs.jobs.item_files import segment_item

        with ctx.segmenter(job.method, job.profile, cal.item_params(job, item)) as segmenter:
            return segment_item(ctx, job, item, segmenter, item.rel_path)

    def on_drained(self, session: Session, job: Job) -> None:
        """Record each species' call (a person's, a calibration's, else darker with the photos'
        vote as a suggestion); re-pointing follows in :meth:`after_drained`."""
        decide_species_polarity(session, job)

    def after_drained(self, store: Store, job: Job) -> None:
        """Re-point the photos to their species' calls, in batches outside the drain's transaction."""
        from gloper_jobs.jobs.repointing import repoint

        repoint(store, repo.require_id(job))


def _warn_if_calibrated_on_other_masks(calibration: Job | None, spec: repo.JobSpec) -> None:
    """The calibration picked its settings on masks of another foreground or rim than this
    job makes: its picks still apply, but say so, naming what differs."""
    if calibration is None:
        return
    made = (calibration.foreground_model, calibration.foreground_rim)
    if made != (spec.foreground_model, spec.foreground_rim):
        warnings.warn(
            f"calibration {calibration.id} scored its settings on masks of foreground {made[0]} less a rim of "
            f"{made[1]:g}; this job uses foreground {spec.foreground_model} less {spec.foreground_rim:g}: set "
            f"GLOPER_FOREGROUND_MODEL / GLOPER_FOREGROUND_RIM as they were, or calibrate again",
            UserWarning, stacklevel=4)


def record_extract_job(store: Store, settings: Settings, dataset: str | Path, method: str,
                       profile: str | None = None, params: dict[str, Any] | None = None,
                       foreground: bool = True, on_device: str | None = None,
                       settings_from: int | None = None, manifest: str | Path | None = None,
                       origin: str | None = None, polarity: dict[str, str] | None = None) -> Submission:
    """Scan ``dataset`` (or read ``manifest``) and record the extract job and its items (idempotent).

    Its items go to ``extract.<device class>``: the method's own class, or
    ``on_device`` (``cpu`` sends GloPER to CPU workers). The method's parameters are
    validated and make the job's identity (:func:`~gloper_jobs.jobs.spec.job_spec`:
    nothing is built, no weights load). With ``settings_from`` (a finished calibration job), each photo runs with
    its species' calibrated GloPER settings. Raises :class:`DatasetError` for an
    empty folder, :class:`ManifestError` for a bad manifest (before anything is written).
    ``origin`` is the ``s3://`` URL an embedded run staged ``dataset`` from. A ``dataset``
    that is an ``s3://`` prefix is listed (not downloaded): the queue's workers stream
    each photo when they take its item (:mod:`gloper_jobs.remote`). ``polarity``
    (``{species: darker|lighter}``, :func:`~gloper_jobs.jobs.polarity.parse_overrides`)
    overrides those species' vote when the job drains; a species the dataset has no photo
    of raises :class:`InvalidParameterError`.
    """
    from gloper_jobs.inputs import list_items, source_of
    from gloper_jobs.scoring.notes import SkipList, scan_notes

    skipped = SkipList()  # symlinks out of the root a folder scan left out (the first lines, all counted)
    items, listed = list_items(dataset, manifest, skipped)
    from_manifest: dict[str, str] = {}
    if manifest is not None:  # a manifest's polarity column, under --polarity
        from gloper_jobs.manifest import species_polarity

        items = list(items)
        from_manifest = {k: v for k, v in species_polarity(items, str(manifest)).items() if k not in (polarity or {})}
        polarity = {**from_manifest, **(polarity or {})}
    species: set[str] = set()  # the scan's species, noted as its items are recorded (one pass)
    items = _noting_species(items, species)
    with store.session() as s:
        spec = replace(job_spec(settings, dataset, method, profile, params, foreground, session=s),
                       source=source_of(origin, listed))
        if settings_from is not None:
            per_species = cal.calibration_of(s, settings_from, method)
            _warn_if_calibrated_on_other_masks(s.get(Job, settings_from), spec)
            spec = replace(spec, params={**spec.params, cal.SETTINGS_FROM: settings_from,
                                         cal.PER_SPECIES: per_species})
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        if created:
            warn_if_another_rim_was_meant(s, job)
        if polarity:
            if from_manifest:
                store_overrides(s, job, from_manifest, by=f"manifest {Path(str(manifest)).name}")
            given = {k: v for k, v in polarity.items() if k not in from_manifest}
            if given:
                store_overrides(s, job, given, by="--polarity")
        added = repo.add_items(s, job, items, batch=settings.submit_batch)
        if polarity:  # raised inside the transaction: nothing of this submission is kept
            check_overrides(polarity, species)
        job.scan_notes = scan_notes(skipped, skipped.total)  # what this scan left out
        if job.n_items == 0:
            raise DatasetError(f"no photos under {dataset}; see `gloper run --help` for the layouts")
        job.queue = ExtractKind.queue_name(on_device or device_class(method))
        dl.reopen_job(s, job)
    return Submission(job, created, added, skipped=skipped)


def _noting_species(items: Iterable[DatasetItem], species: set[str]) -> Iterator[DatasetItem]:
    """``items`` as they come (a scan is read once, in batches), each one's species added to ``species``."""
    for it in items:
        species.add(it.species)
        yield it
