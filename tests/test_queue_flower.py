"""Flower on the test Redis, behind basic auth, sees both workers and the job's tasks."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests

from gloper_jobs.testbed.cluster import GLOPER, Cluster, drained
from gloper_jobs.testbed.services import free_port

pytestmark = [pytest.mark.queue, pytest.mark.slow]


def _get(url: str, auth: tuple[str, str] | None, timeout: float = 10) -> requests.Response:
    return requests.get(url, auth=auth, timeout=timeout)


def test_flower_shows_both_workers_and_the_jobs_tasks(
        examples_dir: Path, database_url: str, broker_url: str, tmp_path: Path) -> None:
    port = free_port()
    database_url = database_url.replace("postgres@", "postgres:flower-db-pw@")  # trusted: accepted, must not leak
    cluster = Cluster(database_url, broker_url, tmp_path,
                      extra_env={"GLOPER_FLOWER_USER": "lab", "GLOPER_FLOWER_PASSWORD": "s3cret"})
    auth = ("lab", "s3cret")
    base = f"http://127.0.0.1:{port}"
    flower = subprocess.Popen([*GLOPER, "flower", "--port", str(port), "--address", "127.0.0.1"],
                              env=cluster.env, cwd=tmp_path, stdout=(tmp_path / "flower.log").open("wb"),
                              stderr=subprocess.STDOUT)
    try:
        cluster.start_worker("cpu1")
        cluster.start_worker("cpu2")
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/workers", auth)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or flower.poll() is not None:
                    raise AssertionError((tmp_path / "flower.log").read_text()) from None
                time.sleep(0.5)
        job = int(cluster.gloper("submit", "extract", str(examples_dir), "--method", "kmeans")
                  .stdout.strip().splitlines()[-1])
        store = cluster.store()
        cluster.wait_for(lambda: drained(store, job), 400, "the job to finish")

        assert _get(f"{base}/api/workers", None).status_code == 401
        assert _get(f"{base}/api/workers", ("lab", "wrong")).status_code == 401
        workers: dict = {}
        deadline = time.monotonic() + 60
        while not {"cpu1", "cpu2"} <= {w.split("@")[0] for w in workers}:
            if time.monotonic() > deadline:
                raise AssertionError(f"Flower shows workers {sorted(workers)}")
            reply = _get(f"{base}/api/workers?refresh=1", auth, timeout=30)
            workers = reply.json()
            time.sleep(1)
        assert "flower-db-pw" not in reply.text  # Flower shows each worker's conf: no password in it
        tasks = _get(f"{base}/api/tasks", auth).json()
        ours = {tid: t for tid, t in tasks.items() if tid.startswith(f"extract-{job}-")}
        assert len(ours) == 10, sorted(tasks)
        assert {t["state"] for t in ours.values()} == {"SUCCESS"}
        assert {t["worker"].split("@")[0] for t in ours.values()} <= {"cpu1", "cpu2"}
    finally:
        cluster.stop()
        flower.terminate()
        try:
            flower.wait(timeout=20)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait()
