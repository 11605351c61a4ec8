"""Datagram transports on both loops: sendto rules, close and abort, reading on and off."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest

Run = Callable[..., Any]


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.lost: asyncio.Future[Any] = loop.create_future()
        self.made = 0

    def connection_made(self, transport: Any) -> None:
        self.made += 1

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def endpoint(**kwargs: Any) -> tuple[Any, Collector]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(Collector, **kwargs)


def test_sendto_rules_and_close(arun: Run) -> None:
    async def main() -> list[Any]:
        receiver, rp = await endpoint(local_addr=("127.0.0.1", 0))
        address = receiver.get_extra_info("sockname")
        sender, sp = await endpoint(remote_addr=address)
        assert sender.get_extra_info("peername") == address
        assert sender.get_write_buffer_size() == 0
        with pytest.raises(TypeError, match="bytes-like"):
            sender.sendto("text")
        sender.sendto(bytearray(b"one"))
        sender.sendto(b"two", address)  # the connected address itself is allowed
        sender.sendto(b"")
        got = [await rp.queue.get(), await rp.queue.get()]
        if sys.version_info >= (3, 13):  # earlier versions drop empty datagrams
            got.append(await rp.queue.get())
        sender.close()
        assert sender.is_closing()
        sender.sendto(b"after close")  # dropped: connection is gone
        receiver.abort()
        return [got, await sp.lost, await rp.lost, sp.made, rp.made]

    expected_empty = [b""] if sys.version_info >= (3, 13) else []
    assert arun(main()) == [[b"one", b"two", *expected_empty], None, None, 1, 1]


def test_unconnected_sendto_and_pause_reading(arun: Run) -> None:
    async def main() -> list[bytes]:
        receiver, rp = await endpoint(local_addr=("127.0.0.1", 0))
        address = receiver.get_extra_info("sockname")
        sender, _ = await endpoint(family=socket.AF_INET)
        receiver.pause_reading()
        assert not receiver.is_reading()
        sender.sendto(b"queued in the kernel", address)
        await asyncio.sleep(0.02)
        assert rp.queue.empty()
        receiver.resume_reading()
        got = [await rp.queue.get()]
        for transport in (sender, receiver):
            transport.close()
        await rp.lost
        return got

    assert arun(main()) == [b"queued in the kernel"]
