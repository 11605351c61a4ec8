"""Memory per socket transport: tidal's and asyncio's, measured with tracemalloc.

Opens N connected socket pairs, wraps one end of each in a transport (``loop.connect_accepted_
socket`` with a plain ``asyncio.Protocol``), and reports the bytes Python allocated per transport
(the transport object, its buffers and registrations; the sockets themselves are allocated
before measuring). Also: whether a method can be replaced on a live transport (``transport.write
= ...``), as code and test suites do on asyncio's transports.

    python benchmarks/transport_memory.py [-n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import socket
import tracemalloc
from collections.abc import Callable

import tidal

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "tidal": tidal.new_event_loop,
}


def measure(factory: Callable[[], asyncio.AbstractEventLoop], count: int) -> tuple[float, bool]:
    """Bytes allocated per transport, and whether ``transport.write`` can be replaced."""
    loop = factory()
    pairs = [socket.socketpair() for _ in range(count)]
    transports: list[asyncio.BaseTransport] = []

    async def open_all() -> None:
        for mine, _ in pairs:
            transport, _protocol = await loop.connect_accepted_socket(asyncio.Protocol, mine)
            transports.append(transport)
        await asyncio.sleep(0)  # connection_made and the reader registrations run

    try:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        loop.run_until_complete(open_all())
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        allocated = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        probe = transports[0]
        try:
            probe.write = probe.write  # type: ignore[attr-defined,method-assign]
            patchable = True
        except AttributeError:
            patchable = False
        for transport in transports:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        return allocated / count, patchable
    finally:
        for _, theirs in pairs:
            theirs.close()
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="transports per loop (default 2000)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.n + 64)), hard))
    print(f"{'loop':<8} {'bytes/transport':>16}  transport.write = ... works")
    for name, factory in LOOPS.items():
        per_transport, patchable = measure(factory, args.n)
        print(f"{name:<8} {per_transport:>16.0f}  {'yes' if patchable else 'no'}")


if __name__ == "__main__":
    main()
