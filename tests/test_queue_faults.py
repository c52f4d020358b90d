"""Faults through the real queue: a killed worker, a photo that kills every worker,
a Redis restart mid-job. Workers are `gloper worker --gpus cpu` subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from gloper_jobs.testbed.cluster import Cluster, candidate_rows, counts, drained, items
from gloper_jobs.testbed.services import RedisServer

pytestmark = [pytest.mark.queue, pytest.mark.slow]

# About 8-15 s per photo on one CPU thread here: long enough to kill a worker mid-item.
SLOW_GLOPER = ["--param", "size=32", "--param", "steps=60", "--param", "local_sizes=4,8"]


def _photos(examples: Path, tmp: Path, names: dict[str, str]) -> Path:
    """A dataset of chosen example photos: ``names`` maps species to the new file name."""
    root = tmp / "photos"
    for species, new_name in names.items():
        src = next(p for p in sorted((examples / species).iterdir()) if p.is_file())
        (root / species).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / species / (new_name + src.suffix.lower()))
    return root


def _job_id(stdout: str) -> int:
    return int(stdout.strip().splitlines()[-1])


def test_worker_killed_mid_gloper_item_is_redelivered_and_finishes_once(
        examples_dir: Path, database_url: str, broker_url: str, tmp_path: Path) -> None:
    dataset = _photos(examples_dir, tmp_path, {"Zebra": "a", "Tiger": "b", "Giraffe": "c"})
    cluster = Cluster(database_url, broker_url, tmp_path)
    job = _job_id(cluster.gloper("submit", "extract", str(dataset), "--method", "gloper",
                                 "--device-class", "cpu", *SLOW_GLOPER).stdout)
    store = cluster.store()
    victim: dict[str, object] = {}

    def running_a_while() -> bool:
        for it in items(store, job).values():
            if it.status == "running" and it.started_at is not None and it.worker:
                started = it.started_at.timestamp()
                if time.time() - started > 1.0:
                    victim.update(rel_path=it.rel_path, pid=int(it.worker.rsplit(":", 1)[1]))
                    return True
        return False

    try:
        cluster.start_worker("cpu1")
        cluster.wait_for(running_a_while, 300, "a GloPER item to be running")
        os.kill(int(victim["pid"]), signal.SIGKILL)  # the pool process, mid-item
        cluster.wait_for(lambda: drained(store, job), 400, "the job to finish after the kill")
    finally:
        cluster.stop()
    rows = items(store, job)
    assert counts(store, job) == {"done": 3}
    killed = rows[str(victim["rel_path"])]
    assert killed.deliveries == 2, killed  # the killed delivery and the one that finished
    assert int(killed.worker.rsplit(":", 1)[1]) != victim["pid"]  # a new pool process did it
    assert all(r.deliveries == 1 for p, r in rows.items() if p != victim["rel_path"])
    names = candidate_rows(store, job)
    assert {n for p, n, _ in names if p == victim["rel_path"]} == {
        f"{base}{pol}" for base in ("fused", "consensus", "local_4", "local_8") for pol in ("", "_lighter")}
    assert all(n == 1 for _, _, n in names)


def test_photo_that_kills_every_worker_fails_after_the_cap(
        examples_dir: Path, database_url: str, broker_url: str, tmp_path: Path) -> None:
    dataset = _photos(examples_dir, tmp_path, {"Zebra": "a", "Tiger": "kill_me", "Giraffe": "c"})
    cluster = Cluster(database_url, broker_url, tmp_path,
                      extra_env={"GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods", "GLOPER_MAX_DELIVERIES": "2"})
    job = _job_id(cluster.gloper("submit", "extract", str(dataset), "--method", "worker_killer").stdout)
    store = cluster.store()
    try:
        cluster.start_worker("cpu1")
        cluster.wait_for(lambda: drained(store, job), 400, "the job to finish")
    finally:
        cluster.stop()
    rows = items(store, job)
    assert counts(store, job) == {"done": 2, "failed": 1}
    bad = rows["Tiger/kill_me.jpg"]
    assert bad.status == "failed" and bad.deliveries == 3, bad
    assert bad.error and "delivered 3 times without finishing (cap 2)" in bad.error
    assert rows["Zebra/a.jpg"].status == rows["Giraffe/c.jpg"].status == "done"


def test_redis_restart_mid_job_still_completes(
        examples_dir: Path, database_url: str, redis_server: RedisServer, tmp_path: Path) -> None:
    cluster = Cluster(database_url, redis_server.url, tmp_path)
    job = _job_id(cluster.gloper("submit", "extract", str(examples_dir), "--method", "kmeans").stdout)
    store = cluster.store()
    try:
        cluster.start_worker("cpu1")
        cluster.wait_for(lambda: counts(store, job).get("done", 0) >= 2, 300, "two photos done")
        redis_server.stop()
        time.sleep(3)
        redis_server.start()  # same port, same append-only file
        cluster.wait_for(lambda: drained(store, job), 300, "the job to finish after the restart")
    finally:
        cluster.stop()
    assert counts(store, job) == {"done": 10}
    assert all(n == 1 for _, _, n in candidate_rows(store, job))
