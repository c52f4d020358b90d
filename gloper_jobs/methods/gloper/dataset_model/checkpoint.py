"""Dataset-model checkpoints: what ``gloper train`` writes and extraction loads.

A checkpoint is ``torch.save`` of a plain dict (loaded with ``weights_only=True``)::

    {"format": "gloper-dataset-model", "version": 2,
     "settings": {"size": 128, "local_sizes": [8, 16], ...},   # DatasetModelParams.identity()
     "dataset": "/abs/path", "photos": 20, "step": 300, "losses": [float, ...],
     "seconds": 312.5, "state_dict": {...}, "optimizer": {...}}

written to a temporary file and renamed, so a killed writer never leaves half a file.
``state_dict`` is a :class:`~gloper_jobs.methods.gloper.net.GloperNet`'s with a head set
per local size. Version 1 (head sets named by local size) is read and renamed.

:func:`read_info` reads what a job's identity needs (the settings, the step) without the
weights: the file is memory-mapped and its tensors are never read, no network is built.
Both readers unpickle with ``weights_only=True``: a checkpoint never runs code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gloper_jobs.checksums import file_hexdigest
from gloper_jobs.exceptions import ModelCheckpointError, ModelSettingsError
from gloper_jobs.methods.gloper.net import GloperNet

CHECKPOINT_FORMAT = "gloper-dataset-model"
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: settings a model must share with the run that extracts with it
INFERENCE_SETTINGS = ("size", "local_sizes")
#: settings that may change between a checkpoint and the run that resumes training from it
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "device")


@dataclass
class CheckpointInfo:
    """A checkpoint's metadata: ``settings`` as stored (lists for tuples) and its history."""

    path: Path
    settings: dict[str, Any]
    step: int
    losses: list[float]
    dataset: str
    photos: int
    seconds: float

    @property
    def local_sizes(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.settings["local_sizes"])

    def check_inference_settings(self, size: int, local_sizes: tuple[int, ...]) -> None:
        """Refuse a run whose ``size``/``local_sizes`` differ from what the model was trained for."""
        asked = {"size": size, "local_sizes": list(local_sizes)}
        stored = {k: self.settings.get(k) for k in INFERENCE_SETTINGS}
        if asked != stored:
            raise ModelSettingsError(
                f"model {self.path} was trained for size={stored['size']}, local_sizes="
                f"{_fmt(stored['local_sizes'])}; this run asks for size={size}, local_sizes={_fmt(asked['local_sizes'])}. "
                f"Run with --param size={stored['size']} --param local_sizes={_fmt(stored['local_sizes'])}, "
                "or train a model for these settings (gloper train ... --param size=... --param local_sizes=...)")

    def check_resumable(self, settings: dict[str, Any], dataset: str) -> None:
        """Refuse to resume training with other settings or on another dataset than the checkpoint's."""
        diff = sorted(k for k in set(settings) | set(self.settings)
                      if k not in RESUMABLE_CHANGES and settings.get(k) != self.settings.get(k))
        if diff:
            pairs = ", ".join(f"{k}={self.settings.get(k)!r} (asked {settings.get(k)!r})" for k in diff)
            raise ModelSettingsError(
                f"checkpoint {self.path} was trained with other settings: {pairs}. Use the checkpoint's "
                "settings to continue it, or another --out to train a new model")
        if dataset != self.dataset:
            raise ModelSettingsError(
                f"checkpoint {self.path} was trained on {self.dataset}, not {dataset}; "
                "use another --out to train a new model")


@dataclass
class Checkpoint(CheckpointInfo):
    """A loaded checkpoint: its metadata, the weights and the optimizer's state."""

    state_dict: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None

    def network(self, device: torch.device | str = "cpu") -> GloperNet:
        """The trained network on ``device``, in eval mode."""
        net = GloperNet(self.local_sizes)
        try:
            net.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise ModelCheckpointError(f"{self.path}: weights do not fit GloPER's dataset model ({exc})") from exc
        return net.to(device).eval()


def _fmt(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (with format and version added) to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a checkpoint (``weights_only=True``); :class:`ModelCheckpointError` names the file
    when it is missing, truncated, corrupt, another kind of file or another format version."""
    p = Path(path)
    data = _read(p, mmap=False)
    try:
        state = data["state_dict"]
        if data["version"] == 1:
            state = _heads_by_position(state, [int(v) for v in data["settings"]["local_sizes"]])
        return Checkpoint(**_info_fields(p, data), state_dict=state, optimizer=data.get("optimizer"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelCheckpointError(f"model checkpoint {p} lacks a field or has a bad one ({exc!r})") from exc


def read_info(path: Path | str) -> CheckpointInfo:
    """A checkpoint's settings and history without its weights (see the module docstring);
    the same checks and errors as :func:`load_checkpoint`."""
    p = Path(path)
    data = _read(p, mmap=zipfile.is_zipfile(p))  # torch.save's zip format maps; an older file is read
    try:
        return CheckpointInfo(**_info_fields(p, data))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelCheckpointError(f"model checkpoint {p} lacks a field or has a bad one ({exc!r})") from exc


def _read(p: Path, mmap: bool) -> dict[str, Any]:
    """The checkpoint's dict, its format and version checked; ``mmap`` leaves tensors unread."""
    if not p.is_file():
        raise ModelCheckpointError(f"model checkpoint {p} does not exist; train one with `gloper train DATASET --out {p}`")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise ModelCheckpointError(
            f"model checkpoint {p} is corrupt or truncated ({type(exc).__name__}: {str(exc)[:200]}); "
            "re-copy it, or train again (`gloper train` resumes from the last good checkpoint only if one is left)"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ModelCheckpointError(f"{p} is not a GloPER dataset model (no format {CHECKPOINT_FORMAT!r})")
    if data.get("version") not in READABLE_VERSIONS:
        raise ModelCheckpointError(
            f"model checkpoint {p} has format version {data.get('version')}, this gloper-jobs reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}; train the model again with this version")
    return data


def _info_fields(p: Path, data: dict[str, Any]) -> dict[str, Any]:
    """:class:`CheckpointInfo`'s fields from a checkpoint's dict (``KeyError`` for a missing one)."""
    return {"path": p, "settings": dict(data["settings"]), "step": int(data["step"]),
            "losses": [float(v) for v in data["losses"]], "dataset": str(data["dataset"]),
            "photos": int(data["photos"]), "seconds": float(data.get("seconds", 0.0))}


def _heads_by_position(state: dict[str, torch.Tensor], local_sizes: list[int]) -> dict[str, torch.Tensor]:
    """A version-1 state dict (head sets keyed by local size: ``logits.8.weight``) with the
    head sets keyed by their position in ``local_sizes`` (``logits.0.weight``), as now."""
    position = {str(ls): str(i) for i, ls in enumerate(local_sizes)}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("logits", "head_a", "head_b") and parts[1] in position:
            parts[1] = position[parts[1]]
        out[".".join(parts)] = value
    return out


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file (the checksum the store records for a model)."""
    return file_hexdigest(path, "sha256")
