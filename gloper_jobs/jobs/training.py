"""Training a dataset-level GloPER model on this machine (``gloper train``), resumable.

:func:`train_dataset` scans the archive and trains on it
(:func:`gloper_jobs.methods.gloper.dataset_model.train.train_model`), each photo prepared
(foreground included) when a step first draws it; run it again with the same ``out`` and
it continues from the last checkpoint, or answers at once when that one is finished. The queue's training task calls
the same function with a hook that records every checkpoint in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.devices import configure_torch, resolve_device
from gloper_jobs.foreground.extractor import build_foreground
from gloper_jobs.methods.gloper.dataset_model.checkpoint import load_checkpoint
from gloper_jobs.methods.gloper.dataset_model.train import (
    CheckpointHook,
    LazyPhotos,
    TrainResult,
    train_model,
)
from gloper_jobs.methods.gloper.params import DatasetModelParams
from gloper_jobs.settings import Settings


def model_params(settings: Settings, params: dict[str, Any] | None = None) -> DatasetModelParams:
    """Validated training settings: ``params`` over the defaults (device from the settings)."""
    merged: dict[str, Any] = {"device": settings.device, **(params or {})}
    return cast(DatasetModelParams, DatasetModelParams.build(**merged))


def load_photos(dataset: Path, settings: Settings, size: int, foreground: bool = True) -> LazyPhotos:
    """Every photo under ``dataset`` (labels unused), each prepared with its foreground at
    ``size x size`` when training first draws it (:class:`LazyPhotos`)."""
    items = scan_dataset(dataset, with_labels=False)
    fg_fn = build_foreground(settings, None if foreground else "none")
    return LazyPhotos([it.path for it in items], size, fg_fn, settings.max_image_pixels)


def finished_training(path: Path, p: DatasetModelParams, dataset: str) -> TrainResult | None:
    """The checkpoint at ``path`` as a run that trained nothing, when it has reached
    ``p.steps`` with the same settings on the same ``dataset`` (absolute path); None when
    there is no checkpoint or steps are left. Another model's checkpoint is refused
    (:class:`ModelSettingsError`), as :func:`train_model` would refuse it.

    Rerunning a finished training (the same command again, a redelivered queue item) then
    costs one file read, not a pass of u2netp over the whole archive.
    """
    if not Path(path).exists():
        return None
    ck = load_checkpoint(path)
    ck.check_resumable(p.identity(), dataset)
    if ck.step < p.steps:
        return None
    return TrainResult(Path(path), ck.step, ck.step, list(ck.losses), ck.seconds, 0.0, ck.photos,
                       str(resolve_device(p.device)))


def train_dataset(dataset: Path, out: Path | str, settings: Settings, params: dict[str, Any] | None = None, *,
                  foreground: bool = True, progress: bool = True, name: str | None = None,
                  job_id: int | None = None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train the dataset model of ``dataset`` into ``out`` (continuing a checkpoint there).

    With ``name`` the model is recorded in the store (``settings.database_url``) and every
    checkpoint updates its row (step, loss curve, SHA-256), so ``--param model=NAME`` finds it.
    An ``s3://`` ``out`` is trained into a local file under ``GLOPER_STAGING_DIR`` (resumed
    from the object when it exists) and every checkpoint is uploaded there as it is written;
    the store records the URL.
    """
    from gloper_jobs.storage import is_url, put_file

    configure_torch(settings.torch_threads)
    p = model_params(settings, params)
    data = str(Path(dataset).resolve())
    url = str(out) if is_url(out) else None
    if url is not None:
        from gloper_jobs.remote import checkpoint_workfile

        local = checkpoint_workfile(url, settings.staging_dir)
    else:
        local = Path(out)
    hooks: list[CheckpointHook] = []
    if name is not None:
        hooks.append(_recorder(settings, name, data, p, url or str(local.resolve()), job_id))
    if url is not None:
        target = url

        def upload(path: Path, *_: object) -> None:
            put_file(Path(path), target)

        hooks.insert(0, upload)  # uploaded before it is recorded

    def hook(path: Path, step: int, losses: list[float], seconds: float, photos: int) -> None:
        for h in hooks:
            h(path, step, losses, seconds, photos)

    finished = finished_training(local, p, data)
    if finished is not None:
        # nothing to train, no photo read; the upload and the store's row see the checkpoint once
        hook(local, finished.step, finished.losses, finished.seconds, finished.photos)
        return finished
    photos = load_photos(dataset, settings, p.size, foreground)
    result = train_model(photos, p, local, dataset=data, device=resolve_device(p.device),
                         progress=progress, on_checkpoint=hook if hooks else None, on_step=on_step)
    if url is not None:
        put_file(local, url)  # the final state, whatever the checkpoint cadence
    return result


def _recorder(settings: Settings, name: str, dataset: str, p: DatasetModelParams, out: str,
              job_id: int | None) -> CheckpointHook:
    """Register model ``name`` (checkpoint at ``out``, a path or a URL) now, refusing a clash,
    and return the hook that records each checkpoint."""
    from gloper_jobs.methods.gloper.dataset_model.checkpoint import RESUMABLE_CHANGES, file_sha256
    from gloper_jobs.store import Store
    from gloper_jobs.store.model_registry import record_checkpoint, register_model

    store = Store(settings.database_url)
    with store.session() as s:
        register_model(s, name, dataset, p.identity(), out, p.steps, job_id, RESUMABLE_CHANGES)

    def hook(path: Path, step: int, losses: list[float], seconds: float, photos: int) -> None:
        sha = file_sha256(path)
        with store.session() as s:
            record_checkpoint(s, name, step, losses, sha, seconds, photos)

    return hook
