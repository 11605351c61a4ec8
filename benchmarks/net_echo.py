"""Network benchmarks: TCP echo over loopback with streams, protocols and sock_* coroutines.

Owns: the echo benchmarks (1 KiB and 64 KiB messages, one connection, ping-pong) and a
request/response benchmark over several connections, in the harness's convention
(``func(loop_factory, size) -> seconds``, ``size`` = messages); ``NET_BENCHMARKS``, their
registry; and a command line that runs them side by side and reports messages/s and MB/s.
Not here: timing repetitions and reports (benchmarks/harness.py), the core benchmarks
(benchmarks/suite.py).

Client and server run on the same loop, so every message costs the loop two receives and two
sends: the numbers measure the loop and its transports, not the kernel.

Usage: ``python benchmarks/net_echo.py [-r REPEAT] [-b PATTERN] [--loops asyncio,uvloop,tidal]
[--fresh]`` (``--fresh``: every run in a new process, to see the allocator's first-run state).
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from time import perf_counter
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness
from benchmarks.harness import Benchmark, BenchmarkError, LoopFactory

KIB: Final = 1024


def _run(loop_factory: LoopFactory, main: Callable[[], Coroutine[Any, Any, float]]) -> float:
    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _check(what: str, got: object, expected: object) -> None:
    if got != expected:
        raise BenchmarkError(f"{what}: expected {expected!r}, got {got!r}")


# -- streams -----------------------------------------------------------------------------------


# Server-side handler tasks still running; each benchmark waits for them before closing the
# loop (on 3.11, Server.wait_closed() does not).
_handlers: set[asyncio.Task[Any]] = set()


def _track_handler() -> None:
    task = asyncio.current_task()
    assert task is not None
    _handlers.add(task)
    task.add_done_callback(_handlers.discard)


async def _handlers_done() -> None:
    while _handlers:
        await asyncio.gather(*_handlers)


async def _stream_echo_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _track_handler()
    read, write, drain = reader.read, writer.write, writer.drain
    while data := await read(256 * KIB):
        write(data)
        await drain()
    writer.close()


def _echo_streams(msg_size: int) -> Callable[[LoopFactory, int], float]:
    def bench(loop_factory: LoopFactory, n: int) -> float:
        """Ping-pong over asyncio streams: write a message, readexactly the echo."""
        message = b"x" * msg_size

        async def main() -> float:
            server = await asyncio.start_server(_stream_echo_server, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            readexactly, write, drain = reader.readexactly, writer.write, writer.drain
            total = 0
            start = perf_counter()
            for _ in range(n):
                write(message)
                await drain()
                total += len(await readexactly(msg_size))
            elapsed = perf_counter() - start
            writer.close()
            await writer.wait_closed()
            await _handlers_done()
            server.close()
            await server.wait_closed()
            _check("bytes echoed", total, n * msg_size)
            return elapsed

        return _run(loop_factory, main)

    return bench


# -- protocols ---------------------------------------------------------------------------------


class _EchoServer(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.write = transport.write

    def data_received(self, data: bytes) -> None:
        self.write(data)


class _PingClient(asyncio.Protocol):
    """Sends a message, waits for all of it to come back, sends the next, ``n`` times."""

    def __init__(self, message: bytes, n: int, done: asyncio.Future[int]) -> None:
        self.message = message
        self.size = len(message)
        self.left = n
        self.pending = 0
        self.total = 0
        self.done = done

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def start(self) -> None:
        self.pending = self.size
        self.transport.write(self.message)

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        self.total += len(data)
        if self.pending:
            return
        self.left -= 1
        if self.left:
            self.pending = self.size
            self.transport.write(self.message)
        else:
            self.done.set_result(self.total)


def _echo_protocols(msg_size: int) -> Callable[[LoopFactory, int], float]:
    def bench(loop_factory: LoopFactory, n: int) -> float:
        """Ping-pong with Protocol classes on both ends (no coroutines per message)."""
        message = b"x" * msg_size

        async def main() -> float:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(_EchoServer, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            done: asyncio.Future[int] = loop.create_future()
            transport, client = await loop.create_connection(
                lambda: _PingClient(message, n, done), "127.0.0.1", port
            )
            start = perf_counter()
            client.start()
            total = await done
            elapsed = perf_counter() - start
            transport.close()
            server.close()
            await server.wait_closed()
            _check("bytes echoed", total, n * msg_size)
            return elapsed

        return _run(loop_factory, main)

    return bench


# -- sock_* coroutines -------------------------------------------------------------------------


async def _sock_echo_server(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    recv, sendall = loop.sock_recv, loop.sock_sendall
    with sock:
        while data := await recv(sock, 256 * KIB):
            await sendall(sock, data)


def _echo_sockets(msg_size: int) -> Callable[[LoopFactory, int], float]:
    def bench(loop_factory: LoopFactory, n: int) -> float:
        """Ping-pong with loop.sock_sendall / loop.sock_recv on non-blocking sockets."""
        message = b"x" * msg_size

        async def main() -> float:
            loop = asyncio.get_running_loop()
            with socket.socket() as listener:
                listener.bind(("127.0.0.1", 0))
                listener.listen()
                listener.setblocking(False)
                client = socket.socket()
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                accepting = asyncio.ensure_future(loop.sock_accept(listener))
                await loop.sock_connect(client, listener.getsockname())
                conn, _ = await accepting
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = asyncio.ensure_future(_sock_echo_server(loop, conn))
            recv, sendall = loop.sock_recv, loop.sock_sendall
            total = 0
            with client:
                start = perf_counter()
                for _ in range(n):
                    await sendall(client, message)
                    got = 0
                    while got < msg_size:
                        got += len(await recv(client, 256 * KIB))
                    total += got
                elapsed = perf_counter() - start
                client.shutdown(socket.SHUT_WR)
                await server
            _check("bytes echoed", total, n * msg_size)
            return elapsed

        return _run(loop_factory, main)

    return bench


# -- many small requests over several connections ----------------------------------------------


async def _rpc_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _track_handler()
    while line := await reader.readline():
        writer.write(b"re:" + line)
    writer.close()


def rpc_streams_8_connections(loop_factory: LoopFactory, n: int) -> float:
    """8 connections at once, each sending small line requests and awaiting each response."""
    connections = 8

    async def main() -> float:
        server = await asyncio.start_server(_rpc_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pairs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
        per_connection = n // connections

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
            answered = 0
            for i in range(per_connection):
                writer.write(b"request %d\n" % i)
                if (await reader.readline()).startswith(b"re:"):
                    answered += 1
            return answered

        start = perf_counter()
        answered = sum(await asyncio.gather(*(client(r, w) for r, w in pairs)))
        elapsed = perf_counter() - start
        for _, writer in pairs:
            writer.close()
            await writer.wait_closed()
        await _handlers_done()
        server.close()
        await server.wait_closed()
        _check("responses", answered, per_connection * connections)
        return elapsed

    return _run(loop_factory, main)


def _named(name: str, func: Callable[[LoopFactory, int], float], doc: str) -> Any:
    func.__name__ = name
    func.__doc__ = doc
    return func


# Message sizes per benchmark, for the MB/s column.
MESSAGE_BYTES: Final[dict[str, int]] = {}


def _echo(kind: str, maker: Callable[[int], Any], size: int, n: int, smoke: int) -> Benchmark:
    name = f"echo_{kind}_{size // KIB}k"
    MESSAGE_BYTES[name] = size
    func = maker(size)
    doc = (func.__doc__ or "").strip()
    return Benchmark(name, _named(name, func, doc), n, smoke, f"{doc} {size // KIB} KiB.")


NET_BENCHMARKS: Final[list[Benchmark]] = [
    _echo("streams", _echo_streams, KIB, 10_000, 50),
    _echo("protocols", _echo_protocols, KIB, 20_000, 50),
    _echo("sockets", _echo_sockets, KIB, 12_000, 50),
    _echo("streams", _echo_streams, 64 * KIB, 2_000, 20),
    _echo("protocols", _echo_protocols, 64 * KIB, 2_000, 20),
    _echo("sockets", _echo_sockets, 64 * KIB, 2_000, 20),
    Benchmark(
        "rpc_streams_8_connections",
        rpc_streams_8_connections,
        16_000,
        80,
        "8 connections, small line requests, each awaiting its response (asyncio streams).",
    ),
]
MESSAGE_BYTES["rpc_streams_8_connections"] = 12


def _rates(result: harness.SuiteResult) -> str:
    """messages/s and MB/s per benchmark and loop (MB/s counts each message's bytes once)."""
    lines = [
        "| benchmark | " + " | ".join(f"{loop} msg/s | {loop} MB/s" for loop in result.loops) + " |"
    ]
    lines.append("|---|" + "---:|---:|" * len(result.loops))
    for bench in result.benchmarks:
        size = harness.size_for(bench, smoke=result.smoke, scale=result.scale)
        cells = []
        for loop in result.loops:
            median = result.cells[bench.name][loop].median
            if median is None:
                cells += ["n/a", "n/a"]
            else:
                rate = size / median
                cells += [f"{rate:,.0f}", f"{rate * MESSAGE_BYTES[bench.name] / 1e6:,.1f}"]
        lines.append(f"| {bench.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _in_fresh_process(bench: Benchmark) -> Benchmark:
    """``bench``, but each run happens in a new interpreter (the allocator's first-run state).

    glibc serves a 256 KiB allocation with mmap until a large block has been freed, and then
    from the heap: a loop that allocates per read is slow in a fresh process and fast once
    warmed. Measuring both keeps the comparison honest.
    """
    names = {variant.factory: name for name, variant in harness.LOOPS.items()}

    def run(loop_factory: LoopFactory, size: int) -> float:
        command = [sys.executable, __file__, "--one", bench.name, names[loop_factory], str(size)]
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        if output.returncode:
            raise BenchmarkError(f"{bench.name} failed in a fresh process: {output.stderr}")
        return float(output.stdout)

    return Benchmark(bench.name, run, bench.size, bench.smoke_size, bench.description)


def _run_one(name: str, loop: str, size: int) -> None:
    bench = next(b for b in NET_BENCHMARKS if b.name == name)
    with harness.pinned_to_one_cpu():
        print(bench.func(harness.LOOPS[loop].factory, size))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/net_echo.py",
        description="TCP echo over loopback: asyncio vs uvloop vs tidal (interleaved medians).",
    )
    parser.add_argument("-b", "--bench", action="append", metavar="PATTERN")
    parser.add_argument("-l", "--loops", default="asyncio,uvloop,tidal")
    parser.add_argument("-r", "--repeat", type=int, default=7)
    parser.add_argument("-w", "--warmup", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run (CI)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument(
        "--fresh", action="store_true", help="time each run in a new process (no warm-up)"
    )
    parser.add_argument("--one", nargs=3, metavar=("BENCH", "LOOP", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _run_one(args.one[0], args.one[1], int(args.one[2]))
        return 0
    benches = [
        b
        for b in NET_BENCHMARKS
        if not args.bench or any(fnmatch.fnmatch(b.name, p) for p in args.bench)
    ]
    loops = [harness.LOOPS[name] for name in args.loops.split(",") if name in harness.LOOPS]
    if args.fresh:
        benches = [_in_fresh_process(b) for b in benches]
    with harness.pinned_to_one_cpu():
        result = harness.run_suite(
            benches,
            loops,
            repeat=args.repeat,
            warmup=0 if args.fresh else args.warmup,
            smoke=args.smoke,
            scale=args.scale,
            command=" ".join(["benchmarks/net_echo.py", *(argv or sys.argv[1:])]),
            progress=print,
        )
    print()
    print(harness.markdown_table(result))
    print()
    print(_rates(result))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
