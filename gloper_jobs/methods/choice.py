"""Label-free choices shared by the methods: which colour is the pattern (polarity).

A two-colour method (GloPER's two centroids per window, k-means with k=2) splits the
animal into a darker and a lighter region; nothing in it says which one is the
pattern. The paper reads the darker one, which fails on animals with pale marks on a
dark coat (nyala, ringed seals). Each *polarity rule* here looks only at the shape of
the two regions and returns a score in [-1, 1]: > 0 says the darker region is the
pattern, < 0 the lighter one, and its size says how clear the call is.

Inputs of every rule: ``darker``, a list of ``HxW bool`` masks of the darker region
(one per local size, or one), and ``fg``, the ``HxW bool`` foreground they lie in;
the lighter region of a mask ``m`` is ``fg & ~m``. GloPER and k-means both ask the
rules about the same evidence, :func:`colour_split`: the foreground's two colours by
k-means at ``EVIDENCE_SIZE``, so both methods make the same call on a photo.

``polarity=auto`` reads the paper's darker colour and records what the rules say: the
photo's *suggestion* (lighter when every rule of ``AUTO_RULE`` scores below
``-AUTO_MARGIN``). Which colour a species reads is settled for the whole species when a
job drains (:mod:`gloper_jobs.jobs.polarity`): by a person, a calibration, or else the
darker default with the photos' vote shown beside it as a suggestion. No geometric vote
flips a species by itself: under leave-one-species-out over the shared example photos
and synthetic species in both polarities, including species whose pattern covers most of
the coat, every flipping policy lost a held-out species outright (``python -m
bench.polarity_species``, docs/polarity.md), and on ten other photos the vote flipped a
species at a confident -0.47 (Dice 0.79 -> 0.004).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gloper_jobs.data.images import resize_mask, resize_rgb_uint8
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.scoring.metrics import dice

POLARITIES = ("auto", "darker", "lighter")
#: a region smaller than this share of the foreground counts as no piece (noise)
MIN_PIECE_FRACTION = 0.0005

#: the photo is resized to this for the colour split the rules look at
EVIDENCE_SIZE = 256
#: the rules (``+``-joined) of a photo's and a species' suggestion: lighter only when every
#: one scores < -AUTO_MARGIN (``enclosed`` alone called a black-and-white animal whose dark
#: patches reach its outline lighter; bench/polarity_species.py, leave-one-species-out)
AUTO_RULE = "minority+enclosed"
AUTO_MARGIN = 0.1
KMEANS_ATTEMPTS = 20
KMEANS_MAX_ITER = 100
KMEANS_EPSILON = 1.0
KMEANS_SEED = 41
#: k-means' attempts run on a seeded sample of this many pixels; the best attempt's
#: centres then start one run over every pixel (0: every attempt on every pixel)
KMEANS_SAMPLE = 4096

Rule = Callable[[Sequence[np.ndarray], np.ndarray], float]


def _ratio(a: float, b: float) -> float:
    """``(a - b) / (a + b)`` in [-1, 1]; 0 when both are 0."""
    return (a - b) / (a + b) if a + b > 0 else 0.0


def _mean(darker: Sequence[np.ndarray], fg: np.ndarray, score: Callable[[np.ndarray, np.ndarray], float]) -> float:
    return float(np.mean([score(d & fg, fg & ~d) for d in darker]))


def minority(darker: Sequence[np.ndarray], fg: np.ndarray) -> float:
    """The colour covering less of the foreground is the pattern."""
    return _mean(darker, fg, lambda d, light: _ratio(float(light.sum()), float(d.sum())))


def _boundary_per_area(region: np.ndarray) -> float:
    """Edge pixels of ``region`` (those a 3x3 erosion removes; the frame counts as outside) per pixel."""
    area = float(region.sum())
    if area == 0:
        return 0.0
    inner = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0).astype(bool)
    return float((region & ~inner).sum()) / area


def boundary(darker: Sequence[np.ndarray], fg: np.ndarray) -> float:
    """The colour with more boundary per area (outline of the animal included) is the pattern."""
    return _mean(darker, fg, lambda d, light: _ratio(_boundary_per_area(d), _boundary_per_area(light)))


def _thickness(region: np.ndarray, other: np.ndarray) -> float:
    """Mean distance (pixels) from a pixel of ``region`` to the nearest pixel of ``other``.

    Outside the foreground does not limit a region: only the other colour does.
    """
    if not region.any() or not other.any():
        return 0.0
    dist = cv2.distanceTransform((~other).astype(np.uint8), cv2.DIST_L2, 3)
    return float(dist[region].mean())


def thinner(darker: Sequence[np.ndarray], fg: np.ndarray) -> float:
    """The colour whose regions are thinner (closer to the other colour) is the pattern."""
    return _mean(darker, fg, lambda d, light: _ratio(_thickness(light, d), _thickness(d, light)))


def _pieces(region: np.ndarray, min_area: float) -> int:
    """Number of 8-connected pieces of ``region`` with at least ``min_area`` pixels."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    return int((stats[1:n, cv2.CC_STAT_AREA] >= min_area).sum())


