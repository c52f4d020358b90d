"""Fast checks of the queue's pieces without a broker: settings, Celery config, worker plans,
delivery claims and submission on SQLite (with a recording publisher)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.jobs.kinds import check_time_limits, time_limits
from gloper_jobs.jobs.kinds.extract import record_extract_job
from gloper_jobs.jobs.submission import enqueue_unfinished, reconcile, retry_failed
from gloper_jobs.settings import Settings
from gloper_jobs.store import Item, Job, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store.models import utcnow
from tests.store_helpers import ids_to_enqueue

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(database_url=f"sqlite:///{tmp_path / 'q.db'}", results_dir=tmp_path / "res",
                             stale_seconds=30, heartbeat_seconds=1)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "photos", per_species=1)
    return tmp_path / "photos"


class Recorder:
    """A publisher that records (job id, item ids) instead of sending."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[int, list[int]]] = []
        self.fail = fail

    def __call__(self, job: Job, ids: Sequence[int]) -> int:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((job.id or 0, list(ids)))
        return len(ids)

    @property
    def ids(self) -> list[int]:
        return [i for _, ids in self.sent for i in ids]


def test_visibility_timeout_must_exceed_hard_limit_plus_backoff() -> None:
    limits = {f"{k}_{w}time_limit": v for k in ("extract", "evaluate", "calibrate", "train")
              for w, v in (("soft_", 90), ("", 100))}
    check_time_limits(Settings.from_env(**limits, retry_backoff_max=20, visibility_timeout=121))
    bad = Settings.from_env(**limits, retry_backoff_max=20, visibility_timeout=120)
    with pytest.raises(ConfigurationError, match="GLOPER_VISIBILITY_TIMEOUT=120"):
        check_time_limits(bad)
    with pytest.raises(ConfigurationError, match="must be below"):
        Settings.from_env(extract_soft_time_limit=100, extract_time_limit=100)


def test_celery_config_is_json_only_late_ack_one_prefetch() -> None:
    from workers.app import celery_config

    s = Settings.from_env(extract_soft_time_limit=10, extract_time_limit=20, visibility_timeout=9999)
    conf = celery_config(s)
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False  # celery#9250
    assert conf["worker_send_task_events"] and not conf["task_send_sent_event"]
    assert conf["broker_transport_options"]["visibility_timeout"] == 9999
    assert conf["task_annotations"]["gloper.extract"] == {"soft_time_limit": 10, "time_limit": 20}
    # a dataset model's training is one long task: limits of its own, not extract's 30 min
    assert conf["task_annotations"]["gloper.train"] == {"soft_time_limit": 21600, "time_limit": 21660}
    assert time_limits(Settings.from_env(train_soft_time_limit=60, train_time_limit=90), "train") == (60, 90)
    check_time_limits(Settings.from_env())  # the defaults are consistent


def test_time_limit_variables_follow_the_kinds_and_the_old_names_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """GLOPER_TRAIN_* are the dataset model's (kind train, formerly train_model, whose variables
    are still read); GLOPER_CALIBRATE_* the calibration sweep's."""
    monkeypatch.setenv("GLOPER_TRAIN_MODEL_SOFT_TIME_LIMIT", "100")
    monkeypatch.setenv("GLOPER_TRAIN_MODEL_TIME_LIMIT", "200")
    monkeypatch.setenv("GLOPER_CALIBRATE_SOFT_TIME_LIMIT", "10")
    monkeypatch.setenv("GLOPER_CALIBRATE_TIME_LIMIT", "20")
    s = Settings.from_env()
    assert time_limits(s, "train") == (100, 200) and time_limits(s, "calibrate") == (10, 20)
    assert time_limits(s, "extract") == (1800, 1860)
    monkeypatch.setenv("GLOPER_TRAIN_TIME_LIMIT", "300")  # the new name wins over the old one
    assert time_limits(Settings.from_env(), "train") == (100, 300)
    monkeypatch.setenv("GLOPER_TRAIN_SOFT_TIME_LIMIT", "400")
    with pytest.raises(ConfigurationError, match="train_soft_time_limit \\(400\\) must be below"):
        Settings.from_env()


