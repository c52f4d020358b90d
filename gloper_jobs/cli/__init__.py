"""The ``gloper`` command (:mod:`gloper_jobs.cli.commands`) and the options its plugins share.

``main`` is loaded on first use, so a plugin (``schedulers.cli``) can import
:mod:`gloper_jobs.cli.options` without running the command's plugin loading.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "main":
        from gloper_jobs.cli.commands import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
