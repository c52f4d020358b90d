"""GloPER's parameters: one family for the per-photo method and the dataset model.

:class:`GloperFamily` holds what every GloPER network is trained with (working size S,
local sizes, step budget, Gumbel temperature, learning rate, seed, device);
:class:`GloperParams` adds the per-photo method's read-out, stop rule and engine
switches, :class:`DatasetModelParams` the dataset model's batches and checkpoints.
:class:`EngineOptions` is not a second declaration of any of them: it is a
:class:`GloperParams` resolved for one device (``auto`` switches decided).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from gloper_jobs.devices import check_device
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.methods.base import MethodParams, check_size
from gloper_jobs.methods.choice import check_polarity

PAPER_LOCAL_SIZES = (4, 8, 16, 32, 64, 128, 256)
PRECISIONS = ("fp32", "tf32", "bf16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
SWITCHES = ("auto", "on", "off")
#: a dataset model's weight maps are read out at least this large (Dice is scored at 256):
#: bilinear weights at 256 against the model's S=128 gave +0.009 label-free Dice on the ten
#: examples (docs/benchmarks.md, "Reading a dataset model out at 256")
MODEL_READOUT_SIZE = 256
#: the per-photo training's settings (the engine's step budget, optimiser, stop rule and
#: precision): what a dataset model (``model``) does not use
PER_PHOTO_TRAINING = ("steps", "tau", "lr", "seed", "stop_every", "stop_iou", "chain_sizes", "precision")


def check_local_sizes(size: int, local_sizes: tuple[int, ...]) -> None:
    """Raise :class:`InvalidParameterError` unless every ``2l`` divides ``size`` (no duplicates)."""
    if not local_sizes:
        raise InvalidParameterError("local_sizes must name at least one size, e.g. 8,16")
    for ls in local_sizes:
        if ls < 1 or size % (2 * ls):
            raise InvalidParameterError(f"local size {ls} must be >= 1 and 2*{ls} must divide size={size}")
    if len(set(local_sizes)) != len(local_sizes):
        raise InvalidParameterError(f"local_sizes {local_sizes} has duplicates")


def crop_unit(local_sizes: tuple[int, ...]) -> int:
    """Smallest side a training crop may have: a multiple of 16 and of ``2 * max(l)``."""
    return math.lcm(16, 2 * max(local_sizes))


@dataclass(frozen=True)
class GloperFamily(MethodParams):
    """What every GloPER network trains with: S, the local sizes, the step budget, tau, lr, seed."""

    size: int = 128
    local_sizes: tuple[int, ...] = (8, 16)
    steps: int = 25
    tau: float = 0.1
    lr: float = 1e-3
    seed: int = 41
    device: str = field(default="auto", metadata={"identity": False})

    def validate(self) -> None:
        check_size(self.size, 16)
        check_local_sizes(self.size, self.local_sizes)
        if self.steps < 1:
            raise InvalidParameterError(f"steps={self.steps} must be >= 1")
        if self.tau <= 0:
            raise InvalidParameterError(f"tau={self.tau} must be > 0")
        if self.lr <= 0:
            raise InvalidParameterError(f"lr={self.lr} must be > 0")
        check_device(self.device)


@dataclass(frozen=True)
class GloperParams(GloperFamily):
    """GloPER's settings; defaults are the CPU profile, ``profile=paper`` the paper's.

    ``choice`` names the mask a user without labels gets (``consensus``, ``fused`` or
    ``local_<l>``) and ``polarity`` which colour is the pattern (``auto``: the label-free
    rule of :mod:`gloper_jobs.methods.choice`; ``darker``: the paper's reading;
    ``lighter``); see :mod:`gloper_jobs.methods.gloper.readout`.

    The CPU profile (S=128, local sizes 8 and 16, 25 steps) was chosen from measurements
    on the ten example photos on a 2-core machine (docs/benchmarks.md).
    """

    rho: float = 0.5
    #: side the weight maps are read out at (bilinear from S): 0 = auto, S for per-photo
    #: GloPER (its results are pinned), max(S, MODEL_READOUT_SIZE) for a dataset model
    readout_size: int = 0
    choice: str = "consensus"
    polarity: str = "auto"
    #: a dataset model (``gloper train``): one forward pass per photo instead of ``steps``
    model: str = ""
    finetune_steps: int = 0
    # Engine (engine.py). Early stop and precision change the masks, so they are part of
    # the job's identity; the others only change how fast they come. Stop rule: read out
    # every 10 steps, stop at IoU > 0.97 with the previous read-out (docs/benchmarks.md).
    stop_every: int = 10
    stop_iou: float = 0.97
    precision: str = "fp32"
    #: the largest local size trains from scratch, the others from its settled weights
    chain_sizes: bool = True
    # Batching the sizes under vmap is 4x slower per model step on CPU: auto = CUDA only.
    batch_sizes: str = field(default="auto", metadata={"identity": False})
    # channels_last: 0.60 vs 0.67 s per step at S=256 on the 2-core CPU; on for CUDA too.
    channels_last: str = field(default="on", metadata={"identity": False})
    compile: str = field(default="off", metadata={"identity": False})

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.rho <= 1:
            raise InvalidParameterError(f"rho={self.rho} must be in [0, 1]")
        if self.readout_size and not self.size <= self.readout_size <= 4096:
            raise InvalidParameterError(
                f"readout_size={self.readout_size} must be 0 (auto) or between size={self.size} and 4096")
        valid_choices = ["consensus", "fused"] + [f"local_{ls}" for ls in self.local_sizes]
        if self.choice not in valid_choices:
            raise InvalidParameterError(f"choice={self.choice!r}: use one of {', '.join(valid_choices)}")
        check_polarity(self.polarity)
        if self.finetune_steps < 0:
            raise InvalidParameterError(f"finetune_steps={self.finetune_steps} must be >= 0")
        if self.finetune_steps and not self.model:
            raise InvalidParameterError("finetune_steps warm-starts a dataset model: also pass --param model=MODEL.pt")
        for name in ("batch_sizes", "channels_last"):
            if getattr(self, name) not in SWITCHES:
                raise InvalidParameterError(f"{name}={getattr(self, name)!r}: use auto (on with CUDA), on or off")
        if self.stop_every < 0:
            raise InvalidParameterError(f"stop_every={self.stop_every} must be >= 0 (0: no early stop)")
        if not 0 < self.stop_iou <= 1:
            raise InvalidParameterError(f"stop_iou={self.stop_iou} must be in (0, 1]")
        if self.precision not in PRECISIONS:
            raise InvalidParameterError(f"precision={self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.compile not in COMPILE_MODES:
            raise InvalidParameterError(f"compile={self.compile!r}: use one of {', '.join(COMPILE_MODES)}")

    @classmethod
    def idle(cls, params: dict[str, Any]) -> frozenset[str]:
        """With ``model`` the per-photo training settings do nothing: the dataset model's
        forward pass replaces the training (its fine-tuning, ``finetune_steps``, takes lr and
        tau from the checkpoint and only the seed from here)."""
        if not params.get("model"):
            return frozenset()
        unused = set(PER_PHOTO_TRAINING) - ({"seed"} if params.get("finetune_steps") else set())
        return frozenset(unused & set(params))

    @property
    def readout_side(self) -> int:
        """The side the masks are read out at (``readout_size`` resolved)."""
        if self.readout_size:
            return self.readout_size
        return max(self.size, MODEL_READOUT_SIZE) if self.model else self.size

    def identity(self) -> dict[str, Any]:
        """As every method's, with the read-out side resolved and left out where it is S
        (every job recorded before ``readout_size`` existed read out at S: their keys stay)."""
        out = super().identity()
        del out["readout_size"]
        if self.readout_side != self.size:
            out["readout_size"] = self.readout_side
        return out

    def engine_options(self, device: torch.device) -> EngineOptions:
        """These settings on ``device`` (``auto`` switches: on with CUDA, off on CPU)."""

        def switch(value: str) -> bool:
            return value == "on" or (value == "auto" and device.type == "cuda")

        return EngineOptions(
            self, channels_last=switch(self.channels_last),
            batched=switch(self.batch_sizes) and len(self.local_sizes) > 1,
            # the chain saves steps only when the warm sizes may stop early; without early
            # stop (stop_every=0) every size trains from scratch, as in the authors' loop
            chain_sizes=self.chain_sizes and self.stop_every > 0)


@dataclass(frozen=True)
class EngineOptions:
    """:class:`GloperParams` resolved for one device: what the training engine reads.

    ``params`` carries the method's settings (steps, tau, lr, seed, rho, the stop rule,
    precision, compile mode); the three switches are decided for the device.
    """

    params: GloperParams
    channels_last: bool = False
    batched: bool = False
    chain_sizes: bool = False

    def __getattr__(self, name: str) -> Any:
        """The method's settings read through (``options.steps`` is ``options.params.steps``)."""
        if name == "params":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.params, name)

    @classmethod
    def plain(cls, **params: Any) -> EngineOptions:
        """The authors' loop (every step, fp32, one size at a time, nothing chained),
        with ``params`` (GloperParams fields) switched on or changed."""
        base = {"stop_every": 0, "chain_sizes": False, "channels_last": "off", "batch_sizes": "off",
                "compile": "off", "precision": "fp32", **params}
        p = GloperParams(**base)
        p.validate()
        return p.engine_options(torch.device("cpu"))

    def to_info(self) -> dict[str, Any]:
        """What the engine ran with, JSON-ready (``Segmentation.info["engine"]``)."""
        p = self.params
        return {"steps": p.steps, "tau": p.tau, "lr": p.lr, "seed": p.seed, "rho": p.rho,
                "stop_every": p.stop_every, "stop_iou": p.stop_iou, "precision": p.precision,
                "channels_last": self.channels_last, "compile": p.compile, "batched": self.batched,
                "chain_sizes": self.chain_sizes}


