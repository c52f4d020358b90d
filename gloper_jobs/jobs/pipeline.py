"""Processing one photo end to end: load, foreground, segment, write, score.

:func:`process_photo` is the single function every path that segments a photo
calls: the extract and calibrate kinds (embedded run and queue alike), ``gloper
segment`` and the benchmarks. It touches no database: it returns an
:class:`ItemOutcome` that :mod:`gloper_jobs.jobs.recording` records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gloper_jobs import defaults
from gloper_jobs.data.images import load_photo, resize_mask
from gloper_jobs.data.labels import load_label, shape_mismatch
from gloper_jobs.data.outputs import clean_partial, write_choice, write_mask, write_overlay
from gloper_jobs.data.rle import encode
from gloper_jobs.exceptions import LabelError
from gloper_jobs.foreground import ForegroundFn, whole_frame
from gloper_jobs.foreground.rim import trim_rim
from gloper_jobs.jobs.candidates import CandidateRecord
from gloper_jobs.methods.base import SegmentContext, Segmenter
from gloper_jobs.scoring.metrics import scores_at

if TYPE_CHECKING:
    from sqlmodel import Session

    from gloper_jobs.settings import Settings

#: the file beside the candidate masks that shows the choice on the photo (``overlay=True``)
OVERLAY_NAME = "overlay.png"


@dataclass
class ItemOutcome:
    """What one item produced (masks already on disk), as the store records it.

    ``info`` is the method's own report plus ``timings`` (seconds to load, to find
    the foreground, to segment).

    ``foreground_fraction`` is the share of the frame the foreground model was
    confident about; ``foreground_fallback`` whether the whole frame was used instead.
    """

    candidates: list[CandidateRecord]
    choice: str
    seconds: float
    width: int
    height: int
    foreground_fraction: float | None
    foreground_fallback: bool | None
    device: str | None
    note: str | None = None
    info: dict[str, object] = field(default_factory=dict)


def working_side(segmenter: Segmenter, foreground_fn: ForegroundFn | None) -> int | None:
    """The side to decode a photo at: ``DECODE_MARGIN`` x the larger of what the segmenter
    and the foreground need, or None (full resolution) when either needs the full photo."""
    need = segmenter.input_side()
    if need is None:
        return None
    if foreground_fn is not None:
        fg_side: int | None = getattr(foreground_fn, "input_side", None)
        if fg_side is None:
            return None
        need = max(need, fg_side)
    return need * defaults.DECODE_MARGIN


def process_photo(
    path: Path,
    segmenter: Segmenter,
    out_dir: Path,
    foreground_fn: ForegroundFn | None,
    label_path: Path | None = None,
    species: str | None = None,
    eval_size: int = 256,
    max_pixels: int | None = None,
    overlay: bool = False,
    decode: str = defaults.DECODE,
    write_candidates: str = defaults.WRITE_CANDIDATES,
    foreground_rim: float = 0.0,
) -> ItemOutcome:
    """Segment one photo and write ``<out_dir>/<candidate>.png`` at the photo's size,
    ``<out_dir>/choice.json`` naming the chosen one (and ``overlay.png``, the choice drawn
    on the photo, with ``overlay``).

    With ``decode="working"`` the photo is decoded at the size the segmenter and the
    foreground need (:func:`working_side`) when both say what it is; masks are still
    written at the photo's full size. ``full`` (and ``overlay``) decode every pixel.

    Every candidate is recorded as a COCO RLE at the working size; ``write_candidates``
    says which are also written as full-resolution PNGs: ``choice`` (the chosen one) or
    ``all``. A candidate without a file has an empty ``mask_path``.

    ``foreground_rim`` (a share of the mask's side) trims that band along the
    foreground's outline off every candidate (:mod:`gloper_jobs.foreground.rim`); the
    method's own label-free choice and polarity evidence are left as it made them.

    Raises the library's errors (:class:`ImageLoadError` for a bad photo) for
    the caller to record; an unreadable label, or one whose aspect ratio is not the photo's
    (:func:`~gloper_jobs.data.labels.shape_mismatch`), is not scored and adds a note.
    """
    t0 = time.perf_counter()
    side = None if overlay or decode == "full" else working_side(segmenter, foreground_fn)
    photo = load_photo(path, max_pixels or defaults.MAX_IMAGE_PIXELS, side)
    image, h, w = photo.image, photo.height, photo.width
    t_load = time.perf_counter()
    fg = foreground_fn(image) if foreground_fn is not None else whole_frame(image)
    t_fg = time.perf_counter()
    seg = segmenter.segment(image, fg.mask, SegmentContext(species=species, name=Path(path).name))
    if foreground_rim and not fg.fallback:
        seg = replace(seg, candidates=trim_rim(seg.candidates, fg.mask, foreground_rim))
    timings = {"load": t_load - t0, "foreground": t_fg - t_load, "segment": time.perf_counter() - t_fg}
    if "seconds" in seg.info:  # the network's own share of segment (the dataset model reports it)
        timings["network"] = float(seg.info["seconds"])
    label = None
    note = None
    if label_path is not None:
        try:
            label = load_label(Path(label_path))
        except LabelError as exc:
            note = str(exc)
        if label is not None and (note := shape_mismatch(label_path, label.shape, (h, w))) is not None:
            label = None  # stretched onto the photo it would be scored as if it fitted
    if fg.fallback:
        note = "; ".join(filter(None, [note, f"{defaults.NOTE_FOREGROUND_FALLBACK} ({fg.fraction:.3f} of frame): "
                                             "whole frame used; check the photo shows an animal"]))
    t_written = time.perf_counter()
    clean_partial(out_dir)
    records: list[CandidateRecord] = []
    for name, mask in seg.candidates.items():
        mask_path = ""
        if write_candidates == "all" or name == seg.choice:
            mask_path = str(out_dir / f"{name}.png")
            write_mask(Path(mask_path), resize_mask(mask, (h, w)))
        sc = scores_at(mask, label, eval_size).as_dict() if label is not None else None
        records.append(CandidateRecord(
            name=name, mask_path=mask_path, is_choice=(name == seg.choice),
            derived=name in seg.derived, pattern_fraction=float(mask.mean()), scores=sc,
            rle=encode(mask).as_coco(),
        ))
    write_choice(out_dir, seg.choice, records)
    if overlay:
        write_overlay(out_dir / OVERLAY_NAME, image, resize_mask(seg.candidates[seg.choice], (h, w)), fg.mask)
    timings["write"] = time.perf_counter() - t_written
    return ItemOutcome(
        candidates=records, choice=seg.choice, seconds=time.perf_counter() - t0, width=w, height=h,
        foreground_fraction=fg.fraction, foreground_fallback=fg.fallback,
        device=str(seg.info.get("device", "cpu")), note=note,
        info={**seg.info, "timings": {k: round(v, 4) for k, v in timings.items()}},
    )


@dataclass(frozen=True)
class SegmentResult:
    """``gloper segment``'s files: the masks by candidate name, the choice, and the overlay."""

    masks: dict[str, Path]
    choice: str
    overlay: Path
    foreground_fallback: bool


def segment_image(image_path: Path, method: str, settings: Settings, out_dir: Path,
                  profile: str | None = None, params: dict[str, Any] | None = None,
                  species: str | None = None, foreground: bool = True,
                  session: Session | None = None) -> SegmentResult:
    """One photo outside any job: :func:`process_photo` with an overlay, nothing stored
    (``session``: the store a model given by its name is looked up in)."""
    from gloper_jobs.devices import configure_torch
    from gloper_jobs.foreground import build_foreground
    from gloper_jobs.methods.registry import build_segmenter, load_plugins

    configure_torch(settings.torch_threads, settings.compile_cache_dir)
    load_plugins(settings.plugin_modules)
    segmenter = build_segmenter(method, settings, profile, params, session)
    fg_fn = build_foreground(settings, None if foreground else "none")
    outcome = process_photo(Path(image_path), segmenter, out_dir, fg_fn, species=species,
                            max_pixels=settings.max_image_pixels, overlay=True, write_candidates="all",
                            foreground_rim=settings.foreground_rim if foreground else 0.0)
    return SegmentResult({c.name: Path(c.mask_path) for c in outcome.candidates}, outcome.choice,
                         out_dir / OVERLAY_NAME, bool(outcome.foreground_fallback))
