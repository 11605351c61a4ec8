"""Fault injection: peers and the process misbehave on purpose; the loop must survive and lose
nothing.

Owns: the fault scenarios, their counts (faults injected, survived), the bytes-lost check and
the per-scenario leak check (fds, tasks, child processes).
Not here: loop factories, child processes, gauges, tables (common.py).

Each scenario injects faults into a loop that keeps serving, then proves it still serves by
moving checked data through it. A fault is *survived* when the code that met it got an
exception of the documented kind (or EOF) instead of hanging, and the loop went on serving.
After each scenario, with garbage collected and the transports closed, the process must hold
the fds, tasks and child processes it held before (leaks: 0); each scenario first runs once
at its smallest size, unmeasured, so that what a loop creates once on first use (tidal's
signal socket pair, the default executor's threads) is not counted. After ``loop.close()``
the process must hold exactly the fds and children it held before the loop was made. Calls to
the loop's exception handler are counted and shown (a loop reports some faults there, which is
not a failure). The exit status judges tidal's rows; asyncio and uvloop are the comparison.

Scenarios (``--scale`` multiplies the counts): reset_mid_read, reset_mid_write, half_close,
never_reading_peer, accept_emfile, signal_storm, tls_handshake_vanish, tls_stream_vanish,
executor_saturation, cancel_storm, subprocess_cancel.

Usage::

    python reliability/faults.py                 # every scenario, asyncio, uvloop and tidal
    python reliability/faults.py --scale 0.1     # the CI size
    python reliability/faults.py -s signal_storm -s accept_emfile --loops tidal
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import hashlib
import os
import random
import resource
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reliability import common

LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
RESET_ERRORS = (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError, ssl.SSLError)


class Result:
    def __init__(self) -> None:
        self.injected = 0
        self.survived = 0
        self.bytes_lost = 0
        self.notes: list[str] = []

    def fault(self, survived: bool) -> None:
        self.injected += 1
        self.survived += bool(survived)


async def _echo_server(
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[asyncio.Server, int, list[BaseException | None]]:
    """An echo server; the list gets each handler's ending (None: clean EOF)."""
    endings: list[BaseException | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ending: BaseException | None = None
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except RESET_ERRORS as exc:
            ending = exc
        finally:
            endings.append(ending)
            writer.close()
            with contextlib.suppress(*RESET_ERRORS):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1], endings


