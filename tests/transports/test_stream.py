"""Stream transports and asyncio streams on both loops: lifecycle, flow control, faults."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]


class Recorder(asyncio.Protocol):
    """Records protocol events; ``lost`` completes with connection_lost's argument."""

    def __init__(self, keep_open_on_eof: bool = False) -> None:
        self.events: list[Any] = []
        self.received = bytearray()
        self.keep_open_on_eof = keep_open_on_eof
        self.transport: Any = None
        loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[Any] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.resumed: asyncio.Event = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        assert type(data) is bytes
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.received += data

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")
        self.resumed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair over loopback: (ours, peer). The peer stays blocking."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        ours = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
    with ours, peer:
        yield ours, peer


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def connect(sock: socket.socket, factory: Callable[[], Any] = Recorder) -> tuple[Any, Any]:
    return await asyncio.get_running_loop().connect_accepted_socket(factory, sock)


def test_lifecycle_order_and_extra_info(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = pair

    async def main() -> list[Any]:
        transport, protocol = await connect(ours)
        assert isinstance(transport, asyncio.Transport)
        assert transport.get_extra_info("peername") == peer.getsockname()
        assert transport.get_extra_info("sockname") == ours.getsockname()
        assert transport.get_extra_info("socket").fileno() == ours.fileno()
        assert transport.get_extra_info("nope", 42) == 42
        assert id(transport.get_protocol()) == id(protocol)
        assert transport.can_write_eof()
        peer.sendall(b"abc")
        peer.shutdown(socket.SHUT_WR)
        await protocol.lost
        transport.close()  # closing again after the loss is harmless
        return protocol.events  # type: ignore[no-any-return]

    assert arun(main()) == ["made", "data", "eof", "lost"]


def test_half_close_keeps_writing(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair

    async def main() -> bytes:
        transport, protocol = await connect(ours, lambda: Recorder(keep_open_on_eof=True))
        peer.shutdown(socket.SHUT_WR)
        await protocol.eof
        assert not transport.is_closing()
        transport.write(b"still here")
        transport.write_eof()
        with pytest.raises(RuntimeError, match="write_eof"):
            transport.write(b"more")
        data = b""
        while chunk := await asyncio.get_running_loop().run_in_executor(None, peer.recv, 100):
            data += chunk
        transport.close()
        await protocol.lost
        return data

    assert arun(main()) == b"still here"


def test_buffered_protocol(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(7)  # small on purpose: data arrives in several pieces
            self.got = bytearray()
            self.lost = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.got += self.buf[:nbytes]

        def eof_received(self) -> None:
            pass

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost.set_result(exc)

    payload = os.urandom(100_000)

    async def main() -> bytes:
        _, protocol = await connect(ours, Buffered)
        peer.sendall(payload)
        peer.shutdown(socket.SHUT_WR)
        await protocol.lost
        return bytes(protocol.got)

    assert arun(main()) == payload


def test_set_protocol_switches_dispatch(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = pair

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self, done: asyncio.Future[bytes]) -> None:
            self.buf = bytearray(100)
            self.done = done

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.done.set_result(bytes(self.buf[:nbytes]))

    async def main() -> bytes:
        transport, _protocol = await connect(ours)
        done = asyncio.get_running_loop().create_future()
        transport.set_protocol(Buffered(done))
        peer.sendall(b"switched")
        result = await done
        transport.close()
        return result  # type: ignore[no-any-return]

    assert arun(main()) == b"switched"


def test_pause_and_resume_reading(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair

    async def main() -> tuple[bool, bytes]:
        transport, protocol = await connect(ours)
        transport.pause_reading()
        assert not transport.is_reading()
        transport.pause_reading()  # idempotent
        peer.sendall(b"while paused")
        await asyncio.sleep(0.02)
        nothing = bytes(protocol.received)
        transport.resume_reading()
        assert transport.is_reading()
        while len(protocol.received) < 12:
            await asyncio.sleep(0.001)
        transport.close()
        assert not transport.is_reading()
        await protocol.lost
        return nothing == b"", bytes(protocol.received)

    assert arun(main()) == (True, b"while paused")


def test_flow_control_large_write_to_slow_reader(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = pair
    payload = os.urandom(4 * 1024 * 1024)

    async def main() -> tuple[list[Any], bytes]:
        loop = asyncio.get_running_loop()
        transport, protocol = await connect(ours)
        assert transport.get_write_buffer_limits() == (16384, 65536)
        transport.write(payload)
        assert transport.get_write_buffer_size() > 0
        assert protocol.events[-1] == "pause"

        def slow_read() -> bytes:
            got = bytearray()
            while len(got) < len(payload):
                got += peer.recv(65536)
            return bytes(got)

        received = await loop.run_in_executor(None, slow_read)
        await protocol.resumed.wait()
        assert transport.get_write_buffer_size() == 0
        transport.close()
        await protocol.lost
        return protocol.events, received

    events, received = arun(main())
    assert events == ["made", "pause", "resume", "lost"]
    assert received == payload


def test_write_buffer_limits_validation(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _ = pair

    async def main() -> list[Any]:
        transport, protocol = await connect(ours)
        transport.set_write_buffer_limits(high=100)
        limits = [transport.get_write_buffer_limits()]
        transport.set_write_buffer_limits(low=10)
        limits.append(transport.get_write_buffer_limits())
        with pytest.raises(ValueError, match="must be >="):
            transport.set_write_buffer_limits(high=1, low=2)
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(high=-1)
        transport.close()
        await protocol.lost
        return limits

    assert arun(main()) == [(25, 100), (10, 40)]


def test_peer_reset_mid_write(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair

    async def main() -> type:
        transport, protocol = await connect(ours)
        transport.write(os.urandom(8 * 1024 * 1024))  # far more than fits: stays buffered
        reset(peer)
        exc = await protocol.lost
        assert transport.is_closing()
        assert transport.get_write_buffer_size() == 0
        transport.write(b"after the reset")  # dropped quietly
        return type(exc)

    assert issubclass(arun(main()), ConnectionError)


def test_writes_after_close_are_dropped_and_logged(
    arun: Run, pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    ours, _ = pair

    async def main() -> None:
        transport, protocol = await connect(ours)
        transport.close()
        assert transport.is_closing()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(7):
                transport.write(b"x")
        await protocol.lost

    arun(main())
    warnings = [r for r in caplog.records if "socket.send() raised exception" in r.message]
    assert len(warnings) == 3  # the 5th dropped write on are logged


def test_close_flushes_abort_drops(arun: Run) -> None:
    async def scenario(abort: bool) -> tuple[int, Any]:
        a, b = socket.socketpair()
        with b:
            transport, protocol = await connect(a)
            payload = b"z" * (2 * 1024 * 1024)
            transport.write(payload)
            if abort:
                transport.abort()
            else:
                transport.close()
            loop = asyncio.get_running_loop()

            def read_all() -> int:
                total = 0
                while chunk := b.recv(1 << 20):
                    total += len(chunk)
                return total

            total = await loop.run_in_executor(None, read_all)
            return total, await protocol.lost

    async def main() -> tuple[Any, Any]:
        return await scenario(abort=False), await scenario(abort=True)

    flushed, aborted = arun(main())
    assert flushed == (2 * 1024 * 1024, None)
    assert aborted[0] < 2 * 1024 * 1024 and aborted[1] is None


def test_write_type_errors(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair

    async def main() -> bytes:
        transport, protocol = await connect(ours)
        with pytest.raises(TypeError, match="bytes-like"):
            transport.write("text")
        transport.write(b"")  # nothing happens
        buf = bytearray(b"mutable")
        transport.writelines([b"a", buf, memoryview(b"bc")])
        transport.write(memoryview(struct.pack("2H", 1, 2)))  # itemsize 1 after cast: 4 bytes
        transport.close()
        await protocol.lost
        data = b""
        while chunk := peer.recv(100):
            data += chunk
        return data

    assert arun(main()) == b"amutablebc" + struct.pack("2H", 1, 2)


def test_connection_lost_exactly_once_on_errors(
    arun: Run, pair: tuple[socket.socket, socket.socket], loop: asyncio.AbstractEventLoop
) -> None:
    ours, peer = pair
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reports.append(context))

    class Faulty(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ZeroDivisionError

    async def main() -> list[Any]:
        transport, protocol = await connect(ours, Faulty)
        peer.sendall(b"boom")
        exc = await protocol.lost
        transport.close()
        transport.abort()
        await asyncio.sleep(0.01)
        return [protocol.events, type(exc)]

    assert arun(main()) == [["made", "lost"], ZeroDivisionError]
    assert [r["message"] for r in reports] == ["Fatal error: protocol.data_received() call failed."]


# -- asyncio streams ---------------------------------------------------------------------------


async def _echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_streams_echo_tcp(arun: Run) -> None:
    payload = os.urandom(2 * 1024 * 1024)

    async def main() -> tuple[bytes, bytes, bytes]:
        server = await asyncio.start_server(_echo_handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        writer.write(b"line one\nline two\n")
        first = await reader.readline()
        second = await reader.readuntil(b"\n")
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return first, second, echoed

    assert arun(main()) == (b"line one\n", b"line two\n", payload)


def test_streams_echo_unix(arun: Run, tmp_path: Path) -> None:
    path = str(tmp_path / "e.sock")

    async def main() -> bytes:
        server = await asyncio.start_unix_server(_echo_handler, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"unix stream")
        data = await reader.readexactly(11)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return data

    assert arun(main()) == b"unix stream"


def test_stream_reader_sees_reset(arun: Run) -> None:
    async def main() -> type:
        outcome: asyncio.Future[type] = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read()
            except Exception as exc:
                outcome.set_result(type(exc))
            else:
                outcome.set_result(type(None))
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        writer.write(b"hello")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # closes with linger 0: a RST for the server
        result = await outcome
        server.close()
        await server.wait_closed()
        return result

    assert arun(main()) is ConnectionResetError


# -- sendfile on transports --------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_loop_sendfile(
    arun: Run, pair: tuple[socket.socket, socket.socket], tmp_path: Path, native: bool
) -> None:
    ours, peer = pair
    content = os.urandom(500_000)
    path = tmp_path / "f.bin"
    path.write_bytes(content)

    async def main() -> tuple[int, bytes, int]:
        loop = asyncio.get_running_loop()
        transport, protocol = await connect(ours)
        transport.write(b"head:")
        with open(path, "rb") as f:
            source: Any = f if native else io.BytesIO(content)
            sent = await loop.sendfile(transport, source, 10, 300_000)
            position = source.tell()
        transport.write(b":tail")
        transport.close()

        def read_all() -> bytes:
            data = b""
            while chunk := peer.recv(1 << 20):
                data += chunk
            return data

        received = await loop.run_in_executor(None, read_all)
        await protocol.lost
        return sent, received, position

    sent, received, position = arun(main())
    assert sent == 300_000
    assert received == b"head:" + content[10:300_010] + b":tail"
    assert position == 300_010


def test_sendfile_on_closing_transport(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _ = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await connect(ours)
        transport.close()
        with pytest.raises(RuntimeError, match="closing"):
            await loop.sendfile(transport, io.BytesIO(b"x"))
        await protocol.lost

    arun(main())
