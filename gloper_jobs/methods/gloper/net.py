"""GloPER's network: one UNet trunk and a set of centroid heads per local size.

The per-photo method trains one network with one head set per photo and local size;
the dataset model is the same network with one head set per local size, trained once
on an archive. Shapes (batch B, image H x W, local size l; H and W divisible by 16
and by 2l):

- input ``x``: ``Bx3xHxW float`` RGB in [0, 1]
- ``logits``: ``Bx2xHxW`` per-pixel scores of the two classes (pattern / coat)
- ``centroids_a``: ``Bx2x3x(H/l)x(W/l)`` two RGB colours in [0, 1] per l x l window
- ``centroids_b``: ``Bx2x3x(H/2l)x(W/2l)`` the same per 2l x 2l window

Head set ``i`` belongs to ``local_sizes[i]`` (its parameters are ``logits.i``,
``head_a.i``, ``head_b.i``), so one-size networks of any size have the same parameter
names and can be stacked (:mod:`gloper_jobs.methods.gloper.models`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

FILTERS = (32, 64, 128, 256, 512)
#: per local size: (logits, head-A centroids, head-B centroids)
HeadOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


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
    """Five-level UNet (32..512 filters) with, per local size, a logits head and two
    centroid heads (A on the first block's features, B on the second's)."""

    def __init__(self, local_sizes: Sequence[int], num_classes: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        f = FILTERS
        self.local_sizes = tuple(int(ls) for ls in local_sizes)
        self.num_classes = num_classes
        # Creation order (encoder, decoder deepest first, logits, heads A, heads B) fixes
        # the seeded initial weights: a one-size network starts as the authors' does.
        self.enc = nn.ModuleList([VGGBlock(in_channels, f[0], f[0])]
                                 + [VGGBlock(f[i - 1], f[i], f[i]) for i in range(1, 5)])
        self.dec = nn.ModuleList([VGGBlock(f[i] + f[i + 1], f[i], f[i]) for i in range(3, -1, -1)])
        n = len(self.local_sizes)
        self.logits = nn.ModuleList([nn.Conv2d(f[0], num_classes, 1) for _ in range(n)])
        self.head_a = nn.ModuleList([nn.Conv2d(f[0], num_classes * 3, 1) for _ in range(n)])
        self.head_b = nn.ModuleList([nn.Conv2d(f[1], num_classes * 3, 1) for _ in range(n)])

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The UNet: ``(decoder output Bx32xHxW, x0 Bx32xHxW, x1 Bx64x(H/2)x(W/2))``."""
        skips = []
        h = x
        for i, block in enumerate(self.enc):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            up = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
            h = block(torch.cat([skip, up], 1))
        return h, skips[0], skips[1]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A one-size network without its centroid heads: ``(logits, x0, x1)``.

        Independent of the local size, so one-size networks of several sizes can be
        stacked and run together under ``vmap`` (the training engine).
        """
        h, x0, x1 = self.trunk(x)
        return self.logits[0](h), x0, x1

    def centroids(self, x0: torch.Tensor, x1: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Head set ``i``'s centroids from the trunk's first two blocks."""
        ls = self.local_sizes[i]
        a, b = self._conv(self.head_a, i), self._conv(self.head_b, i)
        # Head A pools full-resolution features over l x l windows; head B pools the
        # half-resolution features over l x l cells, i.e. 2l x 2l windows of the image.
        return (centroid_colours(x0, a.weight, a.bias, ls, self.num_classes),
                centroid_colours(x1, b.weight, b.bias, ls, self.num_classes))

    @staticmethod
    def _conv(heads: nn.ModuleList, i: int) -> nn.Conv2d:
        return cast(nn.Conv2d, heads[i])

    def forward(self, x: torch.Tensor) -> dict[int, HeadOutputs]:
        """Per local size ``(logits, centroids_a, centroids_b)`` (shapes in the module doc)."""
        h, x0, x1 = self.trunk(x)
        out = {}
        for i, ls in enumerate(self.local_sizes):
            cen_a, cen_b = self.centroids(x0, x1, i)
            out[ls] = (self.logits[i](h), cen_a, cen_b)
        return out

    def centroids_a(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Only what the read-out uses: head A's centroids per local size, ``Bx2x3x(H/l)x(W/l)``.

        Head A reads the first block's features, so this runs one ``VGGBlock`` instead of
        the whole UNet (the deeper layers and the logits only matter for training).
        """
        x0 = self.enc[0](x)
        heads = [self._conv(self.head_a, i) for i in range(len(self.local_sizes))]
        return {ls: centroid_colours(x0, a.weight, a.bias, ls, self.num_classes)
                for a, ls in zip(heads, self.local_sizes, strict=True)}


def centroid_colours(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, window: int,
                     num_classes: int = 2) -> torch.Tensor:
    """A centroid head: average-pool ``BxCxHxW`` features over ``window`` x ``window`` cells,
    1x1 conv (``weight``: ``(num_classes*3)xCx1x1``), sigmoid. Returns
    ``Bx num_classes x3x(H/window)x(W/window)`` colours in [0, 1]."""
    pooled = F.avg_pool2d(feats, kernel_size=window, stride=window)
    colours = torch.sigmoid(F.conv2d(pooled, weight, bias))
    b, _, h, w = colours.shape
    return colours.view(b, num_classes, 3, h, w)


def pattern_weight(image: torch.Tensor, centroids: torch.Tensor, window: int) -> torch.Tensor:
    """``w = exp(-d_p) / (exp(-d_p) + exp(-d_c))`` per pixel, ``BxHxW`` in [0, 1].

    The darker centroid of each window (smaller R+G+B) is the pattern colour;
    ``d_p``, ``d_c`` are Euclidean RGB distances of a pixel to the two colours.
    """
    intensity = centroids.sum(dim=2)  # Bx2xhxw
    darker_first = intensity.argsort(dim=1)
    idx = darker_first.unsqueeze(2).expand_as(centroids)
    ordered = torch.gather(centroids, 1, idx)
    up = upsample_windows(ordered, window)
    d_p = torch.linalg.vector_norm(image - up[:, 0], dim=1)
    d_c = torch.linalg.vector_norm(image - up[:, 1], dim=1)
    return torch.sigmoid(d_c - d_p)  # == exp(-d_p) / (exp(-d_p) + exp(-d_c))


def upsample_windows(centroids: torch.Tensor, window: int) -> torch.Tensor:
    """``Bx2x3xhxw`` window colours -> ``Bx2x3x(h*window)x(w*window)`` per pixel (nearest)."""
    b, k, c, h, w = centroids.shape
    up = F.interpolate(centroids.view(b, k * c, h, w), scale_factor=window, mode="nearest")
    return up.view(b, k, c, h * window, w * window)