def test_importing_workers_loads_no_torch() -> None:
    code = ("import sys, workers.app, workers.tasks, workers.runtime, workers.launcher, gloper_jobs.cli; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_gpu_workers_are_one_process_per_card_with_its_device() -> None:
    from workers.launcher import plan_workers

    specs = plan_workers("0,2", available=["0", "1", "2"])
    assert [s.node for s in specs] == ["gpu0@%h", "gpu2@%h"]
    # two launchers on one host: distinct node names unless the operator names them
    assert plan_workers("cpu", [], instance="41")[0].node != plan_workers("cpu", [], instance="42")[0].node
    assert plan_workers("0", ["0"], instance="41")[0].node == "gpu0-41@%h"
    assert plan_workers("cpu", [], name="night", instance="41")[0].node == "night@%h"
    assert plan_workers("cpu", [], concurrency=2, torch_threads=3)[0].env["OMP_NUM_THREADS"] == "3"
    # idle OpenMP threads sleep: two launchers on one node must not starve each other spinning
    assert all(s.env["OMP_WAIT_POLICY"] == "PASSIVE" for s in [*specs, *plan_workers("cpu", [])])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "2"]
    assert [s.env["GLOPER_WORKER_DEVICE"] for s in specs] == ["cuda:0", "cuda:2"]
    assert all(s.concurrency == 1 and s.queues == ["extract.gpu", "evaluate.gpu", "calibrate.gpu", "train.gpu"] for s in specs)
    argv = specs[1].argv()
    assert argv[argv.index("--concurrency") + 1] == "1" and argv[argv.index("--pool") + 1] == "prefork"
    assert len(plan_workers("all", available=["0", "1"])) == 2
    with pytest.raises(ConfigurationError, match="not visible"):
        plan_workers("3", available=["0"])
    with pytest.raises(ConfigurationError, match="no GPU"):
        plan_workers("all", available=[])
    cpu = plan_workers("cpu", available=[], concurrency=2)
    assert len(cpu) == 1 and cpu[0].concurrency == 2 and cpu[0].env["CUDA_VISIBLE_DEVICES"] == ""
    assert cpu[0].queues == ["extract.cpu", "evaluate.cpu", "calibrate.cpu", "train.cpu"]
    both = plan_workers("cpu", available=[], queues=["extract.cpu", "extract.gpu"])
    assert both[0].queues == ["extract.cpu", "extract.gpu"]
    with pytest.raises(ConfigurationError, match="unknown queue"):
        plan_workers("cpu", available=[], queues=["extract.tpu"])


def test_submitting_twice_adds_no_rows_and_enqueues_only_unfinished(settings: Settings, dataset: Path) -> None:
    store = Store(settings.database_url)
    pub = Recorder()
    first = record_extract_job(store, settings, dataset, "kmeans")
    assert first.created and first.added == first.job.n_items > 0
    assert first.job.queue == "extract.cpu"
    assert enqueue_unfinished(store, first.job, pub, batch=3) == first.job.n_items
    assert all(len(ids) <= 3 for _, ids in pub.sent)
    with store.session() as s:  # one item finished meanwhile
        done_id = pub.ids[0]
        s.get(Item, done_id).status = "done"
    again = record_extract_job(store, settings, dataset, "kmeans")
    assert not again.created and again.added == 0 and again.job.id == first.job.id
    assert enqueue_unfinished(store, again.job, Recorder(), batch=3) == 0  # all queued or done
    from gloper_jobs.jobs.submission import resume_job

    with store.session() as s:  # everything finished: a resume enqueues nothing and closes the job
        for it in s.exec(select(Item).where(Item.job_id == first.job.id)).all():
            it.status = "done"
    resumed = resume_job(store, settings, first.job.id, Recorder())
    assert resumed.enqueued == 0 and resumed.job.status == "done"
    with store.session() as s:
        for it in s.exec(select(Item).where(Item.job_id == first.job.id, Item.id != done_id)).all():
            it.status = "queued"
    pub2 = Recorder()
    assert enqueue_unfinished(store, again.job, pub2, batch=100, include_queued=True) == first.job.n_items - 1
    assert done_id not in pub2.ids
    gl = record_extract_job(store, settings, dataset, "gloper", params={"size": 32}, on_device="cpu")
    assert gl.job.queue == "extract.cpu" and gl.job.id != first.job.id
    assert record_extract_job(store, settings, dataset, "gloper", params={"size": 32}).job.queue == "extract.gpu"


