"""GloPER's loss: reconstruct the photo from two colours per local window.

A hard Gumbel-softmax sample of the logits assigns each pixel to one of the two
classes; the reconstruction puts the assigned class's centroid colour of the pixel's
window at the pixel. The loss is the mean foreground-weighted RGB distance of the
photo to the reconstruction from head A (``l x l`` windows) plus that from head B
(``2l x 2l`` windows) (METHOD.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gloper_jobs.methods.gloper.net import upsample_windows


def hard_gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """Straight-through hard Gumbel-softmax over dim 1: one-hot forward, soft gradient backward."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    return hard_gumbel_from_uniform(logits, tau, u)


def hard_gumbel_from_uniform(logits: torch.Tensor, tau: float, u: torch.Tensor) -> torch.Tensor:
    """:func:`hard_gumbel_softmax` with its uniform draws ``u`` given (broadcast to ``logits``:
    one draw shared by several local sizes, as each would draw it from its own seeded generator)."""
    exponential = (-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10)  # Exp(1) samples, > 0
    gumbel = -torch.log(exponential)
    soft = F.softmax((logits + gumbel) / tau, dim=1)
    hard = F.one_hot(soft.argmax(dim=1), soft.shape[1]).permute(0, 3, 1, 2).to(soft.dtype)
    return hard - soft.detach() + soft


def reconstruct(assign: torch.Tensor, centroids: torch.Tensor, window: int) -> torch.Tensor:
    """Per-pixel colour of the assigned class in its window.

    ``assign``: ``Bx2xHxW`` (one-hot or soft); ``centroids``: ``Bx2x3xhxw`` with
    ``h = H / window``. Returns ``Bx3xHxW``.
    """
    return (assign.unsqueeze(2) * upsample_windows(centroids, window)).sum(dim=1)


def reconstruction_loss(image: torch.Tensor, foreground: torch.Tensor, assign: torch.Tensor,
                        centroids_a: torch.Tensor, centroids_b: torch.Tensor, local_size: int) -> torch.Tensor:
    """The loss of one local size: ``mean(||x - rec_A||_2 * fg) + mean(||x - rec_B||_2 * fg)``.

    ``image``: ``Bx3xHxW float32`` in [0, 1]; ``foreground``: ``BxHxW float32`` (1 = animal);
    ``assign``: ``Bx2xHxW`` class assignment (a hard Gumbel-softmax sample); the centroids
    of heads A (``l x l`` windows) and B (``2l x 2l``). A scalar, mean over batch and pixels.
    """
    rec_a = reconstruct(assign, centroids_a, local_size)
    rec_b = reconstruct(assign, centroids_b, 2 * local_size)
    return (torch.linalg.vector_norm(image - rec_a, dim=1) * foreground).mean() + (
        torch.linalg.vector_norm(image - rec_b, dim=1) * foreground).mean()
