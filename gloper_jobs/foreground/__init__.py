"""The animal's foreground mask (rembg) and the weights it needs.

- :mod:`~gloper_jobs.foreground.extractor`: :class:`ForegroundExtractor` (u2netp/u2net
  through rembg, built once per process) and :func:`whole_frame`.
- :mod:`~gloper_jobs.foreground.weights`: finding, checking and installing the ONNX files.
"""

from gloper_jobs.foreground.extractor import (
    Foreground,
    ForegroundExtractor,
    ForegroundFn,
    build_foreground,
    whole_frame,
)

__all__ = ["Foreground", "ForegroundExtractor", "ForegroundFn", "build_foreground", "whole_frame"]
