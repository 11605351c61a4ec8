"""What code may do to a live transport, as on asyncio's (issue 10, A6 and A8).

- A write-only pipe transport is an ``asyncio.Transport`` whose reading methods raise
  NotImplementedError (asyncio's inherits them from ``asyncio.ReadTransport``).
- A method can be replaced on a live transport (``transport.write = ...``), as a popular ASGI
  server's test suite does for its websocket keepalive tests, and any attribute can be set.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import trustme

Loop = asyncio.AbstractEventLoop
Run = Callable[[Coroutine[Any, Any, Any]], Any]


def test_a_write_pipe_transport_cannot_pause_reading(loop: Loop, arun: Run) -> None:
    async def main() -> None:
        rfd, wfd = os.pipe()
        with open(rfd, "rb", buffering=0), open(wfd, "wb", buffering=0) as wfile:
            transport, _ = await loop.connect_write_pipe(asyncio.Protocol, wfile)
            try:
                assert isinstance(transport, asyncio.Transport)
                assert isinstance(transport, asyncio.ReadTransport)
                for method in (transport.pause_reading, transport.resume_reading):
                    with pytest.raises(NotImplementedError):
                        method()  # type: ignore[operator]
                with pytest.raises(NotImplementedError):
                    transport.is_reading()  # type: ignore[attr-defined]
                transport.write(b"still works")
            finally:
                transport.close()
                await asyncio.sleep(0)

    arun(main())


class Recorder:
    """Stands in for a transport method and records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)


def patch_and_restore(transport: asyncio.BaseTransport, use: Callable[[], None]) -> Recorder:
    """Replace ``transport.write``, call ``use()``, then restore the class's method."""
    recorder = Recorder()
    transport.write = recorder  # type: ignore[attr-defined]
    transport.tagged_by_a_test = True  # type: ignore[attr-defined]
    use()
    del transport.write  # type: ignore[attr-defined]
    assert transport.tagged_by_a_test is True  # type: ignore[attr-defined]
    return recorder


def test_a_stream_transport_method_can_be_replaced(loop: Loop, arun: Run) -> None:
    async def main() -> bytes:
        received = loop.create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.set_result(await reader.read(100))
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        recorder = patch_and_restore(writer.transport, lambda: writer.write(b"intercepted"))
        assert recorder.calls == [(b"intercepted",)]
        writer.write(b"sent")  # the class's own write again
        data = await received
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return data

    assert arun(main()) == b"sent"


def test_a_datagram_transport_method_can_be_replaced(loop: Loop, arun: Run) -> None:
    async def main() -> None:
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        try:
            transport.sendto = Recorder()  # type: ignore[method-assign]
            transport.sendto(b"x", ("127.0.0.1", 9))
            assert transport.sendto.calls == [(b"x", ("127.0.0.1", 9))]  # type: ignore[attr-defined]
        finally:
            transport.close()
            await asyncio.sleep(0)

    arun(main())


def test_pipe_transport_methods_can_be_replaced(loop: Loop, arun: Run) -> None:
    async def main() -> None:
        rfd, wfd = os.pipe()
        with open(rfd, "rb", buffering=0) as rfile, open(wfd, "wb", buffering=0) as wfile:
            wt, _ = await loop.connect_write_pipe(asyncio.Protocol, wfile)
            rt, _ = await loop.connect_read_pipe(asyncio.Protocol, rfile)
            try:
                recorder = patch_and_restore(wt, lambda: wt.write(b"x"))
                assert recorder.calls == [(b"x",)]
                rt.pause_reading = Recorder()  # type: ignore[method-assign]
                rt.pause_reading()
                assert rt.pause_reading.calls == [()]  # type: ignore[attr-defined]
            finally:
                wt.close()
                rt.close()
                await asyncio.sleep(0)

    arun(main())


def test_a_subprocess_transport_method_can_be_replaced(loop: Loop, arun: Run) -> None:
    class Exited(asyncio.SubprocessProtocol):
        def __init__(self) -> None:
            self.exited = loop.create_future()

        def process_exited(self) -> None:
            self.exited.set_result(None)

    async def main() -> None:
        transport, protocol = await loop.subprocess_exec(
            Exited, sys.executable, "-c", "pass", stdin=None, stdout=None, stderr=None
        )
        try:
            transport.send_signal = Recorder()  # type: ignore[method-assign]
            transport.send_signal(15)
            assert transport.send_signal.calls == [(15,)]  # type: ignore[attr-defined]
            del transport.send_signal  # type: ignore[attr-defined]
            await protocol.exited
        finally:
            transport.close()
            await asyncio.sleep(0)

    arun(main())


@pytest.mark.slow
def test_a_tls_transport_method_can_be_replaced(loop: Loop, arun: Run) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main() -> bytes:
        received = loop.create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.set_result(await reader.read(100))
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        recorder = patch_and_restore(writer.transport, lambda: writer.write(b"intercepted"))
        assert recorder.calls == [(b"intercepted",)]
        writer.write(b"sent")
        data = await received
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass  # the server closed first; the TLS goodbye may be cut short on either loop
        server.close()
        await server.wait_closed()
        return data

    assert arun(main()) == b"sent"


def test_socket_family_unchanged_by_patching(loop: Loop, arun: Run) -> None:
    """Patching leaves the transport's own state alone: extra info still answers."""

    async def main() -> None:
        a, b = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        try:
            transport.get_extra_info = Recorder()  # type: ignore[method-assign]
            del transport.get_extra_info  # type: ignore[attr-defined]
            assert transport.get_extra_info("socket").family == socket.AF_UNIX
        finally:
            transport.close()
            await asyncio.sleep(0)
            b.close()

    arun(main())
