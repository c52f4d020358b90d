"""One typed settings object, built from the environment.

This is the only module that reads ``os.environ`` for configuration. (``torchrun``'s own
``WORLD_SIZE`` and ``LOCAL_RANK``, which say where a training process stands in its launch,
are read where training joins its process group, ``dataset_model/train.py``, as
``torch.distributed`` reads its variables.) Every variable is prefixed ``GLOPER_`` except
``U2NET_HOME``, which rembg users already know, accepted as a fallback for
``GLOPER_MODELS_DIR``, and ``CUDA_VISIBLE_DEVICES``.

=========================  =====================================================
variable                   meaning (default)
=========================  =====================================================
GLOPER_DATABASE_URL        SQLAlchemy URL of the result store
                           (``sqlite:///./gloper.db`` in the working folder)
GLOPER_RESULTS_DIR         where mask PNGs go (``./gloper-results``); an
                           ``s3://bucket/prefix`` makes queue workers upload one
                           object per mask there (``results_url``; credentials from
                           the AWS chain: variables, profile or instance role)
GLOPER_MODELS_DIR          foreground weights folder (``$U2NET_HOME`` or ``~/.u2net``)
GLOPER_FOREGROUND_MODEL    ``u2netp`` (default) or ``u2net`` (the paper's)
GLOPER_FOREGROUND_RIM      the band along the foreground's outline no mask keeps,
                           as a share of the mask's side (0.0117: 3 px at 256;
                           0: none); part of a job's identity
GLOPER_DEVICE              ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``
GLOPER_TORCH_THREADS       CPU threads for torch (every core this process may
                           use; ``gloper worker`` gives each of its processes
                           cores / processes)
GLOPER_COMPILE_CACHE_DIR   where ``torch.compile`` keeps its kernels across
                           restarts (``~/.cache/gloper-jobs/torch-compile``;
                           sets ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR``)
GLOPER_MAX_IMAGE_PIXELS    photos larger than this are refused (100,000,000)
GLOPER_EVAL_SIZE           side of the square Dice is computed at (256)
GLOPER_DECODE              ``working`` (default): decode a photo at the size its
                           method and foreground need (JPEG DCT scaling) when the
                           method says what that is; ``full``: always full resolution
GLOPER_WRITE_CANDIDATES    ``choice`` (default): the chosen mask as a full-resolution
                           PNG, every candidate as an RLE in the store; ``all``:
                           every candidate's PNG too
GLOPER_RUN_PHOTOS          photos an embedded ``gloper run`` processes at once, in
                           threads sharing the cores (one per core, at most 4);
                           torch and the foreground model get cores / photos
                           threads each unless GLOPER_TORCH_THREADS says otherwise
GLOPER_REVIEW_CACHE_DIR    where ``gloper review`` keeps the pictures it made once
                           (``~/.cache/gloper-jobs/review``; a few hundred px each)
GLOPER_EXAMPLES_DIR        the shared example photos, for tests and benchmarks
GLOPER_SAM_CHECKPOINT      SAM weights: a ``sam_vit_*.pth`` file, or a folder holding
                           the published files (``sam_vit_h_4b8939.pth`` ...)
                           (unset: ``GLOPER_WEIGHTS_DIR``, then torch hub's cache)
GLOPER_CLIPSEG_WEIGHTS     CLIPSeg: a ``save_pretrained`` folder of
                           ``CIDAS/clipseg-rd64-refined``, or a Hugging Face hub
                           cache folder (unset: ``GLOPER_WEIGHTS_DIR`` as a hub
                           cache, then the Hugging Face default cache)
GLOPER_DINO_WEIGHTS        DINOv2: torch hub's ``dinov2_vitg14_reg4_pretrain.pth``
                           (or a folder holding it), a ``save_pretrained`` folder,
                           or a hub cache folder holding
                           ``facebook/dinov2-with-registers-giant``
                           (unset: ``GLOPER_WEIGHTS_DIR``, torch hub's cache, then
                           the Hugging Face caches as for CLIPSeg)
GLOPER_WEIGHTS_DIR         where downloads go and unset weights are looked for
                           (``~/.cache/gloper-jobs``)
GLOPER_ALLOW_DOWNLOADS     ``1`` lets the pretrained baselines fetch missing
                           weights from where they are published (off)
GLOPER_STAGING_DIR         where an ``s3://`` dataset root is copied before a run
                           (``~/.cache/gloper-jobs/staged``), a queue worker's
                           scratch for the one photo it streams (``items/<pid>``)
                           and a ``--out s3://`` training's local checkpoint; S3
                           credentials and
                           endpoint come from the usual ``AWS_*`` variables, read
                           by botocore itself
=========================  =====================================================

The distributed path (``workers``/``schedulers``, the ``[queue]`` extra) adds:

===============================  ===============================================
variable                         meaning (default)
===============================  ===============================================
GLOPER_BROKER_URL                Redis broker (``redis://127.0.0.1:6379/0``)
GLOPER_EXTRACT_SOFT_TIME_LIMIT   seconds before an extract task is told to stop
                                 and its item fails (1800)
GLOPER_EXTRACT_TIME_LIMIT        seconds before its process is killed (1860)
GLOPER_EVALUATE_SOFT_TIME_LIMIT  the same for evaluate tasks (120)
GLOPER_EVALUATE_TIME_LIMIT       (150)
GLOPER_CALIBRATE_SOFT_TIME_LIMIT the same for one task of a calibration sweep (1800)
GLOPER_CALIBRATE_TIME_LIMIT      (1860)
GLOPER_TRAIN_SOFT_TIME_LIMIT     the same for a dataset model's training, one
                                 task for the whole archive (21600: 6 h);
                                 ``GLOPER_TRAIN_MODEL_SOFT_TIME_LIMIT`` is accepted
GLOPER_TRAIN_TIME_LIMIT          (21660; ``GLOPER_TRAIN_MODEL_TIME_LIMIT`` is accepted)
                                 (unset: the kind's own limits, ``JobKind.time_limits``;
                                 any other kind's are ``GLOPER_<KIND>_SOFT_TIME_LIMIT``
                                 and ``GLOPER_<KIND>_TIME_LIMIT``)
GLOPER_RETRY_BACKOFF             first retry delay of a transient error, s (5)
GLOPER_RETRY_BACKOFF_MAX         longest retry delay, s (300)
GLOPER_MAX_RETRIES               retries of a transient error per delivery (8)
GLOPER_VISIBILITY_TIMEOUT        Redis redelivers an unacknowledged task after
                                 this many s; must exceed the longest hard limit
                                 plus GLOPER_RETRY_BACKOFF_MAX (28800: 8 h)
GLOPER_MAX_DELIVERIES            deliveries of one item that end without a result
                                 (its worker died) before it is failed (3)
GLOPER_HEARTBEAT_SECONDS         how often a running item's heartbeat is written (10)
GLOPER_STALE_SECONDS             the lease: a running item whose heartbeat is older
                                 is stale (the reconciler and ``gloper resume``
                                 re-enqueue it) and its lease, extended by every
                                 heartbeat, lapses after as long (120). Cost:
                                 shorter takes a lost node's items over sooner
                                 (lease + one reconciler pass) but a node whose
                                 store pauses longer loses its items and its run
                                 is wasted (its late result is fenced off)
GLOPER_STRANDED_SECONDS          a queued item published longer ago than this
                                 whose message is not in the broker's queue is
                                 published again by the reconciler (600)
GLOPER_BROKER_CHECK_SECONDS      how often each worker checks Redis for a restart
                                 (new run id) or a queue emptied under queued items,
                                 and publishes the lost items again (10)
GLOPER_BROKER_SOCKET_TIMEOUT     Redis: a connect or a synchronous command
                                 (publish, LLEN) gives up after this many s, and
                                 unacknowledged data this old breaks the
                                 connection (TCP_USER_TIMEOUT) (15). Cost: a
                                 Redis that stalls longer (a huge fork for its
                                 snapshot) is taken for a lost one: reconnect
GLOPER_BROKER_HEALTH_CHECK       s: kombu drops a BRPOP whose reply is this much
                                 overdue (past its 1 s timeout) and reconnects;
                                 redis-py PINGs a connection idle longer before
                                 using it (10). Cost: one PING per idle connection
                                 per period. (Celery's ``broker_heartbeat`` is for
                                 AMQP only: the Redis transport ignores it)
GLOPER_STORE_CONNECT_TIMEOUT     PostgreSQL: libpq's connect_timeout, s (10).
                                 Cost: a store farther than this (in round trips)
                                 cannot be reached at all
GLOPER_STORE_TCP_TIMEOUT         PostgreSQL: libpq's tcp_user_timeout, s: a query
                                 in flight on a link that drops everything fails
                                 after this (the item retries), instead of after
                                 the kernel's ~15 min (20). Cost: a statement whose
                                 packets go unacknowledged longer is cut off
GLOPER_TCP_KEEPALIVE_IDLE        TCP keepalive of every Redis and PostgreSQL
                                 socket: first probe after this many s idle (10)
GLOPER_TCP_KEEPALIVE_INTERVAL    then one probe every this many s (5)
GLOPER_TCP_KEEPALIVE_COUNT       unanswered probes before the connection is closed
                                 (3): an idle connection to a vanished peer is
                                 noticed in idle + interval x count s (25). Cost: a
                                 40-byte packet per idle connection per interval
GLOPER_SUBMIT_BATCH              items recorded and enqueued per batch (1000)
GLOPER_WORKER_BOOT_TIMEOUT       seconds a new pool process may take to load its
                                 models before Celery gives up on it (300)
GLOPER_WORKER_DEVICE             the device a worker records (``gloper worker``
                                 sets ``cuda:<k>`` per card; else what ran)
GLOPER_WINDOW                    local times a worker takes items, e.g.
                                 ``20:00-06:00`` (``gloper worker --window``;
                                 unset: always)
GLOPER_PLUGINS                   comma-separated modules imported by workers and
                                 the submitter before use (extra methods)
GLOPER_SHUTDOWN_GRACE            seconds a stopping worker may finish its item
                                 before a cold stop gives it back (30)
GLOPER_BROKER_SSL_CA             CA file for a ``rediss://`` broker (TLS); the
                                 server's certificate is then verified
                                 (unset: the system's CAs). PostgreSQL's TLS
                                 goes in the URL: ``?sslmode=verify-full&
                                 sslrootcert=/path/ca.pem``
GLOPER_FLOWER_USER               Flower basic-auth user (``gloper``)
GLOPER_FLOWER_PASSWORD           Flower basic-auth password (required by
                                 ``gloper flower``)
GLOPER_FLOWER_PORT               Flower's port (5555)
GLOPER_METRICS_PORT              ``gloper metrics``' Prometheus port (9808)
CUDA_VISIBLE_DEVICES             the cards ``gloper worker --gpus all`` may use
                                 (else every card ``nvidia-smi`` lists)
===============================  ===============================================
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from gloper_jobs import defaults
from gloper_jobs.devices import DEVICE_HELP, is_device_name
from gloper_jobs.exceptions import ConfigurationError, GloperError

#: ``GLOPER_<KIND>_SOFT_TIME_LIMIT`` / ``GLOPER_<KIND>_TIME_LIMIT``, and their keyword names
_TIME_LIMIT_VARIABLE = re.compile(r"GLOPER_(?P<kind>[A-Z0-9_]+?)_(?P<soft>SOFT_)?TIME_LIMIT")
_TIME_LIMIT_KEY = re.compile(r"[a-z0-9_]+?_(soft_)?time_limit")
#: kinds renamed since: their variables still set the kind's limits
_OLD_KIND_NAMES = {"train_model": "train"}


def _default_database_url() -> str:
    return f"sqlite:///{(Path.cwd() / defaults.DATABASE_FILENAME).as_posix()}"


def _default_results_dir() -> Path:
    return Path.cwd() / defaults.RESULTS_DIRNAME


class Settings(BaseSettings):
    """Everything configurable from the environment, validated once."""

    model_config = SettingsConfigDict(env_prefix="GLOPER_", extra="ignore", frozen=True,
                                      populate_by_name=True)

    database_url: str = Field(default_factory=_default_database_url)
    results_dir: Path = Field(default_factory=_default_results_dir)
    #: GLOPER_RESULTS_DIR when it is an ``s3://`` URL (then ``results_dir`` keeps its default)
    results_url: str | None = Field(default=None, exclude=True)
    models_dir: Path = Field(
        default=defaults.MODELS_DIR,
        validation_alias=AliasChoices("GLOPER_MODELS_DIR", "U2NET_HOME"),
    )
    foreground_model: defaults.ForegroundModel = defaults.FOREGROUND_MODEL
    foreground_rim: float = defaults.FOREGROUND_RIM
    device: str = "auto"
    torch_threads: int | None = None
    compile_cache_dir: Path = defaults.COMPILE_CACHE_DIR
    max_image_pixels: PositiveInt = defaults.MAX_IMAGE_PIXELS
    eval_size: PositiveInt = defaults.EVAL_SIZE
    decode: defaults.DecodeMode = defaults.DECODE
    write_candidates: defaults.WriteCandidatesMode = defaults.WRITE_CANDIDATES
    run_photos: PositiveInt | None = None
    # --- the review page (gloper review; expanded where used) ---
    review_cache_dir: Path = defaults.REVIEW_CACHE_DIR
    examples_dir: Path | None = None
    sam_checkpoint: Path | None = None
    clipseg_weights: Path | None = None
    dino_weights: Path | None = None
    weights_dir: Path = defaults.WEIGHTS_DIR
    allow_downloads: bool = False
    staging_dir: Path = defaults.STAGING_DIR

    # --- distributed path (workers/, schedulers/) ---------------------------
    broker_url: str = defaults.BROKER_URL
    #: overrides of the job kinds' own task time limits (:attr:`JobKind.time_limits`), any kind's:
    #: ``{"<kind>_soft_time_limit": s, "<kind>_time_limit": s}`` from ``GLOPER_<KIND>_[SOFT_]TIME_LIMIT``
    #: (:meth:`_time_limits`; also taken as keyword arguments, ``extract_time_limit=...``)
    task_time_limits: dict[str, PositiveInt] = Field(default_factory=dict)
    retry_backoff: PositiveInt = defaults.RETRY_BACKOFF
    retry_backoff_max: PositiveInt = defaults.RETRY_BACKOFF_MAX
    max_retries: int = defaults.MAX_RETRIES
    visibility_timeout: PositiveInt = defaults.VISIBILITY_TIMEOUT
    max_deliveries: PositiveInt = defaults.MAX_DELIVERIES
    heartbeat_seconds: PositiveFloat = defaults.HEARTBEAT_SECONDS
    stale_seconds: PositiveFloat = defaults.STALE_SECONDS
    stranded_seconds: PositiveFloat = defaults.STRANDED_SECONDS
    broker_check_seconds: PositiveFloat = defaults.BROKER_CHECK_SECONDS
    broker_socket_timeout: PositiveFloat = defaults.BROKER_SOCKET_TIMEOUT
    broker_health_check: PositiveFloat = defaults.BROKER_HEALTH_CHECK_SECONDS
    store_connect_timeout: PositiveFloat = defaults.STORE_CONNECT_TIMEOUT
    store_tcp_timeout: PositiveFloat = defaults.STORE_TCP_TIMEOUT
    tcp_keepalive_idle: PositiveInt = defaults.TCP_KEEPALIVE_IDLE
    tcp_keepalive_interval: PositiveInt = defaults.TCP_KEEPALIVE_INTERVAL
    tcp_keepalive_count: PositiveInt = defaults.TCP_KEEPALIVE_COUNT
    submit_batch: PositiveInt = defaults.SUBMIT_BATCH
    worker_boot_timeout: PositiveFloat = defaults.WORKER_BOOT_TIMEOUT
    worker_device: str | None = None
    plugins: str = ""
    window: str | None = None
    shutdown_grace: float = defaults.SHUTDOWN_GRACE
    broker_ssl_ca: Path | None = None
    flower_user: str = defaults.FLOWER_USER
    flower_password: str | None = None
    flower_port: PositiveInt = defaults.FLOWER_PORT
    metrics_port: int = defaults.METRICS_PORT
    visible_devices: str | None = Field(default=None, validation_alias="CUDA_VISIBLE_DEVICES")

    @field_validator("models_dir", "results_dir", "weights_dir", "staging_dir", "compile_cache_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("sam_checkpoint", "clipseg_weights", "dino_weights", "broker_ssl_ca", mode="after")
    @classmethod
    def _expand_optional(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("foreground_rim")
    @classmethod
    def _rim(cls, value: float) -> float:
        if not 0 <= value < 0.25:
            raise ValueError(f"{value} must be a share of the side in [0, 0.25): 0.0117 is 3 px at 256, 0 trims nothing")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not is_device_name(value):
            raise ValueError(DEVICE_HELP)
        return value

    @model_validator(mode="before")
    @classmethod
    def _time_limits(cls, data: Any) -> Any:
        """``task_time_limits`` from every ``GLOPER_<KIND>_[SOFT_]TIME_LIMIT`` variable (a kind
        added later needs no setting of its own) and ``<kind>_[soft_]time_limit`` keywords, which
        win; ``GLOPER_TRAIN_MODEL_*`` (kind ``train``'s old name) count as ``train`` unless the
        new name is set too."""
        if not isinstance(data, dict):
            return data
        found: dict[str, Any] = {}
        named = [(m, v) for k, v in os.environ.items() if (m := _TIME_LIMIT_VARIABLE.fullmatch(k))]
        for m, value in sorted(named, key=lambda mv: mv[0]["kind"].lower() not in _OLD_KIND_NAMES):  # old names first
            kind = m["kind"].lower()
            found[f"{_OLD_KIND_NAMES.get(kind, kind)}_{(m['soft'] or '').lower()}time_limit"] = value
        data = dict(data)
        for key in [k for k in data if _TIME_LIMIT_KEY.fullmatch(str(k))]:
            if data[key] is not None:
                found[key] = data[key]
            del data[key]
        data["task_time_limits"] = {**found, **(data.get("task_time_limits") or {})}
        return data

    @field_validator("database_url", "broker_url", "flower_password")
    @classmethod
    def _no_placeholder_secret(cls, value: str | None) -> str | None:
        if value:
            from urllib.parse import urlsplit

            secret = urlsplit(value).password if "://" in value else value
            if secret and secret.lower() in defaults.PLACEHOLDER_SECRETS:
                raise ValueError(f"the password {secret!r} is a placeholder from an example file; "
                                 "generate one (e.g. `openssl rand -hex 24`) and set it on the server too")
        return value

    @field_validator("window")
    @classmethod
    def _valid_window(cls, value: str | None) -> str | None:
        if value:
            from gloper_jobs.window import Window

            try:
                Window.parse(value)
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from exc
        return value or None

    @model_validator(mode="before")
    @classmethod
    def _results_url(cls, data: Any) -> Any:
        """``GLOPER_RESULTS_DIR=s3://...`` goes to ``results_url`` (a Path would fold its ``//``)."""
        if isinstance(data, dict):
            value = data.get("results_dir")
            if isinstance(value, str) and "://" in value:
                from gloper_jobs.storage import is_url

                try:
                    url = is_url(value)
                except GloperError as exc:
                    raise ValueError(f"GLOPER_RESULTS_DIR: {exc}") from exc
                if url:
                    data = {k: v for k, v in data.items() if k != "results_dir"}
                    data["results_url"] = value.rstrip("/")
        return data

    @property
    def results_root(self) -> str:
        """Where jobs' result folders are made: the ``s3://`` URL, else the absolute local folder."""
        return self.results_url or str(self.results_dir.resolve())

    @model_validator(mode="after")
    def _limits_ordered(self) -> Settings:
        for name in self.task_time_limits:
            if name.endswith("_soft_time_limit"):
                kind = name.removesuffix("_soft_time_limit")
                soft, hard = self.time_limit_overrides(kind)
                if soft is not None and hard is not None and soft >= hard:
                    raise ValueError(f"{kind}_soft_time_limit ({soft}) must be below {kind}_time_limit ({hard})")
        if self.stale_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError(f"stale_seconds ({self.stale_seconds}) must exceed twice "
                             f"heartbeat_seconds ({self.heartbeat_seconds})")
        return self

    def time_limit_overrides(self, kind: str) -> tuple[int | None, int | None]:
        """``GLOPER_<KIND>_SOFT_TIME_LIMIT`` and ``GLOPER_<KIND>_TIME_LIMIT`` (None where unset
        for any kind; the kinds' own limits apply otherwise (:func:`gloper_jobs.jobs.kinds.time_limits`)."""
        return self.task_time_limits.get(f"{kind}_soft_time_limit"), self.task_time_limits.get(f"{kind}_time_limit")

    def store_connect_args(self) -> dict[str, Any]:
        """libpq options of every PostgreSQL connection: timeouts and keepalives (a link that
        drops every packet resets nothing; without them a query waits ~15 min)."""
        return {
            "connect_timeout": max(1, round(self.store_connect_timeout)),
            "tcp_user_timeout": round(self.store_tcp_timeout * 1000),  # ms
            "keepalives": 1,
            "keepalives_idle": self.tcp_keepalive_idle,
            "keepalives_interval": self.tcp_keepalive_interval,
            "keepalives_count": self.tcp_keepalive_count,
        }

    def broker_socket_options(self) -> dict[str, Any]:
        """The Redis transport's socket options (kombu passes them to redis-py)."""
        import socket

        keepalive = {socket.TCP_KEEPIDLE: self.tcp_keepalive_idle, socket.TCP_KEEPINTVL: self.tcp_keepalive_interval,
                     socket.TCP_KEEPCNT: self.tcp_keepalive_count,
                     socket.TCP_USER_TIMEOUT: round(self.broker_socket_timeout * 1000)}
        return {
            "socket_timeout": self.broker_socket_timeout,
            "socket_connect_timeout": self.broker_socket_timeout,
            "socket_keepalive": True,
            "socket_keepalive_options": keepalive,
            "retry_on_timeout": True,
            "health_check_interval": self.broker_health_check,
        }

    @property
    def plugin_modules(self) -> list[str]:
        """``GLOPER_PLUGINS`` as a list of module names."""
        return [m.strip() for m in self.plugins.split(",") if m.strip()]

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Build settings from the environment; ``overrides`` (not None) win.

        Raises :class:`ConfigurationError` naming the variable and the fix.
        """
        clean = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**clean)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"{_variable(str(err['loc'][-1]) if err['loc'][0] == 'task_time_limits' else '_'.join(str(p) for p in err['loc']))}: {_message(err)}" if err["loc"]
                else str(err["msg"])  # a check of the whole object names its variable itself
                for err in exc.errors()
            )
            raise ConfigurationError(f"invalid settings: {problems}") from exc



def _message(err: Any) -> str:
    """pydantic's message for one bad value, with the fix spelled out: the choices of a
    ``Literal`` (``'fast': use one of working, full``), a positive number for a positive field."""
    if err.get("type") == "literal_error":
        choices = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        return f"{err.get('input')!r}: use one of {', '.join(choices)}"
    if err.get("type") == "greater_than" and (err.get("ctx") or {}).get("gt") == 0:
        return f"{err['msg']} (got {err.get('input')!r}): use a positive number"
    return str(err["msg"])


def _variable(name: str) -> str:
    """The environment variable of a field or alias name (``eval_size`` -> ``GLOPER_EVAL_SIZE``)."""
    upper = name.upper()
    return upper if upper.startswith("GLOPER_") or upper == "U2NET_HOME" else f"GLOPER_{upper}"
