"""Load: 10,000 concurrent loopback connections doing request/response, per loop.

Owns: the load workload and its figures: requests per second, latency percentiles (p50, p99,
p99.9) and memory per connection.
Not here: loop factories, child processes, gauges, tables (common.py).

Two processes per loop, both on the loop under test: an echo server (a ``Protocol``, as
servers such as uvicorn are written) and ``--connections`` stream clients, all connected before
the first request (in batches of 500, so the listen backlog never overflows). Then every
client makes ``--requests`` sequential round trips of ``--size`` random bytes, all clients at
once; each response must equal its request (a lost or corrupted byte fails the run). Each
process raises its own fd limit (RLIMIT_NOFILE) to fit its end of every connection.

- requests/s: all round trips / wall time of the request phase;
- latency: per round trip, from the client's write to the full response read;
- memory per connection: (RSS with every connection open - RSS before the first) / connections,
  for the server process (one protocol and its transport) and the client process (one stream
  reader/writer pair) separately.

With ``-r N`` the loops run N times interleaved (asyncio, uvloop, tidal, asyncio, ...) and each
figure is the median of a loop's runs; the ratio column is requests/s relative to the first
loop named.

Usage::

    python reliability/load.py -r 3                     # 10,000 connections x 10 requests
    python reliability/load.py --connections 500 --requests 3     # the CI size
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
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


async def serve(ready: Any) -> None:
    """The server process: print the port and RSS, print RSS again per stdin line, stop at EOF."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=BATCH * 2)
    print(server.sockets[0].getsockname()[1], common.rss_bytes(), flush=True)
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(common.rss_bytes(), flush=True)
    server.close()


async def load(name: str, connections: int, requests: int, size: int) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--server", name, "--connections", str(connections)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        port_text, server_rss_before = server.stdout.readline().split()
        port = int(port_text)
        rss_before = common.rss_bytes()
        started = time.perf_counter()
        streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for first in range(0, connections, BATCH):
            count = min(BATCH, connections - first)
            streams += await asyncio.gather(
                *(asyncio.open_connection("127.0.0.1", port) for _ in range(count))
            )
        connect_seconds = time.perf_counter() - started
        await asyncio.sleep(0.5)  # the server has accepted them all
        rss_connected = common.rss_bytes()
        server.stdin.write("rss\n")
        server.stdin.flush()
        server_rss_connected = int(server.stdout.readline())
        latencies: list[float] = []
        started = time.perf_counter()
        lost = await asyncio.gather(*(_client(r, w, requests, size, latencies) for r, w in streams))
        seconds = time.perf_counter() - started
        for _, writer in streams:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for _, w in streams), return_exceptions=True)
    finally:
        server.stdin.close()
        server.wait(timeout=60)
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
        "server bytes per connection": (server_rss_connected - int(server_rss_before))
        / connections,
        "client bytes per connection": (rss_connected - rss_before) / connections,
    }


def child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    limit = common.raise_fd_limit(args.connections + 1024)
    if limit < args.connections + 64:
        raise SystemExit(f"fd limit {limit} is too low for {args.connections} connections")
    loop = common.LOOPS[name]()
    try:
        if args.server:
            loop.run_until_complete(serve(None))
            return {}
        return loop.run_until_complete(load(name, args.connections, args.requests, args.size))
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=10, help="round trips per connection")
    parser.add_argument("--size", type=int, default=64, help="bytes per request")
    parser.add_argument("--loops", default="asyncio,uvloop,tidal")
    parser.add_argument("-r", "--repeat", type=int, default=1, help="interleaved runs per loop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.server:
        child(args.server, args)
        return 0
    if args.child:
        common.emit(child(args.child, args))
        return 0
    loops = common.available_loops(args.loops.split(","))
    forwarded = ["--connections", str(args.connections), "--requests", str(args.requests)]
    forwarded += ["--size", str(args.size)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in loops}
    for _ in range(args.repeat):  # interleaved: asyncio, uvloop, tidal, asyncio, ...
        for name, report in common.run_children(Path(__file__), loops, forwarded).items():
            runs[name].append(report)
    rows = []
    failed = False
    baseline = None
    for name in loops:
        errors = [r for r in runs[name] if "error" in r]
        if errors:
            rows.append([name, "CRASHED", *[""] * 8, errors[0]["error"][-200:]])
            failed = failed or name == "tidal"
            continue
        r = {key: statistics.median(run[key] for run in runs[name]) for key in runs[name][0]}
        r["lost"] = sum(run["lost"] for run in runs[name])
        failed = failed or (name == "tidal" and r["lost"] > 0)
        baseline = baseline or r["req/s"]
        rows.append(
            [
                name,
                f"{r['req/s']:,.0f}",
                f"{r['req/s'] / baseline:.2f}x",
                f"{r['p50 ms']:.2f}",
                f"{r['p99 ms']:.2f}",
                f"{r['p99.9 ms']:.2f}",
                f"{r['server bytes per connection'] / 1024:.1f}",
                f"{r['client bytes per connection'] / 1024:.1f}",
                f"{r['connect s']:.1f}",
                r["lost"],
            ]
        )
    print(
        f"load: {args.connections:,} concurrent loopback connections x {args.requests} "
        f"request/response round trips of {args.size} B, server and clients in two processes; "
        f"median of {args.repeat} interleaved run(s) per loop"
    )
    print(
        common.table(
            [
                "loop",
                "requests/s",
                f"vs {loops[0]}",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "server KiB/conn",
                "client KiB/conn",
                "connect all (s)",
                "lost",
            ],
            rows,
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
