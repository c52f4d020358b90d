"""Submitting side of gloper-jobs: scanning, fan-out, resume, sweeps ([queue])."""
