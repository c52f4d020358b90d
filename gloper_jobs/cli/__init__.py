"""The ``gloper`` command: one click group, its commands in modules by what users do.

- :mod:`~gloper_jobs.cli.runs`: run and inspect (run, segment, methods, report, calibrate,
  calibration, polarity, jobs, status, export);
- :mod:`~gloper_jobs.cli.review`: review (the page where a person settles each species' reading);
- the queue and its workers (submit KIND, resume, retry-failed, cancel, worker, flower,
  metrics), which need the ``[queue]`` extra, come from ``schedulers.cli`` through the
  entry point group ``gloper.commands``: the library never imports ``workers`` or
  ``schedulers``, they import it;
- :mod:`~gloper_jobs.cli.models`: train, models install;
- :mod:`~gloper_jobs.cli.data`: make-synthetic, db upgrade.

Each command parses, builds the objects, calls one library function and prints;
heavy modules (torch, Celery) are imported inside the commands.
"""

from __future__ import annotations

import warnings
from typing import TextIO

import click

from gloper_jobs.cli import data, models, review, runs
from gloper_jobs.cli.common import GloperGroup, extensions


@click.group(cls=GloperGroup)
@click.version_option(package_name="gloper-jobs")
def main() -> None:
    """gloper: extract animal coat patterns (GloPER and baselines) from photo archives."""
    if warnings.showwarning is _PYTHONS_SHOWWARNING:  # not when a caller (a test) records warnings
        warnings.showwarning = _show_warning


#: Python's own printer of warnings (``warnings.showwarning`` until someone replaces it)
_PYTHONS_SHOWWARNING = warnings._showwarning_orig  # type: ignore[attr-defined]


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """The library's own warnings (a job another setting would resume) as one line on stderr;
    everyone else's as Python prints them."""
    if category is UserWarning and "gloper_jobs" in filename:
        click.echo(f"warning: {message}", err=True)
    else:
        _PYTHONS_SHOWWARNING(message, category, filename, lineno, file, line)


for _module in (runs, review, models, data):
    for _command in _module.COMMANDS:
        main.add_command(_command)
for _commands in extensions("gloper.commands"):  # the queue's commands (schedulers.cli)
    for _command in _commands:
        main.add_command(_command)

__all__ = ["main"]
