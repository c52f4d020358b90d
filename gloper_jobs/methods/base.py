"""What every segmentation method is and returns.

A method is a :class:`Segmenter` built from a frozen, validated parameter
dataclass. :meth:`Segmenter.segment` takes one photo and its foreground and
returns a :class:`Segmentation`: named candidate masks at the working size plus
the method's own label-free choice among them.
"""

from __future__ import annotations

import dataclasses
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError

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
    change the result and are left out of :meth:`identity`. :meth:`build` checks
    and coerces values with pydantic, which validates stdlib dataclasses as they
    are; ``__pydantic_config__`` is its configuration for every subclass.
    """

    #: pydantic's lax mode ("64" -> 64, "off" -> False, 2.5 refused for an int),
    #: plus numbers accepted for string fields (``model=5`` -> ``"5"``)
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(coerce_numbers_to_str=True)

    def validate(self) -> None:
        """Raise :class:`InvalidParameterError` for a bad value (override)."""

    @classmethod
    def idle(cls, params: dict[str, Any]) -> frozenset[str]:
        """The names in ``params`` (an :meth:`identity` dict) that do nothing with the other
        values given there, so a table of settings can leave them out (override)."""
        return frozenset()

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
        """Build and validate from keyword values (strings from a CLI are coerced).

        Raises :class:`InvalidParameterError` for an unknown name (listing the
        valid ones), a value of the wrong type (naming the parameter, the value
        and the expected type) or a value :meth:`validate` refuses.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise InvalidParameterError(
                f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(fields)}"
            )
        adapter, tuple_fields = _adapter(cls)
        values = {k: _split_list(v) if k in tuple_fields else v for k, v in params.items()}
        try:
            obj: MethodParams = adapter.validate_python(values)
        except ValidationError as exc:
            raise InvalidParameterError("; ".join(
                _explain(err, params, fields) for err in exc.errors(include_url=False)
            )) from exc
        obj.validate()
        return obj


_ADAPTERS: dict[type[MethodParams], tuple[TypeAdapter[Any], frozenset[str]]] = {}


def _adapter(cls: type[MethodParams]) -> tuple[TypeAdapter[Any], frozenset[str]]:
    """pydantic's validator for ``cls`` and the names of its tuple fields (built once per class)."""
    if cls not in _ADAPTERS:
        hints = typing.get_type_hints(cls)
        tuples = frozenset(n for n, t in hints.items() if typing.get_origin(t) is tuple)
        _ADAPTERS[cls] = TypeAdapter(cls), tuples
    return _ADAPTERS[cls]


def _split_list(value: Any) -> Any:
    """A CLI list, ``"8,16"`` or ``"8 16"``, as its items; other values as they are."""
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    return value


def _explain(err: Any, given: dict[str, Any], fields: dict[str, dataclasses.Field[Any]]) -> str:
    """One pydantic error as ``parameter NAME=VALUE is not a valid TYPE (why)``."""
    loc = err["loc"]
    name = str(loc[0]) if loc else "?"
    field_type = fields[name].type if name in fields else "value"
    expected = field_type if isinstance(field_type, str) else getattr(field_type, "__name__", str(field_type))
    item = f"item {loc[1]}: " if len(loc) > 1 else ""
    return f"parameter {name}={given.get(name)!r} is not a valid {expected} ({item}{err['msg']})"


class Segmenter(ABC):
    """A segmentation method with its parameters bound; heavy state loads once."""

    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]]
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    #: queue class a distributed run routes this method to: "cpu" or "gpu"
    device_class: ClassVar[str] = "cpu"
    #: ``gloper calibrate``'s grid when none is given (``NAME=V1,V2`` pairs); empty: the run's own settings
    calibration_grid: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: MethodParams) -> None:
        self.params = params

    @classmethod
    def choice_params(cls, candidate: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The parameters that make ``candidate`` the label-free choice of a run with
        ``params`` (identity dict), or None when no parameter does. A calibration learns
        per species the candidate (and so these parameters) with the best Dice."""
        return None

    @classmethod
    def settings_defaults(cls, settings: Any) -> dict[str, Any]:
        """Parameter defaults taken from :class:`~gloper_jobs.settings.Settings`
        (device, weight paths); explicit parameters win. Override per method."""
        return {}

    @classmethod
    def model_defaults(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Parameter defaults a model file named in ``params`` dictates (GloPER: a dataset
        model's size and local sizes), read from the file's metadata without its weights;
        explicit parameters win. Override per method."""
        return {}

    @classmethod
    def check_model(cls, params: MethodParams) -> None:
        """Refuse ``params`` that a model file named in them cannot run with (GloPER: a dataset
        model trained for another size), from the file's metadata: nothing is built, no weights
        load, so a job is refused before it is recorded. Override per method."""
        return None

    def close(self) -> None:
        """Release heavy state (weights, GPU memory). The cache calls it on eviction."""
        return None

    @abstractmethod
    def segment(
        self, image: np.ndarray, foreground: np.ndarray, context: SegmentContext | None = None
    ) -> Segmentation:
        """Segment ``image`` (``HxWx3 uint8 RGB``) within ``foreground`` (``HxW bool``, same HxW)."""

    def input_side(self) -> int | None:
        """The smallest side of the photo this method's result needs, or None for the full photo.

        A method that resizes every photo to a fixed square may say so; the pipeline then
        decodes the photo near that size (:func:`~gloper_jobs.data.images.load_photo`).
        None (the default) keeps every method's results bit for bit.
        """
        return None

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
