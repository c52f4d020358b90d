"""`gloper metrics`: Prometheus gauges of items per job and status and of queue depths, read
from a real store and broker (issue 12, capability 12)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.testbed.cluster import GLOPER, Cluster
from gloper_jobs.testbed.services import free_port

pytestmark = pytest.mark.queue


def _scrape(port: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_metrics_count_items_per_job_and_queue_depth(database_url: str, broker_url: str, tmp_path: Path) -> None:
    make_dataset(tmp_path / "photos", per_species=1, size=32)
    cluster = Cluster(database_url, broker_url, tmp_path)
    out = cluster.gloper("submit", "extract", str(tmp_path / "photos"), "--method", "kmeans",
                         "--no-foreground", "--priority", "bulk").stdout
    job = int(out.strip().splitlines()[-1])
    port = free_port()
    proc = subprocess.Popen([*GLOPER, "metrics", "--port", str(port)], env=cluster.env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        text = _scrape(port)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert f'gloper_items{{job="{job}",kind="extract",method="kmeans",status="queued"}} 4.0' in text, text
    assert 'gloper_queue_depth{queue="extract.cpu.bulk"} 4.0' in text
    assert 'gloper_queue_depth{queue="extract.cpu"} 0.0' in text
    assert (f'gloper_job_info{{job="{job}",kind="extract",method="kmeans",priority="bulk",queue="extract.cpu",'
            'status="running"} 1.0') in text
    assert "gloper_scrape_errors_total 0.0" in text
