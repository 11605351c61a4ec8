"""TLS on both loops: handshakes, certificate errors, timeouts, start_tls, vanishing peers."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import trustme

Run = Callable[..., Any]

TEST_TIMEOUT = 10.0  # seconds any one test's coroutine may run


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True, scope="module")
def no_fd_leaks() -> Iterator[None]:
    gc.collect()
    before = _open_fds()
    yield
    gc.collect()
    assert not (_open_fds() - before), "descriptors leaked by this module"


@pytest.fixture
def arun(loop: asyncio.AbstractEventLoop) -> Iterator[Callable[[Coroutine[Any, Any, Any]], Any]]:
    """Run on the loop under test, bounded; in debug mode both loops report failed server
    handshakes ("Error on transport creation"), which is expected here and nothing else is."""
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reports.append(context))

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return loop.run_until_complete(asyncio.wait_for(coro, TEST_TIMEOUT))

    yield run
    allowed = {"Error on transport creation for incoming connection"} if loop.get_debug() else set()
    assert [r for r in reports if r["message"] not in allowed] == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    writer.close()


async def _tls_server(ctx: ssl.SSLContext, **kwargs: Any) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=ctx, **kwargs)
    return server, server.sockets[0].getsockname()[1]


async def _stop(server: asyncio.AbstractServer) -> None:
    server.close()
    await server.wait_closed()


def test_echo_and_extra_info(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    payload = os.urandom(1_500_000)

    async def main() -> tuple[bytes, bytes]:
        server, port = await _tls_server(server_ctx)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        assert transport.get_extra_info("sslcontext") is client_ctx
        assert isinstance(transport.get_extra_info("ssl_object"), ssl.SSLObject)
        assert transport.get_extra_info("cipher")[1].startswith("TLS")
        assert transport.get_extra_info("peercert")["subjectAltName"]
        assert transport.get_extra_info("peername")[1] == port
        assert not transport.can_write_eof()
        writer.write(b"hello")
        small = await reader.readexactly(5)
        writer.write(payload)  # bigger than every buffer: exercises flow control both ways
        await writer.drain()
        big = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        await _stop(server)
        return small, big

    assert arun(main()) == (b"hello", payload)


def test_hostname_mismatch(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def main() -> None:
        server, port = await _tls_server(server_ctx)
        try:
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="wrong.example"
            )
        finally:
            await _stop(server)

    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        arun(main())


def test_untrusted_certificate(arun: Run, server_ctx: ssl.SSLContext) -> None:
    async def main() -> None:
        server, port = await _tls_server(server_ctx)
        try:
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl.create_default_context(), server_hostname="localhost"
            )
        finally:
            await _stop(server)

    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        arun(main())


def test_ssl_true_and_server_hostname_rules(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with a, b:
            with pytest.raises(ValueError, match="server_hostname"):
                await loop.create_connection(asyncio.Protocol, sock=a, ssl=True)
            with pytest.raises(ValueError, match="positive"):
                await loop.create_connection(
                    asyncio.Protocol, sock=a, ssl=True, server_hostname="x", ssl_handshake_timeout=0
                )

    arun(main())


def _silent_server() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_handshake_timeout(arun: Run, client_ctx: ssl.SSLContext) -> None:
    listener, port = _silent_server()  # accepts (via the backlog) but never speaks TLS

    async def main() -> None:
        try:
            await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=client_ctx,
                server_hostname="localhost",
                ssl_handshake_timeout=0.1,
            )
        finally:
            listener.accept()[0].close()
            listener.close()

    with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer"):
        arun(main())


@pytest.mark.parametrize("how", ["close", "reset"])
def test_peer_vanishes_mid_handshake(arun: Run, client_ctx: ssl.SSLContext, how: str) -> None:
    listener, port = _silent_server()

    def vanish() -> None:
        conn, _ = listener.accept()
        conn.recv(100)  # the ClientHello arrived: now disappear
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    thread = threading.Thread(target=vanish)
    thread.start()

    async def main() -> None:
        try:
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )
        finally:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            listener.close()

    with pytest.raises(ConnectionResetError):
        arun(main())


def test_server_survives_a_client_that_vanishes_mid_handshake(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def main() -> bytes:
        server, port = await _tls_server(server_ctx)
        loop = asyncio.get_running_loop()
        with socket.socket() as raw:
            raw.setblocking(False)
            await loop.sock_connect(raw, ("127.0.0.1", port))
            await loop.sock_sendall(raw, b"\x16\x03\x01\x00\x05hello")  # a broken ClientHello
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(b"still serving")
        data = await reader.readexactly(13)
        writer.close()
        await writer.wait_closed()
        await _stop(server)
        return data

    assert arun(main()) == b"still serving"


def test_start_tls_both_sides(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def main() -> tuple[bytes, bytes]:
        upgraded: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readline()  # plaintext "STARTTLS\n"
            writer.write(b"OK\n")
            await writer.drain()
            await writer.start_tls(server_ctx)
            upgraded.set_result(line + await reader.readexactly(6))
            writer.write(b"secret")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        await writer.start_tls(client_ctx, server_hostname="localhost")
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"hidden")
        reply = await reader.readexactly(6)
        got = await upgraded
        writer.close()
        await writer.wait_closed()
        await _stop(server)
        return got, reply

    assert arun(main()) == (b"STARTTLS\nhidden", b"secret")


def test_start_tls_argument_errors(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with b:
            transport, protocol = await loop.connect_accepted_socket(asyncio.Protocol, a)
            with pytest.raises(TypeError, match="SSLContext"):
                await loop.start_tls(transport, protocol, None)  # type: ignore[arg-type]
            transport.close()
            await asyncio.sleep(0)

    arun(main())


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[Any] = loop.create_future()
        self.events: list[Any] = []

    def connection_made(self, transport: Any) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(data)

    def eof_received(self) -> None:
        self.events.append("eof")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


def test_clean_close_and_writes_after_close(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def main() -> tuple[list[Any], Any]:
        loop = asyncio.get_running_loop()
        server, port = await _tls_server(server_ctx)
        transport, protocol = await loop.create_connection(
            _Recorder, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        transport.write(b"echo me")
        while b"echo me" not in protocol.events:
            await asyncio.sleep(0.001)
        transport.close()
        assert transport.is_closing()
        transport.write(b"dropped")  # after close: ignored
        exc = await protocol.lost
        await _stop(server)
        return protocol.events, exc

    assert arun(main()) == (["made", b"echo me", "eof", "lost"], None)


def test_peer_closes_first(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def main() -> tuple[list[Any], Any]:
        loop = asyncio.get_running_loop()

        async def bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"bye")
            writer.close()

        server = await asyncio.start_server(bye, "127.0.0.1", 0, ssl=server_ctx)
        _, protocol = await loop.create_connection(
            _Recorder,
            "127.0.0.1",
            server.sockets[0].getsockname()[1],
            ssl=client_ctx,
            server_hostname="localhost",
        )
        exc = await protocol.lost
        await _stop(server)
        return protocol.events, exc

    assert arun(main()) == (["made", b"bye", "eof", "lost"], None)


def test_shutdown_timeout(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """A peer that completes the handshake and then ignores our close_notify."""
    listener, port = _silent_server()
    release = threading.Event()

    def mute_peer() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            release.wait(TEST_TIMEOUT)  # never reads, never answers close_notify
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=mute_peer)
    thread.start()

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_connection(
                _Recorder,
                "127.0.0.1",
                port,
                ssl=client_ctx,
                server_hostname="localhost",
                ssl_shutdown_timeout=0.1,
            )
            transport.close()
            return type(await protocol.lost)
        finally:
            release.set()
            await loop.run_in_executor(None, thread.join)
            listener.close()

    assert arun(main()) is TimeoutError


def test_buffered_protocol_over_tls(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    payload = os.urandom(300_000)

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(1000)
            self.got = bytearray()
            self.full = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buf)  # asyncio needs a memoryview here (bytearray is copied)

        def buffer_updated(self, nbytes: int) -> None:
            self.got += self.buf[:nbytes]
            if len(self.got) >= len(payload) and not self.full.done():
                self.full.set_result(None)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server, port = await _tls_server(server_ctx)
        transport, protocol = await loop.create_connection(
            Buffered, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        transport.write(payload)
        await protocol.full
        transport.close()
        await asyncio.sleep(0.01)
        await _stop(server)
        return bytes(protocol.got)

    assert arun(main()) == payload


def test_sendfile_over_tls_falls_back(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, tmp_path: Any
) -> None:
    content = os.urandom(200_000)
    path = tmp_path / "f.bin"
    path.write_bytes(content)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server, port = await _tls_server(server_ctx)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        with open(path, "rb") as f:
            with pytest.raises(RuntimeError, match="fallback is disabled"):
                await loop.sendfile(writer.transport, f, fallback=False)
            sent = await loop.sendfile(writer.transport, f)
        assert sent == len(content)
        echoed = await reader.readexactly(len(content))
        writer.close()
        await writer.wait_closed()
        await _stop(server)
        return echoed

    assert arun(main()) == content


def test_flow_control_and_pause_reading_over_tls(
    arun: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    payload = os.urandom(8 * 1024 * 1024)

    class Sink(asyncio.Protocol):
        def __init__(self) -> None:
            self.got = bytearray()
            self.transport: Any = None
            self.full = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            transport.pause_reading()  # a slow reader: nothing is read until resumed
            assert not transport.is_reading()

        def data_received(self, data: bytes) -> None:
            self.got += data
            if len(self.got) == len(payload):
                self.full.set_result(None)

    class Source(_Recorder):
        def pause_writing(self) -> None:
            self.events.append("pause")

        def resume_writing(self) -> None:
            self.events.append("resume")

    async def main() -> tuple[list[Any], bool]:
        loop = asyncio.get_running_loop()
        sinks: list[Sink] = []

        def make_sink() -> Sink:
            sinks.append(Sink())
            return sinks[-1]

        server = await loop.create_server(make_sink, "127.0.0.1", 0, ssl=server_ctx)
        transport, source = await loop.create_connection(
            Source,
            "127.0.0.1",
            server.sockets[0].getsockname()[1],
            ssl=client_ctx,
            server_hostname="localhost",
        )
        sent = 0
        while "pause" not in source.events:  # write until the TLS layer pushes back
            assert sent < len(payload), "pause_writing() never came"
            transport.write(payload[sent : sent + 65536])
            sent += 65536
            await asyncio.sleep(0)
        assert transport.get_write_buffer_size() > 0
        transport.write(payload[sent:])  # the rest is buffered, not refused
        while not sinks or sinks[0].transport is None:
            await asyncio.sleep(0.001)
        sinks[0].transport.resume_reading()
        await sinks[0].full
        while "resume" not in source.events:
            await asyncio.sleep(0.001)
        transport.close()
        await source.lost
        server.close()
        sinks[0].transport.close()
        await server.wait_closed()
        return source.events, bytes(sinks[0].got) == payload

    events, intact = arun(main())
    assert events[:3] == ["made", "pause", "resume"] and events[-1] == "lost"
    assert intact
