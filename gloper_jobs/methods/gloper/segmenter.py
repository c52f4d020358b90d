"""GloPER as a method of the registry: train (or look up) every local size, read the masks out.

:class:`GloperSegmenter` trains one network per local size on the photo with the
engine (:mod:`gloper_jobs.methods.gloper.engine`), or with ``model`` runs the dataset
model's one forward pass (:mod:`gloper_jobs.methods.gloper.dataset_model.extract`),
then reads out every candidate (:mod:`gloper_jobs.methods.gloper.readout`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, cast

import cv2
import numpy as np
import torch

from gloper_jobs.data.images import resize_mask, resize_rgb
from gloper_jobs.devices import resolve_device
from gloper_jobs.exceptions import DeviceOutOfMemoryError
from gloper_jobs.methods.base import (
    MethodParams,
    Segmentation,
    SegmentContext,
    Segmenter,
    check_inputs,
)
from gloper_jobs.methods.choice import EVIDENCE_SIZE
from gloper_jobs.methods.gloper.engine import train_sizes
from gloper_jobs.methods.gloper.params import PAPER_LOCAL_SIZES, GloperParams
from gloper_jobs.methods.gloper.readout import LIGHTER_SUFFIX, read_out

if TYPE_CHECKING:
    from gloper_jobs.methods.gloper.dataset_model.extract import ModelExtractor


class GloperSegmenter(Segmenter):
    """GloPER. Candidates ``local_<l>`` / ``local_<l>_lighter`` per local size in both
    polarities, plus the derived ``fused`` and ``consensus`` masks of each polarity.

    The label-free choice is ``choice`` (``consensus`` by default) in the colour
    ``polarity`` calls the pattern; ``info["polarity"]`` says which and why.
    With ``model`` (a checkpoint of ``gloper train``) no network is trained per photo:
    the dataset model's one forward pass gives the weight maps
    (:mod:`gloper_jobs.methods.gloper.dataset_model.extract`), after ``finetune_steps`` per-photo
    steps, and the same read-out makes the same candidates.
    """

    name = "gloper"
    Params = GloperParams
    device_class = "gpu"
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        "paper": {"size": 1024, "local_sizes": PAPER_LOCAL_SIZES, "steps": 1000},
    }

    #: the read-out threshold is what a calibration tries by default (the network trains once per value)
    calibration_grid: ClassVar[tuple[str, ...]] = ("rho=0.4,0.5,0.6",)

    @classmethod
    def choice_params(cls, candidate: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """``local_8_lighter`` is ``choice=local_8, polarity=lighter``; every candidate is reachable."""
        base = candidate.removesuffix(LIGHTER_SUFFIX)
        return {"choice": base, "polarity": "lighter" if base != candidate else "darker"}

    def __init__(self, params: MethodParams) -> None:
        super().__init__(params)
        p = cast(GloperParams, params)
        self._model: ModelExtractor | None = None
        if p.model:  # load (and check) the dataset model once, here rather than on the first photo
            self._model = self._load_model(p)

    @staticmethod
    def _load_model(p: GloperParams) -> ModelExtractor:
        from gloper_jobs.methods.gloper.dataset_model.extract import ModelExtractor

        return ModelExtractor(p.model, p.size, p.local_sizes, resolve_device(p.device))

    @classmethod
    def settings_defaults(cls, settings: Any) -> dict[str, Any]:
        return {"device": settings.device}

    @classmethod
    def model_defaults(cls, params: dict[str, Any]) -> dict[str, Any]:
        """A dataset model runs at the size and local sizes it was trained for: ``--param
        model=M.pt`` alone takes them from the checkpoint's metadata (given ones are checked
        against it: :meth:`check_model`)."""
        if not params.get("model"):
            return {}
        from gloper_jobs.methods.gloper.dataset_model.checkpoint import read_info

        info = read_info(str(params["model"]))
        return {"size": int(info.settings["size"]), "local_sizes": info.local_sizes}

    @classmethod
    def check_model(cls, params: MethodParams) -> None:
        """A dataset model trained for another ``size``/``local_sizes`` than ``params`` ask is refused
        (:class:`~gloper_jobs.exceptions.ModelSettingsError`), from its metadata."""
        p = cast(GloperParams, params)
        if p.model:
            from gloper_jobs.methods.gloper.dataset_model.checkpoint import read_info

            read_info(p.model).check_inference_settings(p.size, p.local_sizes)

    def input_side(self) -> int | None:
        """The dataset model reads the photo at S and its colours at the evidence size;
        per-photo GloPER keeps the full photo (its results are pinned)."""
        if not cast(GloperParams, self.params).model:
            return None
        return max(cast(GloperParams, self.params).readout_side, EVIDENCE_SIZE)

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    def segment(self, image: np.ndarray, foreground: np.ndarray, context: SegmentContext | None = None) -> Segmentation:
        check_inputs(image, foreground)
        p = cast(GloperParams, self.params)
        if p.model and self._model is None:  # closed (evicted) and asked again
            self._model = self._load_model(p)
        if self._model is not None:
            weights, fg_np, info = self._model.weight_maps(image, foreground, p.finetune_steps, p.seed)
        else:
            weights, fg_np, info = self._train_per_photo(image, foreground, p)
        side = p.readout_side
        if side != p.size:  # bilinear weights: boundaries at the read-out's resolution, not S's
            weights = {ls: cv2.resize(w, (side, side), interpolation=cv2.INTER_LINEAR) for ls, w in weights.items()}
            fg_np = resize_mask(foreground, (side, side))
        out = read_out(image, foreground, weights, fg_np, p.rho, p.choice, p.polarity)
        return Segmentation(out.candidates, out.choice, derived=out.derived, info={**info, **out.info})

    @staticmethod
    def _train_per_photo(image: np.ndarray, foreground: np.ndarray,
                         p: GloperParams) -> tuple[dict[int, np.ndarray], np.ndarray, dict[str, Any]]:
        """Train one network per local size on this photo; its weight maps (``SxS float32``),
        the foreground at ``SxS bool`` and what to record."""
        device = resolve_device(p.device)
        s = p.size
        rgb = torch.from_numpy(resize_rgb(image, (s, s))).permute(2, 0, 1).unsqueeze(0).contiguous()
        fg_np = resize_mask(foreground, (s, s))
        fg = torch.from_numpy(fg_np.astype(np.float32)).unsqueeze(0)
        weights: dict[int, np.ndarray] = {}
        opts = p.engine_options(device)
        info: dict[str, Any] = {"device": str(device), "engine": opts.to_info(), "final_loss": {},
                                "stop_step": {}}
        try:
            rgb, fg = rgb.to(device), fg.to(device)
            t0 = time.perf_counter()
            results = train_sizes(rgb, fg, p.local_sizes, opts, device)
            info["seconds"] = round(time.perf_counter() - t0, 3)
            for ls in p.local_sizes:
                res = results[ls]
                weights[ls] = res.weight.numpy()
                info["stop_step"][f"local_{ls}"] = res.stop_step
                info["final_loss"][f"local_{ls}"] = round(res.losses[-1], 6) if res.losses else None
        except torch.cuda.OutOfMemoryError as exc:
            raise DeviceOutOfMemoryError(
                f"out of GPU memory on {device} at size={s}: lower the GloPER size parameter "
                "(e.g. --param size=512), train the local sizes one at a time (--param batch_sizes=off), "
                "use --param precision=bf16, or run fewer workers per card"
            ) from exc
        return weights, fg_np, info
