"""create_server / create_unix_server and the Server object, on both loops."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]


class Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def echo_once(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    data = await reader.readexactly(len(payload))
    writer.close()
    await writer.wait_closed()
    return data


def test_server_lifecycle(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        assert isinstance(server, asyncio.AbstractServer)
        assert isinstance(server, asyncio.base_events.Server)  # uvicorn annotates this class
        assert server.is_serving()
        assert server.get_loop() is loop
        (sock,) = server.sockets
        port = sock.getsockname()[1]
        assert await echo_once(port) == b"ping"
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        await server.wait_closed()
        server.close()  # closing twice is fine
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    arun(main())


def test_start_serving_false_then_serve_forever_cancelled(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        port = server.sockets[0].getsockname()[1]
        forever = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        with pytest.raises(RuntimeError, match="already being awaited"):
            await server.serve_forever()
        assert await echo_once(port) == b"ping"
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert not server.is_serving()
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()

    arun(main())


def test_async_context_manager_and_start_serving(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False) as server:
            await server.start_serving()
            assert server.is_serving()
            assert await echo_once(server.sockets[0].getsockname()[1]) == b"ping"
        assert not server.is_serving()

    arun(main())


def test_several_hosts_and_dedup(arun: Run) -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, ["127.0.0.1", "127.0.0.1", "localhost"], 0)
        count = len(server.sockets)
        server.close()
        await server.wait_closed()
        return count

    count = arun(main())
    names = {info[4][0] for info in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)}
    assert count == len(names | {"127.0.0.1"})


def test_reuse_port_and_backlog(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        first = await loop.create_server(Echo, "127.0.0.1", 0, reuse_port=True, backlog=5)
        port = first.sockets[0].getsockname()[1]
        second = await loop.create_server(Echo, "127.0.0.1", port, reuse_port=True)
        assert first.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        with pytest.raises(OSError, match="address"):
            await loop.create_server(Echo, "127.0.0.1", port, reuse_address=False)
        for server in (first, second):
            server.close()
            await server.wait_closed()

    arun(main())


def test_many_clients_at_once(arun: Run) -> None:
    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        results = await asyncio.gather(*(echo_once(port, b"%d" % i) for i in range(50)))
        server.close()
        await server.wait_closed()
        return results

    assert arun(main()) == [b"%d" % i for i in range(50)]


def test_server_closed_with_clients_connected(arun: Run) -> None:
    """Closing a server stops accepting but leaves open connections alone."""

    async def main() -> tuple[bytes, bool]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"one")
        await reader.readexactly(3)
        server.close()
        waiting = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.01)
        writer.write(b"two")
        still_echoing = await reader.readexactly(3)
        waited_for_client = not waiting.done()
        writer.close()
        await writer.wait_closed()
        await waiting
        return still_echoing, waited_for_client

    data, waited = arun(main())
    assert data == b"two"
    # 3.12 made wait_closed() wait for the connections too; 3.11 returned at once.
    assert waited is (sys.version_info >= (3, 12))


@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_close_and_abort_clients(arun: Run, loop_name: str, how: str) -> None:
    if loop_name == "asyncio" and sys.version_info < (3, 13):
        pytest.skip("new in 3.13 (tidal has them everywhere)")

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        writer.write(b"x")
        await reader.readexactly(1)
        server.close()
        getattr(server, how)()
        await server.wait_closed()
        rest = await reader.read()
        writer.close()
        await writer.wait_closed()
        return rest

    assert arun(main()) == b""


def test_create_server_bad_arguments(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(TypeError, match="SSLContext"):
            await loop.create_server(Echo, "127.0.0.1", 0, ssl=True)
        with pytest.raises(ValueError):
            await loop.create_server(Echo, "127.0.0.1", 0, ssl_handshake_timeout=1)
        with pytest.raises(ValueError):
            await loop.create_server(Echo)  # type: ignore[call-overload]  # bad input on purpose
        with socket.socket(type=socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError, match="Stream Socket"):
                await loop.create_server(Echo, sock=udp)
            with pytest.raises(ValueError, match="can not be specified"):
                await loop.create_server(Echo, "127.0.0.1", 0, sock=udp)  # type: ignore[call-overload]  # bad input on purpose

    arun(main())


def test_create_server_with_sock(arun: Run) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, sock=sock)
        data = await echo_once(sock.getsockname()[1])
        server.close()
        await server.wait_closed()
        return data

    assert arun(main()) == b"ping"
    assert sock.fileno() == -1  # the server closed it


def test_unix_server(arun: Run, tmp_path: Path) -> None:
    path = str(tmp_path / "srv.sock")
    Path(path).touch()  # not a socket: left alone... so binding fails with EADDRINUSE

    async def main() -> tuple[bytes, bool]:
        loop = asyncio.get_running_loop()
        with pytest.raises(OSError, match="already in use"):
            await loop.create_unix_server(Echo, path)
        os.unlink(path)
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # a stale socket file from a previous run is removed
        server = await loop.create_unix_server(Echo, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"unix")
        data = await reader.readexactly(4)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return data, os.path.exists(path)

    data, exists = arun(main())
    assert data == b"unix"
    assert exists is (sys.version_info < (3, 13))  # 3.13 removes the file on close


def test_unix_server_bad_arguments(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError):
            await loop.create_unix_server(Echo)
        with socket.socket() as tcp, pytest.raises(ValueError, match="UNIX Domain"):
            await loop.create_unix_server(Echo, sock=tcp)

    arun(main())


def test_protocol_factory_failure_keeps_server_alive(
    arun: Run, loop_name: str, loop: asyncio.AbstractEventLoop
) -> None:
    if loop_name == "asyncio":
        pytest.skip("asyncio leaks the accepted socket (ResourceWarning); tidal closes it")
    reports: list[dict[str, Any]] = []  # only in debug mode, as asyncio
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    calls = []

    def flaky() -> asyncio.Protocol:
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError("first connection fails")
        return Echo()

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(flaky, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b""  # the failed connection is closed
        writer.close()
        await writer.wait_closed()
        data = await echo_once(port)
        server.close()
        await server.wait_closed()
        return data

    assert arun(main()) == b"ping"
    expected = ["Error on transport creation for incoming connection"] if loop.get_debug() else []
    assert [r["message"] for r in reports] == expected
