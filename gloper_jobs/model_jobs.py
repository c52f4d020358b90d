"""Training a dataset model through the queue: one job, one item, one long task.

``gloper submit train DATASET --method gloper --model NAME`` records a job of kind
``train_model`` with a single item (the whole dataset) on ``train.<device class>``, and
the model's row in the store (checkpoint under ``<results dir>/models/NAME.pt``). The
worker that takes the item trains with :func:`gloper_jobs.training.train_dataset`,
recording every checkpoint (step, loss curve, SHA-256) in the store while the item's
heartbeat runs. A killed worker's item goes stale and is delivered again; the next
worker continues from the last checkpoint, not from step 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gloper_jobs.datasets import DatasetItem, scan_dataset
from gloper_jobs.methods.gloper_dataset import RESUMABLE_CHANGES
from gloper_jobs.queues import queue_name
from gloper_jobs.settings import Settings
from gloper_jobs.store import Job, JobKind, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo
from gloper_jobs.store.model_registry import get_model, register_model
from gloper_jobs.training import model_params, train_dataset

MODEL_METHOD = "gloper"
#: job.params key naming the model a train_model job trains
MODEL_KEY = "model"
#: the queue (and Celery task) kind that runs model training: the train queues
QUEUE_KIND = JobKind.train.value


def checkpoint_path(settings: Settings, name: str) -> Path:
    """Where the queue keeps model ``name``'s checkpoint: ``<results dir>/models/<name>.pt``."""
    return settings.results_dir.resolve() / "models" / f"{name}.pt"


def record_model_job(store: Store, settings: Settings, dataset: Path, name: str,
                     params: dict[str, Any] | None = None, foreground: bool = True,
                     on_device: str | None = None) -> tuple[Job, bool, int]:
    """Record (idempotently) the job that trains model ``name`` on ``dataset``.

    Returns ``(job, created, items added)``. Validates the training settings, refuses a
    name taken by a model of another dataset or settings
    (:class:`~gloper_jobs.store.model_registry.ModelConflictError`) and a folder without
    photos (:class:`DatasetError`).
    """
    p = model_params(settings, params)
    data = str(Path(dataset).resolve())
    scan_dataset(Path(dataset), with_labels=False)  # fails now, naming the folder, if there are no photos
    spec = repo.JobSpec(
        kind=JobKind.train_model.value, dataset=data, method=MODEL_METHOD, params={MODEL_KEY: name, **p.identity()},
        profile=None, foreground_model=settings.foreground_model if foreground else "none",
        eval_size=settings.eval_size, results_root=str(settings.results_dir.resolve()),
    )
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        register_model(s, name, data, p.identity(), str(checkpoint_path(settings, name)), p.steps, job.id,
                       RESUMABLE_CHANGES)
        added = repo.add_items(s, job, [DatasetItem(f"{MODEL_KEY}:{name}", Path(data), "all", None)])
        job.queue = queue_name(QUEUE_KIND, on_device or "gpu")
        dl.reopen_job(s, job)
    return job, created, added


def run_model_job(settings: Settings, store: Store, job: Job) -> dict[str, Any]:
    """Train the model of ``job`` (continuing its checkpoint); returns the item's ``info``."""
    name = str(job.params[MODEL_KEY])
    params = {k: v for k, v in job.params.items() if k != MODEL_KEY}
    with store.session() as s:
        out = Path(get_model(s, name).checkpoint_path)
    run_settings = settings.model_copy(update={"foreground_model": job.foreground_model}) \
        if job.foreground_model != "none" else settings
    r = train_dataset(Path(job.dataset), out, run_settings, params, foreground=job.foreground_model != "none",
                      progress=False, name=name, job_id=job.id)
    return {"model": name, "checkpoint": str(out), "step": r.step, "start_step": r.start_step,
            "final_loss": r.losses[-1] if r.losses else None, "photos": r.photos,
            "train_seconds": round(r.seconds, 3), "photos_per_second": round(r.photos_per_second, 3)}
