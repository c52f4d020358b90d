"""Device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``): checked and resolved in one place.

Checking needs no torch (settings use it); resolving imports torch when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gloper_jobs.exceptions import InvalidParameterError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "use auto, cpu, cuda or cuda:N"


def is_device_name(name: str) -> bool:
    """Whether ``name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if name in ("auto", "cpu", "cuda"):
        return True
    prefix, _, index = name.partition(":")
    return prefix == "cuda" and index.isdigit()


def check_device(name: str) -> None:
    """Raise :class:`InvalidParameterError` unless ``name`` is a device name."""
    if not is_device_name(name):
        raise InvalidParameterError(f"device={name!r}: {DEVICE_HELP}")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the (first visible) CUDA device when there is one, else CPU.

    Raises :class:`InvalidParameterError` for a bad name or CUDA asked where there is none.
    """
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidParameterError(f"device={name!r} but CUDA is not available here; use device=cpu")
    return torch.device(name)


def configure_torch(threads: int | None) -> None:
    """Set torch's CPU threads for this process (None: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
