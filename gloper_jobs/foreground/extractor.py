"""Foreground masks of the animal with the real ``rembg`` (u2netp by default).

The ONNX session is built once per :class:`ForegroundExtractor` and reused; a
worker process keeps one. The paper's rule is kept: ``alpha != 0`` is
foreground. A degenerate mask (almost empty or almost full, as u2netp gives on
close-up fur crops) is replaced by the whole frame and reported as such.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from gloper_jobs import defaults
from gloper_jobs.foreground.weights import locate_model

if TYPE_CHECKING:
    from gloper_jobs.settings import Settings


@dataclass(frozen=True)
class Foreground:
    """A foreground mask and how it was obtained.

    ``mask`` is ``HxW bool`` at the photo's size (True = animal).
    ``fraction`` is the share of the frame the model is confident about (alpha > 127),
    which decides whether the mask is degenerate.
    ``fallback`` is True when the model's mask was degenerate and the whole frame is used.
    """

    mask: np.ndarray
    fraction: float
    fallback: bool
    model: str


#: rembg's normalisation of u2net(p)'s input (ImageNet's mean and std)
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _session_class(base: Any) -> Any:
    class _LocalFileSession(base):  # type: ignore[misc, valid-type]
        """rembg's own session, reading the file we located instead of downloading."""

        @classmethod
        def download_models(cls, *args: Any, model_file: str | None = None, **kwargs: Any) -> str:
            if model_file is None:  # pragma: no cover - we always pass it
                raise ValueError("model_file is required")
            return model_file

    return _LocalFileSession


class ForegroundExtractor:
    """Computes animal masks with a rembg model loaded once from ``models_dir``."""

    def __init__(
        self,
        models_dir: Path,
        model: str = defaults.FOREGROUND_MODEL,
        min_fraction: float = defaults.FOREGROUND_MIN_FRACTION,
        max_fraction: float = defaults.FOREGROUND_MAX_FRACTION,
        max_side: int = defaults.FOREGROUND_MAX_SIDE,
        threads: int | None = None,
    ) -> None:
        self.model = model
        self.model_file = locate_model(models_dir, model)  # fails early, naming the fix
        self.min_fraction = min_fraction
        self.max_fraction = max_fraction
        self.max_side = max_side
        self.threads = threads
        #: the smallest photo side this model's mask needs (its input square)
        self.input_side = defaults.FOREGROUND_INPUT_SIDE
        self._session: Any = None
        self._lock = threading.Lock()

    def _get_session(self) -> Any:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort
                from rembg.sessions.u2net import U2netSession
                from rembg.sessions.u2netp import U2netpSession

                base = U2netpSession if self.model == "u2netp" else U2netSession
                opts = ort.SessionOptions()
                opts.log_severity_level = 3
                # the process's share of the cores (as torch's), and no spin-waiting: spinning
                # threads took 0.93 s a mask against 0.52 s without on a shared 2-core machine
                opts.intra_op_num_threads = self.threads or 0
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self._session = _session_class(base)(
                    self.model, opts, model_file=str(self.model_file),
                    providers=["CPUExecutionProvider"],
                )
            return self._session

    def alpha(self, image: np.ndarray) -> np.ndarray:
        """The model's alpha for ``HxWx3 uint8 RGB``, as ``HxW uint8`` at the same size.

        rembg's own steps at the model's input size (``input_side`` square, ImageNet
        normalisation after scaling by the brightest value, min-max of the output,
        Lanczos back to the photo), in float32 and shrinking by whole factors first
        (Pillow's ``reducing_gap``): the same mask at a third of rembg's overhead.
        """
        h, w = image.shape[:2]
        pil = Image.fromarray(image, mode="RGB")
        scale = self.max_side / max(h, w)
        if scale < 1:
            pil = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
        side = self.input_side
        small = np.asarray(pil.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.float32)
        small = (small / max(float(small.max()), 1e-6) - _MEAN) / _STD
        session = self._get_session().inner_session
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(small.transpose(2, 0, 1)[None])}
        pred = session.run(None, feed)[0][0, 0]
        lo, hi = float(pred.min()), float(pred.max())
        pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
        alpha = Image.fromarray((pred * 255).astype(np.uint8), mode="L").resize(pil.size, Image.Resampling.LANCZOS)
        if alpha.size != (w, h):
            alpha = alpha.resize((w, h), Image.Resampling.NEAREST)
        return np.asarray(alpha, dtype=np.uint8)

    def __call__(self, image: np.ndarray) -> Foreground:
        """Foreground of ``HxWx3 uint8 RGB`` at the same ``HxW``, with the fallback rule applied.

        Foreground is ``alpha != 0`` (the paper's rule). The mask is degenerate when
        the confident part (``alpha > 127``) covers less than ``min_fraction`` or more
        than ``max_fraction`` of the frame: u2netp's faint haze on a close-up fur crop
        is not an animal outline.
        """
        alpha = self.alpha(image)
        mask = alpha != 0
        fraction = float((alpha > 127).mean())
        if fraction < self.min_fraction or fraction > self.max_fraction:
            return Foreground(np.ones_like(mask, dtype=bool), fraction, True, self.model)
        return Foreground(mask, fraction, False, self.model)


def whole_frame(image: np.ndarray) -> Foreground:
    """A foreground that is the whole frame (``--no-foreground`` and synthetic data)."""
    return Foreground(np.ones(image.shape[:2], dtype=bool), 1.0, False, "none")


#: what the pipeline calls per photo: ``HxWx3 uint8 RGB`` -> :class:`Foreground`
ForegroundFn = Callable[[np.ndarray], Foreground]


def build_foreground(settings: Settings, model: str | None = None) -> ForegroundFn | None:
    """The extractor of ``model`` (the settings' by default; fails early if its weights
    are missing), or None for ``none`` (whole frames)."""
    name = model or settings.foreground_model
    from gloper_jobs.devices import default_torch_threads

    if name == "none":
        return None
    return ForegroundExtractor(settings.models_dir, name, threads=settings.torch_threads or default_torch_threads(1))
