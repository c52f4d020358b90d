"""CLIPSeg baseline (METHOD.md): a text-prompted probability map, thresholded.

``transformers``' ``CLIPSegForImageSegmentation`` with its processor
(``CIDAS/clipseg-rd64-refined``) is run on the photo resized to
``size x size`` with the prompt ``prompt.format(species=...)``
("pattern of Zebra"). The map is passed through a sigmoid, min-max
normalised, thresholded (0.3), resized to the working size (nearest) and
restricted to the foreground.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from gloper_jobs import defaults
from gloper_jobs.data.images import resize_mask
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.methods.base import Segmentation, SegmentContext
from gloper_jobs.methods.pretrained import (
    PretrainedParams,
    PretrainedSegmenter,
    WeightSource,
    gpu_memory_guard,
    load_pretrained,
    require,
)

if TYPE_CHECKING:
    import torch

CLIPSEG_SOURCE = WeightSource("CLIPSeg", "GLOPER_CLIPSEG_WEIGHTS", hub_id=defaults.CLIPSEG_HUB_ID)


@dataclass(frozen=True)
class ClipSegParams(PretrainedParams):
    """CLIPSeg's settings. ``prompt`` must contain ``{species}``; a photo without a
    species (none in its folder or manifest) uses ``fallback_species``."""

    prompt: str = "pattern of {species}"
    fallback_species: str = "animal"
    threshold: float = 0.3

    def validate(self) -> None:
        super().validate()
        if "{species}" not in self.prompt:
            raise InvalidParameterError(
                f"prompt={self.prompt!r} must contain {{species}}, e.g. 'pattern of {{species}}'"
            )
        try:
            self.prompt.format(species="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidParameterError(
                f"prompt={self.prompt!r} is not a valid template ({exc}); only {{species}} may "
                "appear in braces"
            ) from exc
        if not self.fallback_species.strip():
            raise InvalidParameterError("fallback_species must not be empty")
        if not 0 <= self.threshold < 1:
            raise InvalidParameterError(f"threshold={self.threshold} must be in [0, 1)")

    def prompt_for(self, species: str | None) -> str:
        """The prompt text for a photo of ``species`` (None or blank -> ``fallback_species``)."""
        name = species.strip() if species and species.strip() else self.fallback_species
        return self.prompt.format(species=name)


class ClipSegSegmenter(PretrainedSegmenter):
    """CLIPSeg with a species prompt; one candidate, ``pattern``."""

    name = "clipseg"
    Params = ClipSegParams
    weights_setting = "clipseg_weights"
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {}, "paper": {"size": 1024}}

    def _load(self, device: torch.device) -> Any:
        p = cast(ClipSegParams, self.params)
        tf = require("transformers")
        args = (p.weights, p.weights_dir, p.allow_downloads)
        model = load_pretrained(CLIPSEG_SOURCE, tf.CLIPSegForImageSegmentation, *args)
        processor = load_pretrained(CLIPSEG_SOURCE, tf.CLIPSegProcessor, *args)
        model.eval().to(device)
        return model, processor

    def segment(self, image: np.ndarray, foreground: np.ndarray, context: SegmentContext | None = None) -> Segmentation:
        """``pattern``: ``SxS bool`` (S = ``size``) for ``HxWx3 uint8 RGB`` within ``HxW bool``."""
        p = cast(ClipSegParams, self.params)
        img, fg = self.working_inputs(image, foreground)
        prompt = p.prompt_for(context.species if context else None)
        model, processor = self.load()
        torch = require("torch")
        inputs = processor(text=[prompt], images=[img], return_tensors="pt", padding=True)
        inputs = {k: v.to(self._device) for k, v in inputs.items()}
        with gpu_memory_guard(self._device, "running CLIPSeg", "run one worker per card or use device=cpu"), \
                torch.inference_mode():
            logits = model(**inputs).logits
        prob = torch.sigmoid(logits.float()).reshape(-1, *logits.shape[-2:])[0].cpu().numpy()
        pattern = resize_mask(normalise(prob) > p.threshold, fg.shape) & fg
        info = {"device": str(self._device), "prompt": prompt, "map_size": list(prob.shape)}
        return Segmentation({"pattern": pattern}, "pattern", info=info)


def normalise(prob: np.ndarray) -> np.ndarray:
    """Min-max normalise an ``hxw float32`` map to [0, 1]; a flat map becomes all zeros."""
    lo, hi = float(prob.min()), float(prob.max())
    if hi <= lo:
        return np.zeros_like(prob)
    return (prob - lo) / (hi - lo)
