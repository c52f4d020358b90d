"""GloPER: one small UNet trained per photo and per local size (METHOD.md).

:mod:`gloper_jobs.methods.gloper_engine` trains the models (early stop, all sizes
in one pass, precision options); :func:`train_local_size` trains one;
:class:`GloperSegmenter` trains every local size and reads out the masks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch

from gloper_jobs.data.images import resize_mask, resize_rgb
from gloper_jobs.devices import check_device, resolve_device
from gloper_jobs.exceptions import DeviceOutOfMemoryError, InvalidParameterError
from gloper_jobs.methods.base import (
    MethodParams,
    Segmentation,
    SegmentContext,
    Segmenter,
    check_inputs,
    check_size,
)
from gloper_jobs.methods.choice import check_polarity
from gloper_jobs.methods.gloper_engine import EngineOptions, train_sizes
from gloper_jobs.methods.gloper_readout import read_out

if TYPE_CHECKING:
    from gloper_jobs.methods.gloper_inference import ModelExtractor

PAPER_LOCAL_SIZES = (4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class GloperParams(MethodParams):
    """GloPER's settings; defaults are the CPU profile, ``profile=paper`` the paper's.

    ``choice`` names the mask a user without labels gets (``consensus``, ``fused`` or
    ``local_<l>``) and ``polarity`` which colour is the pattern (``auto``: the label-free
    rule of :mod:`gloper_jobs.methods.choice`; ``darker``: the paper's reading;
    ``lighter``); see :mod:`gloper_jobs.methods.gloper_readout`.

    The CPU profile (S=128, local sizes 8 and 16, 25 steps) was chosen
    from measurements on the ten example photos on a 2-core machine: about 0.2 s a
    step, so about 11 s a photo, within 0.01-0.02 Dice of 100 steps and of S=256
    (README, "GloPER profiles").
    """

    size: int = 128
    local_sizes: tuple[int, ...] = (8, 16)
    steps: int = 25
    tau: float = 0.1
    rho: float = 0.5
    lr: float = 1e-3
    seed: int = 41
    choice: str = "consensus"
    polarity: str = "auto"
    #: a dataset model (``gloper train``): one forward pass per photo instead of ``steps``
    model: str = ""
    finetune_steps: int = 0
    # Engine (gloper_engine.py). Early stop and precision change the masks, so they
    # are part of the job's identity; the others only change how fast they come.
    # Stop rule: read out every 10 steps, stop at IoU > 0.97 with the previous
    # read-out (bench/gloper_stop_rules.py, README "The training engine").
    stop_every: int = 10
    stop_iou: float = 0.97
    precision: str = "fp32"
    #: the largest local size trains from scratch, the others from its settled weights
    #: (gloper_engine.py; bench/gloper_speed.py: 3.9x fewer steps, the plain loop's Dice)
    chain_sizes: bool = True
    device: str = field(default="auto", metadata={"identity": False})
    # Batching the sizes under vmap is 4x slower per model step on CPU: auto = CUDA only.
    batch_sizes: str = field(default="auto", metadata={"identity": False})
    # channels_last: 0.60 vs 0.67 s per step at S=256 on the 2-core CPU; on for CUDA too.
    channels_last: str = field(default="on", metadata={"identity": False})
    compile: str = field(default="off", metadata={"identity": False})

    def validate(self) -> None:
        check_size(self.size, 16)
        if not self.local_sizes:
            raise InvalidParameterError("local_sizes must name at least one size, e.g. 8,16")
        for ls in self.local_sizes:
            if ls < 1 or self.size % (2 * ls):
                raise InvalidParameterError(
                    f"local size {ls} must be >= 1 and 2*{ls} must divide size={self.size}"
                )
        if len(set(self.local_sizes)) != len(self.local_sizes):
            raise InvalidParameterError(f"local_sizes {self.local_sizes} has duplicates")
        if self.steps < 1:
            raise InvalidParameterError(f"steps={self.steps} must be >= 1")
        if self.tau <= 0:
            raise InvalidParameterError(f"tau={self.tau} must be > 0")
        if not 0 <= self.rho <= 1:
            raise InvalidParameterError(f"rho={self.rho} must be in [0, 1]")
        if self.lr <= 0:
            raise InvalidParameterError(f"lr={self.lr} must be > 0")
        valid_choices = ["consensus", "fused"] + [f"local_{ls}" for ls in self.local_sizes]
        if self.choice not in valid_choices:
            raise InvalidParameterError(f"choice={self.choice!r}: use one of {', '.join(valid_choices)}")
        check_polarity(self.polarity)
        if self.finetune_steps < 0:
            raise InvalidParameterError(f"finetune_steps={self.finetune_steps} must be >= 0")
        if self.finetune_steps and not self.model:
            raise InvalidParameterError("finetune_steps warm-starts a dataset model: also pass --param model=MODEL.pt")
        check_device(self.device)
        for name in ("batch_sizes", "channels_last"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise InvalidParameterError(f"{name}={getattr(self, name)!r}: use auto (on with CUDA), on or off")
        self.engine_options(torch.device("cpu"))  # checks precision, compile, stop_every, stop_iou

    def engine_options(self, device: torch.device) -> EngineOptions:
        """The engine's options on ``device`` (``auto`` switches: on with CUDA, off on CPU)."""

        def switch(value: str) -> bool:
            return value == "on" or (value == "auto" and device.type == "cuda")

        return EngineOptions(
            steps=self.steps, tau=self.tau, lr=self.lr, seed=self.seed, rho=self.rho,
            stop_every=self.stop_every, stop_iou=self.stop_iou, precision=self.precision,
            # the chain saves steps only when the warm sizes may stop early; without early
            # stop (stop_every=0) every size trains from scratch, as in the authors' loop
            chain_sizes=self.chain_sizes and self.stop_every > 0, channels_last=switch(self.channels_last), compile=self.compile,
            batched=switch(self.batch_sizes) and len(self.local_sizes) > 1)



