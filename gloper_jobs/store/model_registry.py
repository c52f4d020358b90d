"""Dataset models in the store: recording their checkpoints, finding them by name.

A model row is created when its training is submitted (or started embedded) and
updated after every checkpoint (step, loss curve, checksum), so the store always
names the last checkpoint a resumed training continues from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from gloper_jobs.exceptions import ModelCheckpointError, PermanentError
from gloper_jobs.store.models import Model, ModelStatus, utcnow


class ModelNotFoundError(PermanentError):
    """No dataset model of that name is in the store."""


class ModelConflictError(PermanentError):
    """A model of that name exists for another dataset or other settings."""


def register_model(session: Session, name: str, dataset: str, settings: dict[str, Any], checkpoint_path: str,
                   steps: int, job_id: int | None = None, resumable: tuple[str, ...] = ()) -> Model:
    """The row of model ``name``, created if new; ``steps`` (the target) is updated.

    Raises :class:`ModelConflictError` if ``name`` is taken by a model of another dataset
    or with other settings (those named in ``resumable`` may differ).
    """
    model = session.exec(select(Model).where(Model.name == name)).first()
    if model is None:
        model = Model(name=name, dataset=dataset, settings=settings, checkpoint_path=checkpoint_path, steps=steps,
                      job_id=job_id)
        session.add(model)
        session.flush()
        return model
    differs = sorted(k for k in set(settings) | set(model.settings)
                     if k not in resumable and settings.get(k) != model.settings.get(k))
    if model.dataset != dataset or differs:
        what = f"dataset {model.dataset}" if model.dataset != dataset else "settings " + ", ".join(
            f"{k}={model.settings.get(k)!r} (asked {settings.get(k)!r})" for k in differs)
        raise ModelConflictError(f"model {name!r} already exists with {what}; choose another --model name")
    model.steps = steps
    model.settings = settings
    if job_id is not None:
        model.job_id = job_id
    if model.step < steps:
        model.status = ModelStatus.training.value
    model.updated_at = utcnow()
    session.add(model)
    return model


def record_checkpoint(session: Session, name: str, step: int, losses: list[float], sha256: str,
                      seconds: float, photos: int) -> Model:
    """Store a written checkpoint's step, loss curve and checksum; ``done`` at the last step."""
    model = get_model(session, name)
    model.step, model.losses, model.sha256 = step, list(losses), sha256
    model.seconds, model.photos = seconds, photos
    model.status = ModelStatus.done.value if step >= model.steps else ModelStatus.training.value
    model.updated_at = utcnow()
    session.add(model)
    return model


def get_model(session: Session, name: str) -> Model:
    """Model ``name``; :class:`ModelNotFoundError` lists the stored names."""
    model = session.exec(select(Model).where(Model.name == name)).first()
    if model is None:
        names = session.exec(select(Model.name).order_by(col(Model.name))).all()
        known = ", ".join(names) if names else "none yet"
        raise ModelNotFoundError(
            f"no model named {name!r} in the store (models: {known}); train one with "
            f"`gloper submit train DATASET --method gloper --model {name}` or pass a checkpoint file")
    return model


def names_a_model(reference: str) -> bool:
    """Whether ``--param model=...`` is a model's name in the store rather than a checkpoint:
    no file of that name, and no suffix or ``/`` that would make it a path (a URL has one)."""
    path = Path(reference).expanduser()
    return bool(reference) and not (path.is_file() or path.suffix or "/" in reference)


def resolve_model(reference: str, session: Session | None) -> str:
    """A checkpoint path for ``--param model=...``: an ``s3://`` URL as it is (the caller
    caches it locally: :func:`gloper_jobs.remote.cached_checkpoint`), an existing file as it
    is (absolute), else the name of a finished model, looked up in the caller's ``session``.

    Raises :class:`~gloper_jobs.exceptions.ModelCheckpointError` for a path that does not
    exist, :class:`ModelNotFoundError` for an unknown or unfinished model, or for a name
    where no store is open (``session`` None).
    """
    from gloper_jobs.storage import is_url

    if is_url(reference):
        return reference
    path = Path(reference).expanduser()
    if path.is_file():
        return str(path.resolve())
    if not names_a_model(reference):
        raise ModelCheckpointError(f"model checkpoint {path} does not exist; train one with "
                                   f"`gloper train DATASET --out {path}`")
    if session is None:
        raise ModelNotFoundError(f"model {reference!r} is a name, and no store is open here to look it up in; "
                                 "pass its checkpoint file or s3:// URL instead")
    model = get_model(session, reference)
    if model.status != ModelStatus.done.value:
        raise ModelNotFoundError(
            f"model {reference!r} is still training (step {model.step} of {model.steps}); "
            f"wait for job {model.job_id} (`gloper status {model.job_id}`)")
    return model.checkpoint_path
