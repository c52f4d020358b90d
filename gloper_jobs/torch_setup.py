"""Process-wide torch settings: CPU threads and the ``torch.compile`` cache.

Threads: a machine's cores are shared by the processes that run torch on it, so
each gets ``cores // processes`` threads by default (the embedded ``gloper run``
is one process and gets every core; ``gloper worker`` divides the cores among its
pool processes or cards). Cores are the ones this process may run on
(``sched_getaffinity``: a container's CPU set, not the host's).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gloper_jobs.settings import Settings


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_torch_threads(processes: int = 1) -> int:
    """Torch threads per process when ``processes`` torch processes share this machine."""
    return max(1, available_cores() // max(1, processes))


def configure_torch(settings: Settings) -> None:
    """Set this process's torch threads (``GLOPER_TORCH_THREADS``, else every core) and point
    ``torch.compile``'s kernel cache at ``GLOPER_COMPILE_CACHE_DIR`` so it survives restarts."""
    import torch

    torch.set_num_threads(settings.torch_threads or default_torch_threads(1))
    cache = settings.compile_cache_dir
    # Inductor and Triton take their cache folders from the environment only.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    os.environ["TRITON_CACHE_DIR"] = str(cache / "triton")
