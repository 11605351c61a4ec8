"""Load on both loops: many tasks, many callbacks, many threads at once.

Nothing may be lost, reordered where order is promised, or deadlocked; each test is bounded by a
pytest timeout. Tests that take more than 0.25 s are marked slow but stay in the default run.
Debug mode is switched off here even in a PYTHONASYNCIODEBUG run: it records a stack per
callback, which makes a million callbacks take a minute on either loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

Loop = asyncio.AbstractEventLoop

JOIN_TIMEOUT = 30.0  # seconds; only reached if something deadlocks


@pytest.fixture
def loop(loop: Loop) -> Loop:
    """The loop under test, with debug mode off (see the module docstring)."""
    loop.set_debug(False)
    return loop


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_100k_tasks_all_complete_with_their_results(loop: Loop) -> None:
    count = 100_000

    async def worker(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def main() -> list[int]:
        tasks = [asyncio.create_task(worker(i)) for i in range(count)]
        return await asyncio.gather(*tasks)

    results = loop.run_until_complete(main())
    assert results == list(range(count))


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_million_call_soon_callbacks_run_in_fifo_order(loop: Loop) -> None:
    chains, steps = 100, 10_000  # 1,000,000 callbacks, at most `chains` queued at a time
    counts = [0] * chains
    order_ok = True
    last = -1

    def step(chain: int) -> None:
        nonlocal last, order_ok
        # FIFO: the chains run round-robin, so each callback follows the previous chain's.
        if chain != (last + 1) % chains:
            order_ok = False
        last = chain
        counts[chain] += 1
        if counts[chain] < steps:
            loop.call_soon(step, chain)
        elif chain == chains - 1:
            loop.stop()

    for chain in range(chains):
        loop.call_soon(step, chain)
    loop.run_forever()
    assert sum(counts) == chains * steps
    assert order_ok


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_ten_threads_calling_call_soon_threadsafe_at_once_lose_nothing(loop: Loop) -> None:
    threads_count, per_thread = 10, 10_000
    received: list[list[int]] = [[] for _ in range(threads_count)]
    go = threading.Barrier(threads_count + 1)
    all_sent = threading.Event()
    remaining = threads_count

    def producer(index: int) -> None:
        nonlocal remaining
        append = received[index].append
        call = loop.call_soon_threadsafe
        go.wait(JOIN_TIMEOUT)
        for i in range(per_thread):
            call(append, i)
        with lock:
            remaining -= 1
            if remaining == 0:
                all_sent.set()

    lock = threading.Lock()
    threads = [threading.Thread(target=producer, args=(i,)) for i in range(threads_count)]

    async def main() -> None:
        for thread in threads:
            thread.start()
        await asyncio.to_thread(go.wait, JOIN_TIMEOUT)
        await asyncio.to_thread(all_sent.wait, JOIN_TIMEOUT)
        await asyncio.sleep(0)  # everything sent before all_sent is queued by now

    try:
        loop.run_until_complete(main())
    finally:
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
    assert all_sent.is_set(), "producers deadlocked"
    assert received == [list(range(per_thread)) for _ in range(threads_count)]


@pytest.mark.timeout(60)
def test_many_timers_fire_in_deadline_order(loop: Loop) -> None:
    count = 20_000
    fired: list[float] = []
    base = loop.time() + 0.01
    # Deadlines in a scrambled order; equal deadlines are allowed and must keep FIFO.
    deadlines = [base + ((i * 7919) % 1000) * 1e-5 for i in range(count)]
    handles: list[Any] = [loop.call_at(when, fired.append, when) for when in deadlines]
    for handle in handles[::3]:
        handle.cancel()
    loop.call_at(base + 0.02, loop.stop)
    loop.run_forever()
    expected = sorted(d for i, d in enumerate(deadlines) if i % 3 != 0)
    assert fired == expected
