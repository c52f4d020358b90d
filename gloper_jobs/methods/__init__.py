"""Segmentation methods and their registry."""

from gloper_jobs.methods.base import Segmentation, SegmentContext, Segmenter
from gloper_jobs.methods.registry import create_segmenter, list_segmenters

__all__ = ["SegmentContext", "Segmentation", "Segmenter", "create_segmenter", "list_segmenters"]
