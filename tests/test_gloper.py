"""GloPER's network, its sampling and read-out, and that it learns a pattern."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gloper_jobs.data.synthetic import make_photo
from gloper_jobs.methods import create_segmenter
from gloper_jobs.methods.gloper import PAPER_LOCAL_SIZES
from gloper_jobs.methods.gloper.engine import train_sizes
from gloper_jobs.methods.gloper.loss import hard_gumbel_softmax, reconstruct
from gloper_jobs.methods.gloper.net import GloperNet, pattern_weight
from gloper_jobs.methods.gloper.params import EngineOptions
from gloper_jobs.scoring.metrics import scores


def test_network_shapes() -> None:
    net = GloperNet((4,))
    logits, a, b = net(torch.rand(1, 3, 64, 64))[4]
    assert logits.shape == (1, 2, 64, 64)
    assert a.shape == (1, 2, 3, 16, 16) and b.shape == (1, 2, 3, 8, 8)
    assert 0 <= float(a.detach().min()) and float(a.detach().max()) <= 1
    channels = [block.body[0].out_channels for block in net.enc]
    assert channels == [32, 64, 128, 256, 512]


def test_hard_gumbel_is_one_hot_forward_with_soft_gradient() -> None:
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    y = hard_gumbel_softmax(logits, 0.1, gen)
    assert torch.allclose(y.sum(dim=1), torch.ones(1, 8, 8))
    assert set(torch.unique(y.detach()).tolist()) <= {0.0, 1.0}
    (y[:, 0] * torch.arange(64.0).view(8, 8)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    same = hard_gumbel_softmax(logits, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(same, y)


def test_reconstruct_and_readout_follow_the_method() -> None:
    # one 4x4 window, colours: class 0 = black, class 1 = white
    cen = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]).view(1, 2, 3, 1, 1)
    assign = torch.zeros(1, 2, 4, 4)
    assign[:, 0, :2] = 1
    assign[:, 1, 2:] = 1
    rec = reconstruct(assign, cen, 4)
    assert torch.all(rec[:, :, :2] == 0) and torch.all(rec[:, :, 2:] == 1)
    # read-out: the darker centroid is the pattern, whichever class index it has
    swapped = cen.flip(1)
    img = rec.clone()
    for c in (cen, swapped):
        w = pattern_weight(img, c, 4)[0]
        assert torch.all(w[:2] > 0.5) and torch.all(w[2:] < 0.5)
        d = np.sqrt(3.0)
        assert float(w[0, 0]) == pytest.approx(np.exp(0) / (np.exp(0) + np.exp(-d)), rel=1e-5)


def test_learns_a_stripe_pattern() -> None:
    photo, label, body = make_photo("Stripes", 64, np.random.default_rng(3))
    out = create_segmenter("gloper", size=64, local_sizes="8", steps=25, device="cpu").segment(photo, body)
    from gloper_jobs.data.images import resize_mask

    dice = scores(out.candidates["local_8"], resize_mask(label, (64, 64))).dice
    assert dice > 0.7, dice


def test_same_seed_same_mask_and_seed_matters() -> None:
    photo, _, _ = make_photo("Spots", 48, np.random.default_rng(1))
    fg = np.ones(photo.shape[:2], dtype=bool)
    kw = {"size": 32, "local_sizes": "4", "steps": 4, "device": "cpu"}
    a = create_segmenter("gloper", **kw).segment(photo, fg).candidates["local_4"]
    b = create_segmenter("gloper", **kw).segment(photo, fg).candidates["local_4"]
    assert np.array_equal(a, b)
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ones = torch.ones(1, 32, 32)
    w1 = train_sizes(img, ones, (4,), EngineOptions.plain(size=32, local_sizes=(4,), steps=3, seed=1), torch.device("cpu"))[4].weight
    w2 = train_sizes(img, ones, (4,), EngineOptions.plain(size=32, local_sizes=(4,), steps=3, seed=2), torch.device("cpu"))[4].weight
    assert not torch.equal(w1, w2)


def test_loss_ignores_background_and_snapshots() -> None:
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fg = torch.zeros(1, 32, 32)
    out = train_sizes(img, fg, (4,), EngineOptions.plain(size=32, local_sizes=(4,), steps=3),
                      torch.device("cpu"), readout_steps=(1, 2))[4]
    losses, snaps = out.losses, out.snapshots
    assert losses == [0.0, 0.0, 0.0]
    assert sorted(snaps) == [1, 2, 3] and snaps[3].shape == (32, 32)


def test_fused_choice_and_profiles() -> None:
    photo, _, _ = make_photo("Patches", 48, np.random.default_rng(2))
    fg = np.ones(photo.shape[:2], dtype=bool)
    out = create_segmenter("gloper", size=32, local_sizes="4,8,16", steps=2, device="cpu").segment(photo, fg)
    local = {f"local_{s}{pol}" for s in (4, 8, 16) for pol in ("", "_lighter")}
    derived = {"fused", "fused_lighter", "consensus", "consensus_lighter"}
    assert set(out.candidates) == local | derived
    assert out.derived == derived and set(out.oracle_names()) == local
    assert out.choice == ("consensus" if out.info["polarity"]["polarity"] == "darker" else "consensus_lighter")
    votes = sum(out.candidates[f"local_{s}"].astype(int) for s in (4, 8, 16))
    assert np.array_equal(out.candidates["fused"], votes >= 2)
    assert not (out.candidates["consensus"] & ~out.candidates["fused"]).any()
    fused = create_segmenter("gloper", size=32, local_sizes="4,8,16", steps=2, device="cpu", choice="fused",
                             polarity="lighter").segment(photo, fg)
    assert fused.choice == "fused_lighter"
    paper = create_segmenter("gloper", profile="paper").params
    assert (paper.size, paper.local_sizes, paper.steps, paper.tau, paper.rho, paper.lr, paper.seed) == (
        1024, PAPER_LOCAL_SIZES, 1000, 0.1, 0.5, 1e-3, 41)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_runs() -> None:  # pragma: no cover - exercised on GPU nodes
    photo, _, _ = make_photo("Stripes", 64, np.random.default_rng(3))
    out = create_segmenter("gloper", size=64, local_sizes="8", steps=5, device="cuda").segment(
        photo, np.ones(photo.shape[:2], dtype=bool))
    assert out.info["device"].startswith("cuda")
