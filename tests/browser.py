"""Helpers of the browser tests: headless Chromium driven by selenium, and `gloper review` as
a subprocess whose printed URLs the tests open."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--window-size=1400,1000")


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile folder, driven by selenium; quit afterwards."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (scripts/test.sh installs Debian's)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class ReviewProcess:
    """``gloper review JOB --port 0 --name ...`` running; ``urls`` maps each name to its URL."""

    def __init__(self, job_id: int, names: list[str], env: dict[str, str]) -> None:
        args = [sys.executable, "-m", "gloper_jobs.cli", "review", str(job_id), "--port", "0"]
        for n in names:
            args += ["--name", n]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **env})
        self.urls: dict[str, str] = {}
        self.output: list[str] = []
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while len(self.urls) < len(names) and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            m = re.match(r"\s+(\S+): (http://127\.0\.0\.1:\d+/\?token=[\w-]+)$", line.rstrip())
            if m:
                self.urls[m.group(1)] = m.group(2)
        if len(self.urls) < len(names):
            self.stop()
            raise AssertionError("gloper review printed no URL:\n" + "".join(self.output))

    @property
    def base(self) -> str:
        return next(iter(self.urls.values())).split("/?")[0]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
