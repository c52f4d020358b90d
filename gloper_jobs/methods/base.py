"""What every segmentation method is and returns.

A method is a :class:`Segmenter` built from a frozen, validated parameter
dataclass. :meth:`Segmenter.segment` takes one photo and its foreground and
returns a :class:`Segmentation`: named candidate masks at the working size plus
the method's own label-free choice among them.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from gloper_jobs.data.images import resize_mask, resize_rgb_uint8
from gloper_jobs.exceptions import InvalidParameterError


@dataclass(frozen=True)
class SegmentContext:
    """What a method may know about a photo besides its pixels."""

    species: str | None = None
    name: str | None = None


@dataclass
class Segmentation:
    """A method's output for one photo.

    ``candidates`` maps a name to an ``SxS``-style ``HxW bool`` mask at the working
    size (True = pattern), already restricted to the foreground. ``choice`` names
    the candidate a user without labels gets. Names in ``derived`` were computed
    from the others (a fused mask) and are left out of the oracle.
    """

    candidates: dict[str, np.ndarray]
    choice: str
    derived: frozenset[str] = frozenset()
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.choice not in self.candidates:
            raise ValueError(f"choice {self.choice!r} is not among {sorted(self.candidates)}")

    def oracle_names(self) -> list[str]:
        """Candidates an oracle may pick from (all but derived ones)."""
        return [n for n in self.candidates if n not in self.derived]

    def resized(self, height: int, width: int) -> dict[str, np.ndarray]:
        """Every candidate resized back to the photo, ``height x width bool`` (nearest)."""
        return {n: resize_mask(m, (height, width)) for n, m in self.candidates.items()}


@dataclass(frozen=True)
class MethodParams:
    """Base of every method's parameters; subclasses add typed fields.

    Fields with ``metadata={"identity": False}`` (such as the device) do not
    change the result and are left out of :meth:`identity`.
    """

    def validate(self) -> None:
        """Raise :class:`InvalidParameterError` for a bad value (override)."""

    def identity(self) -> dict[str, Any]:
        """The parameters that determine the result, JSON-ready."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("identity", True):
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, **params: Any) -> MethodParams:
        """Build and validate from keyword values (strings from a CLI are coerced)."""
        valid = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise InvalidParameterError(
                f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
            )
        coerced = {k: _coerce(k, v, valid[k].type) for k, v in params.items()}
        obj = cls(**coerced)
        obj.validate()
        return obj


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Coerce CLI strings and JSON lists to the field's declared type."""
    ann = str(annotation)
    try:
        if ann.startswith("tuple[int"):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(int(v) for v in value)
        if ann == "bool":
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if ann == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if ann == "float":
            return float(value)
        if ann.startswith("str"):
            return str(value)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"parameter {name}={value!r} is not a valid {ann}") from exc
    return value


class Segmenter(ABC):
    """A segmentation method with its parameters bound; heavy state loads once."""

    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]]
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    #: queue class a distributed run routes this method to: "cpu" or "gpu"
    device_class: ClassVar[str] = "cpu"

    def __init__(self, params: MethodParams) -> None:
        self.params = params

    @classmethod
    def settings_defaults(cls, settings: Any) -> dict[str, Any]:
        """Parameter defaults taken from :class:`~gloper_jobs.settings.Settings`
        (device, weight paths); explicit parameters win. Override per method."""
        return {}

    def close(self) -> None:
        """Release heavy state (weights, GPU memory). The cache calls it on eviction."""
        return None

    @abstractmethod
    def segment(
        self, image: np.ndarray, foreground: np.ndarray, context: SegmentContext | None = None
    ) -> Segmentation:
        """Segment ``image`` (``HxWx3 uint8 RGB``) within ``foreground`` (``HxW bool``, same HxW)."""

    def working_inputs(self, image: np.ndarray, foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Check the inputs and resize them to the working size S (``params.size``).

        ``image``: ``HxWx3 uint8 RGB``, ``foreground``: ``HxW bool``. Returns
        ``SxSx3 uint8 RGB`` (area/linear resize) and ``SxS bool`` (nearest).
        """
        check_inputs(image, foreground)
        s = int(getattr(self.params, "size"))  # noqa: B009 - every resizing method has a size
        return resize_rgb_uint8(image, (s, s)), resize_mask(foreground, (s, s))

    def identity(self) -> dict[str, Any]:
        """Method name and result-determining parameters (the job's settings key)."""
        return {"method": self.name, **self.params.identity()}


def check_inputs(image: np.ndarray, foreground: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image`` is ``HxWx3 uint8`` and ``foreground`` ``HxW bool``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if foreground.shape != image.shape[:2]:
        raise ValueError(f"foreground {foreground.shape} does not match image {image.shape[:2]}")


def check_size(size: int, multiple: int = 1) -> None:
    if size < 16 or size > 4096 or size % multiple:
        raise InvalidParameterError(
            f"size={size} must be between 16 and 4096 and a multiple of {multiple}"
        )
