"""Calibration jobs: every ``--grid`` setting of a method on every labelled photo.

``gloper calibrate LABELLED --method gloper`` (embedded) or ``gloper submit calibrate
LABELLED --method gloper --grid rho=0.4,0.5`` records one item per (photo, setting) on
``calibrate.<device class>`` (the method's class, or ``--device-class``); without
``--grid`` the method's own grid (GloPER: rho=0.4,0.5,0.6; k-means: its settings).
When the job drains, the best setting and candidate (polarity, size choice) per
species is stored for ``--settings-from JOB``; the grid, the scoring and the stored
calibrations are :mod:`gloper_jobs.jobs.calibration`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlmodel import Session

from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.jobs import calibration as cal
from gloper_jobs.jobs.kinds.base import (
    JobKind,
    Submission,
    SubmitOption,
    device_class,
    warn_if_another_rim_was_meant,
)
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo
from gloper_jobs.store.models import Item, Job

if TYPE_CHECKING:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.kinds.base import SubmitRequest
    from gloper_jobs.jobs.pipeline import ItemOutcome
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Store


class CalibrateKind(JobKind):
    """A calibration sweep: every ``--grid`` setting of a method on every labelled photo.

    When it drains, the best setting per species is stored
    (:func:`~gloper_jobs.jobs.calibration.best_settings`).
    """

    name = cal.KIND
    summary = ("a calibration sweep: every --grid setting of the method on every labelled photo; the best "
               "settings, polarity and mask per species are stored when it finishes, for `--settings-from JOB`")
    submit_options: ClassVar[tuple[SubmitOption, ...]] = (
        SubmitOption("grid", multiple=True, metavar="NAME=V1,V2",
                     help="One axis of the settings grid (default: the method's own, GloPER rho=0.4,0.5,0.6), e.g. --grid size=128,256 --grid steps=25,50 "
                          "--grid local_sizes=8,16;16,32 (local_sizes alternatives split by ';')."),
    )
    time_limits: ClassVar[tuple[int, int]] = (1800, 1860)  # one (photo, setting), as an extract task

    def record(self, store: Store, settings: Settings, request: SubmitRequest) -> Submission:
        from gloper_jobs.methods.registry import get_segmenter_class, model_defaults

        self.check_request(request)
        if request.profile is not None:
            raise InvalidParameterError("--profile does not apply to a calibration; use --param and --grid")
        pairs = request.grid or get_segmenter_class(request.method).calibration_grid
        # a dataset model dictates its size and local sizes, as in an extract job (the
        # grid's settings are built from the method's defaults otherwise)
        with store.session() as s:
            base = {**model_defaults(request.method, settings, request.params, session=s), **request.params}
        grid = cal.parse_grid(pairs, base, request.method)
        return record_calibrate_job(store, settings, Path(request.dataset), grid, request.foreground,
                                    request.on_device, request.method)

    def run_item(self, ctx: WorkerContext, job: Job, item: Item) -> ItemOutcome:
        from gloper_jobs.jobs.item_files import segment_item

        params, photo = cal.setting_of(job, item)
        with ctx.segmenter(job.method, None, params) as segmenter:
            return segment_item(ctx, job, item, segmenter, f"{photo}/setting-{item.rel_path.rpartition('=')[2]}")

    def on_drained(self, session: Session, job: Job) -> None:
        cal.best_settings(session, job)


def record_calibrate_job(store: Store, settings: Settings, dataset: Path, grid: list[dict[str, Any]],
                         foreground: bool = True, on_device: str | None = None,
                         method: str = cal.CALIBRATED_METHOD) -> Submission:
    """Record a calibration job: every labelled photo x every setting of ``grid``
    (from :func:`~gloper_jobs.jobs.calibration.parse_grid`), one item each (idempotent).

    Its items go to ``calibrate.<device class>`` (``method``'s class, or ``on_device``).
    Raises :class:`DatasetError` when the dataset has no labelled photo.
    """
    spec = cal.calibration_spec(settings, dataset, grid, foreground, method)
    items = cal.calibration_items(Path(dataset), len(grid))
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        if created:
            warn_if_another_rim_was_meant(s, job)
        added = repo.add_items(s, job, items, batch=settings.submit_batch)
        job.queue = CalibrateKind.queue_name(on_device or device_class(method))
        dl.reopen_job(s, job)
    return Submission(job, created, added)
