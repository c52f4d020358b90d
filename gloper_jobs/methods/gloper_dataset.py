"""A dataset-level GloPER model: one network for a whole archive, and its checkpoints.

Per-photo GloPER (:mod:`gloper_jobs.methods.gloper`) trains a fresh UNet per photo
and local size. :class:`DatasetGloperNet` is the same UNet trunk (``VGGBlock`` x 9,
32..512 filters) shared by every local size, with one head set per local size
``l``: a 1x1 conv to the two class logits and the two colour-centroid heads
(A over ``l x l``, B over ``2l x 2l`` windows). It is trained once on many photos of
an archive with the same unsupervised local-reconstruction loss
(:mod:`gloper_jobs.methods.gloper_training`), then a photo costs one forward pass
and the usual read-out (:func:`pattern_weights`).

A checkpoint is ``torch.save`` of a plain dict (loaded with ``weights_only=True``)::

    {"format": "gloper-dataset-model", "version": 1,
     "settings": {"size": 128, "local_sizes": [8, 16], ...},   # DatasetModelParams.identity()
     "dataset": "/abs/path", "photos": 20, "step": 300, "losses": [float, ...],
     "seconds": 312.5, "state_dict": {...}, "optimizer": {...}}

written to a temporary file and renamed, so a killed writer never leaves half a file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gloper_jobs.checksums import file_hexdigest
from gloper_jobs.exceptions import InvalidParameterError, PermanentError
from gloper_jobs.methods.base import MethodParams, check_size
from gloper_jobs.methods.gloper_model import (
    FILTERS,
    VGGBlock,
    hard_gumbel_softmax,
    pattern_weight,
    reconstruct,
)

CHECKPOINT_FORMAT = "gloper-dataset-model"
CHECKPOINT_VERSION = 1
#: settings a model must share with the run that extracts with it
INFERENCE_SETTINGS = ("size", "local_sizes")
#: settings that may change between a checkpoint and the run that resumes training from it
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "device")


class ModelCheckpointError(PermanentError):
    """A GloPER model checkpoint is missing, corrupt, truncated or not a GloPER model."""


class ModelSettingsError(PermanentError):
    """A GloPER model was trained for other settings than the run asks for."""


@dataclass(frozen=True)
class DatasetModelParams(MethodParams):
    """Training settings of a dataset-level model (``gloper train --param``).

    ``size`` and ``local_sizes`` are GloPER's (the extraction run must use the same).
    Each step trains on ``batch`` photos (per process under DDP), each resized to
    ``size``, randomly flipped and cropped to ``crop`` (0: the largest multiple of
    16 and of ``2 * max(local_sizes)`` within 3/4 of ``size``). Default budget for
    a 2-core CPU: 300 steps of 8 crops of 96 px, about 5 minutes.
    """

    size: int = 128
    local_sizes: tuple[int, ...] = (8, 16)
    steps: int = 300
    batch: int = 8
    crop: int = 0
    lr: float = 1e-3
    tau: float = 0.1
    seed: int = 41
    checkpoint_every: int = 50
    device: str = field(default="auto", metadata={"identity": False})

    def validate(self) -> None:
        check_size(self.size, 16)
        check_local_sizes(self.size, self.local_sizes)
        for name in ("steps", "batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InvalidParameterError(f"{name}={getattr(self, name)} must be >= 1")
        unit = crop_unit(self.local_sizes)
        if self.crop and (self.crop % unit or self.crop > self.size):
            raise InvalidParameterError(
                f"crop={self.crop} must be a multiple of {unit} (16 and 2 x the largest local size) "
                f"and at most size={self.size}; crop=0 picks one")
        if self.lr <= 0 or self.tau <= 0:
            raise InvalidParameterError(f"lr={self.lr} and tau={self.tau} must be > 0")

    @property
    def crop_size(self) -> int:
        """The training crop side in pixels (``crop`` or its automatic value)."""
        if self.crop:
            return self.crop
        unit = crop_unit(self.local_sizes)
        return max(unit, (self.size * 3 // 4) // unit * unit)


def check_local_sizes(size: int, local_sizes: tuple[int, ...]) -> None:
    """Raise :class:`InvalidParameterError` unless every ``2l`` divides ``size`` (no duplicates)."""
    if not local_sizes:
        raise InvalidParameterError("local_sizes must name at least one size, e.g. 8,16")
    if len(set(local_sizes)) != len(local_sizes):
        raise InvalidParameterError(f"local_sizes {local_sizes} has duplicates")
    for ls in local_sizes:
        if ls < 1 or size % (2 * ls):
            raise InvalidParameterError(f"local size {ls} must be >= 1 and 2*{ls} must divide size={size}")


def crop_unit(local_sizes: tuple[int, ...]) -> int:
    """Smallest side a training crop may have: a multiple of 16 and of ``2 * max(l)``."""
    big = 2 * max(local_sizes)
    return big * 16 // _gcd(big, 16)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


class DatasetGloperNet(nn.Module):
    """GloPER's UNet trunk with one head set (logits, centroids A and B) per local size.

    ``forward(x)`` with ``x``: ``Bx3xHxW float`` in [0, 1] (``H``, ``W`` divisible by
    16 and by ``2l`` for every ``l``) returns, per local size ``l``, a tuple
    ``(logits Bx2xHxW, centroids_a Bx2x3x(H/l)x(W/l), centroids_b Bx2x3x(H/2l)x(W/2l))``.
    """

    def __init__(self, local_sizes: tuple[int, ...], num_classes: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        f = FILTERS
        self.local_sizes = tuple(local_sizes)
        self.num_classes = num_classes
        self.enc = nn.ModuleList([VGGBlock(in_channels, f[0], f[0])]
                                 + [VGGBlock(f[i - 1], f[i], f[i]) for i in range(1, 5)])
        self.dec = nn.ModuleList([VGGBlock(f[i] + f[i + 1], f[i], f[i]) for i in range(3, -1, -1)])
        self.logits = nn.ModuleDict({str(ls): nn.Conv2d(f[0], num_classes, 1) for ls in self.local_sizes})
        self.head_a = nn.ModuleDict({str(ls): nn.Conv2d(f[0], num_classes * 3, 1) for ls in self.local_sizes})
        self.head_b = nn.ModuleDict({str(ls): nn.Conv2d(f[1], num_classes * 3, 1) for ls in self.local_sizes})

    def _centroids(self, feats: torch.Tensor, head: nn.Module, window: int) -> torch.Tensor:
        colours = torch.sigmoid(head(F.avg_pool2d(feats, kernel_size=window, stride=window)))
        b, _, h, w = colours.shape
        return colours.view(b, self.num_classes, 3, h, w)

    def forward(self, x: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        skips = []
        h = x
        for i, block in enumerate(self.enc):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            up = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
            h = block(torch.cat([skip, up], 1))
        x0, x1 = skips[0], skips[1]
        out = {}
        for ls in self.local_sizes:
            k = str(ls)
            # Head A: full-resolution features over l x l windows; head B: half-resolution
            # features over l x l cells, i.e. 2l x 2l windows of the image.
            out[ls] = (self.logits[k](h), self._centroids(x0, self.head_a[k], ls),
                       self._centroids(x1, self.head_b[k], ls))
        return out


    def centroids_a(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Only what the read-out uses: head A's centroids per local size, ``Bx2x3x(H/l)x(W/l)``.

        Head A reads the first block's features, so this runs one ``VGGBlock`` instead of
        the whole UNet (the deeper layers and the logits only matter for training).
        """
        x0 = self.enc[0](x)
        return {ls: self._centroids(x0, self.head_a[str(ls)], ls) for ls in self.local_sizes}


