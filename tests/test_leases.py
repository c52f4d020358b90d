"""The store's exclusive claim (a lease) and publishing compare-and-set, on PostgreSQL:
a duplicate delivery is dropped and not counted, concurrent submits publish each item
once, stranded queued items are published again (issue 12, defects 2 and 3)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.jobs.kinds.extract import record_extract_job
from gloper_jobs.jobs.publishing import enqueue_unfinished, reconcile
from gloper_jobs.settings import Settings
from gloper_jobs.store import Item, Job, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store.models import utcnow
from tests.store_helpers import ids_to_enqueue

pytestmark = pytest.mark.queue


class SlowRecorder:
    """A publisher that records what it sends, slowly (so concurrent callers overlap), and can
    say which items still wait in the broker."""

    def __init__(self, delay: float = 0.0, waiting: set[int] | None = None) -> None:
        self.ids: list[int] = []
        self.delay = delay
        self._waiting = waiting
        self._lock = threading.Lock()

    def __call__(self, job: Job, ids: Sequence[int]) -> int:
        time.sleep(self.delay)
        with self._lock:
            self.ids.extend(ids)
        return len(ids)

    def waiting(self, job: Job) -> set[int] | None:
        return self._waiting


@pytest.fixture()
def pg_settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(database_url=database_url, results_dir=tmp_path / "res", stale_seconds=30,
                             heartbeat_seconds=1, stranded_seconds=60)


@pytest.fixture()
def job(pg_settings: Settings, tmp_path: Path) -> Job:
    make_dataset(tmp_path / "photos", per_species=3, size=48)
    return record_extract_job(Store(pg_settings.database_url), pg_settings, tmp_path / "photos", "kmeans").job


def test_concurrent_submits_publish_each_item_once(pg_settings: Settings, job: Job) -> None:
    store = Store(pg_settings.database_url)
    pubs = [SlowRecorder(delay=0.2) for _ in range(3)]
    threads = [threading.Thread(target=enqueue_unfinished, args=(store, job, p, 2)) for p in pubs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [i for p in pubs for i in p.ids]
    assert len(sent) == len(set(sent)) == job.n_items  # all published, none twice
    assert sum(1 for p in pubs if p.ids) >= 2, [p.ids for p in pubs]  # they really ran side by side


def test_a_live_lease_drops_a_second_delivery_without_counting_it(pg_settings: Settings, job: Job) -> None:
    store = Store(pg_settings.database_url)
    pub = SlowRecorder()
    enqueue_unfinished(store, job, pub, 100)
    item = pub.ids[0]
    with store.session() as s:
        first = dl.claim(s, item, cap=3, host="h", worker="a:1", lease_seconds=30)
    assert first.skipped is None and first.deliveries == 1
    with store.session() as s:  # a duplicate message, another process, the lease is live
        dup = dl.claim(s, item, cap=3, host="h", worker="b:2", lease_seconds=30, owner_gone=lambda _: False)
    assert dup.skipped is not None and "duplicate delivery dropped" in dup.skipped
    with store.session() as s:
        row = s.get(Item, item)
        assert row.deliveries == 1 and row.lease_owner == "a:1"
        assert dl.beat(s, item, "a:1", 30) and not dl.beat(s, item, "b:2", 30)
    with store.session() as s:  # the holder died on this host: taken over at once, counted
        took = dl.claim(s, item, cap=3, host="h", worker="c:3", lease_seconds=30, owner_gone=lambda _: True)
    assert took.skipped is None and took.deliveries == 2 and took.item.lease_owner == "c:3"
    with store.session() as s:  # its lease expired (holder elsewhere, silent): taken over
        s.get(Item, item).lease_expires_at = utcnow() - timedelta(seconds=1)
    with store.session() as s:
        late = dl.claim(s, item, cap=3, host="h", worker="d:4", lease_seconds=30)
    assert late.skipped is None and late.deliveries == 3
    with store.session() as s:  # the old holder lost it: its heartbeat says so
        assert not dl.beat(s, item, "c:3", 30)


def test_reconciler_republishes_stranded_queued_items_only(pg_settings: Settings, job: Job) -> None:
    store = Store(pg_settings.database_url)
    enqueue_unfinished(store, job, SlowRecorder(), 100)
    with store.session() as s:
        ids = ids_to_enqueue(s, job.id, include_queued=True)
        old = utcnow() - timedelta(seconds=120)
        for i in ids[:3]:  # published long ago
            s.get(Item, i).queued_at = old
    waiting = {ids[1]}  # its message still waits in the queue: left alone
    pub = SlowRecorder(waiting=waiting)
    assert reconcile(store, pg_settings, pub) == 2
    assert sorted(pub.ids) == sorted([ids[0], ids[2]])
    again = SlowRecorder(waiting=waiting)
    assert reconcile(store, pg_settings, again) == 0  # just published: not stranded any more
    with store.session() as s:
        assert all(s.get(Item, i).status == "queued" for i in ids)



def test_the_lease_holder_may_claim_its_own_item_again(pg_settings: Settings, job: Job) -> None:
    """A transient error whose release could not be written (store down) is retried by the
    same process: its own live lease does not drop the retry."""
    store = Store(pg_settings.database_url)
    pub = SlowRecorder()
    enqueue_unfinished(store, job, pub, 100)
    with store.session() as s:
        assert dl.claim(s, pub.ids[0], cap=3, host="h", worker="a:1", lease_seconds=30).skipped is None
    with store.session() as s:
        again = dl.claim(s, pub.ids[0], cap=4, host="h", worker="a:1", lease_seconds=30)
    assert again.skipped is None and again.deliveries == 2


def test_a_lapsed_lease_fences_its_holders_late_result(pg_settings: Settings, job: Job) -> None:
    """Node a is cut off past its lease; b claims and records the item; a's late result and
    a late failure are refused (LeaseLost) and write nothing, b's result stays (issue 30)."""
    from sqlmodel import select

    from gloper_jobs.jobs.candidates import CandidateRecord
    from gloper_jobs.store import Candidate
    from gloper_jobs.store import repository as repo

    store = Store(pg_settings.database_url)
    pub = SlowRecorder()
    enqueue_unfinished(store, job, pub, 100)
    item = pub.ids[0]

    def record(lease: dl.Lease | None, name: str) -> None:
        with store.session() as s:
            repo.record_success(s, item, [CandidateRecord(name, "", True, False, 0.5, None)], choice=name,
                                seconds=1.0, width=8, height=8, foreground_fraction=None,
                                foreground_fallback=None, note=None, host="h", device="cpu", lease=lease)

    with store.session() as s:
        a = dl.claim(s, item, cap=3, host="h", worker="a:1", lease_seconds=30)
    lease_a = dl.Lease.of(a.item)
    assert lease_a is not None and lease_a.owner == "a:1"
    with store.session() as s:  # a is silent past its lease
        s.get(Item, item).lease_expires_at = utcnow() - timedelta(seconds=1)
    with store.session() as s:
        b = dl.claim(s, item, cap=3, host="h", worker="b:2", lease_seconds=30)
    lease_b = dl.Lease.of(b.item)
    assert lease_b is not None and lease_b.epoch == lease_a.epoch + 1
    record(lease_b, "from_b")
    with pytest.raises(dl.LeaseLost, match="fenced off"):
        record(lease_a, "from_a")
    with pytest.raises(dl.LeaseLost), store.session() as s:
        repo.record_failure(s, item, "late failure", None, lease=lease_a)
    with store.session() as s:
        row = s.get(Item, item)
        names = s.exec(select(Candidate.name).where(Candidate.item_id == item)).all()
    assert row.status == "done" and row.choice == "from_b" and row.error is None and list(names) == ["from_b"]
    # a lease still holds when the reconciler queued the item again but nobody claimed it since
    other = pub.ids[1]
    with store.session() as s:
        c = dl.claim(s, other, cap=3, host="h", worker="c:3", lease_seconds=30)
        dl.requeue_stale(s, [other])
    lease_c = dl.Lease.of(c.item)
    with store.session() as s:
        repo.record_failure(s, other, "bad photo", None, lease=lease_c)
        assert s.get(Item, other).status == "failed"