def train_local_size(
    image: torch.Tensor,
    foreground: torch.Tensor,
    local_size: int,
    params: GloperParams,
    device: torch.device,
    readout_steps: tuple[int, ...] = (),
) -> tuple[torch.Tensor, list[float], dict[int, torch.Tensor]]:
    """Train one GloPER model on one image every step (no early stop); the authors' loop.

    ``image``: ``1x3xSxS float32`` in [0, 1] on ``device``; ``foreground``: ``1xSxS
    float32`` (1 = animal). Returns ``SxS float32`` weights in [0, 1] (on CPU),
    the loss of every step, and the weight maps read out after each step in
    ``readout_steps`` and at the end (for calibration sweeps over the number of steps).
    Deterministic for a fixed seed on CPU.
    """
    opts = EngineOptions(steps=params.steps, tau=params.tau, lr=params.lr, seed=params.seed, rho=params.rho)
    out = train_sizes(image, foreground, (local_size,), opts, device, readout_steps=readout_steps)[local_size]
    return out.weight, out.losses, out.snapshots


class GloperSegmenter(Segmenter):
    """GloPER. Candidates ``local_<l>`` / ``local_<l>_lighter`` per local size in both
    polarities, plus the derived ``fused`` and ``consensus`` masks of each polarity.

    The label-free choice is ``choice`` (``consensus`` by default) in the colour
    ``polarity`` calls the pattern; ``info["polarity"]`` says which and why.
    With ``model`` (a checkpoint of ``gloper train``) no network is trained per photo:
    the dataset model's one forward pass gives the weight maps
    (:mod:`gloper_jobs.methods.gloper_inference`), after ``finetune_steps`` per-photo
    steps, and the same read-out makes the same candidates.
    """

    name = "gloper"
    Params = GloperParams
    device_class = "gpu"
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        "paper": {"size": 1024, "local_sizes": PAPER_LOCAL_SIZES, "steps": 1000},
    }

    def __init__(self, params: MethodParams) -> None:
        super().__init__(params)
        p = cast(GloperParams, params)
        self._model: ModelExtractor | None = None
        if p.model:  # load (and check) the dataset model once, here rather than on the first photo
            self._model = self._load_model(p)

    @staticmethod
    def _load_model(p: GloperParams) -> ModelExtractor:
        from gloper_jobs.methods.gloper_inference import ModelExtractor

        return ModelExtractor(p.model, p.size, p.local_sizes, resolve_device(p.device))

    @classmethod
    def settings_defaults(cls, settings: Any) -> dict[str, Any]:
        return {"device": settings.device}

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