def pieces(darker: Sequence[np.ndarray], fg: np.ndarray) -> float:
    """The colour made of more separate pieces is the pattern (the coat is one piece)."""
    min_area = max(1.0, MIN_PIECE_FRACTION * float(fg.sum()))
    return _mean(darker, fg, lambda d, light: _ratio(_pieces(d, min_area), _pieces(light, min_area)))


def _enclosed_share(region: np.ndarray, fg: np.ndarray) -> float:
    """Share of ``region``'s pixels in pieces that touch neither the foreground's outline
    nor the frame: marks enclosed by the other colour."""
    area = float(region.sum())
    if area == 0:
        return 0.0
    n, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    outside = ~cv2.erode(fg.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0).astype(bool)
    touching = np.unique(labels[outside & region])
    enclosed = region & ~np.isin(labels, touching)
    return float(enclosed.sum()) / area


def enclosed(darker: Sequence[np.ndarray], fg: np.ndarray) -> float:
    """The colour whose pieces are enclosed by the other (not reaching the outline) is the pattern."""
    return _mean(darker, fg, lambda d, light: _enclosed_share(d, fg) - _enclosed_share(light, fg))


def agreement(darker: Sequence[np.ndarray], fg: np.ndarray) -> float:
    """The colour whose masks agree more across local sizes (mean pairwise Dice) is the pattern."""
    pairs = [(a, b) for i, a in enumerate(darker) for b in darker[i + 1:]]
    if not pairs:
        return 0.0
    dark = np.mean([dice(a & fg, b & fg) for a, b in pairs])
    light = np.mean([dice(fg & ~a, fg & ~b) for a, b in pairs])
    return float(dark - light)


#: every polarity rule, by name (the order is the order of reports)
POLARITY_RULES: dict[str, Rule] = {
    "minority": minority,
    "boundary": boundary,
    "thinner": thinner,
    "pieces": pieces,
    "enclosed": enclosed,
    "agreement": agreement,
}


def cluster_colours(
    pixels: np.ndarray, k: int, attempts: int = KMEANS_ATTEMPTS, max_iter: int = KMEANS_MAX_ITER,
    epsilon: float = KMEANS_EPSILON, seed: int = KMEANS_SEED, sample: int = KMEANS_SAMPLE,
) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV k-means of ``Nx3 float32`` colours; clusters renumbered darkest first.

    With more than ``sample`` pixels the ``attempts`` random restarts run on a seeded
    sample of ``sample`` pixels and the best one's centres start a single run over all
    of them: about 6x faster at 256x256 than every restart on every pixel, and the
    same clusters up to the ``epsilon`` stopping tolerance (docs/benchmarks.md, "k-means sample").
    Returns ``N int`` cluster indices (0 = darkest centre by R+G+B) and the ``kx3
    float32`` centres in that order. Deterministic for a seed.
    """
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, max_iter, epsilon)
    if 0 < sample < len(pixels) and attempts > 1:
        subset = pixels[np.random.default_rng(seed).choice(len(pixels), sample, replace=False)]
        _, _, best = cv2.kmeans(  # type: ignore[call-overload]
            subset, k, None, criteria, attempts, cv2.KMEANS_RANDOM_CENTERS
        )
        nearest = ((best**2).sum(axis=1) - 2 * pixels @ best.T).argmin(axis=1).astype(np.int32)
        _, labels, centres = cv2.kmeans(  # type: ignore[call-overload]
            pixels, k, nearest.reshape(-1, 1), criteria, 1, cv2.KMEANS_USE_INITIAL_LABELS
        )
    else:
        _, labels, centres = cv2.kmeans(  # type: ignore[call-overload]
            pixels, k, None, criteria, attempts, cv2.KMEANS_RANDOM_CENTERS
        )
    order = np.argsort(centres.sum(axis=1), kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[labels.ravel()], centres[order]


def colour_split(image: np.ndarray, fg: np.ndarray, size: int = EVIDENCE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The foreground's darker colour: 2-means of its RGB pixels at ``size x size``.

    ``image``: ``HxWx3 uint8 RGB``; ``fg``: ``HxW bool``. Returns the darker cluster and
    the foreground, both ``size x size bool`` (the same as k-means' ``cluster_0`` at
    ``size=256, k=2``). An almost empty foreground gives an empty darker cluster.
    """
    img = resize_rgb_uint8(image, (size, size))
    fg_s = resize_mask(fg, (size, size))
    darker = np.zeros((size, size), dtype=bool)
    pixels = img[fg_s].astype(np.float32)
    if len(pixels) >= 2:
        darker[fg_s] = cluster_colours(pixels, 2)[0] == 0
    return darker, fg_s


