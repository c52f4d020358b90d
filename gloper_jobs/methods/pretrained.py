"""What the pretrained baselines (SAM, CLIPSeg, DINOv2) share: weights, device, memory.

Weights are never fetched behind the user's back. Each model has one setting
(``GLOPER_SAM_CHECKPOINT``, ``GLOPER_CLIPSEG_WEIGHTS``, ``GLOPER_DINO_WEIGHTS``)
that points at a local file or folder; unset, the file is looked for in
``GLOPER_WEIGHTS_DIR`` (and the caches the upstream tools use). Only with
``GLOPER_ALLOW_DOWNLOADS=1`` is a missing file downloaded from where it is
published. Otherwise :class:`WeightsMissingError` names the file, where it is
published and the variable to set.

A :class:`PretrainedSegmenter` loads its model on the first :meth:`~PretrainedSegmenter.load`
(the first photo) and keeps it until :meth:`~PretrainedSegmenter.close`; the
per-process :class:`~gloper_jobs.methods.cache.SegmenterCache` (capacity 1) keeps one
large model per process and card.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import threading
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from gloper_jobs import defaults
from gloper_jobs.devices import check_device, resolve_device
from gloper_jobs.exceptions import (
    ConfigurationError,
    DeviceOutOfMemoryError,
    WeightsMissingError,
)
from gloper_jobs.methods.base import MethodParams, Segmenter, check_size

if TYPE_CHECKING:
    import torch

INSTALL_HINT = "pip install 'gloper-jobs[deep]'"
DOWNLOAD_VARIABLE = "GLOPER_ALLOW_DOWNLOADS"


def require(module: str) -> Any:
    """Import an optional dependency of the deep baselines, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"the pretrained baselines need the {module.split('.')[0]!r} package: {INSTALL_HINT} "
            f"({exc})"
        ) from exc


@dataclass(frozen=True)
class WeightSource:
    """Where one model's weights are published and which setting points at them.

    ``filename``/``url``: a single checkpoint file and its download address.
    ``hub_id``: a Hugging Face repository (``transformers`` format).
    """

    label: str
    variable: str
    filename: str | None = None
    url: str | None = None
    hub_id: str | None = None

    def published(self) -> str:
        where = []
        if self.url:
            where.append(self.url)
        if self.hub_id:
            where.append(f"https://huggingface.co/{self.hub_id}")
        return " or ".join(where)

    def missing(self, looked: list[Path] | None = None, detail: str = "") -> WeightsMissingError:
        """The error for weights that are not here: file, where published, variable to set."""
        what = f"{self.label} weights" + (f" ({self.filename})" if self.filename else "")
        seen = f"; looked in {', '.join(str(p) for p in looked)}" if looked else ""
        extra = f" ({detail})" if detail else ""
        return WeightsMissingError(
            f"{what} not found{seen}{extra}. They are published at {self.published()}: download "
            f"them and set {self.variable} to the file or its folder, or set "
            f"{DOWNLOAD_VARIABLE}=1 on a machine with internet to fetch them automatically"
        )


def find_file(source: WeightSource, configured: str, weights_dir: str) -> tuple[Path | None, list[Path]]:
    """The checkpoint file named by ``configured`` (a file or a folder) or found in ``weights_dir``.

    A folder may hold the file itself or torch hub's ``checkpoints/`` layout.
    Returns the path (or None) and every place looked at. A configured path that
    does not exist is an error, not a silent fallback.
    """
    if configured:
        path = Path(configured).expanduser()
        if path.is_file():
            return path, [path]
        if not path.exists():
            raise WeightsMissingError(
                f"{source.variable}={configured} does not exist; point it at the {source.label} "
                f"weights ({source.filename or source.hub_id}) or unset it"
            )
        folders = [path]
    else:
        folders = [Path(weights_dir).expanduser()]
        torch = require("torch")
        folders.append(Path(torch.hub.get_dir()))  # where torch.hub.load put it, if it ever ran
    looked = []
    for folder in folders:
        for cand in (folder / str(source.filename), folder / "checkpoints" / str(source.filename)):
            looked.append(cand)
            if source.filename and cand.is_file():
                return cand, looked
    return None, looked


def download(source: WeightSource, weights_dir: str) -> Path:
    """Fetch ``source.url`` into ``weights_dir`` (atomically, via torch hub's downloader)."""
    if not source.url or not source.filename:
        raise source.missing(detail="no direct download address")
    torch = require("torch")
    dest = Path(weights_dir).expanduser() / source.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(source.url, str(dest), progress=False)
    except OSError as exc:  # URLError is an OSError
        raise source.missing([dest], f"download from {source.url} failed: {exc}") from exc
    return dest


def resolve_file(source: WeightSource, configured: str, weights_dir: str, allow_downloads: bool) -> Path:
    """A local checkpoint file for ``source``: configured, found, or (if allowed) downloaded."""
    path, looked = find_file(source, configured, weights_dir)
    if path is not None:
        return path
    if allow_downloads:
        return download(source, weights_dir)
    raise source.missing(looked)


def hub_cache_folder(source: WeightSource, cache: Path) -> Path:
    """Where a hub cache folder keeps ``source``'s repository (``models--<org>--<name>``)."""
    return cache / ("models--" + str(source.hub_id).replace("/", "--"))


