"""SAM baseline (METHOD.md): the automatic mask generator, masks ranked by area.

The photo is resized to ``size x size``, its background blacked out, and
``segment_anything``'s :class:`SamAutomaticMaskGenerator` run on it (the
paper: ViT-H ``sam_vit_h_4b8939.pth``, 64 points per side, ``crop_n_layers=2``:
``profile=paper``). The masks are ranked by area; the candidates are the
largest, the second largest, the union of all but the largest (``rest``) and
its complement within the foreground (``rest_complement``).

The checkpoint's architecture is read from the file itself (embedding width,
depth, heads and which blocks use global attention), so ``vit_b``/``vit_l``/
``vit_h`` and any other SAM image encoder load through the same code. A file
that is a known published model of another type than ``model_type`` is refused.
On machines where torchvision cannot load, see
:mod:`gloper_jobs.methods.torchvision_fallback`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from gloper_jobs import defaults
from gloper_jobs.exceptions import ConfigurationError, InvalidParameterError, WeightsMissingError
from gloper_jobs.methods.base import Segmentation, SegmentContext
from gloper_jobs.methods.pretrained import (
    INSTALL_HINT,
    PretrainedParams,
    PretrainedSegmenter,
    WeightSource,
    darker_of,
    gpu_memory_guard,
    require,
    resolve_file,
)

if TYPE_CHECKING:
    import torch

#: model type -> (embed dim, depth, heads, global attention blocks), as segment_anything builds them
SAM_ARCHITECTURES: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
SAM_CANDIDATES = ("largest", "second_largest", "rest", "rest_complement")
SAM_CHOICES = (*SAM_CANDIDATES, "darker")
_IMAGE_SIZE, _PATCH, _WINDOW = 1024, 16, 14  # fixed by segment_anything's _build_sam


def sam_source(model_type: str) -> WeightSource:
    filename = defaults.SAM_CHECKPOINTS[model_type]
    return WeightSource(f"SAM {model_type}", "GLOPER_SAM_CHECKPOINT", filename,
                        defaults.SAM_URL.format(filename=filename))


@dataclass(frozen=True)
class SamParams(PretrainedParams):
    """SAM's settings; defaults are the CPU profile, ``profile=paper`` the paper's.

    ``points_per_batch`` only trades speed for GPU memory (lower it on an
    out-of-memory error); it is not part of the result's identity.
    """

    model_type: str = "vit_b"
    points_per_side: int = 16
    crop_n_layers: int = 0
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    points_per_batch: int = field(default=64, metadata={"identity": False})
    choice: str = "darker"

    def validate(self) -> None:
        super().validate()
        if self.model_type not in SAM_ARCHITECTURES:
            raise InvalidParameterError(
                f"model_type={self.model_type!r}: use one of {', '.join(SAM_ARCHITECTURES)}"
            )
        if not 1 <= self.points_per_side <= 128:
            raise InvalidParameterError(f"points_per_side={self.points_per_side} must be in 1..128")
        if not 0 <= self.crop_n_layers <= 3:
            raise InvalidParameterError(f"crop_n_layers={self.crop_n_layers} must be in 0..3")
        if self.points_per_batch < 1:
            raise InvalidParameterError(f"points_per_batch={self.points_per_batch} must be >= 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidParameterError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.choice not in SAM_CHOICES:
            raise InvalidParameterError(f"choice={self.choice!r}: use one of {', '.join(SAM_CHOICES)}")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A SAM state dict from ``path`` (``torch.load`` with ``weights_only``)."""
    torch = require("torch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and format errors alike
        raise WeightsMissingError(f"{path} is not a readable SAM checkpoint: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or "image_encoder.pos_embed" not in state:
        raise WeightsMissingError(f"{path} is not a SAM checkpoint (no image_encoder.pos_embed)")
    return state


def infer_architecture(state: dict[str, torch.Tensor]) -> tuple[int, int, int, tuple[int, ...]]:
    """``(embed dim, depth, heads, global attention blocks)`` of a SAM image encoder.

    Read from the tensors: the width from ``pos_embed``, the depth from the block
    count, the head width from the relative position tables (their length is
    ``2*window-1`` in windowed blocks and ``2*64-1`` in global ones).
    """
    try:
        embed = int(state["image_encoder.pos_embed"].shape[-1])
        depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks."))
        glob, head_dim = [], 0
        for i in range(depth):
            rel = state[f"image_encoder.blocks.{i}.attn.rel_pos_h"]
            head_dim = int(rel.shape[1])
            if int(rel.shape[0]) == 2 * (_IMAGE_SIZE // _PATCH) - 1:
                glob.append(i)
            elif int(rel.shape[0]) != 2 * _WINDOW - 1:
                raise ValueError(f"relative position table {tuple(rel.shape)} in block {i}")
    except (KeyError, ValueError, IndexError) as exc:
        raise WeightsMissingError(f"not a SAM image encoder: {exc}") from exc
    return embed, depth, embed // head_dim, tuple(glob)


class SamSegmenter(PretrainedSegmenter):
    """SAM's automatic masks ranked by area: ``largest``, ``second_largest``,
    ``rest`` (all but the largest) and ``rest_complement`` (the foreground minus ``rest``).

    The label-free choice is ``choice``: one of those, or ``darker`` (of ``rest``
    and ``rest_complement``, the one whose pixels are darker on average).
    """

    name = "sam"
    Params = SamParams
    weights_setting = "sam_checkpoint"
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        "paper": {"size": 1024, "model_type": "vit_h", "points_per_side": 64, "crop_n_layers": 2},
    }

    def __init__(self, params: SamParams) -> None:
        super().__init__(params)
        self.architecture: str | None = None  # "vit_h", ... or "custom(...)", once loaded
        self.checkpoint: Path | None = None

    def _load(self, device: torch.device) -> Any:
        p = cast(SamParams, self.params)
        from gloper_jobs.methods import torchvision_fallback

        try:
            torchvision_fallback.import_segment_anything()
        except ImportError as exc:
            raise ConfigurationError(f"SAM needs segment-anything: {INSTALL_HINT} ({exc})") from exc
        from segment_anything.build_sam import _build_sam

        path = resolve_file(sam_source(p.model_type), p.weights, p.weights_dir, p.allow_downloads)
        state = read_checkpoint(path)
        arch = infer_architecture(state)
        known = {a: t for t, a in SAM_ARCHITECTURES.items()}
        if arch in known and known[arch] != p.model_type:
            raise ConfigurationError(
                f"{path} is a SAM {known[arch]} checkpoint but model_type={p.model_type}; "
                f"pass --param model_type={known[arch]} or point GLOPER_SAM_CHECKPOINT at "
                f"{defaults.SAM_CHECKPOINTS[p.model_type]}"
            )
        embed, depth, heads, glob = arch
        sam = _build_sam(embed, depth, heads, list(glob), checkpoint=None)
        try:
            sam.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsMissingError(f"{path} does not match SAM's architecture: {exc}") from exc
        sam.eval().to(device)
        self.architecture = known.get(arch, f"custom(embed={embed}, depth={depth}, heads={heads})")
        self.checkpoint = path
        return sam

    def segment(self, image: np.ndarray, foreground: np.ndarray, context: SegmentContext | None = None) -> Segmentation:
        """Candidates ``SxS bool`` (S = ``size``) for ``HxWx3 uint8 RGB`` within ``HxW bool``."""
        p = cast(SamParams, self.params)
        img, fg = self.working_inputs(image, foreground)
        masked = np.ascontiguousarray(img * fg[..., None].astype(np.uint8))
        sam = self.load()
        from segment_anything import SamAutomaticMaskGenerator

        from gloper_jobs.methods import torchvision_fallback

        generator = SamAutomaticMaskGenerator(
            sam, points_per_side=p.points_per_side, points_per_batch=p.points_per_batch,
            pred_iou_thresh=p.pred_iou_thresh, stability_score_thresh=p.stability_score_thresh,
            box_nms_thresh=p.box_nms_thresh, crop_n_layers=p.crop_n_layers, output_mode="binary_mask",
        )
        torch = require("torch")
        t0 = time.perf_counter()
        with gpu_memory_guard(self._device, f"running SAM {p.model_type} at {p.points_per_side} points "
                              f"per side, crop_n_layers={p.crop_n_layers}",
                              "lower points_per_batch (e.g. --param points_per_batch=16), "
                              "or crop_n_layers, or run one worker per card"), torch.inference_mode():
            found = generator.generate(masked)
        seconds = time.perf_counter() - t0
        masks = rank_masks([m["segmentation"] for m in found], fg)
        choice = darker_of(img, masks, ("rest", "rest_complement")) if p.choice == "darker" else p.choice
        info = {"device": str(self._device), "n_masks": len(found), "seconds_generate": round(seconds, 3),
                "architecture": self.architecture, "torchvision": torchvision_fallback.backend}
        return Segmentation(masks, choice, info=info)


def rank_masks(found: list[np.ndarray], fg: np.ndarray) -> dict[str, np.ndarray]:
    """The four candidates from SAM's masks (``SxS bool`` each) and the foreground (``SxS bool``).

    Masks are ranked by area, largest first (ties keep the generator's order).
    Missing masks give empty candidates; with none, ``rest_complement`` is the foreground.
    """
    ranked = sorted(found, key=lambda m: -int(np.count_nonzero(m)))
    empty = np.zeros_like(fg, dtype=bool)
    largest = ranked[0].astype(bool) if ranked else empty
    second = ranked[1].astype(bool) if len(ranked) > 1 else empty
    rest = np.logical_or.reduce([m.astype(bool) for m in ranked[1:]]) if len(ranked) > 1 else empty
    return {
        "largest": largest & fg,
        "second_largest": second & fg,
        "rest": rest & fg,
        "rest_complement": ~rest & fg,
    }
