"""The GloPER network: a small UNet with two local colour-centroid heads.

Shapes (batch B, image S x S, local size l; S divisible by 16 and by 2l):

- input ``x``: ``Bx3xSxS float`` RGB in [0, 1]
- ``logits``: ``Bx2xSxS`` per-pixel scores of the two classes (pattern / coat)
- ``centroids_a``: ``Bx2x3x(S/l)x(S/l)`` two RGB colours in [0, 1] per l x l window
- ``centroids_b``: ``Bx2x3x(S/2l)x(S/2l)`` the same per 2l x 2l window
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FILTERS = (32, 64, 128, 256, 512)


class VGGBlock(nn.Module):
    """Two 3x3 conv + BatchNorm + ReLU."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 3, padding=1),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class GloperNet(nn.Module):
    """Five-level UNet (32..512 filters) with centroid heads on its first two blocks."""

    def __init__(self, local_size: int, num_classes: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        f = FILTERS
        self.local_size = local_size
        self.num_classes = num_classes
        self.enc0 = VGGBlock(in_channels, f[0], f[0])
        self.enc1 = VGGBlock(f[0], f[1], f[1])
        self.enc2 = VGGBlock(f[1], f[2], f[2])
        self.enc3 = VGGBlock(f[2], f[3], f[3])
        self.enc4 = VGGBlock(f[3], f[4], f[4])
        self.dec3 = VGGBlock(f[3] + f[4], f[3], f[3])
        self.dec2 = VGGBlock(f[2] + f[3], f[2], f[2])
        self.dec1 = VGGBlock(f[1] + f[2], f[1], f[1])
        self.dec0 = VGGBlock(f[0] + f[1], f[0], f[0])
        self.final = nn.Conv2d(f[0], num_classes, kernel_size=1)
        self.head_a = nn.Conv2d(f[0], num_classes * 3, kernel_size=1)
        self.head_b = nn.Conv2d(f[1], num_classes * 3, kernel_size=1)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    def _centroids(self, feats: torch.Tensor, head: nn.Conv2d) -> torch.Tensor:
        return centroid_colours(feats, head.weight, head.bias, self.local_size, self.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, x0, x1 = self.features(x)
        # Head A pools full-resolution features over l x l windows; head B pools the
        # half-resolution features over l x l cells, i.e. 2l x 2l windows of the image.
        return logits, self._centroids(x0, self.head_a), self._centroids(x1, self.head_b)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The UNet without the centroid heads: ``(logits Bx2xSxS, x0 Bx32xSxS, x1 Bx64x(S/2)x(S/2))``.

        Independent of ``local_size``, so models of several local sizes can be
        stacked and run together (``torch.func.vmap``, the training engine).
        """
        x0 = self.enc0(x)
        x1 = self.enc1(F.max_pool2d(x0, 2))
        x2 = self.enc2(F.max_pool2d(x1, 2))
        x3 = self.enc3(F.max_pool2d(x2, 2))
        x4 = self.enc4(F.max_pool2d(x3, 2))
        d3 = self.dec3(torch.cat([x3, self._up(x4)], 1))
        d2 = self.dec2(torch.cat([x2, self._up(d3)], 1))
        d1 = self.dec1(torch.cat([x1, self._up(d2)], 1))
        d0 = self.dec0(torch.cat([x0, self._up(d1)], 1))
        return self.final(d0), x0, x1


def centroid_colours(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, window: int,
                     num_classes: int = 2) -> torch.Tensor:
    """A centroid head: average-pool ``BxCxHxW`` features over ``window`` x ``window`` cells,
    1x1 conv (``weight``: ``(num_classes*3)xCx1x1``), sigmoid. Returns
    ``Bx num_classes x3x(H/window)x(W/window)`` colours in [0, 1]."""
    pooled = F.avg_pool2d(feats, kernel_size=window, stride=window)
    colours = torch.sigmoid(F.conv2d(pooled, weight, bias))
    b, _, h, w = colours.shape
    return colours.view(b, num_classes, 3, h, w)


def hard_gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """Straight-through hard Gumbel-softmax over dim 1: one-hot forward, soft gradient backward."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    return hard_gumbel_from_uniform(logits, tau, u)


def hard_gumbel_from_uniform(logits: torch.Tensor, tau: float, u: torch.Tensor) -> torch.Tensor:
    """:func:`hard_gumbel_softmax` with its uniform draws ``u`` given (broadcast to ``logits``:
    one draw shared by several stacked models, as each would draw it from its own seeded generator)."""
    exponential = (-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10)  # Exp(1) samples, > 0
    gumbel = -torch.log(exponential)
    soft = F.softmax((logits + gumbel) / tau, dim=1)
    hard = F.one_hot(soft.argmax(dim=1), soft.shape[1]).permute(0, 3, 1, 2).to(soft.dtype)
    return hard - soft.detach() + soft


def reconstruct(assign: torch.Tensor, centroids: torch.Tensor, window: int) -> torch.Tensor:
    """Per-pixel colour of the assigned class in its window.

    ``assign``: ``Bx2xSxS`` (one-hot or soft); ``centroids``: ``Bx2x3xhxw`` with
    ``h = S / window``. Returns ``Bx3xSxS``.
    """
    b, k, c, h, w = centroids.shape
    up = F.interpolate(centroids.view(b, k * c, h, w), scale_factor=window, mode="nearest")
    up = up.view(b, k, c, h * window, w * window)
    return (assign.unsqueeze(2) * up).sum(dim=1)


def pattern_weight(image: torch.Tensor, centroids: torch.Tensor, window: int) -> torch.Tensor:
    """``w = exp(-d_p) / (exp(-d_p) + exp(-d_c))`` per pixel, ``BxSxS`` in [0, 1].

    The darker centroid of each window (smaller R+G+B) is the pattern colour;
    ``d_p``, ``d_c`` are Euclidean RGB distances of a pixel to the two colours.
    """
    intensity = centroids.sum(dim=2)  # Bx2xhxw
    darker_first = intensity.argsort(dim=1)
    idx = darker_first.unsqueeze(2).expand_as(centroids)
    ordered = torch.gather(centroids, 1, idx)
    b, k, c, h, w = ordered.shape
    up = F.interpolate(ordered.view(b, k * c, h, w), scale_factor=window, mode="nearest").view(
        b, k, c, h * window, w * window
    )
    d_p = torch.linalg.vector_norm(image - up[:, 0], dim=1)
    d_c = torch.linalg.vector_norm(image - up[:, 1], dim=1)
    return torch.sigmoid(d_c - d_p)  # == exp(-d_p) / (exp(-d_p) + exp(-d_c))
