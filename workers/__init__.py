"""Celery side of gloper-jobs: the app, thin tasks and GPU binding ([queue])."""
