"""Training jobs: one dataset-level GloPER model, trained as one long task.

``gloper submit train DATASET --method gloper --model NAME`` records a job of this kind
with a single item (the whole dataset) on ``train.<device class>`` (GloPER's ``gpu``, or
``--device-class``), and the model's row in the store (checkpoint under
``<results dir>/models/NAME.pt``). The worker that takes the item trains with
:func:`gloper_jobs.jobs.training.train_dataset`, writing a checkpoint every
``checkpoint_every`` steps and recording it (step, loss curve, SHA-256) in the store
while the item's heartbeat runs. A killed worker's item goes stale and is delivered
again; that delivery continues from the last checkpoint, not from step 0. Extract with
the model by ``--param model=NAME``.

Its task has time limits of its own (6 h; ``GLOPER_TRAIN_[SOFT_]TIME_LIMIT``, formerly
``GLOPER_TRAIN_MODEL_...``): the extract kind's 30 min would stop an archive's training.
A training stopped there fails its item, and ``gloper retry-failed JOB`` continues it
from its last checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from gloper_jobs.data.datasets import DatasetItem, scan_dataset
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.jobs.kinds.base import (
    JobKind,
    Submission,
    SubmitOption,
    SubmitRequest,
    device_class,
)
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo
from gloper_jobs.store.models import Item, Job

if TYPE_CHECKING:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.pipeline import ItemOutcome
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Store

MODEL_METHOD = "gloper"
#: job.params key naming the model the job trains
MODEL_KEY = "model"


class TrainKind(JobKind):
    """Train one dataset model on every photo (no labels); one item, resumable from checkpoints."""

    name = "train"
    summary = ("train one dataset-level GloPER model NAME on every photo (no labels) as one task; "
               "extract with --param model=NAME")
    submit_options: ClassVar[tuple[SubmitOption, ...]] = (
        SubmitOption("model", metavar="NAME",
                     help="The model's name (required): its checkpoint is <results dir>/models/NAME.pt; "
                          "extract with it by --param model=NAME."),
    )
    # one task for the whole archive (it checkpoints as it goes, so a stop costs the last interval)
    time_limits: ClassVar[tuple[int, int]] = (6 * 3600, 6 * 3600 + 60)

    def check_request(self, request: SubmitRequest) -> None:
        super().check_request(request)
        model_name(request)
        if request.method != MODEL_METHOD:
            raise InvalidParameterError(f"dataset models are {MODEL_METHOD} models (--method {MODEL_METHOD})")
        if request.profile is not None:
            raise InvalidParameterError("--profile does not apply to model training; use --param (size, steps, ...)")

    def record(self, store: Store, settings: Settings, request: SubmitRequest) -> Submission:
        self.check_request(request)
        return record_model_job(store, settings, Path(request.dataset), model_name(request), request.params,
                                request.foreground, request.on_device)

    def run_item(self, ctx: WorkerContext, job: Job, item: Item) -> ItemOutcome:
        from gloper_jobs.jobs.pipeline import ItemOutcome

        t0 = time.perf_counter()
        info = run_model_job(ctx.settings, ctx.store, job)
        return ItemOutcome(candidates=[], choice="", seconds=time.perf_counter() - t0, width=0, height=0,
                           foreground_fraction=None, foreground_fallback=None, device=info.pop("device"),
                           info=info)


def model_name(request: SubmitRequest) -> str:
    """The model a training request names; without one, the error says what to pass."""
    if not request.model:
        raise InvalidParameterError(
            "a training job needs a name: --model NAME (the dataset model to train; extract with it by "
            "--param model=NAME). A sweep of settings over labelled photos is `gloper submit calibrate "
            "LABELLED --grid NAME=V1,V2`")
    return request.model


def checkpoint_path(settings: Settings, name: str) -> Path | str:
    """Where the queue keeps model ``name``'s checkpoint: ``<results dir>/models/<name>.pt``
    (an object URL when ``GLOPER_RESULTS_DIR`` is ``s3://``)."""
    if settings.results_url:
        return f"{settings.results_url}/models/{name}.pt"
    return settings.results_dir.resolve() / "models" / f"{name}.pt"


def record_model_job(store: Store, settings: Settings, dataset: Path, name: str,
                     params: dict[str, Any] | None = None, foreground: bool = True,
                     on_device: str | None = None) -> Submission:
    """Record (idempotently) the job that trains model ``name`` on ``dataset``, and the model.

    Validates the training settings, refuses a name taken by a model of another dataset or
    other settings (:class:`~gloper_jobs.store.model_registry.ModelConflictError`; only
    ``steps`` may grow) and a folder without photos (:class:`DatasetError`).
    """
    from gloper_jobs.jobs.training import model_params
    from gloper_jobs.methods.gloper.dataset_model.checkpoint import RESUMABLE_CHANGES
    from gloper_jobs.store.model_registry import register_model

    p = model_params(settings, params)
    data = str(Path(dataset).resolve())
    scan_dataset(Path(dataset), with_labels=False)  # fails now, naming the folder, if it has no photos
    spec = repo.JobSpec(
        kind=TrainKind.name, dataset=data, method=MODEL_METHOD, params={MODEL_KEY: name, **p.identity()},
        profile=None, foreground_model=settings.foreground_model if foreground else "none",
        eval_size=settings.eval_size, results_root=settings.results_root,
    )
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        register_model(s, name, data, p.identity(), str(checkpoint_path(settings, name)), p.steps, job.id,
                       RESUMABLE_CHANGES)
        added = repo.add_items(s, job, [DatasetItem(f"{MODEL_KEY}:{name}", Path(data), "all", None)])
        job.queue = TrainKind.queue_name(on_device or device_class(MODEL_METHOD))
        dl.reopen_job(s, job)
    return Submission(job, created, added)


def run_model_job(settings: Settings, store: Store, job: Job) -> dict[str, Any]:
    """Train the model of ``job``, continuing its last checkpoint; returns the item's ``info``."""
    from gloper_jobs.jobs.training import train_dataset
    from gloper_jobs.store.model_registry import get_model

    name = str(job.params[MODEL_KEY])
    params = {k: v for k, v in job.params.items() if k != MODEL_KEY}
    with store.session() as s:
        out = get_model(s, name).checkpoint_path  # a file or an s3:// URL: train_dataset takes either
    foreground = job.foreground_model != "none"
    run_settings = settings.model_copy(update={"foreground_model": job.foreground_model}) if foreground else settings
    r = train_dataset(Path(job.dataset), out, run_settings, params, foreground=foreground, progress=False,
                      name=name, job_id=job.id)
    return {"model": name, "checkpoint": str(out), "step": r.step, "start_step": r.start_step,
            "final_loss": r.losses[-1] if r.losses else None, "photos": r.photos, "device": r.device,
            "train_seconds": round(r.seconds, 3), "photos_per_second": round(r.photos_per_second, 3),
            "skipped": [{"path": path, "error": reason} for path, reason in r.skipped]}
