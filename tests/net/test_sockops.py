"""loop.sock_* coroutines on both loops: data, errors, cancellation, sendfile."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    with a, b:
        yield a, b


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    with sock:
        yield sock


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with SO_LINGER 0, so that its peer gets a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def tcp_pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    loop = asyncio.get_running_loop()
    client = socket.socket()
    client.setblocking(False)
    accepting = asyncio.ensure_future(loop.sock_accept(listener))
    await loop.sock_connect(client, listener.getsockname())
    server, _ = await accepting
    return client, server


def test_recv_and_sendall_roundtrip(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        receiving = asyncio.ensure_future(loop.sock_recv(b, 100))  # blocks first: nothing sent
        await asyncio.sleep(0)
        await loop.sock_sendall(a, b"hello")
        return await receiving

    assert arun(main()) == b"hello"


def test_large_sendall_to_slow_reader_arrives_whole(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    payload = os.urandom(3 * 1024 * 1024)  # far more than the socket buffers hold

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        sending = asyncio.ensure_future(loop.sock_sendall(a, payload))
        received = bytearray()
        while len(received) < len(payload):
            await asyncio.sleep(0)  # a slow reader: the writer must wait for room
            received += await loop.sock_recv(b, 65536)
        await sending
        return bytes(received)

    assert arun(main()) == payload


def test_recv_into_and_eof(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair

    async def main() -> tuple[int, bytes, int]:
        loop = asyncio.get_running_loop()
        buf = bytearray(10)
        receiving = asyncio.ensure_future(loop.sock_recv_into(b, buf))
        await asyncio.sleep(0)
        await loop.sock_sendall(a, b"abc")
        n = await receiving
        a.shutdown(socket.SHUT_WR)
        eof = await loop.sock_recv_into(b, buf)
        return n, bytes(buf[:n]), eof

    assert arun(main()) == (3, b"abc", 0)


def test_cancelled_recv_leaves_socket_usable(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await loop.sock_sendall(a, b"after")
        return await loop.sock_recv(b, 100)

    assert arun(main()) == b"after"


def test_recv_timeout_then_recv_again(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(b, 10), 0.01)
        loop.call_soon(a.send, b"x")
        return await loop.sock_recv(b, 10)

    assert arun(main()) == b"x"


def test_accept_connect_and_peer_addresses(arun: Run, listener: socket.socket) -> None:
    async def main() -> bool:
        client, server = await tcp_pair(listener)
        with client, server:
            assert server.gettimeout() == 0  # accepted sockets come back non-blocking
            return bool(server.getpeername() == client.getsockname())

    assert arun(main())


def test_connect_resolves_names(arun: Run, listener: socket.socket) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with socket.socket() as client:
            client.setblocking(False)
            await loop.sock_connect(client, ("localhost", listener.getsockname()[1]))
            conn, _ = await loop.sock_accept(listener)
            conn.close()

    arun(main())


def test_connect_refused(arun: Run) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused

        async def main() -> None:
            loop = asyncio.get_running_loop()
            with socket.socket() as client:
                client.setblocking(False)
                await loop.sock_connect(client, ("127.0.0.1", port))

        with pytest.raises(ConnectionRefusedError):
            arun(main())


def test_cancelled_accept_leaves_listener_usable(arun: Run, listener: socket.socket) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(loop.sock_accept(listener))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        client, server = await tcp_pair(listener)
        client.close()
        server.close()

    arun(main())


def test_recv_after_peer_reset(arun: Run, listener: socket.socket) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        client, server = await tcp_pair(listener)
        with client, server:
            receiving = asyncio.ensure_future(loop.sock_recv(server, 10))
            await asyncio.sleep(0)
            reset(client)
            await receiving

    with pytest.raises(ConnectionResetError):
        arun(main())


def test_udp_sendto_recvfrom(arun: Run) -> None:
    async def main() -> tuple[int, bytes, bool]:
        loop = asyncio.get_running_loop()
        with socket.socket(type=socket.SOCK_DGRAM) as a, socket.socket(type=socket.SOCK_DGRAM) as b:
            for s in (a, b):
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
            receiving = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0)
            sent = await loop.sock_sendto(a, b"ping", b.getsockname())
            data, addr = await receiving
            return sent, data, addr == a.getsockname()

    assert arun(main()) == (4, b"ping", True)


def test_recvfrom_into_truncates_to_nbytes(arun: Run) -> None:
    async def main() -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        with socket.socket(type=socket.SOCK_DGRAM) as a, socket.socket(type=socket.SOCK_DGRAM) as b:
            for s in (a, b):
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
            buf = bytearray(100)
            into = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf, 2))
            await asyncio.sleep(0)
            await loop.sock_sendto(a, b"pong", b.getsockname())
            nbytes, _ = await into
            return nbytes, bytes(buf[:nbytes])

    assert arun(main()) == (2, b"po")


def test_ssl_socket_rejected(arun: Run) -> None:
    context = ssl.create_default_context()
    with context.wrap_socket(socket.socket(), server_hostname="example.invalid") as tls_sock:

        async def main() -> None:
            await asyncio.get_running_loop().sock_recv(tls_sock, 1)

        with pytest.raises(TypeError, match="SSLSocket"):
            arun(main())


def test_blocking_socket_rejected_in_debug_mode(
    loop: asyncio.AbstractEventLoop, arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = pair
    a.setblocking(True)
    loop.set_debug(True)

    async def main() -> None:
        await loop.sock_recv(a, 1)

    with pytest.raises(ValueError, match="non-blocking"):
        arun(main())


def test_transport_fd_is_off_limits(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        try:
            with pytest.raises(RuntimeError, match="used by transport"):
                loop.add_reader(a.fileno(), lambda: None)
            with pytest.raises(RuntimeError, match="used by transport"):
                loop.remove_writer(a)
            with pytest.raises(RuntimeError, match="used by transport"):
                await _blocked_recv(loop, a)
        finally:
            transport.close()
            await asyncio.sleep(0)

    arun(main())


async def _blocked_recv(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    # sock_recv only checks ownership when it has to wait; nothing was sent, so it waits.
    return await loop.sock_recv(sock, 1)


def test_add_reader_semantics(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        seen: list[Any] = []
        done = loop.create_future()

        def readable(tag: str) -> None:
            seen.append((tag, b.recv(10)))
            loop.remove_reader(b)
            done.set_result(None)

        loop.add_reader(b, readable, "first")
        loop.add_reader(b.fileno(), readable, "second")  # replaces the first
        a.send(b"hi")
        await done
        seen.append(loop.remove_reader(b))  # already removed
        with pytest.raises(ValueError):
            loop.add_reader("not a file", readable)  # type: ignore[arg-type]  # bad input on purpose
        return seen

    assert arun(main()) == [("second", b"hi"), False]


# -- sendfile ----------------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path: Path) -> Iterator[Any]:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    with open(path, "rb") as f:
        yield f


async def _drain(loop: asyncio.AbstractEventLoop, sock: socket.socket, total: int) -> bytes:
    received = bytearray()
    while len(received) < total:
        chunk = await loop.sock_recv(sock, 262144)
        if not chunk:
            break
        received += chunk
    return bytes(received)


@pytest.mark.parametrize(("offset", "count"), [(0, None), (1000, 5000), (100, None)])
def test_sock_sendfile(
    arun: Run, listener: socket.socket, data_file: Any, offset: int, count: int | None
) -> None:
    content = data_file.read()
    data_file.seek(0)
    expected = content[offset : offset + count] if count else content[offset:]

    async def main() -> tuple[int, bytes, int]:
        loop = asyncio.get_running_loop()
        client, server = await tcp_pair(listener)
        with client, server:
            receiving = asyncio.ensure_future(_drain(loop, server, len(expected)))
            sent = await loop.sock_sendfile(client, data_file, offset, count)
            return sent, await receiving, data_file.tell()

    sent, received, position = arun(main())
    assert (sent, received, position) == (len(expected), expected, offset + len(expected))


def test_sock_sendfile_falls_back_for_non_files(arun: Run, listener: socket.socket) -> None:
    payload = os.urandom(300_000)

    async def main() -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        client, server = await tcp_pair(listener)
        with client, server:
            receiving = asyncio.ensure_future(_drain(loop, server, len(payload)))
            sent = await loop.sock_sendfile(client, io.BytesIO(payload))
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(client, io.BytesIO(payload), fallback=False)
            return sent, await receiving

    assert arun(main()) == (len(payload), payload)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"offset": -1}, ValueError),
        ({"offset": "0"}, TypeError),
        ({"count": 0}, ValueError),
        ({"count": 1.5}, TypeError),
    ],
)
def test_sock_sendfile_bad_arguments(
    arun: Run, pair: tuple[socket.socket, socket.socket], data_file: Any, kwargs: Any, error: Any
) -> None:
    async def main() -> None:
        await asyncio.get_running_loop().sock_sendfile(pair[0], data_file, **kwargs)

    with pytest.raises(error):
        arun(main())


def test_sock_sendfile_rejects_text_files_and_datagram_sockets(
    arun: Run, tmp_path: Path, data_file: Any
) -> None:
    text = tmp_path / "t.txt"
    text.write_text("x")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with open(text) as f, socket.socket() as s:
            s.setblocking(False)
            with pytest.raises(ValueError, match="binary mode"):
                await loop.sock_sendfile(s, f)  # type: ignore[arg-type]  # bad input on purpose
        with socket.socket(type=socket.SOCK_DGRAM) as d:
            d.setblocking(False)
            with pytest.raises(ValueError, match="SOCK_STREAM"):
                await loop.sock_sendfile(d, data_file)

    arun(main())


@pytest.mark.skipif(sys.platform != "linux", reason="uses a Linux socketpair")
def test_unix_socketpair_sendall_memoryview(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(a, memoryview(b"abcdef")[2:])
        return await loop.sock_recv(b, 10)

    assert arun(main()) == b"cdef"


def test_large_recv_sizes_return_exact_bytes(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    payload = os.urandom(700_000)

    async def main() -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()
        sending = asyncio.ensure_future(loop.sock_sendall(a, payload))
        received = bytearray()
        while len(received) < len(payload):
            chunk = await loop.sock_recv(b, 1 << 20)  # more than tidal's reusable buffer
            assert type(chunk) is bytes and 0 < len(chunk) <= 1 << 20
            received += chunk
        await sending
        await loop.sock_sendall(a, b"tail")
        return bytes(received), await loop.sock_recv(b, 200_000)

    assert arun(main()) == (payload, b"tail")


def test_busy_tasks_do_not_starve_io(arun: Run, pair: tuple[socket.socket, socket.socket]) -> None:
    """A task that yields every turn keeps the ready queue non-empty; I/O must still run."""
    a, b = pair

    async def main() -> int:
        loop = asyncio.get_running_loop()
        spins = 0
        stop = False

        async def spin() -> None:
            nonlocal spins
            while not stop:
                spins += 1
                await asyncio.sleep(0)

        spinner = asyncio.ensure_future(spin())
        for _ in range(50):
            loop.call_soon(a.send, b"x")
            assert await loop.sock_recv(b, 10) == b"x"
        stop = True
        await spinner
        return spins

    assert arun(main()) > 0


# -- descriptors after a blocked operation completed ------------------------------------------
# tidal parks the (disarmed, one-shot) epoll entry of a completed operation instead of deleting
# it (net/sockops.py, io/epoll.py). To every caller the descriptor must look unwatched, and a
# closed socket's number, reused by a new socket, must never get the old socket's events.


async def blocked_recv(
    loop: asyncio.AbstractEventLoop, sender: socket.socket, sock: socket.socket
) -> None:
    """A sock_recv on ``sock`` that has to wait for its data, so it completes from an event."""
    receiving = asyncio.ensure_future(loop.sock_recv(sock, 100))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    sender.send(b"ping")
    assert await receiving == b"ping"


def socketpair_at(fd: int) -> tuple[socket.socket, socket.socket]:
    """A new non-blocking socketpair whose first socket has descriptor number ``fd``."""
    c, d = socket.socketpair()
    c.setblocking(False)
    d.setblocking(False)
    if c.fileno() != fd:  # something else took the lowest number meanwhile
        c.close()
        d.close()
        pytest.fail(f"descriptor {fd} was not reused (got {c.fileno()})")
    return c, d


def test_completed_operations_leave_the_socket_unwatched(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        await blocked_recv(loop, a, b)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        payload = b"x" * (1 << 20)
        sending = asyncio.ensure_future(loop.sock_sendall(a, payload))  # has to wait for room
        got = 0
        while got < len(payload):
            got += len(await loop.sock_recv(b, 65536))
        await sending
        await asyncio.sleep(0)
        return loop.remove_reader(b), loop.remove_writer(a)

    assert arun(main()) == (False, False)


@pytest.mark.parametrize("duplicated", [False, True], ids=["closed", "closed-with-dup"])
def test_reused_descriptor_gets_no_stale_callback(
    arun: Run, pair: tuple[socket.socket, socket.socket], duplicated: bool
) -> None:
    """Close a socket right after a blocked sock_recv on it; a new socket gets its number."""
    a, b = pair

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        await blocked_recv(loop, a, b)
        fd = b.fileno()
        keep = b.dup() if duplicated else None  # the old file stays open under another number
        b.close()
        c, d = socketpair_at(fd)
        calls: list[str] = []
        fired = loop.create_future()

        def readable() -> None:
            calls.append(c.recv(100).decode())
            if not fired.done():
                fired.set_result(None)

        try:
            loop.add_reader(c, readable)
            if keep is not None:
                a.send(b"old")  # readable data on the old file, which is not watched any more
            await asyncio.sleep(0.05)
            assert calls == []
            d.send(b"new")
            await asyncio.wait_for(fired, 5)
            loop.remove_reader(c)
            return calls
        finally:
            c.close()
            d.close()
            if keep is not None:
                keep.close()

    assert arun(main()) == ["new"]


@pytest.mark.parametrize("duplicated", [False, True], ids=["closed", "closed-with-dup"])
def test_sock_recv_on_a_reused_descriptor(
    arun: Run, pair: tuple[socket.socket, socket.socket], duplicated: bool
) -> None:
    a, b = pair

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        await blocked_recv(loop, a, b)
        fd = b.fileno()
        keep = b.dup() if duplicated else None
        b.close()
        c, d = socketpair_at(fd)
        try:
            if keep is not None:
                a.send(b"old")
            await blocked_recv(loop, d, c)  # waits on the new socket under the old number
            await blocked_recv(loop, d, c)  # and once more on its own parked entry
            if keep is None:
                return []
            return [await loop.sock_recv(keep, 10)]  # the old file's data is still there
        finally:
            c.close()
            d.close()
            if keep is not None:
                keep.close()

    assert arun(main()) == ([b"old"] if duplicated else [])


def test_add_reader_and_transport_after_a_blocked_sock_recv(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    """The same socket, watched by add_reader and then a transport after sock_recv waited."""
    a, b = pair

    async def main() -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()
        await blocked_recv(loop, a, b)
        got: asyncio.Future[bytes] = loop.create_future()
        loop.add_reader(b, lambda: got.done() or got.set_result(b.recv(100)))
        a.send(b"reader")
        first = await asyncio.wait_for(got, 5)
        assert loop.remove_reader(b)
        await blocked_recv(loop, a, b)
        received: asyncio.Future[bytes] = loop.create_future()

        class Proto(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                if not received.done():
                    received.set_result(data)

        transport, _ = await loop.connect_accepted_socket(Proto, b.dup())
        try:
            a.send(b"transport")
            return first, await asyncio.wait_for(received, 5)
        finally:
            transport.close()
            await asyncio.sleep(0)

    assert arun(main()) == (b"reader", b"transport")


def test_unread_data_on_an_idle_socket_does_not_busy_loop(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    """Data arriving after the operation finished must not wake the loop again and again."""
    a, b = pair

    async def main() -> float:
        loop = asyncio.get_running_loop()
        await blocked_recv(loop, a, b)
        a.send(b"unread")
        start = time.process_time()
        await asyncio.sleep(0.2)
        return time.process_time() - start

    assert arun(main()) < 0.1  # a spinning loop burns the whole 0.2 s


def test_recv_and_sendall_waiting_on_one_socket_at_once(
    arun: Run, pair: tuple[socket.socket, socket.socket]
) -> None:
    """A read and a write wait on the same descriptor together (one registration, two events)."""
    a, b = pair
    payload = os.urandom(2 * 1024 * 1024)

    async def main() -> tuple[bytes, int, bool, bool]:
        loop = asyncio.get_running_loop()
        receiving = asyncio.ensure_future(loop.sock_recv(a, 100))  # waits for b's reply
        sending = asyncio.ensure_future(loop.sock_sendall(a, payload))  # waits for room
        await asyncio.sleep(0)
        got = 0
        while got < len(payload):
            got += len(await loop.sock_recv(b, 65536))
        await sending
        await loop.sock_sendall(b, b"reply")
        reply = await receiving
        await asyncio.sleep(0)
        return reply, got, loop.remove_reader(a), loop.remove_writer(a)

    assert arun(main()) == (b"reply", len(payload), False, False)


def test_tidal_parks_a_completed_one_shot_registration(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """tidal beyond asyncio: the second wait on a socket re-arms its parked epoll entry."""
    import tidal
    from tidal.io.epoll import EpollPoller

    a, b = pair
    loop = tidal.new_event_loop()
    try:
        poller = loop._poller  # type: ignore[attr-defined]
        if type(poller) is not EpollPoller:
            pytest.skip("one-shot registrations need the epoll poller")

        async def main() -> None:
            await blocked_recv(loop, a, b)
            assert b.fileno() in poller._parked and b.fileno() not in poller.get_map()
            assert loop._io_registrations == 0  # type: ignore[attr-defined]
            await blocked_recv(loop, a, b)
            assert b.fileno() in poller._parked

        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()
