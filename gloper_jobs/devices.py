"""Device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``): checked and resolved in one place.

Checking needs no torch (settings use it); resolving imports torch when called.
"""

from __future__ import annotations

import os
from pathlib import Path
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


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (``vendor_id``, ``cpu family``,
    ``model``, ``model name``, ``flags``, ...); empty off Linux. Float kernels (oneDNN,
    OpenCV) pick their code path by these, so results and timings name them."""
    fields: dict[str, str] = {}
    try:
        for line in path.read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def available_cores() -> int:
    """CPU cores this process may run on (``sched_getaffinity``: a container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_torch_threads(processes: int = 1) -> int:
    """Torch threads per process when ``processes`` torch processes share this machine.

    The embedded ``gloper run`` is one process and gets every core; ``gloper worker``
    divides the cores among its pool processes (CPU) or its cards (GPU).
    """
    return max(1, available_cores() // max(1, processes))


def passive_openmp() -> None:
    """Let OpenMP threads sleep rather than spin between parallel regions (unless the caller's
    environment says otherwise): on a machine whose cores are shared (rembg's session and
    torch take turns in one process, or other users' work) spinning threads burn the cores
    the other side needs. Takes effect only before torch is first imported; ``gloper worker``
    sets it for its pool processes the same way."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_torch(threads: int | None, compile_cache_dir: Path | None = None) -> None:
    """Set torch's CPU threads for this process (None: :func:`default_torch_threads`) and
    point ``torch.compile``'s kernel cache at ``compile_cache_dir``, so it survives restarts."""
    import torch

    torch.set_num_threads(threads or default_torch_threads(1))
    if compile_cache_dir is not None:
        # Inductor and Triton take their cache folders from the environment only.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir)
        os.environ["TRITON_CACHE_DIR"] = str(compile_cache_dir / "triton")
