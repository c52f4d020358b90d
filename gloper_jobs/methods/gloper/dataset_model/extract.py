"""Extraction with a dataset-level GloPER model: one forward pass per photo.

:class:`ModelExtractor` loads a checkpoint once (a worker keeps it in its segmenter
cache) and turns a photo into the weight maps per-photo GloPER would train for, from
head A; GloPER's read-out then makes the same candidates and label-free choice. With
``finetune_steps > 0`` a copy of the network first takes that many per-photo steps of
the one training loop on the photo (a warm start instead of training from scratch).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gloper_jobs.data.images import resize_mask, resize_rgb
from gloper_jobs.methods.gloper.dataset_model.checkpoint import load_checkpoint
from gloper_jobs.methods.gloper.engine import Batch, train_loop
from gloper_jobs.methods.gloper.models import OneNetwork
from gloper_jobs.methods.gloper.net import GloperNet, pattern_weight


def pattern_weights(net: GloperNet, image: torch.Tensor) -> dict[int, torch.Tensor]:
    """One forward pass; per local size the pattern weight map ``HxW float32`` in [0, 1] (CPU).

    ``image``: ``1x3xHxW float32`` in [0, 1] on the network's device. Read-out as per-photo
    GloPER (:func:`~gloper_jobs.methods.gloper.net.pattern_weight` on head A), with
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


class ModelExtractor:
    """A trained dataset model on ``device``, checked against the run's ``size``/``local_sizes``.

    Raises :class:`~gloper_jobs.exceptions.ModelCheckpointError` for a bad file and
    :class:`~gloper_jobs.exceptions.ModelSettingsError` for a model trained for other settings.
    """

    def __init__(self, path: Path | str, size: int, local_sizes: tuple[int, ...], device: torch.device) -> None:
        ck = load_checkpoint(path)
        ck.check_inference_settings(size, local_sizes)
        self.path = Path(path)
        self.size = size
        self.local_sizes = local_sizes
        self.device = device
        self.step = ck.step
        self.tau = float(ck.settings.get("tau", 0.1))
        self.lr = float(ck.settings.get("lr", 1e-3))
        self.net = ck.network(device)

    def _finetuned(self, rgb: torch.Tensor, fg: torch.Tensor, steps: int, seed: int) -> tuple[GloperNet, list[float]]:
        """A copy of the network after ``steps`` AdamW steps on this one photo (full frame, batch 1)."""
        models = OneNetwork(copy.deepcopy(self.net), self.lr)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        losses: list[float] = []
        train_loop(models, lambda _step: Batch(rgb, fg, gen), steps=steps, tau=self.tau, device=self.device,
                   after_step=lambda _s, _p, total: losses.append(round(float(total.detach()), 6)))
        return models.net, losses

    def weight_maps(self, image: np.ndarray, foreground: np.ndarray, finetune_steps: int = 0,
                    seed: int = 41) -> tuple[dict[int, np.ndarray], np.ndarray, dict[str, Any]]:
        """The darker-colour weight of every local size for ``image`` (``HxWx3 uint8 RGB``)
        within ``foreground`` (``HxW bool``), from one forward pass of the dataset model
        (after ``finetune_steps`` per-photo steps).

        Returns local size -> ``SxS float32`` in [0, 1] at the model's size S, the
        foreground at ``SxS bool``, and what to record (model, step, seconds). The
        masks and the label-free choice are per-photo GloPER's read-out
        (:func:`~gloper_jobs.methods.gloper.readout.read_out`).
        """
        s = self.size
        t0 = time.perf_counter()
        rgb = torch.from_numpy(resize_rgb(image, (s, s))).permute(2, 0, 1).unsqueeze(0).contiguous()
        fg_np = resize_mask(foreground, (s, s))
        rgb = rgb.to(self.device)
        info: dict[str, Any] = {"device": str(self.device), "model": str(self.path), "model_step": self.step}
        net = self.net
        if finetune_steps:
            fg = torch.from_numpy(fg_np.astype(np.float32)).unsqueeze(0).to(self.device)
            net, losses = self._finetuned(rgb, fg, finetune_steps, seed)
            info["finetune_steps"] = finetune_steps
            info["final_loss"] = losses[-1]
        weights = {ls: w.numpy() for ls, w in pattern_weights(net, rgb).items()}
        info["seconds"] = round(time.perf_counter() - t0, 4)
        return weights, fg_np, info

    def close(self) -> None:
        del self.net
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