@dataclass(frozen=True)
class PolarityChoice:
    """Which colour was read as the pattern, and why (JSON-ready via :meth:`as_info`)."""

    polarity: str  # "darker" or "lighter"
    rule: str  # the suggestion's rule (polarity=auto), or "fixed" for polarity=darker|lighter
    score: float | None  # the suggestion's score (< -AUTO_MARGIN: lighter), None when fixed
    scores: dict[str, float]  # every rule's score, for reports
    #: what the rules suggest for this photo (``lighter``/``darker``; None when fixed or unclear)
    suggestion: str | None = None
    #: local size -> the suggestion rules' scores on that size's own darker mask (GloPER)
    scale_scores: dict[str, dict[str, float]] | None = None

    def as_info(self, candidates: dict[str, str]) -> dict[str, Any]:
        """The report stored with the result; ``candidates`` names the method's choice in
        each polarity (``{"darker": ..., "lighter": ...}``) so reports can score every rule."""
        info: dict[str, Any] = {"polarity": self.polarity, "rule": self.rule,
                "score": None if self.score is None else round(self.score, 4),
                "rule_scores": {k: round(v, 4) for k, v in self.scores.items()},
                "margin": AUTO_MARGIN, "candidates": dict(candidates), "suggestion": self.suggestion}
        if self.scale_scores:
            info["scale_scores"] = {ls: {k: round(v, 4) for k, v in sc.items()}
                                    for ls, sc in self.scale_scores.items()}
        return info


def rule_names(rule: str) -> list[str]:
    """The rules of a ``+``-joined rule set (``minority+enclosed`` -> both)."""
    return rule.split("+")


def check_polarity(polarity: str, rule: str = AUTO_RULE) -> None:
    """Raise :class:`InvalidParameterError` for an unknown polarity or rule name."""
    if polarity not in POLARITIES:
        raise InvalidParameterError(f"polarity={polarity!r}: use one of {', '.join(POLARITIES)}")
    for name in rule_names(rule):
        if name not in POLARITY_RULES:
            raise InvalidParameterError(f"polarity rule {name!r}: use one of {', '.join(POLARITY_RULES)}")


def suggest(score: float, margin: float = AUTO_MARGIN) -> str | None:
    """What a rule set's weakest score says: ``lighter`` below ``-margin``, ``darker`` above
    ``margin``, None (unclear) between."""
    return "lighter" if score < -margin else "darker" if score > margin else None


def scale_scores(local_darker: dict[str, np.ndarray], fg: np.ndarray,
                 rule: str = AUTO_RULE) -> dict[str, dict[str, float]]:
    """The suggestion rules' scores on each local size's own darker mask (``name -> SxS
    bool``, ``fg``: ``SxS bool``): whether the method's local sizes agree with the global split."""
    return {name: {r: POLARITY_RULES[r]([mask], fg) for r in rule_names(rule)}
            for name, mask in local_darker.items()}


def choose_polarity(
    polarity: str, darker: Sequence[np.ndarray], fg: np.ndarray,
    rule: str = AUTO_RULE, margin: float = AUTO_MARGIN,
    local_darker: dict[str, np.ndarray] | None = None, local_fg: np.ndarray | None = None,
) -> PolarityChoice:
    """Apply ``polarity``: ``auto`` reads the paper's darker colour and records the photo's
    suggestion (lighter when every rule of ``rule`` (``+``-joined) scores below ``-margin``;
    the score is the highest of them, the weakest call); the species' reading is settled
    when its job drains (:mod:`gloper_jobs.jobs.polarity`). ``darker``/``lighter`` fix it.

    ``darker``: ``HxW bool`` masks of the darker region (one or more); ``fg``: ``HxW
    bool``. Every rule is scored either way, so reports can compare them.
    ``local_darker`` (local size -> ``SxS bool`` darker mask, with ``local_fg``) adds the
    suggestion rules' scores per local size.
    """
    check_polarity(polarity, rule)
    scores = {name: fn(darker, fg) for name, fn in POLARITY_RULES.items()}
    if polarity != "auto":
        return PolarityChoice(polarity, "fixed", None, scores)
    score = max(scores[name] for name in rule_names(rule))
    per_scale = scale_scores(local_darker, local_fg, rule) if local_darker and local_fg is not None else None
    return PolarityChoice("darker", rule, score, scores, suggest(score, margin), per_scale)


#: the species vote (:func:`gloper_jobs.jobs.polarity.species_call`): the mean of each of
#: these rules' scores over a species' photos; it suggests lighter only when every one is
#: below -SPECIES_MARGIN; the same rules and margin as a photo's own suggestion
SPECIES_RULES: tuple[str, ...] = tuple(rule_names(AUTO_RULE))
SPECIES_MARGIN = AUTO_MARGIN
