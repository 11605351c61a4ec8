"""Pipe transports (``connect_read_pipe``/``connect_write_pipe``) on asyncio's loop and tidal's.

Every test runs on both loops and compares recorded protocol events; the few tidal-only tests
cover places where tidal deliberately differs (named in each test's docstring).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import leakcheck
import tidal

TIMEOUT = 10.0  # seconds; bound on every test's coroutine


# -- leak check: open descriptors and child processes, per module -----------------------------


@pytest.fixture(scope="module", autouse=True)
def no_leaks() -> Iterator[None]:
    with leakcheck.no_leaks():
        yield


# -- helpers ------------------------------------------------------------------------------------


class Recorder(asyncio.Protocol):
    """Records protocol events; fails the test (via the exception handler) on a second loss."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: list[Any] = []
        self.data = bytearray()
        self.transport: Any = None
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()
        self.resumed: asyncio.Future[None] = loop.create_future()
        self._want: tuple[int, asyncio.Future[None]] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.events[-1] != "data":
            self.events.append("data")
        if self._want is not None and len(self.data) >= self._want[0]:
            self._want[1].set_result(None)
            self._want = None

    def eof_received(self) -> None:
        self.events.append("eof")

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")
        if not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc).__name__ if exc else None))
        self.lost.set_result(exc)  # a second call raises InvalidStateError: reported

    async def received(self, nbytes: int) -> bytes:
        if len(self.data) < nbytes:
            fut = self.loop.create_future()
            self._want = (nbytes, fut)
            await fut
        return bytes(self.data)


def fileobj(fd: int, mode: str) -> Any:
    """An unbuffered file object over ``fd``; the transport under test closes it."""
    return open(fd, mode, buffering=0)


def pipe_files() -> tuple[Any, Any]:
    rfd, wfd = os.pipe()
    return fileobj(rfd, "rb"), fileobj(wfd, "wb")


# -- reading --------------------------------------------------------------------------------------


