"""The Celery app: Redis broker, JSON only, late acks, one prefetch, time limits per job kind.

Start workers with ``gloper worker`` (which runs ``celery -A workers.app worker``
per card). Everything comes from :class:`gloper_jobs.settings.Settings`.
"""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery

from gloper_jobs.jobs.kinds import time_limits
from gloper_jobs.jobs.queues import all_queues, task_names
from gloper_jobs.settings import Settings


def broker_tls(settings: Settings) -> dict[str, Any] | None:
    """TLS options of a ``rediss://`` broker: the server's certificate is always verified
    (against ``GLOPER_BROKER_SSL_CA``, else the system's CAs); None for ``redis://``."""
    if not settings.broker_url.startswith("rediss://"):
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.broker_ssl_ca is not None:
        options["ssl_ca_certs"] = str(settings.broker_ssl_ca)
    return options


def celery_config(settings: Settings) -> dict[str, Any]:
    """The app's configuration (a plain dict, so tests can assert on it)."""
    annotations = {}
    for kind, name in task_names().items():
        soft, hard = time_limits(settings, kind)
        annotations[name] = {"soft_time_limit": soft, "time_limit": hard}
    return {
        "broker_url": settings.broker_url,
        "broker_use_ssl": broker_tls(settings),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # keep reconnecting while Redis restarts
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # Restore tasks of dead workers as soon as they pass the timeout.
            "unacked_restore_interval": 10,
            # BRPOP over the queues in the order the worker lists them (urgent, normal,
            # bulk; see gloper_jobs.jobs.queues.with_priorities), not round robin.
            "queue_order_strategy": "priority",
            # A link that drops every packet sends no reset: timeouts, keepalives and
            # kombu's BRPOP health check end a dead connection so the consumer reconnects
            # by itself after the heal (issue 30; celery#8030). GLOPER_BROKER_*, GLOPER_TCP_*.
            **settings.broker_socket_options(),
        },
        # JSON only: a pickled message could run code on every node.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Results live in the store; the broker only carries ids.
        "task_ignore_result": True,
        "result_backend": None,
        # Ack after the item is recorded; a killed worker's item comes back (and the
        # store's delivery cap ends a photo that kills every worker).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # The pool process loads its models in worker_process_init before saying "up".
        "worker_proc_alive_timeout": settings.worker_boot_timeout,
        # Off: a running item keeps running through a broker outage (its lease and
        # heartbeat live in the store, and its ack after the reconnect is harmless
        # either way). On, repeated Redis outages crashed the worker in kombu's
        # restore of unacked messages (celery#9250; issue 12, defect 1).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_annotations": annotations,
        "task_queues": None,
        "task_default_queue": "extract.cpu",
        "task_create_missing_queues": True,
        # Events for Flower (which is only a live view: `gloper status` reads the store).
        "worker_send_task_events": True,
        # No "sent" event per task: it doubles every publish (100,000 more messages
        # at submission); Flower still sees each task from the worker's events.
        "task_send_sent_event": False,
        "task_track_started": True,
        "worker_hijack_root_logger": False,
        "imports": ["workers.tasks"],
    }


class GloperCelery(Celery):
    """The Celery app, holding the settings it was made from.

    The settings are an attribute of the app, not of ``app.conf``: the conf is what
    ``celery inspect conf`` and Flower's ``/api/workers`` show, and the settings hold
    the store's and the broker's passwords (issue 12, defect 5).
    """

    gloper_settings: Settings


def make_app(settings: Settings | None = None) -> GloperCelery:
    """A Celery app configured from ``settings`` (from the environment by default)."""
    settings = settings or Settings.from_env()
    app = GloperCelery("gloper")
    app.conf.update(celery_config(settings))
    app.gloper_settings = settings
    return app


app = make_app()

__all__ = ["GloperCelery", "all_queues", "app", "make_app"]