@dataclass(frozen=True)
class DatasetModelParams(GloperFamily):
    """Training settings of a dataset-level model (``gloper train --param``).

    ``size`` and ``local_sizes`` are GloPER's (the extraction runs at the same).
    Each step trains on ``batch`` photos (per process under DDP), each resized to
    ``size``, randomly flipped and cropped to ``crop`` (0: the largest multiple of
    16 and of ``2 * max(local_sizes)`` within 3/4 of ``size``). Default: S=256 with
    local sizes 16 and 32 (the per-photo profile's 8 and 16 windows, at twice the
    resolution), 300 steps of 4 crops of 192 px, about 6 minutes on a 2-core CPU.
    The retired ``bench.model_sweep`` (commit 9ad388b) chose it: against S=128 with 8/16 it won in every
    leave-one-species-out fold, on the ten examples (label-free Dice 0.649 vs 0.645)
    and a synthetic set of other species (0.917 vs 0.907); docs/benchmarks.md.
    """

    size: int = 256
    local_sizes: tuple[int, ...] = (16, 32)
    steps: int = 300
    batch: int = 4
    crop: int = 0
    checkpoint_every: int = 50

    def validate(self) -> None:
        super().validate()
        for name in ("batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InvalidParameterError(f"{name}={getattr(self, name)} must be >= 1")
        unit = crop_unit(self.local_sizes)
        if self.crop and (self.crop % unit or self.crop > self.size):
            raise InvalidParameterError(
                f"crop={self.crop} must be a multiple of {unit} (16 and 2 x the largest local size) "
                f"and at most size={self.size}; crop=0 picks one")

    @property
    def crop_size(self) -> int:
        """The training crop side in pixels (``crop`` or its automatic value)."""
        if self.crop:
            return self.crop
        unit = crop_unit(self.local_sizes)
        return max(unit, (self.size * 3 // 4) // unit * unit)
