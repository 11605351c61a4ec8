"""Server behaviour that changed between Python versions follows the running Python (issue 10,
A5), on asyncio's loop and tidal's alike.

- ``Server._attach()``/``_detach()``: no argument on 3.11 and 3.12 (a connection count), the
  transport on 3.13 (a set of clients, for ``close_clients()``). Code that drives a server's
  bookkeeping itself (transports of its own, test suites) calls them with the running
  version's signature.
- ``wait_closed()`` on a closed server with a connection left: returns at once on 3.11, waits
  for the connection on 3.12+.
- ``create_server`` with several hosts: 3.13 skips an address that fails with EADDRNOTAVAIL;
  3.11 and 3.12 fail, with the running version's wording.
"""

from __future__ import annotations

import asyncio
import errno
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

Loop = asyncio.AbstractEventLoop
Run = Callable[[Coroutine[Any, Any, Any]], Any]

# TEST-NET-1 (RFC 5737): never assigned to a local interface, so bind() fails EADDRNOTAVAIL.
UNAVAILABLE = "192.0.2.1"


class FakeClient:
    """Stands for a transport attached to the server (3.13 keeps it in a weak set)."""

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_attach_and_detach_take_the_running_versions_arguments(loop: Loop, arun: Run) -> None:
    async def main() -> tuple[bool, bool]:
        server: Any = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        client = FakeClient()
        if sys.version_info >= (3, 13):
            with pytest.raises(TypeError):
                server._attach()
            server._attach(client)
        else:
            server._attach()
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        for _ in range(3):
            await asyncio.sleep(0)
        done_while_attached = waiter.done()
        if sys.version_info >= (3, 13):
            server._detach(client)
        else:
            server._detach()
        for _ in range(3):
            await asyncio.sleep(0)
        done_after = waiter.done()
        await waiter
        return done_while_attached, done_after

    # 3.11's wait_closed() returned at once for a closed server; 3.12 waits for the clients.
    assert arun(main()) == (sys.version_info < (3, 12), True)


def test_wait_closed_with_a_real_connection_left(loop: Loop, arun: Run) -> None:
    async def main() -> bool:
        connected = loop.create_future()

        class Accepted(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                connected.set_result(transport)

        server = await loop.create_server(Accepted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        accepted = await connected
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        for _ in range(3):
            await asyncio.sleep(0)
        done_while_connected = waiter.done()
        accepted.close()
        client.close()
        await waiter
        return done_while_connected

    assert arun(main()) is (sys.version_info < (3, 12))


def test_create_server_with_an_unavailable_host(loop: Loop, arun: Run) -> None:
    async def main() -> tuple[int, Any]:
        try:
            server = await loop.create_server(
                asyncio.Protocol, ["127.0.0.1", UNAVAILABLE], 0, reuse_address=True
            )
        except OSError as exc:
            return exc.errno, str(exc)
        hosts = [sock.getsockname()[0] for sock in server.sockets]
        server.close()
        await server.wait_closed()
        return 0, hosts

    if sys.version_info >= (3, 13):
        assert arun(main()) == (0, ["127.0.0.1"])
    else:
        assert arun(main()) == (
            errno.EADDRNOTAVAIL,
            f"[Errno {errno.EADDRNOTAVAIL}] error while attempting to bind on address "
            f"('{UNAVAILABLE}', 0): cannot assign requested address",
        )


def test_create_server_with_only_an_unavailable_host(loop: Loop, arun: Run) -> None:
    async def main() -> str:
        with pytest.raises(OSError) as caught:
            await loop.create_server(asyncio.Protocol, UNAVAILABLE, 0)
        return str(caught.value)

    if sys.version_info >= (3, 13):
        expected = f"could not bind on any address out of [('{UNAVAILABLE}', 0)]"
    else:
        expected = (
            f"[Errno {errno.EADDRNOTAVAIL}] error while attempting to bind on address "
            f"('{UNAVAILABLE}', 0): cannot assign requested address"
        )
    assert arun(main()) == expected