def test_read_pipe_data_then_eof(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_read_pipe(lambda: Recorder(loop), rfile)
            assert proto.events == ["made"]
            assert transport.get_extra_info("pipe") is rfile
            assert transport.is_reading() and not transport.is_closing()
            wfile.write(b"1")
            assert await proto.received(1) == b"1"
            wfile.write(b"2345")
            assert await proto.received(5) == b"12345"
            wfile.close()
            assert await proto.lost is None
            assert transport.is_closing()
            return proto

    proto = loop.run_until_complete(main())
    assert proto.events == ["made", "data", "eof", ("lost", None)]
    assert rfile.closed


def test_read_pipe_close_by_user(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_read_pipe(lambda: Recorder(loop), rfile)
            transport.close()
            transport.close()  # idempotent
            assert transport.is_closing() and not transport.is_reading()
            await proto.lost
            return proto

    try:
        proto = loop.run_until_complete(main())
    finally:
        wfile.close()
    assert proto.events == ["made", ("lost", None)]
    assert rfile.closed


def test_read_pipe_pause_and_resume(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()
    barrier_r, barrier_w = pipe_files()

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_read_pipe(lambda: Recorder(loop), rfile)
            barrier_t, barrier = await loop.connect_read_pipe(lambda: Recorder(loop), barrier_r)
            transport.pause_reading()
            transport.pause_reading()  # no-op when already paused
            assert not transport.is_reading()
            # Both pipes become readable together; the barrier's data arriving proves the
            # loop polled while the paused pipe had data, and that it was not delivered.
            wfile.write(b"held back")
            barrier_w.write(b"x")
            await barrier.received(1)
            assert proto.data == b""
            transport.resume_reading()
            assert transport.is_reading()
            assert await proto.received(9) == b"held back"
            transport.close()
            transport.resume_reading()  # no-op once closing
            assert not transport.is_reading()
            barrier_t.close()
            await proto.lost
            await barrier.lost
            return proto

    try:
        proto = loop.run_until_complete(main())
    finally:
        wfile.close()
        barrier_w.close()
    assert proto.events == ["made", "data", ("lost", None)]


def test_read_pipe_rejects_regular_file(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    path = tmp_path / "regular"
    path.write_bytes(b"data")

    async def main() -> None:
        with open(path, "rb") as f, pytest.raises(ValueError, match=r"[Pp]ipe transport"):
            await loop.connect_read_pipe(asyncio.Protocol, f)
        with open(path, "wb") as f, pytest.raises(ValueError, match=r"[Pp]ipe transport"):
            await loop.connect_write_pipe(asyncio.Protocol, f)

    loop.run_until_complete(main())


def test_read_fifo(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    rfile = fileobj(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    wfd = os.open(path, os.O_WRONLY)

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            _, proto = await loop.connect_read_pipe(lambda: Recorder(loop), rfile)
            os.write(wfd, b"through a fifo")
            assert await proto.received(14) == b"through a fifo"
            os.close(wfd)
            await proto.lost
            return proto

    proto = loop.run_until_complete(main())
    assert proto.events == ["made", "data", "eof", ("lost", None)]


def test_read_socket_as_pipe(loop: asyncio.AbstractEventLoop) -> None:
    rsock, wsock = socket.socketpair()

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            _, proto = await loop.connect_read_pipe(lambda: Recorder(loop), rsock)
            wsock.sendall(b"over a socket")
            assert await proto.received(13) == b"over a socket"
            wsock.close()
            await proto.lost
            return proto

    proto = loop.run_until_complete(main())
    assert proto.events == ["made", "data", "eof", ("lost", None)]
    assert rsock.fileno() == -1  # closed with the transport


def test_pty_both_directions(loop: asyncio.AbstractEventLoop) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    master_file = fileobj(master, "rb")
    slave_file = fileobj(slave, "wb")

    async def main() -> tuple[Recorder, Recorder]:
        async with asyncio.timeout(TIMEOUT):
            rt, reader = await loop.connect_read_pipe(lambda: Recorder(loop), master_file)
            wt, writer = await loop.connect_write_pipe(lambda: Recorder(loop), slave_file)
            wt.write(b"to the terminal")
            assert await reader.received(15) == b"to the terminal"
            wt.close()
            await writer.lost
            rt.close()
            await reader.lost
            return reader, writer

    reader, writer = loop.run_until_complete(main())
    assert reader.events == ["made", "data", ("lost", None)]
    assert writer.events == ["made", ("lost", None)]


def test_cancelled_connect_closes_the_transport(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder(loop))
        return made[-1]

    async def main() -> None:
        async with asyncio.timeout(TIMEOUT):
            task = loop.create_task(loop.connect_read_pipe(factory, rfile))
            await asyncio.sleep(0)  # the task builds the transport and waits for it
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await made[0].lost

    try:
        loop.run_until_complete(main())
    finally:
        wfile.close()
    assert made[0].events == ["made", ("lost", None)]
    assert rfile.closed


def test_buffered_protocol_on_read_pipe() -> None:
    """tidal feeds a BufferedProtocol through get_buffer/buffer_updated (asyncio cannot)."""
    loop = tidal.new_event_loop()
    rfile, wfile = pipe_files()

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(4)
            self.got = bytearray()
            self.lost: asyncio.Future[None] = loop.create_future()
            self.eof = False

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.got += self.buf[:nbytes]

        def eof_received(self) -> None:
            self.eof = True

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost.set_result(None)

    async def main() -> Buffered:
        async with asyncio.timeout(TIMEOUT):
            _, proto = await loop.connect_read_pipe(Buffered, rfile)
            wfile.write(b"more than four bytes")
            wfile.close()
            await proto.lost
            return proto

    try:
        proto = loop.run_until_complete(main())
    finally:
        loop.close()
    assert proto.got == b"more than four bytes" and proto.eof


# -- writing --------------------------------------------------------------------------------------


def test_write_pipe_write_then_close(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
            assert transport.get_extra_info("pipe") is wfile
            assert transport.can_write_eof()
            transport.write(b"")
            transport.write(b"1")
            transport.writelines([b"23", bytearray(b"4"), memoryview(b"5")])
            assert transport.get_write_buffer_size() == 0
            transport.close()
            assert transport.is_closing()
            await proto.lost
            return proto

    try:
        proto = loop.run_until_complete(main())
        assert rfile.read() == b"12345"  # and then EOF: the write end is closed
    finally:
        rfile.close()
    assert proto.events == ["made", ("lost", None)]
    assert wfile.closed


def test_write_flow_control_with_slow_reader(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()
    payload = bytes(range(256)) * 4096  # 1 MiB: far more than a pipe holds

    async def main() -> tuple[Recorder, Recorder]:
        async with asyncio.timeout(TIMEOUT):
            wt, writer = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
            assert wt.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            wt.set_write_buffer_limits(high=128 * 1024)
            assert wt.get_write_buffer_limits() == (32 * 1024, 128 * 1024)
            wt.write(payload)
            assert writer.events == ["made", "pause"]
            assert wt.get_write_buffer_size() > 128 * 1024
            # Only now does a reader start draining the pipe.
            _, reader = await loop.connect_read_pipe(lambda: Recorder(loop), rfile)
            await writer.resumed
            assert wt.get_write_buffer_size() <= 32 * 1024
            wt.write_eof()
            wt.write_eof()  # idempotent
            await writer.lost
            await reader.lost
            return writer, reader

    writer, reader = loop.run_until_complete(main())
    assert writer.events == ["made", "pause", "resume", ("lost", None)]
    assert reader.data == payload
    assert reader.events == ["made", "data", "eof", ("lost", None)]


def test_set_write_buffer_limits_validates(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()

    async def main() -> None:
        transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
        with pytest.raises(ValueError, match="must be >="):
            transport.set_write_buffer_limits(high=1, low=2)
        with pytest.raises(ValueError, match="must be >="):
            transport.set_write_buffer_limits(low=-1)
        transport.set_write_buffer_limits(low=100)
        assert transport.get_write_buffer_limits() == (100, 400)
        transport.close()
        await proto.lost

    try:
        loop.run_until_complete(main())
    finally:
        rfile.close()


def test_reader_gone_with_empty_buffer(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            _, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
            rfile.close()
            await proto.lost
            return proto

    proto = loop.run_until_complete(main())
    assert proto.events == ["made", ("lost", None)]


def test_reader_gone_with_data_buffered(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
            transport.write(b"x" * (1024 * 1024))
            assert transport.get_write_buffer_size() > 0
            rfile.close()
            assert isinstance(await proto.lost, BrokenPipeError)
            assert transport.get_write_buffer_size() == 0
            return proto

    proto = loop.run_until_complete(main())
    assert proto.events == ["made", "pause", ("lost", "BrokenPipeError")]


def test_socket_peer_closes_write_pipe(loop: asyncio.AbstractEventLoop) -> None:
    rsock, wsock = socket.socketpair()
    wfile = fileobj(wsock.detach(), "wb")

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
            transport.write(b"1")
            assert rsock.recv(10) == b"1"
            rsock.close()
            await proto.lost
            return proto

    proto = loop.run_until_complete(main())
    assert proto.events == ["made", ("lost", None)]


def test_writes_after_close_are_dropped_and_logged(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    rfile, wfile = pipe_files()

    async def main() -> None:
        transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
        transport.close()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(6):
                transport.write(b"lost")
        await proto.lost
        transport.write(b"after connection_lost")

    try:
        loop.run_until_complete(main())
        assert rfile.read() == b""
    finally:
        rfile.close()
    assert any("pipe closed by peer" in r.getMessage() for r in caplog.records)


def test_abort_drops_buffered_data(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
            transport.write(b"y" * (1024 * 1024))
            transport.abort()
            assert transport.get_write_buffer_size() == 0 and transport.is_closing()
            await proto.lost
            return proto

    try:
        proto = loop.run_until_complete(main())
    finally:
        rfile.close()
    assert proto.events == ["made", "pause", ("lost", None)]


def test_write_rejects_text(loop: asyncio.AbstractEventLoop, loop_name: str) -> None:
    """tidal raises TypeError with advice; asyncio's pipe transport fails an assert."""
    rfile, wfile = pipe_files()
    expected = AssertionError if loop_name == "asyncio" else TypeError

    async def main() -> None:
        transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
        with pytest.raises(expected):
            transport.write("text")  # type: ignore[arg-type]  # the point of the test
        transport.close()
        await proto.lost

    try:
        loop.run_until_complete(main())
    finally:
        rfile.close()


def test_close_then_abort_loses_connection_once() -> None:
    """tidal calls connection_lost once; asyncio schedules it twice and the second call fails."""
    loop = tidal.new_event_loop()
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    rfile, wfile = pipe_files()

    async def main() -> Recorder:
        transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
        transport.close()
        transport.abort()
        await proto.lost
        for _ in range(3):
            await asyncio.sleep(0)
        return proto

    try:
        proto = loop.run_until_complete(main())
    finally:
        loop.close()
        rfile.close()
    assert proto.events == ["made", ("lost", None)] and not reports


def test_repr_and_protocol_accessors(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()

    async def main() -> tuple[Any, Any]:
        rt, rproto = await loop.connect_read_pipe(lambda: Recorder(loop), rfile)
        wt, wproto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
        assert rt.get_protocol() is rproto and wt.get_protocol() is wproto
        other = Recorder(loop)
        rt.set_protocol(other)
        assert rt.get_protocol() is other
        rt.set_protocol(rproto)
        assert f"fd={rfile.fileno()}" in repr(rt) and "polling" in repr(rt)
        assert f"fd={wfile.fileno()}" in repr(wt) and "idle" in repr(wt)
        return rt, wt

    rt, wt = loop.run_until_complete(main())
    loop.close()
    # A transport that outlives its loop still has a repr, and says it is open.
    assert "open" in repr(rt) and "open" in repr(wt)
    rfile.close()
    wfile.close()
    rt._pipe = wt._pipe = None  # already closed by hand: no unclosed-transport warning


# -- faults ---------------------------------------------------------------------------------------


def test_pty_read_after_the_other_side_closed_is_a_quiet_close(
    loop: asyncio.AbstractEventLoop,
) -> None:
    master, slave = os.openpty()
    master_file = fileobj(master, "rb")

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            _, proto = await loop.connect_read_pipe(lambda: Recorder(loop), master_file)
            os.close(slave)  # reading the master now fails with EIO: not worth a report
            exc = await proto.lost
            assert isinstance(exc, OSError)
            return proto

    proto = loop.run_until_complete(main())
    assert proto.events == ["made", ("lost", "OSError")]


def test_pty_write_error_closes_with_the_error(loop: asyncio.AbstractEventLoop) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    slave_file = fileobj(slave, "wb")

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), slave_file)
            transport.write(b"t" * (1024 * 1024))  # more than the terminal buffers
            assert transport.get_write_buffer_size() > 0
            os.close(master)  # the buffered write now fails (EIO): a terminal is not watched
            assert isinstance(await proto.lost, OSError)
            return proto

    proto = loop.run_until_complete(main())
    assert proto.events == ["made", "pause", ("lost", "OSError")]


def test_failing_pause_and_resume_writing_are_reported(loop: asyncio.AbstractEventLoop) -> None:
    rfile, wfile = pipe_files()
    reports: list[str] = []
    loop.set_exception_handler(lambda _loop, context: reports.append(context["message"]))

    class Failing(Recorder):
        def pause_writing(self) -> None:
            super().pause_writing()
            raise ZeroDivisionError

        def resume_writing(self) -> None:
            super().resume_writing()
            raise ZeroDivisionError

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            wt, writer = await loop.connect_write_pipe(lambda: Failing(loop), wfile)
            wt.write(b"f" * (1024 * 1024))
            _, reader = await loop.connect_read_pipe(lambda: Recorder(loop), rfile)
            await writer.resumed
            wt.close()
            await writer.lost
            await reader.lost
            return writer

    writer = loop.run_until_complete(main())
    assert writer.events == ["made", "pause", "resume", ("lost", None)]
    assert reports == ["protocol.pause_writing() failed", "protocol.resume_writing() failed"]


def test_buffered_protocol_get_buffer_failure_is_fatal() -> None:
    """tidal only (asyncio's pipes have no BufferedProtocol support)."""
    loop = tidal.new_event_loop()
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    rfile, wfile = pipe_files()

    class Broken(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.lost: asyncio.Future[BaseException | None] = loop.create_future()

        def get_buffer(self, sizehint: int) -> bytearray:
            return bytearray()  # empty: a protocol bug

        def buffer_updated(self, nbytes: int) -> None:
            raise AssertionError("never called")

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost.set_result(exc)

    async def main() -> BaseException | None:
        async with asyncio.timeout(TIMEOUT):
            _, proto = await loop.connect_read_pipe(Broken, rfile)
            wfile.write(b"data")
            return await proto.lost

    try:
        exc = loop.run_until_complete(main())
    finally:
        loop.close()
        wfile.close()
    assert isinstance(exc, RuntimeError)
    assert reports[0]["message"] == "Fatal error: protocol.get_buffer() call failed."


def test_write_queues_behind_a_full_pipe_and_fails_fast_on_epipe(
    loop: asyncio.AbstractEventLoop,
) -> None:
    rfile, wfile = pipe_files()
    os.set_blocking(wfile.fileno(), False)
    filled = 0
    try:
        while True:
            filled += os.write(wfile.fileno(), b"\0" * 65536)
    except BlockingIOError:
        pass

    async def main() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile)
            transport.write(b"first")  # the pipe is full: all of it is queued
            transport.write(b"second")  # queued behind it, in order
            assert transport.get_write_buffer_size() == 11
            _, reader = await loop.connect_read_pipe(lambda: Recorder(loop), rfile)
            await reader.received(filled + 11)
            assert bytes(reader.data[filled:]) == b"firstsecond"
            transport.close()
            await proto.lost
            await reader.lost
            return proto

    proto = loop.run_until_complete(main())
    assert proto.events == ["made", ("lost", None)]

    rfile2, wfile2 = pipe_files()

    async def broken() -> Recorder:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.connect_write_pipe(lambda: Recorder(loop), wfile2)
            rfile2.close()
            transport.write(b"into the void")  # EPIPE at once, before the loop can notice
            assert isinstance(await proto.lost, BrokenPipeError)
            return proto

    proto = loop.run_until_complete(broken())
    assert proto.events == ["made", ("lost", "BrokenPipeError")]
