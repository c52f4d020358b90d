"""A TCP relay that delays every byte by a fixed time each way: a slow link without netem.

The kernel of the machines here has no ``netem`` qdisc (``CONFIG_NET_SCH_NETEM`` unset),
so :mod:`.netns` puts this relay in the head's namespace on a slow node's link: the node
connects to the relay's port, the relay to the real server on the head's loopback. Each
chunk read from one side is written to the other ``--delay`` s after it arrived, in
order, so a round trip through it takes at least twice the delay; packet loss on the
same link is the kernel's (nftables, :meth:`.netns.NetCluster.lossy`). It exits after
``--lifetime`` s at the latest.

    python -m gloper_jobs.testbed.delay_relay --delay 0.3 10.231.1.1:7001=127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` s after it was read."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    reading = asyncio.ensure_future(read())
    try:
        await write()
    finally:
        reading.cancel()


async def _serve(listen: tuple[str, int], target: tuple[str, int], delay: float) -> asyncio.Server:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(_pipe(client_r, server_w, delay), _pipe(server_r, client_w, delay))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (client_w, server_w):
                w.close()

    return await asyncio.start_server(handle, *listen)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _main(routes: list[str], delay: float, lifetime: float) -> None:
    servers = []
    for route in routes:
        listen, _, target = route.partition("=")
        servers.append(await _serve(_address(listen), _address(target), delay))
    print("relaying", flush=True)
    await asyncio.sleep(lifetime)
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("routes", nargs="+", help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    ap.add_argument("--delay", type=float, required=True, help="seconds added to every byte, each way")
    ap.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds")
    args = ap.parse_args(argv)
    asyncio.run(_main(args.routes, args.delay, args.lifetime))


if __name__ == "__main__":
    main()
