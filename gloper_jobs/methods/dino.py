"""DINOv2 baseline (METHOD.md): PCA of patch features, grayscale, threshold.

The photo is resized to ``input_size`` (1008 = 72 patches of 14 px), ImageNet
normalised and run through DINOv2 ``dinov2_vitg14_reg``. The patch features of
the last ``layers`` (4) blocks, each after the final LayerNorm as torch hub's
``get_intermediate_layers`` returns them, are averaged; scikit-learn's PCA (exact
SVD over all patches, signs fixed) keeps three components, min-max normalised together to an RGB image,
resized to the working size (bicubic), converted to grayscale (ITU-R 601) and
thresholded (0.5, the supplementary's value). Candidates: ``mask`` and its
``inverse``, both restricted to the foreground.

Weights in two formats load through the same model class
(``transformers``' ``Dinov2WithRegistersModel``): torch hub's checkpoint
(``dinov2_vitg14_reg4_pretrain.pth``, the paper's), converted by
:func:`convert_hub_state_dict`, and the ``transformers`` format
(``facebook/dinov2-with-registers-giant``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import cv2
import numpy as np

from gloper_jobs import defaults
from gloper_jobs.data.images import resize_mask, resize_rgb, resize_rgb_uint8
from gloper_jobs.exceptions import InvalidParameterError, WeightsMissingError
from gloper_jobs.methods.base import Segmentation, SegmentContext, check_inputs
from gloper_jobs.methods.pretrained import (
    PretrainedParams,
    PretrainedSegmenter,
    WeightSource,
    darker_of,
    find_file,
    gpu_memory_guard,
    hub_cache_folder,
    load_pretrained,
    require,
    resolve_file,
)

if TYPE_CHECKING:
    import torch

DINO_SOURCE = WeightSource(
    "DINOv2 dinov2_vitg14_reg", "GLOPER_DINO_WEIGHTS", defaults.DINO_CHECKPOINT,
    defaults.DINO_URL.format(filename=defaults.DINO_CHECKPOINT), defaults.DINO_HUB_ID,
)
DINO_CHOICES = ("mask", "inverse", "darker")
PATCH = 14
HEAD_DIM = 64  # every DINOv2 size (S/B/L/g) uses 64-wide attention heads
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class DinoParams(PretrainedParams):
    """DINOv2's settings; ``input_size`` is the side fed to the model (multiple of 14)."""

    input_size: int = 1008
    layers: int = 4
    threshold: float = 0.5
    choice: str = "darker"

    def validate(self) -> None:
        super().validate()
        if self.input_size < PATCH * 2 or self.input_size % PATCH or self.input_size > 4096:
            raise InvalidParameterError(
                f"input_size={self.input_size} must be a multiple of {PATCH} between 28 and 4096"
            )
        if self.layers < 1:
            raise InvalidParameterError(f"layers={self.layers} must be >= 1")
        if not 0 <= self.threshold <= 1:
            raise InvalidParameterError(f"threshold={self.threshold} must be in [0, 1]")
        if self.choice not in DINO_CHOICES:
            raise InvalidParameterError(f"choice={self.choice!r}: use one of {', '.join(DINO_CHOICES)}")


_BLOCK = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")  # plain or chunked ("blocks.0.5.")
_BLOCK_NAMES = {
    "norm1": "norm1", "norm2": "norm2", "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1", "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.w3": "mlp.down_proj",
}
_TOP_NAMES = {
    "cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
    "register_tokens": "embeddings.register_tokens", "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias",
}