def hub_locations(source: WeightSource, configured: str, weights_dir: str,
                  allow_downloads: bool) -> list[tuple[str, dict[str, Any]]]:
    """``(name_or_path, kwargs)`` for ``from_pretrained``, to try in order.

    ``configured`` may be a ``save_pretrained`` folder (has ``config.json``) or a
    hub cache folder (holds ``models--<org>--<name>``). Unset: the hub cache layout
    in ``weights_dir``, then the Hugging Face default cache, then (only if
    downloads are allowed) a download into ``weights_dir``.
    """
    hub_id = str(source.hub_id)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise WeightsMissingError(
                f"{source.variable}={configured} is not a folder; point it at a save_pretrained "
                f"folder of {hub_id} or at a Hugging Face hub cache folder"
            )
        if (path / "config.json").is_file():
            return [(str(path), {"local_files_only": True})]
        return [(hub_id, {"cache_dir": str(path), "local_files_only": not allow_downloads})]
    folder = str(Path(weights_dir).expanduser())
    tries: list[tuple[str, dict[str, Any]]] = [
        (hub_id, {"cache_dir": folder, "local_files_only": True}), (hub_id, {"local_files_only": True})]
    if allow_downloads:
        tries.append((hub_id, {"cache_dir": folder, "local_files_only": False}))
    return tries


def load_pretrained(source: WeightSource, cls: Any, configured: str, weights_dir: str,
                    allow_downloads: bool) -> Any:
    """``cls.from_pretrained`` at the first of :func:`hub_locations` that has the files;
    a missing-weights error that helps when none has."""
    problems = []
    for name, kwargs in hub_locations(source, configured, weights_dir, allow_downloads):
        try:
            return cls.from_pretrained(name, **kwargs)
        except OSError as exc:  # transformers reports absent files as OSError
            where = kwargs.get("cache_dir", name if name != source.hub_id else "the Hugging Face cache")
            problems.append(f"{where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise source.missing(detail="; ".join(problems))


@contextlib.contextmanager
def gpu_memory_guard(device: Any, what: str, fix: str) -> Iterator[None]:
    """Turn CUDA out-of-memory into :class:`DeviceOutOfMemoryError` naming ``fix``."""
    torch = require("torch")
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
        raise DeviceOutOfMemoryError(f"out of GPU memory on {device} {what}: {fix}") from exc


@dataclass(frozen=True)
class PretrainedParams(MethodParams):
    """Parameters every pretrained baseline has. Fields marked identity False do not
    change the result: the device and where the weights are read from."""

    size: int = 256
    device: str = field(default="auto", metadata={"identity": False})
    weights: str = field(default="", metadata={"identity": False})
    weights_dir: str = field(default=str(defaults.WEIGHTS_DIR), metadata={"identity": False})
    allow_downloads: bool = field(default=False, metadata={"identity": False})

    def validate(self) -> None:
        check_size(self.size)
        check_device(self.device)


class PretrainedSegmenter(Segmenter):
    """A method backed by a large pretrained model, loaded once and kept until :meth:`close`."""

    device_class = "gpu"
    #: the Settings field that holds this method's weights location
    weights_setting: ClassVar[str] = ""

    def __init__(self, params: MethodParams) -> None:
        super().__init__(params)
        self._model: Any = None
        self._device: Any = None
        self._lock = threading.Lock()

    @classmethod
    def settings_defaults(cls, settings: Any) -> dict[str, Any]:
        configured = getattr(settings, cls.weights_setting)
        return {
            "device": settings.device,
            "weights": str(configured) if configured is not None else "",
            "weights_dir": str(settings.weights_dir),
            "allow_downloads": settings.allow_downloads,
        }

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> Any:
        """Load the weights now (idempotent); workers may call it at boot. Returns the model."""
        with self._lock:
            if self._model is None:
                p = cast(PretrainedParams, self.params)
                device = resolve_device(p.device)
                with gpu_memory_guard(device, f"loading {self.name}",
                                      "free the card (one large model per card) or use device=cpu"):
                    self._model = self._load(device)
                self._device = device
            return self._model

    @abstractmethod
    def _load(self, device: torch.device) -> Any:
        """Build the model from the resolved weights and move it to ``device``."""

    def close(self) -> None:
        """Drop the model and give its GPU memory back."""
        with self._lock:
            if self._model is None:
                return
            self._model = None
            gc.collect()
            torch = require("torch")
            if self._device is not None and self._device.type == "cuda":
                torch.cuda.empty_cache()


def darker_of(image: np.ndarray, masks: dict[str, np.ndarray], names: tuple[str, str]) -> str:
    """Of two candidate names, the one whose pixels are darker on average.

    ``image``: ``SxSx3 uint8 RGB``; ``masks``: ``SxS bool``. The label-free rule the
    k-means baseline also uses: coat patterns are usually the darker colour.
    An empty mask never wins over a non-empty one.
    """
    lum = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    means = {}
    for n in names:
        m = masks[n]
        means[n] = float(lum[m].mean()) if m.any() else float("inf")
    return min(names, key=lambda n: means[n])