def test_failed_publish_leaves_items_pending(settings: Settings, dataset: Path) -> None:
    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, dataset, "kmeans")
    with pytest.raises(ConnectionError):
        enqueue_unfinished(store, sub.job, Recorder(fail=True), batch=2)
    with store.session() as s:
        assert ids_to_enqueue(s, sub.job.id) != []  # nothing was marked queued


def test_claim_counts_deliveries_and_fails_after_the_cap(settings: Settings, dataset: Path) -> None:
    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, dataset, "kmeans")
    enqueue_unfinished(store, sub.job, Recorder(), batch=100)
    with store.session() as s:
        item_id = ids_to_enqueue(s, sub.job.id, include_queued=True)[0]
    for n in (1, 2):  # the worker dies each time: the item stays running, its lease is taken over
        with store.session() as s:
            c = dl.claim(s, item_id, cap=2, host="h", worker=f"w:{n}", lease_seconds=30, owner_gone=lambda _: True)
            assert c.skipped is None and c.deliveries == n and c.item.status == "running"
    with store.session() as s:
        c = dl.claim(s, item_id, cap=2, host="h", worker="w:3", lease_seconds=30, owner_gone=lambda _: True)
    assert c.skipped == "delivery cap reached" and c.item.status == "failed"
    assert "delivered 3 times without finishing (cap 2)" in (c.item.error or "")
    with store.session() as s:  # a late duplicate of a failed item is skipped, not counted
        c = dl.claim(s, item_id, cap=9, host="h", worker="w:4", lease_seconds=30)
    assert c.skipped == "item is failed" and c.item.deliveries == 3
    pub = Recorder()
    assert retry_failed(store, settings, sub.job.id, pub).added == 1 and item_id in pub.ids
    with store.session() as s:
        c = dl.claim(s, item_id, cap=2, host="h", worker="w:5", lease_seconds=30)
    assert c.skipped is None and c.deliveries == 1


def test_cancelled_job_skips_its_queued_items(settings: Settings, dataset: Path) -> None:
    from gloper_jobs.jobs.submission import cancel

    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, dataset, "kmeans")
    pub = Recorder()
    enqueue_unfinished(store, sub.job, pub, batch=100)
    _, n = cancel(store, sub.job.id)
    assert n == sub.job.n_items
    with store.session() as s:
        c = dl.claim(s, pub.ids[0], cap=3, host="h", worker="w:1", lease_seconds=30)
    assert c.skipped in ("job cancelled", "item is cancelled")
    assert c.item.deliveries == 0


def test_reconciler_requeues_only_items_whose_heartbeat_stopped(settings: Settings, dataset: Path) -> None:
    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, dataset, "kmeans")
    enqueue_unfinished(store, sub.job, Recorder(), batch=100)
    with store.session() as s:
        ids = ids_to_enqueue(s, sub.job.id, include_queued=True)
        for i in ids[:2]:
            dl.claim(s, i, cap=3, host="h", worker="w:1", lease_seconds=30)
        s.get(Item, ids[0]).heartbeat_at = utcnow() - timedelta(seconds=60)  # its worker died
        s.get(Item, ids[0]).lease_expires_at = utcnow() - timedelta(seconds=30)
    assert reconcile(store, settings, Recorder(), include_stale=False) == 0  # just after a store outage
    pub = Recorder()
    assert reconcile(store, settings, pub) == 1
    assert pub.ids == [ids[0]]
    with store.session() as s:
        assert s.get(Item, ids[0]).status == "queued" and s.get(Item, ids[0]).deliveries == 1
        assert s.get(Item, ids[1]).status == "running"
    with store.session() as s:  # its worker died again, and now the broker is down too
        dl.claim(s, ids[0], cap=3, host="h", worker="w:2", lease_seconds=30)
        s.get(Item, ids[0]).heartbeat_at = utcnow() - timedelta(seconds=60)
        s.get(Item, ids[0]).lease_expires_at = utcnow() - timedelta(seconds=30)
    with pytest.raises(ConnectionError):
        reconcile(store, settings, Recorder(fail=True))
    with store.session() as s:  # still running and stale: the next pass tries again
        assert s.get(Item, ids[0]).status == "running"
    assert reconcile(store, settings, Recorder()) == 1