async def _verified_echo(
    port: int, size: int, result: Result, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Send ``size`` random bytes through the echo server; count what does not come back."""
    payload = os.urandom(size)
    host = "localhost" if ssl_context else "127.0.0.1"
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context)
    writer.write(payload)
    await writer.drain()
    echoed = await asyncio.wait_for(reader.readexactly(size), 10)
    writer.close()
    await writer.wait_closed()
    result.bytes_lost += sum(a != b for a, b in zip(echoed, payload, strict=True))


async def _raw_connect(port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    return sock


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    sock.close()


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


# -- scenarios ------------------------------------------------------------------------------------


async def reset_mid_read(n: int) -> Result:
    """Peers send half a message, then reset; the server's read must end with an error."""
    result = Result()
    loop = asyncio.get_running_loop()
    endings: list[BaseException] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(1 << 20)
        except RESET_ERRORS as exc:
            endings.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for _ in range(n):
        sock = await _raw_connect(port)
        await loop.sock_sendall(sock, os.urandom(100_000))
        await asyncio.sleep(0.002)
        _reset(sock)
    await _wait_for(lambda: len(endings) >= n)
    for i in range(n):
        result.fault(i < len(endings))
    server.close()
    await server.wait_closed()
    echo, echo_port, _ = await _echo_server()
    await _verified_echo(echo_port, 1 << 20, result)
    echo.close()
    await echo.wait_closed()
    return result


async def reset_mid_write(n: int) -> Result:
    """Peers read a little of a large reply, then reset; the server's drain must raise."""
    result = Result()
    loop = asyncio.get_running_loop()
    endings: list[BaseException | None] = []
    chunk = os.urandom(256 * 1024)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ending: BaseException | None = None
        try:
            for _ in range(64):  # 16 MiB: far more than the socket buffers hold
                writer.write(chunk)
                await writer.drain()
        except RESET_ERRORS as exc:
            ending = exc
        finally:
            endings.append(ending)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for _ in range(n):
        sock = await _raw_connect(port)
        await loop.sock_recv(sock, 65536)
        _reset(sock)
    await _wait_for(lambda: len(endings) >= n)
    for i in range(n):
        result.fault(i < len(endings) and endings[i] is not None)
    server.close()
    await server.wait_closed()
    echo, echo_port, _ = await _echo_server()
    await _verified_echo(echo_port, 1 << 20, result)
    echo.close()
    await echo.wait_closed()
    return result


async def half_close(n: int) -> Result:
    """Peers send, then shut down their write side; the server reads to EOF and still replies."""
    result = Result()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to EOF
        writer.write(struct.pack("!Q", len(data)) + hashlib.sha256(data).digest())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for i in range(n):
        payload = os.urandom(1000 + 997 * i)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        writer.write_eof()
        reply = await asyncio.wait_for(reader.read(), 10)
        good = reply == struct.pack("!Q", len(payload)) + hashlib.sha256(payload).digest()
        if not good:
            result.bytes_lost += len(payload)
        result.fault(good)
        writer.close()
        await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return result


async def never_reading_peer(n: int) -> Result:
    """A peer that never reads: drain() must block, the write buffer must stay bounded (flow
    control), and the writer must get an error when the peer finally resets."""
    result = Result()
    chunk = os.urandom(64 * 1024)
    peaks: list[int] = []
    endings: list[BaseException | None] = []
    blocked = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        high = transport.get_write_buffer_limits()[1]
        peak = 0
        ending: BaseException | None = None
        try:
            while True:
                writer.write(chunk)
                peak = max(peak, transport.get_write_buffer_size())
                try:
                    await asyncio.wait_for(writer.drain(), 0.3)
                except TimeoutError:
                    blocked.set()
                    await writer.drain()  # until the peer resets
        except RESET_ERRORS as exc:
            ending = exc
        finally:
            peaks.append(peak - high)
            endings.append(ending)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for i in range(n):
        blocked.clear()
        sock = await _raw_connect(port)
        await asyncio.wait_for(blocked.wait(), 10)
        _reset(sock)
        await _wait_for(lambda i=i: len(endings) > i)
        # Bounded: never more than one write beyond the high-water mark.
        bounded = peaks[i] <= len(chunk)
        result.fault(bounded and endings[i] is not None)
    result.notes.append(f"peak buffer above high-water: {max(peaks) // 1024} KiB")
    server.close()
    await server.wait_closed()
    return result


async def accept_emfile(n: int) -> Result:
    """Clients arrive while the process is out of fds: accept fails with EMFILE. The server
    must not spin or die, and must serve every one of them once fds free up."""
    result = Result()
    loop = asyncio.get_running_loop()
    server, port, _ = await _echo_server()
    clients = [await _raw_connect(port) for _ in range(n)]
    await asyncio.sleep(0.05)  # accepted by now
    for sock in clients:
        sock.close()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (common.open_fds() + n + 16, hard))
    try:
        clients = [await _raw_connect(port) for _ in range(n)]  # wait in the listen backlog
        while True:
            try:
                fillers.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                break
        ticks = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.5:  # the loop keeps turning meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        result.notes.append(f"{ticks} timer ticks in 0.5 s while out of fds")
        for fd in fillers:
            os.close(fd)
        fillers.clear()
        for i, sock in enumerate(clients):
            message = f"client {i} after EMFILE".encode()
            await loop.sock_sendall(sock, message)
            try:
                echoed = await asyncio.wait_for(loop.sock_recv(sock, 1024), 10)
            except TimeoutError:
                echoed = b""
            result.bytes_lost += len(message) - len(echoed)
            result.fault(echoed == message)
            sock.close()
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    server.close()
    await server.wait_closed()
    return result


