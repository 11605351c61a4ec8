"""Load: 10,000 concurrent loopback connections doing request/response, per loop.

Owns: the load workload and its figures: requests per second, latency percentiles (p50, p99,
p99.9) and memory per connection.
Not here: loop factories, child processes, gauges, tables (common.py).

One process per loop holds both ends: an echo server (a ``Protocol``, as servers such as
uvicorn are written) and ``--connections`` stream clients, all connected before the first
request (in batches of 500, so the listen backlog never overflows). Then every client makes
``--requests`` sequential round trips of ``--size`` random bytes, all clients at once; each
response must equal its request (a lost or corrupted byte fails the run). The process raises its
own fd limit (RLIMIT_NOFILE) to fit both ends of every connection.

- requests/s: all round trips / wall time of the request phase;
- latency: per round trip, from the client's write to the full response read;
- memory per connection: (RSS with every connection open - RSS before the first) / connections,
  for both ends together (one client stream and one server protocol).

Usage::

    python reliability/load.py                          # 10,000 connections x 10 requests
    python reliability/load.py --connections 500 --requests 3     # the CI size
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reliability import common

BATCH = 500


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _client(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    requests: int,
    size: int,
    latencies: list[float],
) -> int:
    lost = 0
    for _ in range(requests):
        payload = os.urandom(size)
        started = time.perf_counter()
        writer.write(payload)
        response = await reader.readexactly(size)
        latencies.append(time.perf_counter() - started)
        lost += response != payload
    return lost


async def load(connections: int, requests: int, size: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rss_before = common.rss_bytes()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=BATCH * 2)
    port = server.sockets[0].getsockname()[1]
    started = time.perf_counter()
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for first in range(0, connections, BATCH):
        count = min(BATCH, connections - first)
        streams += await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(count))
        )
    connect_seconds = time.perf_counter() - started
    await asyncio.sleep(0.2)  # the server side has accepted them all
    rss_connected = common.rss_bytes()
    latencies: list[float] = []
    started = time.perf_counter()
    lost = await asyncio.gather(*(_client(r, w, requests, size, latencies) for r, w in streams))
    seconds = time.perf_counter() - started
    for _, writer in streams:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in streams), return_exceptions=True)
    server.close()
    await server.wait_closed()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "connections": connections,
        "requests": len(latencies),
        "lost": sum(lost),
        "req/s": len(latencies) / seconds,
        "p50 ms": pct(0.50),
        "p99 ms": pct(0.99),
        "p99.9 ms": pct(0.999),
        "mean ms": statistics.fmean(latencies) * 1000,
        "connect s": connect_seconds,
        "bytes per connection": (rss_connected - rss_before) / connections,
    }


def child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    limit = common.raise_fd_limit(2 * args.connections + 1024)
    if limit < 2 * args.connections + 64:
        raise SystemExit(f"fd limit {limit} is too low for {args.connections} connections")
    loop = common.LOOPS[name]()
    try:
        return loop.run_until_complete(load(args.connections, args.requests, args.size))
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=10, help="round trips per connection")
    parser.add_argument("--size", type=int, default=64, help="bytes per request")
    parser.add_argument("--loops", default="asyncio,uvloop,tidal")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        common.emit(child(args.child, args))
        return 0
    loops = common.available_loops(args.loops.split(","))
    forwarded = ["--connections", str(args.connections), "--requests", str(args.requests)]
    forwarded += ["--size", str(args.size)]
    reports = common.run_children(Path(__file__), loops, forwarded, timeout=1800)
    rows = []
    failed = False
    for name in loops:
        r = reports[name]
        if "error" in r:
            rows.append([name, "CRASHED", "", "", "", "", "", r["error"][-200:]])
            failed = failed or name == "tidal"
            continue
        failed = failed or (name == "tidal" and r["lost"] > 0)
        rows.append(
            [
                name,
                f"{r['req/s']:,.0f}",
                f"{r['p50 ms']:.2f}",
                f"{r['p99 ms']:.2f}",
                f"{r['p99.9 ms']:.2f}",
                f"{r['bytes per connection'] / 1024:.1f}",
                f"{r['connect s']:.1f}",
                r["lost"],
            ]
        )
    print(
        f"load: {args.connections:,} concurrent loopback connections x {args.requests} "
        f"request/response round trips of {args.size} B, client and server in one process"
    )
    print(
        common.table(
            [
                "loop",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "KiB per connection",
                "connect all (s)",
                "lost",
            ],
            rows,
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
