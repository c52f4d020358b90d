"""The `gloper worker` launcher's supervision, with stand-in processes instead of Celery:
an exiting worker is restarted with backoff, a crash loop stops the node, and SIGTERM gives
the workers a bounded grace, then stops them cold and hands their nodes to ``on_stopped``
(issue 12, defects 1 and 9)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from workers.launcher import WorkerSpec, restart_delay, run_workers


@dataclass(frozen=True)
class Script(WorkerSpec):
    """A worker spec that runs a Python snippet instead of Celery."""

    code: str = ""

    def argv(self) -> list[str]:
        return [sys.executable, "-c", self.code]


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [restart_delay(n, 1.0, 8.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_a_crash_loop_is_retried_with_backoff_then_stops_the_node(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    code = run_workers([Script("w@h", [], 1, code="raise SystemExit(3)")], give_up_after=3)
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    assert code == 3
    assert "restarting it in 1 s" in out and "restarting it in 2 s" in out
    assert "exited 3 times in a row" in out
    assert 3.0 <= took < 15, took  # 1 s + 2 s of backoff


def test_a_worker_that_dies_is_restarted_and_sigterm_stops_cold_after_the_grace(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "started-once"
    # first run: dies at once (a crash); second run: ignores SIGTERM (an item that will not stop)
    code = (f"import os, signal, sys, time\nm = {str(marker)!r}\n"
            "if not os.path.exists(m):\n    open(m, 'w').close()\n    sys.exit(1)\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n")
    stopped: list[list[str]] = []
    threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    t0 = time.monotonic()
    run_workers([Script("w@h", [], 1, code=code)], grace=1.0, on_stopped=stopped.append)
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    assert out.count("exited with code 1; restarting it in 1 s") == 1
    assert "still busy after 1 s: cold shutdown" in out
    assert stopped == [["w@h"]]
    assert took < 4.0 + 1.0 + 15, took  # not the stand-in's ten minutes


def test_the_window_step_pauses_and_resumes_the_queues_in_priority_order() -> None:
    from datetime import datetime, timedelta

    from gloper_jobs.window import Window
    from workers.runtime import WindowStep

    class Consumer:  # the two calls Celery's consumer offers for this (celery inspect's cancel/add_consumer)
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def cancel_task_queue(self, q: str) -> None:
            self.calls.append(("cancel", q))

        def add_task_queue(self, q: str) -> None:
            self.calls.append(("add", q))

    now = datetime.now()
    closed = Window((now + timedelta(hours=1)).time(), (now + timedelta(hours=2)).time())
    opened = Window((now - timedelta(minutes=5)).time(), (now + timedelta(hours=1)).time())
    step = WindowStep.__new__(WindowStep)
    step._queues, step._paused = ["extract.cpu.urgent", "extract.cpu", "extract.cpu.bulk"], False
    c = Consumer()
    step._check(c, closed)
    step._check(c, closed)  # already paused: nothing more
    step._check(c, opened)
    assert c.calls == [("cancel", "extract.cpu.urgent"), ("cancel", "extract.cpu"), ("cancel", "extract.cpu.bulk"),
                       ("add", "extract.cpu.urgent"), ("add", "extract.cpu"), ("add", "extract.cpu.bulk")]
