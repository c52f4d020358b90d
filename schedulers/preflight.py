"""Checks the submitting commands run before they write anything: the ``queue`` extra is
installed and the broker answers. Each failure is one line saying what to do.

``gloper submit`` with Redis down used to record the job, mark it running and then
print a 139-line traceback with nothing enqueued; without the extra it ended in
``ModuleNotFoundError: celery`` after writing an orphan job (issue 12, defect 6).
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit, urlunsplit

from gloper_jobs.exceptions import BrokerUnavailableError, ConfigurationError

#: seconds to wait for the broker's answer before giving up
PING_TIMEOUT = 3.0


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def check_queue_extra(*modules: str) -> None:
    """Raise :class:`ConfigurationError`, saying how to install the ``[queue]`` extra, unless
    ``modules`` (Celery and redis-py by default) import."""
    for module in modules or ("celery", "redis"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(
                f"the queue commands need the [queue] extra ({module} is not importable: {exc}); "
                "install it with `pip install 'gloper-jobs[queue]'` (or `bash scripts/setup.sh queue`)") from exc


def check_broker(url: str, timeout: float = PING_TIMEOUT, ssl_ca: str | None = None) -> None:
    """Raise :class:`BrokerUnavailableError` unless the Redis broker at ``url`` answers a PING
    (over verified TLS for ``rediss://``, against ``ssl_ca`` or the system's CAs)."""
    check_queue_extra()
    import redis

    tls = {"ssl_cert_reqs": "required", **({"ssl_ca_certs": ssl_ca} if ssl_ca else {})} \
        if url.startswith("rediss://") else {}
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, **tls)
    except ValueError as exc:
        raise ConfigurationError(f"GLOPER_BROKER_URL={mask_url(url)} is not a Redis URL: {exc}") from exc
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise BrokerUnavailableError(
            f"the broker {mask_url(url)} does not answer ({type(exc).__name__}: {exc}); start Redis "
            "or set GLOPER_BROKER_URL, then run the command again (nothing was recorded)") from exc
    finally:
        client.close()
