"""The worked examples of docs/testing.md, run as they are printed there.

The retrying client really speaks HTTP/1.1 over a loopback connection to a real asyncio server
in the same loop; only the clock is virtual.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import tidal.testing

# -- docs/testing.md, "A retrying HTTP client with backoff" -----------------------------------


async def get_with_retries(host: str, port: int, path: str, *, cap: float = 64.0) -> bytes:
    """GET ``path``; on a 503, wait 1, 2, 4 ... seconds (at most ``cap``) and try again."""
    delay = 1.0
    while True:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            status_line = await asyncio.wait_for(reader.readline(), timeout=10)
            body = (await reader.read()).split(b"\r\n\r\n", 1)[-1]
        finally:
            writer.close()
            await writer.wait_closed()
        if b" 503 " not in status_line:
            return body
        await asyncio.sleep(delay)
        delay = min(delay * 2, cap)


async def start_flaky_server(down_until: float) -> asyncio.Server:
    """An HTTP server that answers 503 until loop time ``down_until``, then 200."""
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # request line and headers
        if loop.time() < down_until:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.tidal(virtual_time=True)
async def test_client_rides_out_ten_minutes_of_downtime() -> None:
    loop = asyncio.get_running_loop()
    server = await start_flaky_server(down_until=600.0)  # down for 10 minutes
    port = server.sockets[0].getsockname()[1]
    started = time.perf_counter()

    body = await get_with_retries("127.0.0.1", port, "/")

    wall = time.perf_counter() - started
    server.close()
    await server.wait_closed()
    assert body == b"ok"
    # Waits of 1, 2, 4 ... 64, then 64 s each: the first try after 600 s is at 639 s.
    assert loop.time() == 639.0
    assert wall < 0.5, f"10 virtual minutes took {wall:.3f} s of wall time"


# -- docs/testing.md, "A race caught by fuzzing" ---------------------------------------------

cache: dict[str, str] = {}
loads: list[str] = []


async def load_user(key: str) -> str:
    loads.append(key)
    await asyncio.sleep(0)  # the database round trip
    return key.upper()


async def get_user(key: str) -> str:
    if key not in cache:
        cache[key] = await load_user(key)
    return cache[key]


async def two_callers() -> int:
    cache.clear()
    loads.clear()
    first = asyncio.create_task(get_user("ada"))
    await asyncio.sleep(0)
    second = asyncio.create_task(get_user("ada"))
    await asyncio.gather(first, second)
    return len(loads)


def test_race_passes_on_the_default_schedule() -> None:
    assert asyncio.run(two_callers()) == 1
    assert tidal.testing.run(two_callers()) == 1


def test_race_is_caught_by_fuzzing() -> None:
    async def loads_once() -> None:
        assert await two_callers() == 1, "loaded twice"

    with pytest.raises(tidal.testing.FuzzFailure, match="loaded twice") as caught:
        tidal.testing.fuzz(loads_once, seeds=range(20))
    assert "re-run exactly this schedule with: tidal.testing.run(" in str(caught.value)
