"""The one registry of segmentation methods, and the factory that builds them.

Adding a method is one module and one line in :data:`REGISTRY`; a plugin module
(``GLOPER_PLUGINS``) decorates its class with :func:`register_segmenter`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from gloper_jobs.exceptions import InvalidParameterError, UnknownMethodError
from gloper_jobs.methods.base import MethodParams, Segmenter
from gloper_jobs.methods.classical import KMeansSegmenter, WatershedSegmenter
from gloper_jobs.methods.clipseg import ClipSegSegmenter
from gloper_jobs.methods.dino import DinoSegmenter
from gloper_jobs.methods.gloper import GloperSegmenter
from gloper_jobs.methods.sam import SamSegmenter

if TYPE_CHECKING:
    from sqlmodel import Session

    from gloper_jobs.settings import Settings

S = TypeVar("S", bound=type[Segmenter])

#: method name -> Segmenter class (a builder taking validated params)
REGISTRY: dict[str, type[Segmenter]] = {
    GloperSegmenter.name: GloperSegmenter,
    KMeansSegmenter.name: KMeansSegmenter,
    WatershedSegmenter.name: WatershedSegmenter,
    SamSegmenter.name: SamSegmenter,
    ClipSegSegmenter.name: ClipSegSegmenter,
    DinoSegmenter.name: DinoSegmenter,
}


def list_segmenters() -> list[str]:
    """Registered method names, sorted."""
    return sorted(REGISTRY)


def get_segmenter_class(name: str) -> type[Segmenter]:
    """The class registered as ``name``; :class:`UnknownMethodError` lists the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}; valid methods: {', '.join(list_segmenters())}"
        ) from None


def resolve_params(name: str, profile: str | None = None, **params: Any) -> dict[str, Any]:
    """A profile's parameters overlaid with explicit ``params`` (profile ``cpu`` by default)."""
    cls = get_segmenter_class(name)
    prof = profile or "cpu"
    if prof not in cls.profiles:
        raise InvalidParameterError(
            f"method {name!r} has no profile {prof!r}; valid profiles: {', '.join(cls.profiles)}"
        )
    return {**cls.profiles[prof], **params}


def create_segmenter(name: str, profile: str | None = None, **params: Any) -> Segmenter:
    """Build method ``name`` with a profile and parameters, validated.

    Raises :class:`UnknownMethodError` or :class:`InvalidParameterError`, each
    listing what is valid.
    """
    cls = get_segmenter_class(name)
    merged = resolve_params(name, profile, **params)
    return cls(cls.Params.build(**merged))


def register_segmenter(cls: S) -> S:
    """Class decorator: add a method to :data:`REGISTRY` under ``cls.name``.

    Registering the same class again is a no-op (a plugin imported twice); another
    class under a taken name raises :class:`InvalidParameterError`.
    """
    existing = REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise InvalidParameterError(
            f"method name {cls.name!r} is taken by {existing.__module__}.{existing.__qualname__}; "
            "give the plugin's class another name")
    REGISTRY[cls.name] = cls
    return cls


def load_plugins(modules: Iterable[str]) -> None:
    """Import the plugin modules (``GLOPER_PLUGINS``) that register extra methods.

    Raises :class:`~gloper_jobs.exceptions.ConfigurationError` naming a module that
    cannot be imported.
    """
    from gloper_jobs.exceptions import ConfigurationError

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(
                f"GLOPER_PLUGINS names {name!r}, which cannot be imported here ({exc}); "
                "install it or fix PYTHONPATH") from exc


def portable_model(reference: str, session: Session | None = None) -> str:
    """``--param model=...`` as every machine can resolve it: a checkpoint path, or an
    ``s3://`` URL (given, or recorded for the model's name in the store, looked up in ``session``)."""
    from gloper_jobs.store.model_registry import resolve_model

    return resolve_model(reference, session)


def local_model(reference: str, settings: Settings, session: Session | None = None) -> str:
    """``--param model=...`` (a file, an ``s3://`` URL, or a model's name in the store) as
    a checkpoint path on this machine (a URL: this machine's cached copy, by checksum)."""
    from gloper_jobs.storage import is_url

    path = portable_model(reference, session)
    if is_url(path):
        from gloper_jobs.remote import cached_checkpoint

        path = str(cached_checkpoint(path, settings.weights_dir))
    return path


def method_params(method: str, settings: Settings, profile: str | None = None,
                  params: dict[str, Any] | None = None, session: Session | None = None) -> MethodParams:
    """The validated parameters :func:`build_segmenter` builds ``method`` with, nothing built.

    Settings supply defaults (device, weights) that ``params`` override; a model named in
    ``params`` (a file, an ``s3://`` URL, or its name in the store, looked up in ``session``)
    dictates what its metadata says (GloPER: a dataset model's size and local sizes, over a
    profile's) and is checked against the rest (:meth:`Segmenter.check_model`). No network
    is built and no weights load: a job's identity is made from these.
    """
    cls = get_segmenter_class(method)
    merged = {**cls.settings_defaults(settings), **(params or {})}
    if merged.get("model"):
        merged["model"] = local_model(str(merged["model"]), settings, session)
    merged = {**cls.model_defaults(merged), **merged}
    built = cls.Params.build(**resolve_params(method, profile, **merged))
    cls.check_model(built)
    return built


def build_segmenter(method: str, settings: Settings, profile: str | None = None,
                    params: dict[str, Any] | None = None, session: Session | None = None) -> Segmenter:
    """Create the method with :func:`method_params`: where it runs, as its weights may load here
    (GloPER's dataset model does, once per segmenter)."""
    return get_segmenter_class(method)(method_params(method, settings, profile, params, session))


def model_defaults(method: str, settings: Settings, params: dict[str, Any],
                   session: Session | None = None) -> dict[str, Any]:
    """The parameters a model named in ``params`` dictates for ``method`` (GloPER: a
    dataset model's size and local sizes), the model resolved as :func:`method_params`
    resolves it; ``{}`` without a model. Explicit parameters are not looked at."""
    if not params.get("model"):
        return {}
    model = local_model(str(params["model"]), settings, session)
    return get_segmenter_class(method).model_defaults({**params, "model": model})
