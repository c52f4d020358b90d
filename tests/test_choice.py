"""The label-free polarity rules on masks whose answer is known, and what GloPER and
k-means do with them."""

from __future__ import annotations

import numpy as np
import pytest

from gloper_jobs.data.images import resize_mask
from gloper_jobs.data.synthetic import make_photo
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.methods import create_segmenter
from gloper_jobs.methods.choice import (
    AUTO_RULE,
    POLARITY_RULES,
    choose_polarity,
    colour_split,
    enclosed,
    minority,
    pieces,
    thinner,
)
from gloper_jobs.scoring.metrics import scores

S = 96


def _ellipse() -> np.ndarray:
    yy, xx = np.mgrid[0:S, 0:S]
    return ((yy - S / 2) / (S * 0.42)) ** 2 + ((xx - S / 2) / (S * 0.45)) ** 2 < 1


def light_rings_on_dark_coat() -> tuple[np.ndarray, np.ndarray]:
    """Darker region and foreground (``SxS bool``): thin pale rings on a dark coat,
    like a ringed seal. The pattern is the *lighter* region."""
    fg = _ellipse()
    yy, xx = np.mgrid[0:S, 0:S]
    rings = np.zeros((S, S), dtype=bool)
    for cy, cx in [(30, 30), (30, 62), (62, 30), (62, 62), (46, 46)]:
        d = np.hypot(yy - cy, xx - cx)
        rings |= (d > 6) & (d < 9)
    return fg & ~rings, fg


def dark_spots_on_light_coat() -> tuple[np.ndarray, np.ndarray]:
    """Darker region and foreground: small dark spots on a pale coat (the darker region is the pattern)."""
    fg = _ellipse()
    yy, xx = np.mgrid[0:S, 0:S]
    spots = np.zeros((S, S), dtype=bool)
    for cy in range(20, 80, 14):
        for cx in range(20, 80, 14):
            spots |= np.hypot(yy - cy, xx - cx) < 4
    return spots & fg, fg


def test_light_rings_on_dark_coat_read_lighter_where_darker_is_pattern_fails() -> None:
    darker, fg = light_rings_on_dark_coat()
    for rule in (minority, thinner, enclosed):
        assert rule([darker], fg) < -0.1, rule.__name__
    picked = choose_polarity("auto", [darker], fg)
    # one photo never flips the reading by itself: it keeps the paper's darker and suggests lighter
    assert picked.polarity == "darker" and picked.suggestion == "lighter"
    assert picked.rule == AUTO_RULE and picked.score is not None and picked.score < 0
    # the paper's reading takes the coat: it would score ~0 against the rings
    assert choose_polarity("darker", [darker], fg).polarity == "darker"


def test_dark_spots_on_light_coat_read_darker() -> None:
    darker, fg = dark_spots_on_light_coat()
    for rule in (minority, thinner, enclosed, pieces):
        assert rule([darker], fg) > 0.1, rule.__name__
    picked = choose_polarity("auto", [darker], fg)
    assert picked.polarity == "darker" and picked.suggestion == "darker"


def test_every_rule_is_antisymmetric_in_the_two_colours() -> None:
    darker, fg = dark_spots_on_light_coat()
    for name, rule in POLARITY_RULES.items():
        if name == "agreement":  # needs two sizes
            masks = [darker, np.roll(darker, 1, axis=1) & fg]
            swapped = [fg & ~m for m in masks]
        else:
            masks, swapped = [darker], [fg & ~darker]
        assert rule(masks, fg) == pytest.approx(-rule(swapped, fg), abs=1e-6), name