def test_evaluate_job_scores_the_stored_masks_without_segmenting(settings: Settings, dataset: Path) -> None:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.execution import execute_item
    from gloper_jobs.jobs.kinds.evaluate import record_evaluate_job
    from gloper_jobs.jobs.runner import run_dataset
    from gloper_jobs.scoring.reports import item_scores
    from gloper_jobs.store import repository as repo

    with pytest.raises(Exception, match="submit it first"):
        record_evaluate_job(Store(settings.database_url), settings, dataset, "kmeans", foreground=False)
    summary = run_dataset(dataset, "kmeans", settings, foreground=False, progress=False)
    store = Store(settings.database_url)
    sub = record_evaluate_job(store, settings, dataset, "kmeans", foreground=False)
    assert sub.job.kind == "evaluate" and sub.job.queue == "evaluate.cpu"
    assert sub.added == summary.job.n_items and sub.job.params["source_job"] == summary.job.id
    assert record_evaluate_job(store, settings, dataset, "kmeans", foreground=False).added == 0
    ctx = WorkerContext.boot(settings, "test", preload=False)
    pub = Recorder()
    enqueue_unfinished(store, sub.job, pub, batch=100)
    results = [execute_item(ctx, i) for i in pub.ids]
    assert {r.status for r in results} == {"done"}
    assert ctx.segmenters.builds == 0  # nothing was segmented
    with store.session() as s:
        extracted = {x.rel_path: x for x in item_scores(repo.item_candidates(s, summary.job.id))}
        evaluated = {x.rel_path: x for x in item_scores(repo.item_candidates(s, sub.job.id))}
        assert repo.get_job(s, sub.job.id).status == "done"
    assert evaluated.keys() == extracted.keys() and evaluated
    for path, ev in evaluated.items():
        assert ev.choice == extracted[path].choice
        assert ev.oracle_dice == pytest.approx(extracted[path].oracle_dice, abs=0.02)


def test_transient_errors_are_released_then_fail_the_item_when_retries_run_out(
        settings: Settings, dataset: Path) -> None:
    from gloper_jobs.exceptions import DeviceOutOfMemoryError
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.execution import execute_item

    class OutOfMemory:
        def input_side(self) -> None:  # full decoding, as every built-in per-photo method
            return None

        def segment(self, *args: object, **kwargs: object) -> None:
            raise DeviceOutOfMemoryError("out of GPU memory: lower size")

    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, dataset, "kmeans", foreground=False)
    pub = Recorder()
    enqueue_unfinished(store, sub.job, pub, batch=100)
    ctx = WorkerContext.boot(settings, "test", preload=False)
    ctx.segmenters.get = lambda *a, **k: OutOfMemory()  # type: ignore[method-assign]
    first = pub.ids[0]
    with pytest.raises(DeviceOutOfMemoryError):
        execute_item(ctx, first, retries=0)
    with store.session() as s:
        assert s.get(Item, first).status == "queued"  # released for the retry
    result = execute_item(ctx, first, retries=settings.max_retries, last_attempt=True)
    assert result.status == "failed" and "gave up after" in (result.message or "")
    with store.session() as s:
        item = s.get(Item, first)
        assert item.status == "failed" and "lower size" in item.error and item.traceback


def test_resume_refuses_a_cancelled_job_unless_uncancel(settings: Settings, dataset: Path) -> None:
    from gloper_jobs.exceptions import InvalidParameterError
    from gloper_jobs.jobs.submission import cancel, resume_job

    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, dataset, "kmeans")
    enqueue_unfinished(store, sub.job, Recorder(), batch=100)
    cancel(store, sub.job.id)
    with pytest.raises(InvalidParameterError, match="--uncancel"):
        resume_job(store, settings, sub.job.id, Recorder())
    with store.session() as s:
        assert {i.status for i in s.exec(select(Item).where(Item.job_id == sub.job.id)).all()} == {"cancelled"}
    pub = Recorder()
    assert resume_job(store, settings, sub.job.id, pub, uncancel=True).enqueued == sub.job.n_items
    assert sorted(pub.ids) == sorted(set(pub.ids))