def convert_hub_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch hub DINOv2 tensors -> ``Dinov2WithRegistersModel`` tensors and config values.

    The fused ``attn.qkv`` is split into q, k, v; SwiGLU's fused ``mlp.w12`` into
    its gate (first half) and up (second half) projections. The architecture is
    read from the shapes (heads are 64 wide in every DINOv2).
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key in _TOP_NAMES:
            out[_TOP_NAMES[key]] = value
            continue
        m = _BLOCK.match(key)
        if not m:
            raise WeightsMissingError(f"unexpected tensor {key!r}: not a torch hub DINOv2 checkpoint")
        i, rest = m.group(1), m.group(2)
        pre = f"encoder.layer.{i}."
        stem, _, kind = rest.rpartition(".")
        if stem == "attn.qkv":
            q, k, v = value.chunk(3, dim=0)
            out.update({pre + f"attention.{n}_proj.{kind}": t for n, t in zip("qkv", (q, k, v), strict=True)})
        elif stem == "mlp.w12":
            gate, up = value.chunk(2, dim=0)
            out[pre + f"mlp.gate_proj.{kind}"], out[pre + f"mlp.up_proj.{kind}"] = gate, up
        elif rest in _BLOCK_NAMES:
            out[pre + _BLOCK_NAMES[rest]] = value
        elif stem in _BLOCK_NAMES:
            out[pre + f"{_BLOCK_NAMES[stem]}.{kind}"] = value
        else:
            raise WeightsMissingError(f"unexpected tensor {key!r}: not a torch hub DINOv2 checkpoint")
    if "cls_token" not in state or "pos_embed" not in state:
        raise WeightsMissingError("not a torch hub DINOv2 checkpoint (no cls_token / pos_embed)")
    hidden = int(state["cls_token"].shape[-1])
    depth = 1 + max(int(k.split(".")[2]) for k in out if k.startswith("encoder.layer."))
    swiglu = "encoder.layer.0.mlp.gate_proj.weight" in out
    ffn = int(out["encoder.layer.0.mlp.gate_proj.weight" if swiglu else "encoder.layer.0.mlp.fc1.weight"].shape[0])
    grid = int(round(math.sqrt(int(state["pos_embed"].shape[1]) - 1)))
    config = {
        "hidden_size": hidden, "num_hidden_layers": depth, "num_attention_heads": max(1, hidden // HEAD_DIM),
        # SwiGLU's width is 2/3 of hidden*mlp_ratio rounded up to 8; mlp_ratio=4 reproduces DINOv2's
        "mlp_ratio": 4 if swiglu else ffn // hidden, "use_swiglu_ffn": swiglu,
        "num_register_tokens": int(state["register_tokens"].shape[1]) if "register_tokens" in state else 0,
        "image_size": grid * PATCH, "patch_size": PATCH, "layer_norm_eps": 1e-6,
    }
    return out, config


def load_hub_checkpoint(path: Path) -> Any:
    """A ``Dinov2WithRegistersModel`` with the weights of a torch hub ``.pth`` file."""
    torch = require("torch")
    tf = require("transformers")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and format errors alike
        raise WeightsMissingError(f"{path} is not a readable DINOv2 checkpoint: {exc}") from exc
    converted, values = convert_hub_state_dict(state)
    config = tf.Dinov2WithRegistersConfig(**values)
    model = tf.Dinov2WithRegistersModel(config)
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        raise WeightsMissingError(f"{path} does not match DINOv2's architecture: {exc}") from exc
    return model


class DinoSegmenter(PretrainedSegmenter):
    """DINOv2 features -> PCA -> grayscale -> threshold; candidates ``mask`` and ``inverse``.

    The label-free choice is ``choice``: ``mask``, ``inverse`` or ``darker`` (the one
    whose pixels are darker on average; PCA's sign carries no meaning).
    """

    name = "dino"
    Params = DinoParams
    weights_setting = "dino_weights"
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {"input_size": 448}, "paper": {"size": 1024}}

    def __init__(self, params: DinoParams) -> None:
        super().__init__(params)
        self.weights_format: str | None = None  # "torch hub" or "transformers", once loaded

    def _load(self, device: torch.device) -> Any:
        """Torch hub ``.pth`` (a file, or a folder holding it) or the transformers format
        (a ``save_pretrained`` folder or a hub cache folder); unset: ``weights_dir``, torch
        hub's cache, then the Hugging Face cache; downloads the ``.pth`` only if allowed."""
        p = cast(DinoParams, self.params)
        auto = require("transformers").AutoModel
        if p.weights:
            path = Path(p.weights).expanduser()
            if path.is_dir() and not _holds_checkpoint(path):
                model = load_pretrained(DINO_SOURCE, auto, p.weights, p.weights_dir, p.allow_downloads)
                return self._finish(model, "transformers", device)
            file = resolve_file(DINO_SOURCE, p.weights, p.weights_dir, p.allow_downloads)
            return self._finish(load_hub_checkpoint(file), "torch hub", device)
        found, looked = find_file(DINO_SOURCE, "", p.weights_dir)
        if found is None:
            try:
                model = load_pretrained(DINO_SOURCE, auto, "", p.weights_dir, False)
                return self._finish(model, "transformers", device)
            except WeightsMissingError:
                if not p.allow_downloads:
                    also = [hub_cache_folder(DINO_SOURCE, Path(p.weights_dir)), Path("the Hugging Face cache")]
                    raise DINO_SOURCE.missing(looked + also) from None
            found = resolve_file(DINO_SOURCE, "", p.weights_dir, True)
        return self._finish(load_hub_checkpoint(found), "torch hub", device)

    def _finish(self, model: Any, weights_format: str, device: torch.device) -> Any:
        p = cast(DinoParams, self.params)
        self.weights_format = weights_format
        n_layers = int(model.config.num_hidden_layers)
        if n_layers < p.layers:
            raise InvalidParameterError(f"layers={p.layers} but the model has only {n_layers} blocks")
        return model.eval().to(device)

    def features(self, image: np.ndarray) -> np.ndarray:
        """Mean patch features of the last ``layers`` blocks: ``(g, g, D) float32``, g = input_size/14."""
        p = cast(DinoParams, self.params)
        model = self.load()
        torch = require("torch")
        rgb = resize_rgb(image, (p.input_size, p.input_size))
        x = (rgb - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        pixels = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).contiguous().to(self._device)
        skip = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        with gpu_memory_guard(self._device, f"running DINOv2 at input_size={p.input_size}",
                              "lower input_size (e.g. --param input_size=672) or run one worker per card"), \
                torch.inference_mode():
            hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-p.layers:]
            feats = torch.stack([model.layernorm(h)[0, skip:] for h in hidden]).mean(0).float().cpu()
        g = p.input_size // PATCH
        return feats.numpy().reshape(g, g, -1)

    def segment(self, image: np.ndarray, foreground: np.ndarray, context: SegmentContext | None = None) -> Segmentation:
        """``mask`` and ``inverse``: ``SxS bool`` (S = ``size``) for ``HxWx3 uint8 RGB`` within ``HxW bool``."""
        check_inputs(image, foreground)
        p = cast(DinoParams, self.params)
        s = p.size
        fg = resize_mask(foreground, (s, s))
        gray = pca_gray(self.features(image), s)
        mask = (gray > p.threshold) & fg
        masks = {"mask": mask, "inverse": ~mask & fg}
        choice = p.choice
        if choice == "darker":
            choice = darker_of(resize_rgb_uint8(image, (s, s)), masks, ("mask", "inverse"))
        info = {"device": str(self._device), "weights_format": self.weights_format,
                "grid": p.input_size // PATCH}
        return Segmentation(masks, choice, info=info)


def _holds_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds torch hub's file (itself or in torch hub's ``checkpoints/``)."""
    name = defaults.DINO_CHECKPOINT
    return (folder / name).is_file() or (folder / "checkpoints" / name).is_file()


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """``(g, g, D) float32`` features -> ``(g, g, 3) float32`` in [0, 1].

    ``sklearn.decomposition.PCA(n_components=3)`` as the authors use it: fit on
    every patch (background included), no whitening. The solver is pinned to the
    exact SVD (``svd_solver="full"``): the authors' ``"auto"`` picks the randomized
    solver at 1008 px, which varies from run to run. PCA's sign is arbitrary; each
    component's sign is fixed here, not left to scikit-learn's version, so that its
    largest-magnitude loading is positive (what scikit-learn >= 1.5 does too). The
    three projections are then min-max normalised together.
    """
    from sklearn.decomposition import PCA

    g1, g2, d = features.shape
    x = features.reshape(-1, d).astype(np.float64)
    pca = PCA(n_components=min(3, *x.shape), svd_solver="full").fit(x)
    comps = pca.components_
    signs = np.sign(comps[np.arange(len(comps)), np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1
    proj = pca.transform(x) * signs
    if proj.shape[1] < 3:  # fewer than three features or patches: pad with zeros
        proj = np.pad(proj, ((0, 0), (0, 3 - proj.shape[1])))
    lo, hi = float(proj.min()), float(proj.max())
    rgb = (proj - lo) / (hi - lo) if hi > lo else np.zeros_like(proj)
    return rgb.reshape(g1, g2, 3).astype(np.float32)


def pca_gray(features: np.ndarray, size: int) -> np.ndarray:
    """The PCA image resized to ``size x size`` (bicubic, clipped) in grayscale: ``SxS float32`` in [0, 1]."""
    rgb = cv2.resize(pca_rgb(features), (size, size), interpolation=cv2.INTER_CUBIC)
    rgb = np.clip(rgb, 0.0, 1.0)
    return (rgb @ np.array(GRAY, dtype=np.float32)).astype(np.float32)
