"""Overnight windows: the local times of day a worker takes items (``20:00-06:00``).

``gloper worker --window 20:00-06:00`` passes the window to its Celery workers
(``GLOPER_WINDOW``); outside it they stop consuming (the item in hand finishes)
and inside it they consume again (``workers.runtime.Window``). A window may wrap
past midnight; seconds are optional (``20:00:30-06:00``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from gloper_jobs.exceptions import ConfigurationError


def _parse_time(text: str, whole: str) -> time:
    for fmt in ("%H:%M", "%H:%M:%S"):
        try:
            return datetime.strptime(text.strip(), fmt).time()
        except ValueError:
            continue
    raise ConfigurationError(f"window {whole!r}: {text!r} is not a time of day; use HH:MM-HH:MM, e.g. 20:00-06:00")


@dataclass(frozen=True)
class Window:
    """Local times of day from ``start`` (included) to ``end`` (excluded); wraps past midnight
    when ``end <= start``."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        """``HH:MM-HH:MM`` (or with seconds); :class:`ConfigurationError` otherwise."""
        start, sep, end = text.partition("-")
        if not sep:
            raise ConfigurationError(f"window {text!r}: use START-END in local time, e.g. 20:00-06:00")
        window = cls(_parse_time(start, text), _parse_time(end, text))
        if window.start == window.end:
            raise ConfigurationError(f"window {text!r} is empty: start and end are the same time")
        return window

    def contains(self, moment: time) -> bool:
        """Whether local time of day ``moment`` is inside the window."""
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def open_now(self, now: datetime | None = None) -> bool:
        """Whether the window is open at ``now`` (local time, by default the current one)."""
        return self.contains((now or datetime.now()).time())

    def __str__(self) -> str:
        return f"{self.start.isoformat()}-{self.end.isoformat()}"