def reconstruction_loss(net: nn.Module, images: torch.Tensor, foreground: torch.Tensor, tau: float,
                        generator: torch.Generator | None) -> torch.Tensor:
    """GloPER's loss summed over local sizes, mean over the batch.

    ``images``: ``Bx3xHxW float32`` in [0, 1]; ``foreground``: ``BxHxW float32`` (1 = animal).
    Per size: mean over pixels of ``||x - recon_A||_2 * fg`` plus the same for head B,
    with a hard Gumbel-softmax sample of that size's logits.
    """
    total = images.new_zeros(())
    for ls, (logits, cen_a, cen_b) in net(images).items():
        assign = hard_gumbel_softmax(logits, tau, generator)
        for cen, window in ((cen_a, ls), (cen_b, 2 * ls)):
            rec = reconstruct(assign, cen, window)
            total = total + (torch.linalg.vector_norm(images - rec, dim=1) * foreground).mean()
    return total


def pattern_weights(net: DatasetGloperNet, image: torch.Tensor) -> dict[int, torch.Tensor]:
    """One forward pass; per local size the pattern weight map ``HxW float32`` in [0, 1] (CPU).

    ``image``: ``1x3xHxW float32`` in [0, 1] on the network's device. Read-out as per-photo
    GloPER (:func:`~gloper_jobs.methods.gloper_model.pattern_weight` on head A), with
    BatchNorm's running statistics of the training photos.
    """
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            weights = net.centroids_a(image)
            return {ls: pattern_weight(image, cen, ls)[0].float().cpu() for ls, cen in weights.items()}
    finally:
        net.train(was_training)


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``settings`` as stored (lists for tuples), the weights, the history."""

    path: Path
    settings: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    step: int
    losses: list[float]
    dataset: str
    photos: int
    seconds: float

    def network(self, device: torch.device | str = "cpu") -> DatasetGloperNet:
        """The trained network on ``device``, in eval mode."""
        net = DatasetGloperNet(tuple(int(v) for v in self.settings["local_sizes"]))
        try:
            net.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise ModelCheckpointError(f"{self.path}: weights do not fit GloPER's dataset model ({exc})") from exc
        return net.to(device).eval()

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
    if not p.is_file():
        raise ModelCheckpointError(f"model checkpoint {p} does not exist; train one with `gloper train DATASET --out {p}`")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise ModelCheckpointError(
            f"model checkpoint {p} is corrupt or truncated ({type(exc).__name__}: {str(exc)[:200]}); "
            "re-copy it, or train again (`gloper train` resumes from the last good checkpoint only if one is left)"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ModelCheckpointError(f"{p} is not a GloPER dataset model (no format {CHECKPOINT_FORMAT!r})")
    if data.get("version") != CHECKPOINT_VERSION:
        raise ModelCheckpointError(
            f"model checkpoint {p} has format version {data.get('version')}, this gloper-jobs reads "
            f"version {CHECKPOINT_VERSION}; train the model again with this version")
    try:
        return Checkpoint(
            path=p, settings=dict(data["settings"]), state_dict=data["state_dict"], optimizer=data.get("optimizer"),
            step=int(data["step"]), losses=[float(v) for v in data["losses"]], dataset=str(data["dataset"]),
            photos=int(data["photos"]), seconds=float(data.get("seconds", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelCheckpointError(f"model checkpoint {p} lacks a field or has a bad one ({exc!r})") from exc


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file (the checksum the store records for a model)."""
    return file_hexdigest(path, "sha256")
