"""Importing ``segment_anything`` on machines where torchvision cannot load.

``segment_anything`` imports four torchvision functions and nothing else:
``ops.boxes.batched_nms`` and ``ops.boxes.box_area`` (mask de-duplication in the
automatic mask generator) and ``transforms.functional.resize`` and
``to_pil_image`` (resizing the photo to 1024 px). torchvision's only Linux wheel
is a CUDA build; next to the CPU torch its compiled ops do not exist and
``import torchvision`` fails (``operator torchvision::nms does not exist``).

:func:`import_segment_anything` first tries the real torchvision. Only when its
compiled ops cannot load does it import ``segment_anything`` against pure-PyTorch
versions of exactly those four functions, placed in ``sys.modules`` for the
duration of that one import and removed afterwards, so nothing else ever sees a
fake torchvision. The versions below follow torchvision's CPU kernels: greedy NMS
in descending score order, suppressing IoU strictly above the threshold, and
batched NMS by offsetting each class's boxes apart; PIL bilinear resizing.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import torch
from PIL import Image

_SHIMMED = ("torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms",
            "torchvision.transforms.functional")

#: how segment_anything was imported in this process: "torchvision" or "fallback"
backend: str | None = None


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``Nx4`` boxes ``(x1, y1, x2, y2)``; returns ``N`` of the boxes' dtype."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; indices (int64) of kept boxes, highest score first.

    ``boxes``: ``Nx4`` float ``(x1, y1, x2, y2)``; ``scores``: ``N`` float. A box is
    dropped when its IoU with an already kept, higher-scoring box is > ``iou_threshold``.
    Ties in score keep the earlier box first (torchvision leaves that order unspecified).
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores.detach().cpu(), descending=True, stable=True).numpy()
    b = boxes.detach().cpu().numpy()[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    n = len(b)
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.arange(i + 1, n)
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            break
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return torch.as_tensor(order[keep], dtype=torch.int64, device=boxes.device)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS within each category ``idxs`` (``N`` int); same contract as :func:`nms`."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def to_pil_image(pic: np.ndarray) -> Image.Image:
    """``HxWx3 uint8`` (or ``HxW``) array to a PIL image."""
    return Image.fromarray(np.ascontiguousarray(pic))


def resize(img: Image.Image, size: Any) -> Image.Image:
    """Resize a PIL image to ``size = (height, width)``, bilinear (torchvision's default)."""
    h, w = int(size[0]), int(size[1])
    return img.resize((w, h), Image.Resampling.BILINEAR)


def _torchvision_works() -> bool:
    """Whether the real torchvision imports and its compiled NMS runs on CPU."""
    try:
        from torchvision.ops.boxes import batched_nms as tv_batched_nms
        from torchvision.transforms.functional import resize as _r  # noqa: F401

        tv_batched_nms(torch.zeros((1, 4)), torch.ones(1), torch.zeros(1, dtype=torch.int64), 0.5)
    except Exception:  # noqa: BLE001 - ImportError, RuntimeError (missing op), anything broken
        return False
    return True


def _shim_modules() -> dict[str, types.ModuleType]:
    mods = {name: types.ModuleType(name) for name in _SHIMMED}
    for name in ("torchvision", "torchvision.ops", "torchvision.transforms"):
        mods[name].__path__ = []  # a package, so submodule imports resolve from sys.modules
    mods["torchvision"].ops = mods["torchvision.ops"]  # type: ignore[attr-defined]
    mods["torchvision"].transforms = mods["torchvision.transforms"]  # type: ignore[attr-defined]
    mods["torchvision.ops"].boxes = mods["torchvision.ops.boxes"]  # type: ignore[attr-defined]
    mods["torchvision.transforms"].functional = mods["torchvision.transforms.functional"]  # type: ignore[attr-defined]
    boxes = mods["torchvision.ops.boxes"]
    boxes.batched_nms, boxes.box_area, boxes.nms = batched_nms, box_area, nms  # type: ignore[attr-defined]
    func = mods["torchvision.transforms.functional"]
    func.resize, func.to_pil_image = resize, to_pil_image  # type: ignore[attr-defined]
    return mods


def import_segment_anything(force_fallback: bool = False) -> types.ModuleType:
    """Import ``segment_anything``, with the pure-PyTorch ops only if torchvision's cannot load."""
    global backend
    if "segment_anything" in sys.modules and backend is not None:
        return sys.modules["segment_anything"]
    if not force_fallback and _torchvision_works():
        import segment_anything

        backend = "torchvision"
        return segment_anything
    saved = {k: sys.modules.pop(k) for k in list(sys.modules)
             if k == "torchvision" or k.startswith("torchvision.")}
    for k in [k for k in sys.modules if k == "segment_anything" or k.startswith("segment_anything.")]:
        del sys.modules[k]
    sys.modules.update(_shim_modules())
    try:
        import segment_anything
    finally:
        for name in _SHIMMED:
            sys.modules.pop(name, None)
        if "torchvision" in saved:  # a torchvision that imports but lacks its ops stays
            sys.modules.update(saved)
    backend = "fallback"
    return segment_anything
