"""TCP_NODELAY on stream transports, sockets made with proto=0 included (a deviation)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any


def _nodelay(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_nodelay_on_accepted_connections(arun: Callable[..., Any], loop_name: str) -> None:
    async def main() -> tuple[bool, bool]:
        accepted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(_nodelay(writer))
            writer.close()
            await writer.wait_closed()

        # A listener made the way server frameworks make theirs: proto 0, not IPPROTO_TCP.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        assert listener.proto == 0
        server = await asyncio.start_server(handle, sock=listener)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            client = _nodelay(writer)
            on_accepted = await accepted
            await reader.read()
            writer.close()
            await writer.wait_closed()
        return client, on_accepted

    client, on_accepted = arun(main())
    assert client  # open_connection's own socket: proto IPPROTO_TCP on both loops
    # asyncio sets TCP_NODELAY only when proto == IPPROTO_TCP; tidal on every TCP socket, as
    # uvloop does (docs/design.md, Deviations).
    assert on_accepted is (loop_name != "asyncio")
