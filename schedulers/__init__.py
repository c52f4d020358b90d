"""The submitting side of gloper-jobs: ``gloper submit``, ``status``, ``resume`` and friends."""
