"""``gloper metrics``: a Prometheus endpoint with the store's and the broker's view of the queue.

Flower's own ``/metrics`` counts Celery tasks per task name and worker; every
item of every job runs under the same task name, so it cannot say how a job is
doing. This exporter reads, on each scrape:

- ``gloper_items{job, kind, method, status}``: items of each unfinished or recent
  job by status (``pending``, ``queued``, ``running``, ``done``, ``failed``,
  ``cancelled``): ``done`` and ``failed`` are what an alert or a rate() watches;
- ``gloper_job_info{job, kind, method, status, priority, queue}`` (value 1);
- ``gloper_queue_depth{queue}``: messages waiting in each Redis queue (every
  kind, device class and priority level);
- ``gloper_scrape_errors_total``: scrapes whose store or broker read failed.

Scrape config (``docs/distributed.md``)::

    scrape_configs:
      - job_name: gloper
        scrape_interval: 30s
        static_configs: [{targets: ["127.0.0.1:9808"]}]
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gloper_jobs.jobs.queues import all_queues, with_priorities
from gloper_jobs.settings import Settings
from gloper_jobs.store import Store
from gloper_jobs.store import repository as repo

log = logging.getLogger(__name__)

#: how many of the newest jobs are exported (older ones are finished history)
JOBS_EXPORTED = 200


class QueueCollector(Collector):
    """Collects the gauges above from the store and the broker on every scrape."""

    def __init__(self, store: Store, broker: Any) -> None:
        self.store, self.broker, self.errors = store, broker, 0

    def collect(self) -> Iterator[Any]:
        items = GaugeMetricFamily("gloper_items", "Items of a job by status",
                                  labels=["job", "kind", "method", "status"])
        info = GaugeMetricFamily("gloper_job_info", "A job's kind, method, status, priority and queue",
                                 labels=["job", "kind", "method", "status", "priority", "queue"])
        depth = GaugeMetricFamily("gloper_queue_depth", "Messages waiting in a Redis queue", labels=["queue"])
        try:
            with self.store.session() as s:
                for job in list(repo.list_jobs(s))[-JOBS_EXPORTED:]:
                    jid = str(job.id)
                    info.add_metric([jid, job.kind, job.method, job.status, job.priority, job.queue or ""], 1)
                    for status, n in repo.status_counts(s, repo.require_id(job)).items():
                        items.add_metric([jid, job.kind, job.method, status], n)
            for queue in with_priorities(all_queues()):
                depth.add_metric([queue], int(self.broker.llen(queue)))
        except Exception as exc:  # noqa: BLE001 - a scrape must answer; the counter says it failed
            self.errors += 1
            log.warning("metrics scrape failed: %s", exc)
        yield items
        yield info
        yield depth
        errors = CounterMetricFamily("gloper_scrape_errors", "Scrapes whose store or broker read failed")
        errors.add_metric([], self.errors)
        yield errors


def serve(settings: Settings, address: str, port: int) -> Any:
    """Start the endpoint in a background thread; returns the HTTP server."""
    import redis
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(QueueCollector(Store(settings.database_url, migrate=False),
                                     redis.Redis.from_url(settings.broker_url, socket_timeout=5)))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server
