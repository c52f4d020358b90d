"""Services and workers for the queue benches: throwaway servers and a :class:`Cluster` on them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import OUT
from gloper_jobs.testbed import services as qs
from gloper_jobs.testbed.cluster import Cluster, drained


@contextmanager
def services(workdir: Path, **extra_env: str) -> Iterator[Cluster]:
    """A redis-server, a PostgreSQL cluster with a fresh database, and a :class:`Cluster` on them."""
    redis = qs.start_redis()
    pg = qs.start_postgres()
    url, _ = qs.create_database(pg.admin_url)
    cluster = Cluster(url, redis.url, workdir, extra_env=dict(extra_env))
    try:
        yield cluster
    finally:
        cluster.stop()
        redis.remove()
        pg.stop()


def wait_drained(cluster: Cluster, job_id: int, timeout: float = 1800) -> float:
    """Seconds until the job has no unfinished item."""
    store = cluster.store()
    t0 = time.perf_counter()
    cluster.wait_for(lambda: drained(store, job_id), timeout, f"job {job_id}")
    return time.perf_counter() - t0


def job_id(stdout: str) -> int:
    """The job id `gloper submit` prints on its last line."""
    return int(stdout.strip().splitlines()[-1])


def write(name: str, result: dict[str, object]) -> Path:
    """Write ``bench/out/NAME.json`` and print it."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return path