def test_jobs_on_an_empty_store_says_so(tmp_path: Path) -> None:
    env = {"GLOPER_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", "PYTHONPATH": str(REPO), "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-m", "gloper_jobs.cli", "jobs"], env=env, capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and "no jobs in the store" in out.stdout, out.stderr


def test_priority_levels_are_separate_queues_consumed_highest_first() -> None:
    from gloper_jobs.jobs.queues import priority_queue, with_priorities
    from workers.app import celery_config
    from workers.launcher import plan_workers

    assert priority_queue("extract.cpu", "normal") == "extract.cpu"
    assert priority_queue("extract.cpu", "urgent") == "extract.cpu.urgent"
    with pytest.raises(ConfigurationError, match="urgent, normal, bulk"):
        priority_queue("extract.cpu", "asap")
    assert with_priorities(["extract.cpu", "train.cpu"]) == [
        "extract.cpu.urgent", "train.cpu.urgent", "extract.cpu", "train.cpu", "extract.cpu.bulk", "train.cpu.bulk"]
    argv = plan_workers("cpu", [], queues=["extract.cpu"])[0].argv()
    assert argv[argv.index("--queues") + 1] == "extract.cpu.urgent,extract.cpu,extract.cpu.bulk"
    assert celery_config(Settings.from_env())["broker_transport_options"]["queue_order_strategy"] == "priority"


def test_windows_wrap_past_midnight_and_refuse_nonsense() -> None:
    from datetime import time as t

    from gloper_jobs.window import Window

    night = Window.parse("20:00-06:00")
    assert night.contains(t(23, 59)) and night.contains(t(0, 0)) and night.contains(t(20, 0))
    assert not night.contains(t(6, 0)) and not night.contains(t(12, 0))
    day = Window.parse("08:00:30-17:00")
    assert day.contains(t(8, 0, 30)) and not day.contains(t(8, 0, 29)) and not day.contains(t(17, 0))
    for bad in ("20:00", "25:00-06:00", "20:00-20:00"):
        with pytest.raises(ConfigurationError):
            Window.parse(bad)
    with pytest.raises(ConfigurationError, match="GLOPER_WINDOW"):
        Settings.from_env(window="8pm-6am")


def test_broker_and_store_connections_have_timeouts_and_keepalives(monkeypatch: pytest.MonkeyPatch) -> None:
    """A link that drops every packet resets nothing: each connection needs its own deadline
    (issue 30). The settings reach kombu's transport options and libpq's connect args."""
    import socket

    from gloper_jobs.store.db import make_engine
    from workers.app import celery_config

    monkeypatch.setenv("GLOPER_STORE_TCP_TIMEOUT", "7")
    monkeypatch.setenv("GLOPER_BROKER_SOCKET_TIMEOUT", "9")
    s = Settings.from_env()
    opts = celery_config(s)["broker_transport_options"]
    assert opts["socket_timeout"] == opts["socket_connect_timeout"] == 9
    assert opts["socket_keepalive"] is True and opts["retry_on_timeout"] is True
    assert opts["health_check_interval"] == s.broker_health_check == 10
    assert opts["socket_keepalive_options"][socket.TCP_USER_TIMEOUT] == 9000
    assert opts["socket_keepalive_options"][socket.TCP_KEEPIDLE] == s.tcp_keepalive_idle
    seen: dict[str, object] = {}
    monkeypatch.setattr("gloper_jobs.store.db.create_engine", lambda url, **kw: seen.update(kw))
    make_engine("postgresql://u@db.invalid/x?keepalives_idle=30")
    args = seen["connect_args"]
    assert isinstance(args, dict)
    assert args["tcp_user_timeout"] == 7000 and args["connect_timeout"] == 10 and args["keepalives"] == 1
    assert "keepalives_idle" not in args  # what the URL names wins
    monkeypatch.setenv("GLOPER_TCP_KEEPALIVE_COUNT", "0")
    with pytest.raises(ConfigurationError, match="GLOPER_TCP_KEEPALIVE_COUNT"):
        Settings.from_env()


