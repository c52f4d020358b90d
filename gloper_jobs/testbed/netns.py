"""A cluster of network namespaces for partition faults (issue 30): a head, worker nodes, links.

Layout (every address on a link made here, nothing routed anywhere else)::

    host (submitter)  10.231.0.1/30 ── 10.231.0.2/30  ┐
    node n1           10.231.1.2/30 ── 10.231.1.1/30  ├ head: redis-server, PostgreSQL
    node n2           10.231.2.2/30 ── 10.231.2.1/30  ┘

The head and each node are namespaces of their own (``gpn-head``, ``gpn-n1``, ...), joined
by one veth pair per node; the submitter (the test process) stays on the host, on a
veth of its own. Each side reaches the head at its own link's address
(:meth:`NetCluster.head_addr`), so a fault on one link touches no other.

Faults are nftables rules in the head's namespace on that node's link, in both
directions (input and output hooks): :meth:`cut` drops every packet (no reset: the peers
see silence), or only those of some ports (a node that reaches Redis but not
PostgreSQL), :meth:`lossy` drops a share of packets at random. The kernel here has no
``netem`` (``CONFIG_NET_SCH_NETEM`` unset), so delay is added by :mod:`.delay_relay`, a
relay in the head's namespace through which the slow node connects.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); :func:`unavailable` says why not.
Only one cluster runs at a time on a machine (a lock file); namespaces and veths are
removed on exit, and leftovers of an earlier run (killed before its cleanup) by name
prefix when the next one starts. Every wait is bounded in time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

#: every namespace and host-side veth this module makes starts with this
PREFIX = "gpn"
#: the links' addresses: 10.231.<link>.x/30 (link 0 is the host's)
SUBNET = "10.231"
LOCK = Path("/tmp/gloper-netns.lock")
TABLE = "gloper_faults"


def _run(*argv: str, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, input=input_text)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why a namespace cluster cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {package})"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        nft = _run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", TABLE, check=False)
        if nft.returncode != 0:
            return f"nftables does not work in a namespace: {nft.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def cleanup_leftovers() -> list[str]:
    """Delete namespaces and host veths named ``gpn-*`` (an earlier run's); returns their names."""
    removed = []
    for line in _run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{PREFIX}-"):
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    for line in _run("ip", "-o", "link", "show").stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            dev = parts[1].strip().split("@")[0]
            if dev.startswith(f"{PREFIX}-"):
                _run("ip", "link", "del", dev, check=False)
                removed.append(dev)
    return removed


@dataclass
class NetCluster:
    """The namespaces and links of one run; use as a context manager (always cleaned up)."""

    nodes: Sequence[str] = ("n1", "n2")
    #: per node (or "host"): the nftables rules now in force on its link
    _faults: dict[str, list[str]] = field(default_factory=dict)
    _lock: IO[str] | None = None

    @property
    def head(self) -> str:
        return f"{PREFIX}-head"

    def ns(self, node: str) -> str:
        """The namespace of ``node``."""
        return f"{PREFIX}-{node}"

    def _link(self, node: str) -> int:
        return 0 if node == "host" else list(self.nodes).index(node) + 1

    def head_addr(self, node: str) -> str:
        """The head's address on ``node``'s link ("host": the submitter's)."""
        return f"{SUBNET}.{self._link(node)}.{2 if node == 'host' else 1}"

    def head_addrs(self) -> list[str]:
        """Every address of the head (what its servers listen on)."""
        return [self.head_addr("host"), *(self.head_addr(n) for n in self.nodes)]

    def head_dev(self, node: str) -> str:
        """The head-side veth of ``node``'s link (inside the head's namespace)."""
        return f"{PREFIX}h-{node}"

    def prefix(self, node: str) -> list[str]:
        """The argv prefix that runs a command in ``node``'s namespace (``head`` too)."""
        return ["ip", "netns", "exec", self.head if node == "head" else self.ns(node)]

    # --- lifecycle -------------------------------------------------------------
    def __enter__(self) -> NetCluster:
        self._lock = LOCK.open("w")
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another namespace cluster held {LOCK} for 600 s") from None
                time.sleep(1)
        try:
            cleanup_leftovers()  # under the lock: only a dead run's
            self._make()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make(self) -> None:
        head = self.head
        _run("ip", "netns", "add", head)
        _run("ip", "-n", head, "link", "set", "lo", "up")
        # the host's link: one end stays here (the submitter's), the other goes to the head
        host_dev, peer = f"{PREFIX}-host", self.head_dev("host")
        _run("ip", "link", "add", host_dev, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", head)
        _run("ip", "addr", "add", f"{SUBNET}.0.1/30", "dev", host_dev)
        _run("ip", "link", "set", host_dev, "up")
        _run("ip", "-n", head, "addr", "add", f"{self.head_addr('host')}/30", "dev", peer)
        _run("ip", "-n", head, "link", "set", peer, "up")
        for node in self.nodes:
            ns, k = self.ns(node), self._link(node)
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            dev, peer = f"{PREFIX}-{node}", self.head_dev(node)
            _run("ip", "link", "add", dev, "type", "veth", "peer", "name", peer)
            _run("ip", "link", "set", dev, "netns", ns)
            _run("ip", "link", "set", peer, "netns", head)
            _run("ip", "-n", ns, "addr", "add", f"{SUBNET}.{k}.2/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", head, "addr", "add", f"{self.head_addr(node)}/30", "dev", peer)
            _run("ip", "-n", head, "link", "set", peer, "up")
        self._apply()

    def close(self) -> None:
        """Remove every namespace and veth of the cluster (processes still inside are the caller's)."""
        try:
            cleanup_leftovers()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    # --- faults ------------------------------------------------------------------
    def _apply(self) -> None:
        rules_in = [r.format(dir="iifname", port="dport") for rules in self._faults.values() for r in rules]
        rules_out = [r.format(dir="oifname", port="sport") for rules in self._faults.values() for r in rules]
        script = (f"table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n"
                  "  chain input { type filter hook input priority 0; policy accept;\n"
                  + "".join(f"    {r}\n" for r in rules_in) + "  }\n"
                  "  chain output { type filter hook output priority 0; policy accept;\n"
                  + "".join(f"    {r}\n" for r in rules_out) + "  }\n}\n")
        _run(*self.prefix("head"), "nft", "-f", "-", input_text=script)

    def cut(self, node: str, ports: Sequence[int] | None = None) -> None:
        """Drop every packet on ``node``'s link both ways (only those to and from the head's
        ``ports`` when given). No reset is sent: connections go silent."""
        dev = self.head_dev(node)
        if ports:
            self._faults[node] = [f'{{dir}} "{dev}" tcp {{port}} {p} drop' for p in ports]
        else:
            self._faults[node] = [f'{{dir}} "{dev}" drop']
        self._apply()

    def lossy(self, node: str, percent: int) -> None:
        """Drop ``percent`` % of the packets on ``node``'s link, at random, both ways."""
        dev = self.head_dev(node)
        self._faults[node] = [f'{{dir}} "{dev}" numgen random mod 100 < {int(percent)} drop']
        self._apply()

    def heal(self, node: str | None = None) -> None:
        """Lift the faults on ``node``'s link (every link when None)."""
        if node is None:
            self._faults.clear()
        else:
            self._faults.pop(node, None)
        self._apply()

    def dropped(self) -> str:
        """The rule set in force with its counters (for a log)."""
        return _run(*self.prefix("head"), "nft", "list", "table", "inet", TABLE, check=False).stdout


@contextmanager
def net_cluster(nodes: Sequence[str] = ("n1", "n2")) -> Iterator[NetCluster]:
    """A :class:`NetCluster`, removed on exit whatever happened."""
    with NetCluster(nodes) as cluster:
        yield cluster
