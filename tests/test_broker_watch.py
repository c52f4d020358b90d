"""A Redis that restarted empty or was flushed is noticed at once (issue [cloud], item 4):
its run id changes, or a queue that should hold messages is empty, and the queued items
whose message is neither waiting nor held by a worker are published again, long before
``GLOPER_STRANDED_SECONDS``. Real redis-server, real Celery publisher, real workers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.jobs.kinds.extract import record_extract_job
from gloper_jobs.jobs.publishing import BrokerWatch, enqueue_unfinished
from gloper_jobs.settings import Settings
from gloper_jobs.store import Store
from gloper_jobs.testbed.cluster import Cluster, candidate_rows, counts, drained, overlapping_runs
from gloper_jobs.testbed.services import RedisServer

pytestmark = [pytest.mark.queue]


def test_flushed_or_restarted_redis_gets_its_lost_items_back(redis_server: RedisServer, tmp_path: Path) -> None:
    from workers.app import make_app
    from workers.publish import CeleryPublisher

    make_dataset(tmp_path / "photos", per_species=2, size=32)
    settings = Settings.from_env(database_url=f"sqlite:///{tmp_path / 'q.db'}", results_dir=tmp_path / "res",
                                 broker_url=redis_server.url)
    store = Store(settings.database_url)
    app = make_app(settings)
    pub = CeleryPublisher(app)
    sub = record_extract_job(store, settings, tmp_path / "photos", "kmeans")
    n = enqueue_unfinished(store, sub.job, pub, batch=100)
    assert n == sub.job.n_items == 8
    broker = redis.Redis.from_url(redis_server.url)
    watch = BrokerWatch(grace=0.0)
    assert watch.check(store, pub, pub) == 0  # every message waits: nothing lost
    assert broker.llen("extract.cpu") == n and watch.last_id

    # a worker reserves one message (kombu keeps it in its unacked hash), then Redis is flushed
    # (kept open: a channel that closes gives its unacked messages back to the queue)
    consumer = app.connection_for_read()
    reserved = consumer.default_channel.basic_get("extract.cpu", no_ack=False)
    assert reserved is not None
    held_id = int(reserved.headers["id"].rsplit("-", 1)[1])
    assert held_id not in pub.waiting(sub.job) and pub.held(sub.job) == pub.waiting(sub.job) | {held_id}
    broker.delete("extract.cpu")  # the queue emptied under the store's queued items
    assert watch.check(store, pub, pub) == n - 1  # all but the reserved one, at once
    assert broker.llen("extract.cpu") == n - 1
    assert watch.check(store, pub, pub) == 0  # not again while they wait

    # a restart that loses everything: the run id changes
    before = watch.last_id
    redis_server.restart_empty()
    assert watch.check(store, pub, pub) == n  # the reserved one too: the unacked hash is gone
    assert watch.last_id != before and broker.llen("extract.cpu") == n
    consumer.release()
    ids = {f"extract-{sub.job.id}-{i}" for i in pub.waiting(sub.job)}
    assert len(ids) == n

    # the same restart when the data survives (append-only file): nothing is published twice
    redis_server.stop()
    redis_server.start()
    assert watch.check(store, pub, pub) == 0
    assert broker.llen("extract.cpu") == n
    store.dispose()


def test_workers_pick_up_at_once_after_redis_restarts_empty(database_url: str, redis_server: RedisServer,
                                                             tmp_path: Path) -> None:
    make_dataset(tmp_path / "photos", per_species=4, size=32)
    runs = tmp_path / "runs.log"
    # The stranded check would take 600 s: only the broker watch can finish this in time.
    cluster = Cluster(database_url, redis_server.url, tmp_path, extra_env={
        "GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods", "GLOPER_STRANDED_SECONDS": "600", "GLOPER_STALE_SECONDS": "60",
        "GLOPER_BROKER_CHECK_SECONDS": "5"})
    job = int(cluster.gloper("submit", "extract", str(tmp_path / "photos"), "--method", "slow_logger",
                             "--no-foreground", "--param", "seconds=1", "--param", f"log={runs}")
              .stdout.strip().splitlines()[-1])
    store = cluster.store()
    n = sum(counts(store, job).values())
    try:
        cluster.start_worker("a")
        cluster.start_worker("b")
        cluster.wait_for(lambda: counts(store, job).get("done", 0) >= 2, 300, "two photos done")
        redis_server.restart_empty(down=3)
        restarted = time.monotonic()
        assert redis.Redis.from_url(redis_server.url).llen("extract.cpu") == 0
        cluster.wait_for(lambda: drained(store, job), 120, "the job to finish after Redis came back empty")
        took = time.monotonic() - restarted
    finally:
        cluster.stop()
    assert counts(store, job) == {"done": n}
    assert took < 60, took
    assert overlapping_runs(runs) == []
    assert all(c == 1 for _, _, c in candidate_rows(store, job))
    print(f"drained {took:.1f} s after Redis restarted empty ({n} photos)")
