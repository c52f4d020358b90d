"""The partition faults' rig (issue 30), shared by ``tests/test_queue_partition.py`` and
``bench.faults``: the head's servers in a namespace, a worker per node namespace, the
submitter on the host, and what the faults are judged by.

:func:`partition_rig` makes the :class:`~.netns.NetCluster`, starts redis-server and
PostgreSQL in the head's namespace listening on each link's head address, and yields a
:class:`Rig` whose :attr:`Rig.cluster` is the host's (the submitter's) view of them.
:meth:`Rig.start_node` starts ``gloper worker --gpus cpu --name NODE`` inside ``NODE``'s
namespace with the URLs of its own link (or of a :mod:`.delay_relay` for a slow link).
Everything is stopped and removed on exit, also on failure.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import col, select

from gloper_jobs.store import Item, Store
from gloper_jobs.testbed import services as qs
from gloper_jobs.testbed.cluster import Cluster, candidate_rows, counts
from gloper_jobs.testbed.netns import NetCluster

#: what a worker logs for each result (or failure) it dropped because its lease lapsed
#: (jobs.recording, jobs.execution)
FENCED_MARKS = ("(stale result dropped)", "(stale failure dropped)")


@dataclass
class Rig:
    """The servers, namespaces and nodes of one partition run."""

    net: NetCluster
    redis: qs.RedisServer
    pg: qs.PostgresServer
    database: str
    cluster: Cluster
    relays: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: node -> (Redis port, PostgreSQL port) of its delay relay
    relay_ports: dict[str, tuple[int, int]] = field(default_factory=dict)

    def node_urls(self, node: str, via_relay: bool = False) -> dict[str, str]:
        """``node``'s GLOPER_DATABASE_URL and GLOPER_BROKER_URL (through its relay if asked)."""
        addr = self.net.head_addr(node)
        if via_relay:
            r_port, p_port = self.relay_ports[node]
            return {"GLOPER_BROKER_URL": f"redis://{addr}:{r_port}/0",
                    "GLOPER_DATABASE_URL": f"postgresql://postgres@{addr}:{p_port}/{self.database}"}
        return {"GLOPER_BROKER_URL": self.redis.url_at(addr),
                "GLOPER_DATABASE_URL": self.pg.url_at(addr, self.database)}

    def slow_link(self, node: str, delay: float, lifetime: float = 1800) -> None:
        """Start a relay adding ``delay`` s each way on ``node``'s link (before its worker starts)."""
        ports = (qs.free_port(), qs.free_port())
        addr = self.net.head_addr(node)
        routes = [f"{addr}:{ports[0]}=127.0.0.1:{self.redis.port}", f"{addr}:{ports[1]}=127.0.0.1:{self.pg.port}"]
        proc = subprocess.Popen([*self.net.prefix("head"), sys.executable, "-m", "gloper_jobs.testbed.delay_relay",
                                 "--delay", str(delay), "--lifetime", str(lifetime), *routes],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.relays[node] = proc
        self.relay_ports[node] = ports
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # listening inside the head's namespace (the host cannot see it)?
            out = subprocess.run([*self.net.prefix("head"), "ss", "-ltnH"], capture_output=True, text=True,
                                 timeout=10).stdout
            if all(f"{addr}:{p}" in out for p in ports):
                return
            time.sleep(0.2)
        raise TimeoutError(f"the delay relay on {node}'s link did not listen within 20 s")

    def start_node(self, node: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``gloper worker --gpus cpu --name NODE`` in ``node``'s namespace, on its own link."""
        urls = self.node_urls(node, via_relay=node in self.relays)
        return self.cluster.start_worker(node, *extra, env={**urls, **(env or {})}, prefix=self.net.prefix(node))

    def close(self) -> None:
        for proc in self.relays.values():
            with suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
        self.relays.clear()


@contextmanager
def partition_rig(workdir: Path | None = None, extra_env: dict[str, str] | None = None,
                  nodes: Sequence[str] = ("n1", "n2")) -> Iterator[Rig]:
    """Namespaces, the head's servers and a :class:`Rig` over them; all removed on exit."""
    work = workdir or Path(tempfile.mkdtemp(prefix="gloper-partition-"))
    with NetCluster(nodes) as net:
        binds = (*net.head_addrs(), "127.0.0.1")  # the first is the host's: it waits on that one
        redis = qs.start_redis(binds=binds, prefix=tuple(net.prefix("head")))
        pg = None
        rig = None
        try:
            pg = qs.start_postgres(listen=binds, prefix=tuple(net.prefix("head")))
            host = net.head_addr("host")
            qs.wait_port(pg.port, host=host)
            admin = pg.url_at(host, "postgres")
            url, name = qs.create_database(admin)
            cluster = Cluster(url, redis.url_at(host), work, extra_env=dict(extra_env or {}))
            rig = Rig(net, redis, pg, name, cluster)
            yield rig
        finally:
            if rig is not None:
                rig.cluster.stop()
                rig.close()
            redis.remove()
            if pg is not None:
                pg.stop()


# --- what the faults are judged by --------------------------------------------
def claimed_after(store: Store, node: str, since: datetime) -> datetime | None:
    """When ``node`` first claimed an item (of any job) after ``since``; None if it has not."""
    with store.session() as s:
        row = s.exec(select(Item.started_at).where(col(Item.worker).startswith(f"{node}@"),
                                                   col(Item.started_at) > since)
                     .order_by(col(Item.started_at)).limit(1)).first()
    return row


def fenced_writes(rig: Rig) -> int:
    """Results the workers dropped because their lease had lapsed (their log lines)."""
    texts = [log.read_text(errors="replace") for _, _, log in rig.cluster.workers]
    return sum(text.count(mark) for text in texts for mark in FENCED_MARKS)


def judge(store: Store, job_id: int, n_items: int) -> dict[str, int]:
    """Items lost (not done) and duplicate candidate rows of a job."""
    final = counts(store, job_id)
    return {"items": n_items, "done": final.get("done", 0), "lost": n_items - final.get("done", 0),
            "duplicate_rows": sum(1 for _, _, c in candidate_rows(store, job_id) if c > 1)}


# --- the faults, run the same way by the tests and the benchmark --------------
def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def wait_ready(rig: Rig, nodes: Sequence[str], timeout: float = 240) -> None:
    """Wait until every node's Celery worker says it is ready (a slow link's boot is slow)."""
    logs = {name: log for name, _, log in rig.cluster.workers if name in nodes}
    _wait(lambda: all(" ready." in log.read_text(errors="replace") for log in logs.values()), timeout,
          f"{', '.join(nodes)} to be ready", rig)


def _ns_inode(rig: Rig, node: str) -> str:
    import os

    return str(os.stat(f"/run/netns/{rig.net.ns(node)}").st_ino)


def _submit(rig: Rig, args: Sequence[str]) -> int:
    """Run ``gloper submit ARGS`` on the host; the job id (its last line)."""
    return int(rig.cluster.gloper(*args, timeout=600).stdout.strip().splitlines()[-1])


def _wait(predicate: Callable[[], bool], timeout: float, what: str, rig: Rig) -> None:
    rig.cluster.wait_for(predicate, timeout, what)


def node_fault(rig: Rig, fault: str, submit: Sequence[str], probe: Sequence[str], *, seconds: float,
               victim: str = "n1", other: str = "n2", hold: Path | None = None,
               workdir: Path, concurrency: int = 2, drain_timeout: float = 900) -> dict[str, object]:
    """One node fault on a fresh pair of nodes: ``cut`` (every packet dropped both ways),
    ``no_store`` (the victim reaches Redis, not PostgreSQL) or ``no_broker`` (the reverse),
    for ``seconds``, in the middle of the victim's items, then healed.

    ``submit`` is the job's ``gloper submit`` arguments, ``probe`` a small job submitted at
    the heal so that both nodes have work to be seen taking. With ``hold`` (the fake
    method's ``hold`` file) the victim's running items stay running until 3 s after the
    heal, so their late results meet the items' new holder (the fence). Returns what the
    fault is judged by."""
    from gloper_jobs.store.models import utcnow
    from gloper_jobs.testbed.cluster import drained, items

    cluster = rig.cluster
    store = cluster.store()
    job = _submit(rig, submit)
    n_items = sum(counts(store, job).values())
    workdir.mkdir(parents=True, exist_ok=True)
    for node in (victim, other):
        rig.start_node(node, "--concurrency", str(concurrency))
    def victim_busy() -> bool:
        rows = items(store, job).values()
        mine = [i for i in rows if (i.worker or "").startswith(f"{victim}@")]
        return any(i.status == "done" for i in mine) and any(i.status == "running" for i in mine)

    _wait(victim_busy, 300, f"{victim} to finish an item and run another", rig)
    if hold is not None:
        hold.write_text(_ns_inode(rig, victim))
    ports = {"cut": None, "no_store": [rig.pg.port], "no_broker": [rig.redis.port]}[fault]
    rig.net.cut(victim, ports)
    t_cut, at_cut = time.monotonic(), utcnow()
    time.sleep(1.0)  # a write of the victim's in flight at the cut lands or not; none after it
    held = {i.rel_path for i in items(store, job).values()
            if i.status == "running" and (i.worker or "").startswith(f"{victim}@")}
    status_lost = False
    while time.monotonic() - t_cut < seconds:  # `gloper status` meanwhile
        if not status_lost:
            text = cluster.gloper("status", str(job)).stdout
            status_lost = "lost workers" in text and f"{victim}@" in text.split("lost workers", 1)[1]
        time.sleep(min(2.0, max(0.0, seconds - (time.monotonic() - t_cut))))
    rig.net.heal(victim)
    t_heal, at_heal = time.monotonic(), utcnow()
    probe_job = _submit(rig, probe)
    if hold is not None:
        time.sleep(3)
        hold.unlink()
    back: dict[str, float | None] = {victim: None, other: None}
    while time.monotonic() - t_heal < 120 and None in back.values():
        for node in back:
            if back[node] is None:
                when = claimed_after(store, node, at_heal)
                if when is not None:
                    back[node] = round((when - at_heal).total_seconds(), 1)
        time.sleep(0.5)
    _wait(lambda: drained(store, job) and drained(store, probe_job), drain_timeout, "both jobs to drain", rig)
    to_drained = round(time.monotonic() - t_heal, 1)
    rows = items(store, job)
    # when the other node claimed each of the victim's items (the last of them): the takeover
    claims = [(_utc(started) - at_cut).total_seconds() for p in held
              if (rows[p].worker or "").startswith(f"{other}@") and (started := rows[p].started_at) is not None]
    taken_over = round(max(claims), 1) if held and len(claims) == len(held) else None
    result: dict[str, object] = {
        "fault": fault, "fault_s": seconds, **judge(store, job, n_items),
        "probe": judge(store, probe_job, sum(counts(store, probe_job).values())),
        "victim_items_at_cut": len(held),
        "taken_over_s": taken_over,
        "taken_over_by": sorted({(rows[p].worker or "?").split("@")[0] for p in held}),
        "status_listed_lost": status_lost,
        "heal_to_consuming_s": back,
        "last_fault_to_drained_s": to_drained,
        "stale_writes_fenced": fenced_writes(rig),
        "max_deliveries": max(r.deliveries for r in rows.values()),
        "cut_at": at_cut.isoformat(),
    }
    logs = [log for _, _, log in cluster.workers]
    cluster.stop()
    for log in logs:  # kept per fault (the next fault's nodes write new ones)
        log.rename(workdir / log.name)
    return result


def slow_link(rig: Rig, submit: Sequence[str], *, delay: float, loss: int, workdir: Path,
              slow: str = "n2", other: str = "n1", concurrency: int = 2,
              drain_timeout: float = 900) -> dict[str, object]:
    """A whole job with ``slow``'s link adding ``delay`` s each way (a relay) and dropping
    ``loss`` % of its packets at random (both ways): nothing lost or doubled, both nodes work."""
    from gloper_jobs.testbed.cluster import drained, items

    cluster = rig.cluster
    store = cluster.store()
    rig.slow_link(slow, delay)
    rig.net.lossy(slow, loss)
    for node in (other, slow):
        rig.start_node(node, "--concurrency", str(concurrency))
    t0 = time.monotonic()
    wait_ready(rig, (other, slow))
    ready_s = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    job = _submit(rig, submit)
    n_items = sum(counts(store, job).values())
    _wait(lambda: drained(store, job), drain_timeout, "the job to drain", rig)
    job_s = round(time.monotonic() - t0, 1)
    rows = items(store, job).values()
    result: dict[str, object] = {
        "fault": f"{delay * 1000:.0f} ms each way + {loss} % loss on {slow}'s link, whole job",
        **judge(store, job, n_items),
        "done_by": {n: sum(1 for r in rows if (r.worker or "").startswith(f"{n}@")) for n in (other, slow)},
        "stale_writes_fenced": fenced_writes(rig), "max_deliveries": max(r.deliveries for r in rows),
        "submit_to_drained_s": job_s, "nodes_ready_s": ready_s, "heal_to_consuming_s": None, "last_fault_to_drained_s": 0.0,
    }
    logs = [log for _, _, log in cluster.workers]
    cluster.stop()
    rig.net.heal(slow)
    rig.close()
    workdir.mkdir(parents=True, exist_ok=True)
    for log in logs:
        log.rename(workdir / log.name)
    return result


def _queued_task_ids(rig: Rig) -> list[str]:
    """The task ids of every message waiting in the Redis queues (kombu's JSON envelopes)."""
    import json

    import redis

    client = redis.Redis.from_url(rig.cluster.broker_url)
    ids = []
    for key in client.keys("extract.cpu*"):
        if client.type(key) == b"list":
            ids += [json.loads(raw)["headers"]["id"] for raw in client.lrange(key, 0, -1)]
    return ids


def submitter_cut(rig: Rig, submit: Sequence[str], *, after_published: int, batch: int = 100,
                  exit_timeout: float = 180) -> dict[str, object]:
    """``gloper submit`` (no worker running) with the submitter's link cut once
    ``after_published`` messages are in the queue; healed when it exited; then the same
    command again. Judged by the rows, the messages (each item's once) and the second run."""
    import redis

    from gloper_jobs.testbed.cluster import GLOPER, items

    cluster = rig.cluster
    env = {**cluster.env, "GLOPER_SUBMIT_BATCH": str(batch)}
    client = redis.Redis.from_url(cluster.broker_url, socket_timeout=5)
    first = subprocess.Popen([*GLOPER, *submit], env=env, cwd=cluster.workdir, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if int(client.llen("extract.cpu")) >= after_published:
            break
        time.sleep(0.05)
    else:
        first.kill()
        raise AssertionError(f"gloper submit published fewer than {after_published} messages before it ended")
    rig.net.cut("host")
    t_cut = time.monotonic()
    try:
        out, err = first.communicate(timeout=exit_timeout)
    except subprocess.TimeoutExpired:
        first.kill()
        out, err = first.communicate()
    cut_s = round(time.monotonic() - t_cut, 1)
    rig.net.heal("host")
    t_heal = time.monotonic()
    second = subprocess.run([*GLOPER, *submit], env=env, cwd=cluster.workdir, capture_output=True, text=True,
                            timeout=600)
    store = cluster.store()
    job = int(second.stdout.strip().splitlines()[-1]) if second.returncode == 0 else None
    ids = _queued_task_ids(rig)
    rows = items(store, job).values() if job is not None else []
    unfinished = {r.id for r in rows if r.status in ("pending", "queued")}
    queued_ids = {int(t.rsplit("-", 1)[1]) for t in ids}
    return {
        "fault": "submitter cut off mid `gloper submit`, then the same command again",
        "items": len(rows), "first_exit": first.returncode, "first_error": (err.strip().splitlines() or [""])[-1],
        "first_ran_after_cut_s": cut_s, "second_exit": second.returncode,
        "second_output": second.stdout.strip().splitlines()[:2] + second.stderr.strip().splitlines()[-2:],
        "messages": len(ids), "enqueued_twice": len(ids) - len(set(ids)),
        "items_without_message": len(unfinished - queued_ids),
        "lost": len(unfinished - queued_ids), "duplicate_rows": len(rows) - len({r.rel_path for r in rows}),
        "heal_to_second_done_s": round(time.monotonic() - t_heal, 1),
        "stale_writes_fenced": 0, "heal_to_consuming_s": None,
    }
