"""Partitions and a slow link (issue 30): worker nodes in network namespaces of their own,
the head's Redis and PostgreSQL in another, the submitter on the host
(:mod:`gloper_jobs.testbed.netns`, :mod:`gloper_jobs.testbed.partition`).

Each test runs one fault on a job of the fake ``slow_logger`` method, with the lease
(``GLOPER_STALE_SECONDS``) and the fault shortened from the benchmark's 90 s to
``FAULT_S`` so that a test takes about two minutes. Skipped where namespaces cannot be
made (not root, no iproute2 or nftables), saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.testbed.netns import unavailable

_why = unavailable()
pytestmark = [pytest.mark.queue, pytest.mark.skipif(_why is not None, reason=f"partition tests: {_why}")]

#: the fault's length in the tests (the benchmark's is 90 s)
FAULT_S = 20.0
#: the lease: shorter than the fault, so the cut-off node's items are taken over during it
LEASE_S = 8.0
ENV = {
    "GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods",
    "GLOPER_STALE_SECONDS": str(LEASE_S), "GLOPER_HEARTBEAT_SECONDS": "2", "GLOPER_STRANDED_SECONDS": "30",
    "GLOPER_STORE_TCP_TIMEOUT": "8", "GLOPER_STORE_CONNECT_TIMEOUT": "5", "GLOPER_BROKER_SOCKET_TIMEOUT": "8",
    "GLOPER_BROKER_HEALTH_CHECK": "5", "GLOPER_RETRY_BACKOFF": "2", "GLOPER_RETRY_BACKOFF_MAX": "8",
    "GLOPER_MAX_RETRIES": "20",
}


def _jobs(tmp: Path, hold: Path | None = None, photos: int = 40) -> tuple[list[str], list[str]]:
    """The main job (``photos``, 2 s each) and the probe submitted at the heal (40 photos, 1 s)."""
    make_dataset(tmp / "photos", per_species=photos // 4, size=32)
    make_dataset(tmp / "probe", per_species=10, size=32)
    base = ["submit", "extract", "--method", "slow_logger", "--no-foreground"]
    main = [*base[:2], str(tmp / "photos"), *base[2:], "--param", "seconds=2", "--param", f"log={tmp / 'runs.log'}"]
    if hold is not None:
        main += ["--param", f"hold={hold}"]
    probe = [*base[:2], str(tmp / "probe"), *base[2:], "--param", "seconds=1"]
    return main, probe


def _check(result: dict[str, object]) -> None:
    assert result["lost"] == 0 and result["duplicate_rows"] == 0, result
    probe = result["probe"]
    assert isinstance(probe, dict) and probe["lost"] == 0 and probe["duplicate_rows"] == 0, result
    back = result["heal_to_consuming_s"]
    assert isinstance(back, dict) and all(v is not None and v <= 60 for v in back.values()), result


def test_node_cut_off_is_fenced_and_taken_over(tmp_path: Path) -> None:
    from gloper_jobs.testbed.partition import node_fault, partition_rig

    hold = tmp_path / "hold"
    # 16 photos: the other node empties the queue during the cut, so the cut-off node's
    # items, published again at the end of the queue, are claimed by it before the heal
    # (a result that arrives while its item waits unclaimed in the queue is accepted)
    main, probe = _jobs(tmp_path, hold, photos=16)
    with partition_rig(tmp_path, ENV) as rig:
        result = node_fault(rig, "cut", main, probe, seconds=FAULT_S, hold=hold, workdir=tmp_path / "cut")
    print(result)
    _check(result)
    # the cut-off node's running items: taken over by the other node within lease + a minute,
    # recorded by it, and the cut-off node's late results fenced off (one per item, none written)
    assert result["victim_items_at_cut"] >= 1
    taken = result["taken_over_s"]
    assert isinstance(taken, float) and taken <= LEASE_S + 60, result
    assert result["taken_over_by"] == ["n2"], result
    assert result["stale_writes_fenced"] == result["victim_items_at_cut"], result
    assert result["status_listed_lost"] is True, result


@pytest.mark.parametrize("fault", ["no_store", "no_broker"])
def test_node_reaches_one_server_only(tmp_path: Path, fault: str) -> None:
    from gloper_jobs.testbed.partition import node_fault, partition_rig

    main, probe = _jobs(tmp_path)
    with partition_rig(tmp_path, ENV) as rig:
        result = node_fault(rig, fault, main, probe, seconds=FAULT_S, workdir=tmp_path / fault)
    print(result)
    _check(result)


def test_slow_lossy_link_for_a_whole_job(tmp_path: Path) -> None:
    from gloper_jobs.testbed.partition import partition_rig, slow_link

    main, _ = _jobs(tmp_path, photos=20)
    with partition_rig(tmp_path, ENV) as rig:
        result = slow_link(rig, main, delay=0.3, loss=5, workdir=tmp_path / "slow")
    print(result)
    assert result["lost"] == 0 and result["duplicate_rows"] == 0, result
    done_by = result["done_by"]
    assert isinstance(done_by, dict) and done_by["n2"] >= 1 and done_by["n1"] >= 1, result


def test_submitter_cut_off_mid_submit_then_again(tmp_path: Path) -> None:
    from gloper_jobs.testbed.partition import partition_rig, submitter_cut

    make_dataset(tmp_path / "big", per_species=500, size=8)  # 2,000 photos
    submit = ["submit", "extract", str(tmp_path / "big"), "--method", "noop", "--no-foreground"]
    with partition_rig(tmp_path, ENV) as rig:
        result = submitter_cut(rig, submit, after_published=300)
    print(result)
    assert result["items"] == 2000 and result["second_exit"] == 0, result
    assert result["enqueued_twice"] == 0 and result["duplicate_rows"] == 0, result
    assert result["items_without_message"] == 0 and result["messages"] == 2000, result