def test_status_lists_workers_silent_past_the_lease(settings: Settings, dataset: Path) -> None:
    from gloper_jobs.jobs.progress import format_progress, job_progress

    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, dataset, "kmeans")
    enqueue_unfinished(store, sub.job, Recorder(), batch=100)
    with store.session() as s:
        ids = ids_to_enqueue(s, sub.job.id, include_queued=True)
        dl.claim(s, ids[0], cap=3, host="h", worker="cut@h:1", lease_seconds=30)
        dl.claim(s, ids[1], cap=3, host="h", worker="live@h:2", lease_seconds=30)
        s.get(Item, ids[0]).heartbeat_at = utcnow() - timedelta(seconds=95)  # cut off 95 s ago
    with store.session() as s:
        p = job_progress(s, s.get(Job, sub.job.id), settings.stale_seconds)
    assert [w for w, _ in p.lost] == ["cut@h:1"]
    text = format_progress(p)
    assert "lost workers" in text and "cut@h:1" in text and "live@h:2" not in text.split("lost workers")[1]


class BrokerRecorder(Recorder):
    """A :class:`Recorder` that can say which items the broker holds (what it was sent)."""

    def held(self, job: Job) -> set[int]:
        return set(self.ids)

    def queue_length(self, job: Job) -> int:
        return len(self.ids)

    def broker_id(self) -> str:
        return "run-1"


def test_submitting_again_publishes_what_a_cut_off_submit_marked_but_never_sent(
        settings: Settings, dataset: Path) -> None:
    """A submitter cut off between marking a batch queued and publishing it (issue 30, fault d):
    the same command again publishes that batch, and nothing the broker already holds."""
    from gloper_jobs.jobs.kinds import SubmitRequest
    from gloper_jobs.jobs.submission import submit

    store = Store(settings.database_url)
    pub = BrokerRecorder()
    first = record_extract_job(store, settings, dataset, "kmeans")
    with store.session() as s:  # batch 1 published; batch 2 marked queued, then the link went
        sent = dl.take_pending(s, first.job.id, 2)
    pub(first.job, sent)
    with store.session() as s:
        stranded = dl.take_pending(s, first.job.id, 1)
        for i in (*sent, *stranded):
            s.get(Item, i).queued_at = utcnow() - timedelta(seconds=30)
    request = SubmitRequest(dataset=dataset, method="kmeans", profile=None, params={})
    again = submit(store, settings, "extract", request, pub)
    assert not again.created
    rest = first.job.n_items - len(sent) - len(stranded)
    assert again.enqueued == rest + len(stranded)
    assert sorted(pub.ids) == sorted(set(pub.ids)) and len(pub.ids) == first.job.n_items  # each once


def test_reconciler_passes_are_paced_after_a_slow_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a slow link a pass holds the worker's event loop for seconds: the next waits so
    that passes take at most RECONCILER_LOOP_SHARE of the loop; a failed pass (an outage)
    does not delay the next (issue 30)."""
    from gloper_jobs.defaults import RECONCILER_LOOP_SHARE
    from workers.runtime import Reconciler

    clock = [100.0]
    monkeypatch.setattr("workers.runtime.time.monotonic", lambda: clock[0])
    r = Reconciler.__new__(Reconciler)  # the pacing alone, without a consumer
    r._not_before = float("-inf")
    assert r._paced()
    clock[0] = 110.0
    r._ran(100.0, ok=True)  # a pass of 10 s
    wait = 10.0 * (1 / RECONCILER_LOOP_SHARE - 1)
    clock[0] = 110.0 + wait - 0.1
    assert not r._paced()
    clock[0] = 110.0 + wait + 0.1
    assert r._paced()
    r._ran(clock[0] - 15.0, ok=False)  # 15 s timing out on a store that is down
    assert r._paced()
