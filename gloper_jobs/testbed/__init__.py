"""What the tests and the benchmarks both need to run the real system on one machine.

- :mod:`.services`: throwaway redis-server and PostgreSQL servers from the installed binaries.
- :mod:`.cluster`: :class:`~.cluster.Cluster`, the ``gloper`` commands and CPU workers run as
  subprocesses on those servers, and the store queries that say when a job has drained.
- :mod:`.fake_methods`: methods loaded with ``GLOPER_PLUGINS=gloper_jobs.testbed.fake_methods``
  (``noop``, ``worker_killer``, ``slow_logger``) for overhead and fault runs.

``tests/`` and ``bench/`` import from here and never from each other. Nothing here imports
Celery (the services and the cluster not even torch); the cluster spawns the ``gloper``
commands. Production code does not use it.
"""
