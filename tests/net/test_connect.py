"""create_connection, create_unix_connection, connect_accepted_socket, datagram endpoints."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]


class Recorder(asyncio.Protocol):
    """Records every protocol event in order, and completes ``lost`` on connection_lost."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.transport: Any = None
        self.lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(data)

    def eof_received(self) -> None:
        self.events.append("eof")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc)))
        self.lost.set_result(exc)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    with sock:
        yield sock


def refused_port() -> int:
    """A loopback port nothing listens on (bound and closed at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_create_connection_host_port(arun: Run, listener: socket.socket) -> None:
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(
            Recorder, "127.0.0.1", listener.getsockname()[1]
        )
        assert isinstance(transport, asyncio.Transport)
        assert protocol.events == ["made"]  # connection_made ran before we got control back
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"hi")
            conn.shutdown(socket.SHUT_WR)
            await protocol.lost
        return protocol.events

    assert arun(main()) == ["made", b"hi", "eof", ("lost", type(None))]


def test_create_connection_with_sock_and_local_addr(arun: Run, listener: socket.socket) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        port = listener.getsockname()[1]
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, local_addr=("127.0.0.1", 0)
        )
        assert transport.get_extra_info("sockname")[0] == "127.0.0.1"
        transport.close()
        sock = socket.socket()
        sock.connect(listener.getsockname())
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
        assert transport.get_extra_info("socket").fileno() == sock.fileno()
        transport.close()
        await asyncio.sleep(0)
        for _ in range(2):
            listener.accept()[0].close()

    arun(main())


def test_connection_refused(arun: Run) -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, "127.0.0.1", refused_port()
        )

    with pytest.raises(ConnectionRefusedError):
        arun(main())


def _fake_resolver(loop: asyncio.AbstractEventLoop, infos: list[Any]) -> None:
    async def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        return infos

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]


def _info(port: int) -> Any:
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))


def test_all_errors_and_multiple_exceptions(
    loop: asyncio.AbstractEventLoop, arun: Run, loop_name: str
) -> None:
    if loop_name == "asyncio" and sys.version_info < (3, 12):
        pytest.skip("all_errors is new in 3.12 (tidal accepts it everywhere)")
    _fake_resolver(loop, [_info(refused_port()), _info(refused_port())])

    async def main(**kwargs: Any) -> None:
        await loop.create_connection(asyncio.Protocol, "example.invalid", 1, **kwargs)

    with pytest.raises(OSError, match="Multiple exceptions") as info:
        arun(main())
    assert type(info.value) is OSError
    with pytest.raises(ExceptionGroup) as group:
        arun(main(all_errors=True))
    assert [type(e) for e in group.value.exceptions] == [ConnectionRefusedError] * 2


def test_happy_eyeballs_skips_a_dead_address(
    loop: asyncio.AbstractEventLoop, arun: Run, listener: socket.socket
) -> None:
    good = listener.getsockname()[1]
    _fake_resolver(loop, [_info(refused_port()), _info(good)])

    async def main() -> Any:
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "example.invalid", 1, happy_eyeballs_delay=0.25
        )
        peer = transport.get_extra_info("peername")
        transport.close()
        listener.accept()[0].close()
        return peer

    assert arun(main()) == ("127.0.0.1", good)


def test_happy_eyeballs_races_a_silent_address(
    loop: asyncio.AbstractEventLoop, arun: Run, listener: socket.socket
) -> None:
    # A listener whose accept queue is full drops new SYNs, so connecting to it hangs; the
    # race must move on to the next address after the delay and cancel the hung attempt.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(full.getsockname())
            except BlockingIOError:
                pass
            fillers.append(s)
        good = listener.getsockname()[1]
        _fake_resolver(loop, [_info(full.getsockname()[1]), _info(good)])

        async def main() -> Any:
            transport, _ = await loop.create_connection(
                asyncio.Protocol, "example.invalid", 1, happy_eyeballs_delay=0.05
            )
            peer = transport.get_extra_info("peername")
            transport.close()
            listener.accept()[0].close()
            return peer

        try:
            assert arun(main()) == ("127.0.0.1", good)
        finally:
            for s in fillers:
                s.close()


def test_interleave_orders_families(loop: asyncio.AbstractEventLoop) -> None:
    if type(loop).__module__.startswith("asyncio"):
        pytest.skip("tidal's helper; asyncio's is private")
    from tidal.net.connect import interleave_addrinfos

    v4 = [(socket.AF_INET, 1, 6, "", (f"10.0.0.{i}", 1)) for i in range(3)]
    v6 = [(socket.AF_INET6, 1, 6, "", (f"::{i}", 1, 0, 0)) for i in range(2)]
    mixed = [v6[0], v6[1], v4[0], v4[1], v4[2]]
    assert interleave_addrinfos(mixed) == [v6[0], v4[0], v6[1], v4[1], v4[2]]
    assert interleave_addrinfos(mixed, 2) == [v6[0], v6[1], v4[0], v4[1], v4[2]]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"host": "127.0.0.1", "port": 1, "server_hostname": "x"}, ValueError),
        ({"host": None, "port": None, "ssl": True}, ValueError),
        ({"host": "127.0.0.1", "port": 1, "ssl_handshake_timeout": 1}, ValueError),
        ({"host": "127.0.0.1", "port": 1, "ssl_shutdown_timeout": 1}, ValueError),
        ({}, ValueError),
    ],
)
def test_create_connection_bad_arguments(arun: Run, kwargs: Any, error: Any) -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_connection(asyncio.Protocol, **kwargs)

    with pytest.raises(error):
        arun(main())


def test_create_connection_rejects_datagram_sock_and_sock_with_host(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(type=socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError, match="Stream Socket"):
                await loop.create_connection(asyncio.Protocol, sock=udp)
            with pytest.raises(ValueError, match="can not be specified"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, sock=udp)  # type: ignore[call-overload]  # bad input on purpose

    arun(main())


def test_protocol_factory_error_closes_socket(
    arun: Run, listener: socket.socket, loop_name: str
) -> None:
    if loop_name == "asyncio":
        pytest.skip("asyncio leaks the connected socket here; tidal closes it")

    def broken() -> asyncio.Protocol:
        raise ZeroDivisionError

    async def main() -> None:
        await asyncio.get_running_loop().create_connection(
            broken, "127.0.0.1", listener.getsockname()[1]
        )

    with pytest.raises(ZeroDivisionError):
        arun(main())
    listener.accept()[0].close()


def test_create_unix_connection(arun: Run, tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()

        async def main() -> list[Any]:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_unix_connection(Recorder, path)
            conn, _ = server.accept()
            with conn:
                transport.write(b"ping")
                assert conn.recv(10) == b"ping"
                conn.close()
                await protocol.lost
            return protocol.events

        assert arun(main()) == ["made", "eof", ("lost", type(None))]


def test_create_unix_connection_bad_arguments(arun: Run, tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError):
            await loop.create_unix_connection(asyncio.Protocol)
        with pytest.raises(ValueError):
            await loop.create_unix_connection(asyncio.Protocol, "p", server_hostname="x")
        with pytest.raises(ValueError):
            await loop.create_unix_connection(asyncio.Protocol, "p", ssl=True)
        with socket.socket() as tcp, pytest.raises(ValueError):
            await loop.create_unix_connection(asyncio.Protocol, sock=tcp)
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(asyncio.Protocol, str(tmp_path / "missing"))

    arun(main())


def test_connect_accepted_socket(arun: Run) -> None:
    a, b = socket.socketpair()

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_accepted_socket(Recorder, a)
        transport.write(b"x")
        b.sendall(b"y")
        assert b.recv(1) == b"x"
        b.close()
        await protocol.lost
        return protocol.events

    assert arun(main()) == ["made", b"y", "eof", ("lost", type(None))]


# -- datagrams ---------------------------------------------------------------------------------


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


def test_datagram_endpoint_echo(arun: Run, loop_name: str) -> None:
    async def main() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        server, sp = await loop.create_datagram_endpoint(
            DatagramRecorder, local_addr=("127.0.0.1", 0)
        )
        address = server.get_extra_info("sockname")
        client, cp = await loop.create_datagram_endpoint(DatagramRecorder, remote_addr=address)
        if loop_name != "asyncio" or sys.version_info >= (3, 12):  # 3.11's asyncio is not one
            assert isinstance(client, asyncio.DatagramTransport)
        client.sendto(b"ping")
        data, peer = await sp.received.get()
        server.sendto(data.upper(), peer)
        reply = await cp.received.get()
        with pytest.raises(ValueError, match="Invalid address"):
            client.sendto(b"x", ("127.0.0.1", 1))
        client.close()
        server.close()
        return reply, (await cp.lost, await sp.lost)

    (data, _addr), lost = arun(main())
    assert data == b"PING" and lost == (None, None)


def test_datagram_error_received_on_refused_port(arun: Run) -> None:
    async def main() -> type:
        loop = asyncio.get_running_loop()
        with socket.socket(type=socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            address = closed.getsockname()
        transport, protocol = await loop.create_datagram_endpoint(
            DatagramRecorder, remote_addr=address
        )
        transport.sendto(b"anyone?")  # ICMP port unreachable comes back as an error
        exc = await protocol.errors.get()
        transport.close()
        await protocol.lost
        return type(exc)

    assert arun(main()) is ConnectionRefusedError


def test_datagram_endpoint_options(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol,
            local_addr=("127.0.0.1", 0),
            reuse_port=True,
            allow_broadcast=True,
        )
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        transport.close()
        with pytest.raises(ValueError, match="unexpected address family"):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol)
        with pytest.raises(TypeError, match="2-tuple"):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr="x")
        with (
            socket.socket(type=socket.SOCK_DGRAM) as s,
            pytest.raises(ValueError, match="socket modifier"),
        ):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=s, reuse_port=True)
        with socket.socket() as tcp, pytest.raises(ValueError, match="was expected"):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=tcp)
        await asyncio.sleep(0)

    arun(main())


def test_unix_datagram_endpoint(arun: Run, tmp_path: Path) -> None:
    path = str(tmp_path / "d.sock")

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server, sp = await loop.create_datagram_endpoint(
            DatagramRecorder, local_addr=path, family=socket.AF_UNIX
        )
        client, _ = await loop.create_datagram_endpoint(
            DatagramRecorder, remote_addr=path, family=socket.AF_UNIX
        )
        client.sendto(b"over unix")
        data, _ = await sp.received.get()
        client.close()
        server.close()
        await asyncio.sleep(0)
        return data  # type: ignore[no-any-return]

    assert arun(main()) == b"over unix"
