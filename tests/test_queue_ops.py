"""One job through an overnight's faults, with real Redis, PostgreSQL and a `gloper worker`
(issue 12): two concurrent submits, stranded messages, a pool process killed mid-item,
two Redis outages and a killed Celery worker process. Nothing is lost, published twice,
run twice at once or recorded twice; the worker rides out the outages; the launcher
restarts what was killed; the worker's main process never loads torch."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.testbed.cluster import (
    GLOPER,
    Cluster,
    candidate_rows,
    counts,
    drained,
    items,
    overlapping_runs,
)
from gloper_jobs.testbed.services import RedisServer

pytestmark = [pytest.mark.queue, pytest.mark.slow]


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def celery_main(launcher: int) -> int:
    """The Celery worker process the `gloper worker` launcher supervises."""
    kids = children(launcher)
    if len(kids) != 1:
        raise AssertionError(f"launcher {launcher} has children {kids}, expected one Celery worker")
    return kids[0]


def maps_torch(pid: int) -> bool:
    """Whether process ``pid`` has libtorch mapped (it imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def submit_twice(cluster: Cluster, args: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Two `gloper submit` of the same job at the same time."""
    out: list[subprocess.CompletedProcess[str]] = []

    def one() -> None:
        out.append(subprocess.run([*GLOPER, "submit", *args], env=cluster.env, cwd=cluster.workdir,
                                  capture_output=True, text=True, timeout=300))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_one_job_survives_a_night_of_faults(database_url: str, redis_server: RedisServer, tmp_path: Path) -> None:
    make_dataset(tmp_path / "photos", per_species=4, size=48)
    runs = tmp_path / "runs.log"
    # PostgreSQL trusts local connections, so a password in the URL is accepted and must not leak
    database_url = database_url.replace("postgres@", "postgres:night-pw@")
    cluster = Cluster(database_url, redis_server.url, tmp_path, extra_env={
        "GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods", "GLOPER_STRANDED_SECONDS": "6", "GLOPER_STALE_SECONDS": "10"})
    args = ["extract", str(tmp_path / "photos"), "--method", "slow_logger", "--no-foreground",
            "--param", "seconds=1.5", "--param", f"log={runs}"]
    subs = submit_twice(cluster, args)
    assert all(p.returncode == 0 for p in subs), [p.stderr for p in subs]
    job = int(subs[0].stdout.strip().splitlines()[-1])
    store = cluster.store()
    n = sum(counts(store, job).values())
    broker = redis.Redis.from_url(redis_server.url)
    assert broker.llen("extract.cpu") == n  # each item published once by the two submits
    stranded = [broker.rpop("extract.cpu") for _ in range(2)]  # two messages lost: items stay queued
    assert all(stranded)
    log = tmp_path / "worker-ops.log"
    try:
        launcher = cluster.start_worker("ops", "--concurrency", "2")
        store_items = lambda: items(store, job).values()  # noqa: E731

        def running_a_while() -> list[int]:
            return [int(it.worker.rsplit(":", 1)[1]) for it in store_items()
                    if it.status == "running" and it.worker and it.started_at is not None
                    and time.time() - it.started_at.timestamp() > 0.5]

        cluster.wait_for(lambda: bool(running_a_while()), 120, "an item to be running")
        os.kill(running_a_while()[0], signal.SIGKILL)  # a pool process, mid-item
        main = celery_main(launcher.pid)
        for outage in range(2):
            done_before = counts(store, job).get("done", 0)
            cluster.wait_for(lambda: any(it.status == "running" for it in store_items()), 120, "an item running")
            redis_server.stop()
            time.sleep(4)
            redis_server.start()
            cluster.wait_for(lambda b=done_before: counts(store, job).get("done", 0) > b, 120,  # type: ignore[misc]
                             f"progress after Redis outage {outage + 1}")
        assert celery_main(launcher.pid) == main, "the Celery worker exited during a Redis outage"
        time.sleep(6)  # a reconciler pass has run (every stale_seconds / 2)
        assert not maps_torch(main), "the worker's main process loaded torch (its pool forks would inherit it)"
        assert any(maps_torch(c) for c in children(main)), "the pool processes should have loaded torch"
        conf = subprocess.run([*GLOPER[:1], "-m", "celery", "-A", "workers.app", "inspect", "conf", "--timeout", "10"],
                              env=cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert "task_acks_late" in conf.stdout, conf.stdout + conf.stderr
        assert "night-pw" not in conf.stdout  # no password in `celery inspect conf` (nor Flower's /api/workers)
        os.kill(main, signal.SIGKILL)  # the whole Celery worker: the launcher restarts it
        cluster.wait_for(lambda: "restarting it in" in log.read_text(errors="replace"), 30,
                         "the launcher to restart the killed Celery worker")
        cluster.wait_for(lambda: drained(store, job), 300, "the job to finish after every fault")
    finally:
        cluster.stop()
    text = log.read_text(errors="replace")
    assert text.count("exited with code") == 1 and "restarting it in" in text, text[-3000:]
    assert "Unrecoverable error" not in text
    assert counts(store, job) == {"done": n}
    assert overlapping_runs(runs) == []  # no photo ran twice at once
    assert all(c == 1 for _, _, c in candidate_rows(store, job))  # no duplicate rows
    assert all(it.deliveries <= 2 for it in items(store, job).values())


def test_an_urgent_job_overtakes_a_draining_bulk_job(database_url: str, broker_url: str, tmp_path: Path) -> None:
    make_dataset(tmp_path / "bulk", per_species=3, size=32)
    make_dataset(tmp_path / "urgent", per_species=1, size=32)
    cluster = Cluster(database_url, broker_url, tmp_path, extra_env={"GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods"})
    common = ["--method", "slow_logger", "--no-foreground"]
    bulk = int(cluster.gloper("submit", "extract", str(tmp_path / "bulk"), *common, "--param", "seconds=2",
                              "--priority", "bulk").stdout.strip().splitlines()[-1])
    store = cluster.store()
    try:
        cluster.start_worker("prio", "--concurrency", "1")
        cluster.wait_for(lambda: counts(store, bulk).get("done", 0) >= 1, 120, "the bulk job to start")
        urgent = int(cluster.gloper("submit", "extract", str(tmp_path / "urgent"), *common, "--param",
                                    "seconds=0.5", "--priority", "urgent").stdout.strip().splitlines()[-1])
        cluster.wait_for(lambda: drained(store, bulk) and drained(store, urgent), 300, "both jobs to finish")
    finally:
        cluster.stop()
    urgent_done = max(it.finished_at for it in items(store, urgent).values() if it.finished_at)
    after = [it for it in items(store, bulk).values() if it.finished_at and it.finished_at > urgent_done]
    n_bulk = sum(counts(store, bulk).values())
    # In one queue the urgent job would wait for every bulk item (none after it); here it goes
    # right after the bulk item in hand (the submit itself takes a few seconds of bulk items).
    assert len(after) >= n_bulk // 3, (len(after), n_bulk)


def test_a_worker_takes_items_only_inside_its_window(database_url: str, broker_url: str, tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    make_dataset(tmp_path / "photos", per_species=4, size=32)
    cluster = Cluster(database_url, broker_url, tmp_path, extra_env={"GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods"})
    job = int(cluster.gloper("submit", "extract", str(tmp_path / "photos"), "--method", "slow_logger",
                             "--no-foreground", "--param", "seconds=1.0").stdout.strip().splitlines()[-1])
    store = cluster.store()
    now = datetime.now()
    opens, closes = now + timedelta(seconds=20), now + timedelta(seconds=32)
    window = f"{opens:%H:%M:%S}-{closes:%H:%M:%S}"
    try:
        cluster.start_worker("night", "--concurrency", "1", "--window", window)
        time.sleep(max(0.0, (closes - datetime.now()).total_seconds()) + 12)  # open, then closed again
        done = counts(store, job).get("done", 0)
        status = cluster.gloper("status", str(job)).stdout
    finally:
        cluster.stop()
    started = [it.started_at.astimezone().replace(tzinfo=None) for it in items(store, job).values() if it.started_at]
    n = sum(counts(store, job).values())
    assert 0 < done < n, (done, n)  # it worked inside the window, and paused after it
    assert "paused (outside their --window): night" in status, status
    assert min(started) >= opens - timedelta(seconds=1), (min(started), opens)  # nothing before it opened
    # nothing new after it closed (the item in hand and one check interval of slack)
    assert max(started) <= closes + timedelta(seconds=7), (max(started), closes)


def test_sigterm_gives_a_long_item_back_within_the_grace(database_url: str, broker_url: str, tmp_path: Path) -> None:
    make_dataset(tmp_path / "photos", per_species=1, size=32)
    cluster = Cluster(database_url, broker_url, tmp_path,
                      extra_env={"GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods", "GLOPER_SHUTDOWN_GRACE": "3"})
    job = int(cluster.gloper("submit", "extract", str(tmp_path / "photos"), "--method", "slow_logger",
                             "--no-foreground", "--param", "seconds=120").stdout.strip().splitlines()[-1])
    store = cluster.store()
    try:
        launcher = cluster.start_worker("term", "--concurrency", "1")
        cluster.wait_for(lambda: counts(store, job).get("running", 0) == 1, 120, "an item running")
        held = next(it for it in items(store, job).values() if it.status == "running")
        t0 = time.monotonic()
        launcher.send_signal(signal.SIGTERM)  # as systemd or docker stop would
        launcher.wait(timeout=60)
        took = time.monotonic() - t0
        after = items(store, job)[held.rel_path]
    finally:
        cluster.stop()
    assert took < 3 + 20, took  # the grace, then a cold stop: not the item's two minutes
    assert after.status == "queued" and after.lease_owner is None and after.deliveries == 0, after
    assert "cold shutdown" in cluster.workdir.joinpath("worker-term.log").read_text()
