"""The submitting side's library: the checks the queue commands run before they write
(:mod:`schedulers.preflight`) and the Prometheus exporter (:mod:`schedulers.metrics`).
The commands themselves are ``schedulers/cli.py``, plugged into ``gloper`` by entry points."""
