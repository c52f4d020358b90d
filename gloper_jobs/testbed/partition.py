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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlmodel import col, select

from gloper_jobs.store import Item, Store
from gloper_jobs.testbed import services as qs
from gloper_jobs.testbed.cluster import Cluster, candidate_rows, counts
from gloper_jobs.testbed.netns import NetCluster

#: what a worker logs for each result it dropped because its lease lapsed (jobs.recording)
FENCED_MARK = "fenced off"


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
    return sum(log.read_text(errors="replace").count(FENCED_MARK) for _, _, log in rig.cluster.workers)


def judge(store: Store, job_id: int, n_items: int) -> dict[str, int]:
    """Items lost (not done) and duplicate candidate rows of a job."""
    final = counts(store, job_id)
    return {"items": n_items, "done": final.get("done", 0), "lost": n_items - final.get("done", 0),
            "duplicate_rows": sum(1 for _, _, c in candidate_rows(store, job_id) if c > 1)}
