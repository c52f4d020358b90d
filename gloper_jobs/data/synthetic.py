"""A labelled pattern set the project generates itself, so a demo always has data.

Each photo is a textured "animal" (an ellipse of coat colour with a pattern:
stripes, spots, rosettes, patches) on a noisy background; its label is the
pattern, black on white, in ``<Species>/label/`` exactly like the shared examples.
The pattern is darker than the coat (``darker``, the default), lighter than a dark
coat (``lighter``: folders ``<Kind>Light``, like nyala's and seals' pale marks), or
both. ``contrary=True`` adds ``Holstein``: a dark coat with pale patches enclosed in it
whose label marks the *dark* (as annotators mark a black-and-white cow's black), so every
geometric rule (the pale is the minority and enclosed) calls the wrong colour: the case no
photo's geometry can tell from ``SpotsLight``. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

PATTERNS = ("Stripes", "Spots", "Rosettes", "Patches")
#: species whose labelled colour is the one every polarity rule calls the coat (``contrary=True``)
CONTRARY = ("Holstein",)
POLARITIES = ("darker", "lighter", "both")


def _pattern(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "Stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(14, 24)
        wobble = 6 * np.sin(yy / rng.uniform(20, 40))
        t = (xx * np.cos(angle) + yy * np.sin(angle) + wobble) / period
        return (t - np.floor(t)) < 0.45
    if kind == "Holstein":  # the dark is the pattern: all of the body but pale islands well inside it
        islands = np.zeros((h, w), dtype=bool)
        for _ in range(9):
            ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.55)
            cy, cx = h / 2 + rad * 0.36 * h * np.sin(ang), w / 2 + rad * 0.38 * w * np.cos(ang)
            ry, rx = rng.uniform(11, 18), rng.uniform(11, 20)
            islands |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
        return ~islands
    mask = np.zeros((h, w), dtype=bool)
    n = {"Spots": 45, "Rosettes": 30, "Patches": 8}[kind]
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if kind == "Patches":
            ry, rx = rng.uniform(18, 40), rng.uniform(18, 40)
        else:
            ry = rx = rng.uniform(5, 10)
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        if kind == "Rosettes":
            mask |= (d < 1.0) & (d > 0.35)
        else:
            mask |= d < 1.0
    return mask


def make_photo(
    kind: str, size: int, rng: np.random.Generator, lighter: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic photo ``HxWx3 uint8 RGB``, its label and the animal's body (``HxW bool`` each).

    ``lighter``: a dark coat with a light pattern instead of a light coat with a dark one.
    """
    h, w = size, int(size * 1.25)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    body = ((yy - h / 2) / (h * 0.36)) ** 2 + ((xx - w / 2) / (w * 0.38)) ** 2 < 1.0
    pattern = _pattern(kind, h, w, rng) & body
    bg = np.array([rng.uniform(60, 120), rng.uniform(110, 160), rng.uniform(50, 90)])
    coat = np.array([rng.uniform(190, 235), rng.uniform(150, 200), rng.uniform(90, 140)])
    mark = np.array([rng.uniform(15, 50), rng.uniform(10, 40), rng.uniform(5, 30)])
    if lighter:  # the roles swap: pale marks on a dark brown coat
        coat, mark = np.array([rng.uniform(70, 110), rng.uniform(45, 75), rng.uniform(25, 50)]), coat + 20
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = bg
    img[body] = coat
    img[pattern] = mark
    shade = 0.85 + 0.3 * (xx / w)  # soft light gradient across the frame
    img *= shade[..., None]
    img += rng.normal(0, 9, img.shape)
    photo = Image.fromarray(img.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    return np.asarray(photo), pattern, body


def make_dataset(
    root: Path, per_species: int = 2, size: int = 192, seed: int = 7, polarity: str = "darker",
    contrary: bool = False,
) -> list[Path]:
    """Write ``<root>/<Pattern>/<n>.jpg`` and ``<root>/<Pattern>/label/<n>.png``; returns photo paths.

    ``polarity``: ``darker`` (dark pattern on a light coat), ``lighter`` (light pattern on
    a dark coat, in ``<Pattern>Light/``) or ``both``; ``contrary`` adds the :data:`CONTRARY`
    species (after the others: their photos stay the same). Raises ``ValueError`` for
    another polarity.
    """
    if polarity not in POLARITIES:
        raise ValueError(f"polarity={polarity!r}: use one of {', '.join(POLARITIES)}")
    kinds = [(k, False) for k in PATTERNS] if polarity != "lighter" else []
    if polarity != "darker":
        kinds += [(k, True) for k in PATTERNS]
    if contrary:
        kinds += [(k, False) for k in CONTRARY]
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    for kind, lighter in kinds:
        folder = Path(root) / (f"{kind}Light" if lighter else kind)
        (folder / "label").mkdir(parents=True, exist_ok=True)
        for i in range(per_species):
            photo, label, _ = make_photo(kind, size, rng, lighter)
            p = folder / f"{kind.lower()}_{i:02d}.jpg"
            Image.fromarray(photo).save(p, quality=92)
            Image.fromarray(np.where(label, 0, 255).astype(np.uint8)).save(folder / "label" / f"{p.stem}.png")
            paths.append(p)
    return paths