def test_stripes_touching_the_outline_are_no_clear_call() -> None:
    # Both colours reach the outline: enclosed abstains (darker by default).
    fg = _ellipse()
    stripes = (np.arange(S)[None, :] // 6 % 2 == 0) & fg
    assert abs(enclosed([np.broadcast_to(stripes, (S, S)).copy()], fg)) < 0.1
    picked = choose_polarity("auto", [stripes], fg)
    assert picked.polarity == "darker" and picked.suggestion is None


def test_colour_split_finds_the_dark_marks() -> None:
    photo, label, body = make_photo("Spots", 96, np.random.default_rng(5))
    darker, fg = colour_split(photo, body)
    assert darker.shape == fg.shape == (256, 256)
    assert scores(darker, resize_mask(label, (256, 256))).dice > 0.8


def test_bad_polarity_is_a_clear_error() -> None:
    with pytest.raises(InvalidParameterError, match="auto, darker, lighter"):
        create_segmenter("gloper", polarity="pale")
    with pytest.raises(InvalidParameterError, match="polarity=lighter"):
        create_segmenter("kmeans", choice="lighter")


@pytest.fixture(scope="module")
def light_spots() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic photo with pale spots on a dark coat, its label and body (``HxW bool``)."""
    return make_photo("Spots", 128, np.random.default_rng(11), lighter=True)


def test_gloper_auto_reads_pale_spots_and_lighter_inverts(light_spots) -> None:
    photo, label, body = light_spots
    kw = {"size": 64, "local_sizes": "8,16", "steps": 10, "device": "cpu"}
    auto = create_segmenter("gloper", **kw).segment(photo, body)
    dark = create_segmenter("gloper", polarity="darker", **kw).segment(photo, body)
    light = create_segmenter("gloper", polarity="lighter", **kw).segment(photo, body)
    assert dark.choice == "consensus" and light.choice == "consensus_lighter"
    assert auto.choice == "consensus"  # the photo suggests lighter; its species' call decides
    info = auto.info["polarity"]
    assert info["polarity"] == "darker" and info["suggestion"] == "lighter"
    assert info["rule"] == AUTO_RULE and info["score"] < 0
    # the suggestion rules scored on each local size's own darker mask agree with the global split
    assert set(info["scale_scores"]) == {"8", "16"}
    assert all(max(sc.values()) < 0 for sc in info["scale_scores"].values()), info["scale_scores"]
    assert set(info["rule_scores"]) == set(POLARITY_RULES)
    assert dark.info["polarity"]["rule"] == "fixed" and dark.info["polarity"]["score"] is None
    fg = resize_mask(body, (64, 64))
    # lighter is the complement of darker within the foreground, size by size (rho = 0.5)
    for ls in (8, 16):
        d, lt = dark.candidates[f"local_{ls}"], dark.candidates[f"local_{ls}_lighter"]
        assert not (d & lt).any() and ((d | lt) == fg).mean() > 0.99
    truth = resize_mask(label, (64, 64))
    assert scores(auto.candidates["consensus_lighter"], truth).dice > 0.6
    assert scores(light.candidates[light.choice], truth).dice > 0.6
    assert scores(dark.candidates[dark.choice], truth).dice < 0.1
    assert {"fused", "fused_lighter", "consensus", "consensus_lighter"} <= auto.derived


def test_kmeans_polarity_auto_uses_the_same_rule(light_spots) -> None:
    photo, label, body = light_spots
    auto = create_segmenter("kmeans", polarity="auto").segment(photo, body)
    assert auto.choice == "cluster_0" and auto.info["polarity"]["suggestion"] == "lighter"
    assert "scale_scores" not in auto.info["polarity"]  # one split: nothing per local size
    assert scores(auto.candidates["cluster_1"], resize_mask(label, (256, 256))).dice > 0.7
    dark = create_segmenter("kmeans", polarity="darker").segment(photo, body)
    assert dark.choice == "cluster_0"


def test_synthetic_set_has_both_polarities(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from gloper_jobs.data.synthetic import make_dataset

    paths = make_dataset(tmp_path, per_species=1, size=96, polarity="both")
    assert sorted(p.parent.name for p in paths) == sorted(
        ["Patches", "Rosettes", "Spots", "Stripes", "PatchesLight", "RosettesLight", "SpotsLight", "StripesLight"])
    for p in paths:
        photo = np.asarray(Image.open(p).convert("L"), dtype=np.float32)
        label = np.asarray(Image.open(p.parent / "label" / f"{p.stem}.png")) < 128
        _, _, body = make_photo("Spots", 96, np.random.default_rng(0))  # the body ellipse is the same for all
        marks, coat = photo[label].mean(), photo[body & ~label].mean()
        assert (marks > coat) == p.parent.name.endswith("Light"), p
    assert len(make_dataset(tmp_path / "d", per_species=1, size=48)) == 4  # darker only by default
    with pytest.raises(ValueError, match="darker, lighter, both"):
        make_dataset(tmp_path / "x", polarity="pale")