async def signal_storm(n: int) -> Result:
    """SIGUSR1 in a storm from another thread while the loop polls and moves data; the loop
    must not fail (EINTR), data must arrive intact, and a signal after the storm must still
    reach its handler."""
    result = Result()
    loop = asyncio.get_running_loop()
    seen = [0]
    loop.add_signal_handler(signal.SIGUSR1, lambda: seen.__setitem__(0, seen[0] + 1))
    server, port, _ = await _echo_server()

    def storm() -> None:
        for i in range(n):
            os.kill(os.getpid(), signal.SIGUSR1)
            if i % 50 == 0:
                time.sleep(0.001)

    try:
        thread = threading.Thread(target=storm)
        thread.start()
        while thread.is_alive():
            await _verified_echo(port, 256 * 1024, result)
            await asyncio.sleep(0.001)
        thread.join()
        await _wait_for(lambda: seen[0] > 0)
        before = seen[0]
        os.kill(os.getpid(), signal.SIGUSR1)
        last_delivered = await _wait_for(lambda: seen[0] > before, 5)
        result.injected = n
        result.survived = n if last_delivered else 0
        result.notes.append(f"{seen[0]} handler calls for {n + 1} signals (they coalesce)")
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        server.close()
        await server.wait_closed()
    return result


@functools.cache
def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    outgoing = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def tls_handshake_vanish(n: int) -> Result:
    """TLS clients send part of a ClientHello (or all of it) and vanish with a reset; the TLS
    server must drop them and keep serving full TLS clients."""
    result = Result()
    loop = asyncio.get_running_loop()
    server_ctx, client_ctx = _tls_contexts()
    server, port, _ = await _echo_server(server_ctx)
    hello = _client_hello()
    for i in range(n):
        sock = await _raw_connect(port)
        await loop.sock_sendall(sock, hello[: len(hello) // 2] if i % 2 else hello)
        await asyncio.sleep(0.002)
        _reset(sock)
        before = result.bytes_lost
        await _verified_echo(port, 4096, result, client_ctx)
        result.fault(result.bytes_lost == before)
    server.close()
    await server.wait_closed()
    return result


async def tls_stream_vanish(n: int) -> Result:
    """TLS clients exchange data, then abort mid-stream (no close_notify, a reset); the server's
    read must end with an error or EOF and the server keep serving."""
    result = Result()
    server_ctx, client_ctx = _tls_contexts()
    server, port, endings = await _echo_server(server_ctx)
    for i in range(n):
        reader, writer = await asyncio.open_connection("localhost", port, ssl=client_ctx)
        payload = os.urandom(32 * 1024)
        writer.write(payload)
        echoed = await reader.readexactly(len(payload))
        result.bytes_lost += sum(a != b for a, b in zip(echoed, payload, strict=True))
        writer.write(os.urandom(8192))  # in flight when the client vanishes
        raw = writer.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        writer.transport.abort()
        ended = await _wait_for(lambda i=i: len(endings) > i)
        result.fault(ended)
    await _verified_echo(port, 1 << 20, result, client_ctx)
    server.close()
    await server.wait_closed()
    return result


async def executor_saturation(n: int) -> Result:
    """Many more blocking jobs than executor threads: every result must come back right, and
    the loop must keep running timers on time meanwhile."""
    result = Result()
    loop = asyncio.get_running_loop()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    lag = [0.0]
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = loop.time()
            await asyncio.sleep(0.01)
            lag[0] = max(lag[0], loop.time() - started - 0.01)

    def job(i: int) -> int:
        time.sleep(0.002)
        return i * i

    tick = asyncio.create_task(ticker())
    results = await asyncio.gather(*(loop.run_in_executor(executor, job, i) for i in range(n)))
    done.set()
    await tick
    for i, value in enumerate(results):
        result.fault(value == i * i)
    result.notes.append(f"timer lag at most {lag[0] * 1000:.0f} ms")
    executor.shutdown(wait=True)
    return result


async def cancel_storm(n: int) -> Result:
    """Thousands of tasks in gathers, TaskGroups, wait_for and shield, cancelled at random
    moments: every task must end, every finally block run, nothing be left pending."""
    result = Result()
    rng = random.Random(n)
    started = [0]
    finished = [0]
    event = asyncio.Event()
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def leaf(depth: int) -> None:
        started[0] += 1
        try:
            kind = rng.randrange(7)
            if kind == 0:
                await asyncio.sleep(rng.random() * 0.05)
            elif kind == 1:
                await event.wait()
            elif kind == 2:
                await queue.get()
            elif kind == 3:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.sleep(1), rng.random() * 0.05)
            elif kind == 4:
                await asyncio.shield(asyncio.sleep(rng.random() * 0.02))
            elif kind == 5 and depth < 3:
                await asyncio.gather(leaf(depth + 1), leaf(depth + 1))
            elif kind == 6 and depth < 3:
                async with asyncio.TaskGroup() as group:
                    group.create_task(leaf(depth + 1))
                    group.create_task(leaf(depth + 1))
            else:
                await asyncio.sleep(0)
        finally:
            finished[0] += 1

    tasks = [asyncio.create_task(leaf(0)) for _ in range(n)]
    for _ in range(20):
        await asyncio.sleep(rng.random() * 0.005)
        for task in rng.sample(tasks, len(tasks) // 10):
            task.cancel()
    event.set()
    for i in range(n):
        queue.put_nowait(i)
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    await asyncio.sleep(0.05)  # shielded sleeps finish
    cancelled = sum(isinstance(o, asyncio.CancelledError) for o in outcomes)
    for task in tasks:
        result.fault(task.done())
    if finished[0] != started[0]:
        result.notes.append(f"{started[0] - finished[0]} finally blocks did not run")
        result.survived = 0
    result.notes.append(f"{started[0]} coroutines, {cancelled} top-level tasks cancelled")
    return result


async def subprocess_cancel(n: int) -> Result:
    """Children whose wait() or communicate() is cancelled mid-way, then killed: each must be
    reaped (no zombie, no leaked pipe)."""
    result = Result()
    for i in range(n):
        if i % 2:
            proc = await asyncio.create_subprocess_exec(
                "sleep", "30", stdin=asyncio.subprocess.DEVNULL
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.02)
        else:
            proc = await asyncio.create_subprocess_exec(
                "cat",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.communicate(os.urandom(4 << 20)), 0.02)
        with contextlib.suppress(ProcessLookupError):  # it may have ended by itself
            proc.kill()
        if proc.stdout is not None:
            # What cat echoed before the kill may fill the pipe's buffer and pause reading;
            # wait() waits for the pipes to close, so read them to EOF first (asyncio's docs).
            await asyncio.wait_for(proc.stdout.read(), 10)
        status = await asyncio.wait_for(proc.wait(), 10)
        result.fault(status is not None)
    return result


SCENARIOS: dict[str, tuple[Callable[[int], Awaitable[Result]], int]] = {
    "reset_mid_read": (reset_mid_read, 200),
    "reset_mid_write": (reset_mid_write, 200),
    "half_close": (half_close, 200),
    "never_reading_peer": (never_reading_peer, 10),
    "accept_emfile": (accept_emfile, 50),
    "signal_storm": (signal_storm, 20_000),
    "tls_handshake_vanish": (tls_handshake_vanish, 100),
    "tls_stream_vanish": (tls_stream_vanish, 100),
    "executor_saturation": (executor_saturation, 2_000),
    "cancel_storm": (cancel_storm, 5_000),
    "subprocess_cancel": (subprocess_cancel, 40),
}


# -- one loop -------------------------------------------------------------------------------------


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.02)
        gc.collect()


async def _run_scenario(name: str, size: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    reports: list[str] = []
    loop.set_exception_handler(lambda _l, ctx: reports.append(str(ctx.get("message"))))
    await _settle()
    fds, children = common.open_fds(), len(common.child_processes())
    tasks = len(asyncio.all_tasks())
    started = time.monotonic()
    try:
        result = await SCENARIOS[name][0](size)
    except Exception as exc:  # a scenario that raises has failed; say how
        result = Result()
        result.notes.append(f"raised {type(exc).__name__}: {exc}"[:300])
        result.injected = max(result.injected, 1)
    seconds = time.monotonic() - started
    await _settle()
    loop.set_exception_handler(None)
    return {
        "injected": result.injected,
        "survived": result.survived,
        "bytes lost": result.bytes_lost,
        "leaked fds": common.open_fds() - fds,
        "leaked tasks": len(asyncio.all_tasks()) - tasks,
        "leaked children": len(common.child_processes()) - children,
        "handler reports": len(reports),
        "notes": result.notes + ([f"first report: {reports[0][:120]}"] if reports else []),
        "seconds": round(seconds, 2),
    }


def child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    fds_before, children_before = common.open_fds(), len(common.child_processes())
    loop = common.LOOPS[name]()
    out = {}
    try:
        for scenario in args.scenarios:
            # A first pass at the smallest size creates what a loop makes once, on first use
            # (tidal's signal socket pair, the default executor's threads): not leaks.
            loop.run_until_complete(_run_scenario(scenario, 2))
            size = max(2, int(SCENARIOS[scenario][1] * args.scale))
            out[scenario] = loop.run_until_complete(_run_scenario(scenario, size))
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    gc.collect()
    out["_process"] = {
        "fds leaked after close": common.open_fds() - fds_before,
        "children leaked after close": len(common.child_processes()) - children_before,
    }
    return out


def passed(row: dict[str, Any]) -> bool:
    return (
        row["injected"] > 0
        and row["survived"] == row["injected"]
        and row["bytes lost"] == 0
        and row["leaked fds"] == row["leaked tasks"] == row["leaked children"] == 0
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", default="asyncio,uvloop,tidal")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count")
    parser.add_argument(
        "-s", "--scenario", action="append", dest="scenarios", choices=list(SCENARIOS)
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios or list(SCENARIOS)
    if args.child:
        common.emit(child(args.child, args))
        return 0
    loops = common.available_loops(args.loops.split(","))
    forwarded = ["--scale", str(args.scale)]
    for scenario in args.scenarios:
        forwarded += ["-s", scenario]
    reports = common.run_children(Path(__file__), loops, forwarded, timeout=1800)
    rows = []
    failed = False
    for scenario in args.scenarios:
        for name in loops:
            report = reports[name]
            if "error" in report:
                rows.append([scenario, name, "-", "-", "-", "-", "-", "CRASHED", "-", ""])
                failed = failed or name == "tidal"
                continue
            row = report[scenario]
            ok = passed(row)
            failed = failed or (name == "tidal" and not ok)
            rows.append(
                [
                    scenario,
                    name,
                    row["injected"],
                    row["survived"],
                    row["bytes lost"],
                    f"{row['leaked fds']}/{row['leaked tasks']}/{row['leaked children']}",
                    row["handler reports"],
                    "pass" if ok else "FAIL",
                    row["seconds"],
                    "; ".join(row["notes"])[:140],
                ]
            )
    print(f"fault injection (scale {args.scale:g})")
    print(
        common.table(
            [
                "scenario",
                "loop",
                "injected",
                "survived",
                "bytes lost",
                "leaked fds/tasks/children",
                "handler reports",
                "verdict",
                "s",
                "notes",
            ],
            rows,
        )
    )
    for name in loops:
        if "error" in reports[name]:
            print(f"{name} crashed:\n{reports[name]['error']}")
            continue
        process = reports[name]["_process"]
        print(
            f"{name}: after loop.close(), {process['fds leaked after close']} fds and "
            f"{process['children leaked after close']} child processes more than before the loop"
        )
        leaked = process["fds leaked after close"] or process["children leaked after close"]
        failed = failed or (name == "tidal" and bool(leaked))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
