"""The Celery side of gloper-jobs: the app, its thin tasks and the worker launcher.

Importing this package touches no GPU and loads no model: models load in each
worker child process at ``worker_process_init`` (see :mod:`workers.runtime`).
"""
