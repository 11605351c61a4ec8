"""Other threads talking to the loop, on asyncio's loop and on tidal's.

``call_soon_threadsafe`` and ``run_coroutine_threadsafe`` from several threads at once, a loop
asleep in its poller with no timers woken at once, a ping-pong that would hang if a single
wake-up were lost, and executors running jobs concurrently. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

Loop = asyncio.AbstractEventLoop
LoopFactory = Callable[[], Loop]

JOIN_TIMEOUT = 10.0  # seconds; generous, only reached if something hangs


def start_threads(count: int, target: Callable[[int], None]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"


def test_call_soon_threadsafe_from_several_threads_keeps_each_threads_order(loop: Loop) -> None:
    threads_count, per_thread = 6, 300
    received: dict[int, list[int]] = {i: [] for i in range(threads_count)}
    go = threading.Barrier(threads_count)

    def record(thread_index: int, i: int) -> None:
        received[thread_index].append(i)

    def producer(thread_index: int) -> None:
        go.wait(JOIN_TIMEOUT)
        for i in range(per_thread):
            loop.call_soon_threadsafe(record, thread_index, i)

    async def main() -> None:
        threads = start_threads(threads_count, producer)
        await asyncio.to_thread(join_all, threads)
        await asyncio.sleep(0)  # the last callbacks queued before the join returned

    loop.run_until_complete(main())
    assert received == {i: list(range(per_thread)) for i in range(threads_count)}


def test_run_coroutine_threadsafe_from_several_threads(loop: Loop) -> None:
    threads_count, per_thread = 5, 40
    results: dict[int, list[int]] = {}

    async def square(x: int) -> int:
        await asyncio.sleep(0)
        return x * x

    def client(thread_index: int) -> None:
        futures = [
            asyncio.run_coroutine_threadsafe(square(thread_index * 1000 + i), loop)
            for i in range(per_thread)
        ]
        results[thread_index] = [f.result(JOIN_TIMEOUT) for f in futures]

    async def main() -> None:
        threads = start_threads(threads_count, client)
        await asyncio.to_thread(join_all, threads)

    loop.run_until_complete(main())
    assert results == {
        t: [(t * 1000 + i) ** 2 for i in range(per_thread)] for t in range(threads_count)
    }


@pytest.mark.timeout(10)
def test_a_loop_sleeping_without_timers_is_woken_at_once(loop: Loop) -> None:
    entered = threading.Event()
    sent_at: list[float] = []

    def waker(done: asyncio.Future[float]) -> None:
        entered.wait(JOIN_TIMEOUT)
        time.sleep(0.05)  # let the loop settle into its poller with nothing to do
        sent_at.append(time.perf_counter())
        loop.call_soon_threadsafe(lambda: done.set_result(time.perf_counter()))

    done = loop.create_future()
    thread = threading.Thread(target=waker, args=(done,))
    thread.start()
    loop.call_soon(entered.set)
    try:
        received_at = loop.run_until_complete(done)
    finally:
        thread.join(JOIN_TIMEOUT)
    assert received_at - sent_at[0] < 0.1


@pytest.mark.timeout(20)
def test_ping_pong_with_a_thread_loses_no_wake_up(loop: Loop) -> None:
    rounds = 2000
    pong = threading.Event()
    count = 0

    def on_ping() -> None:
        nonlocal count
        count += 1
        pong.set()

    def pinger(_: int) -> None:
        for _ in range(rounds):
            pong.clear()
            loop.call_soon_threadsafe(on_ping)
            if not pong.wait(JOIN_TIMEOUT):
                return  # the loop missed a wake-up; the count below tells

    async def main() -> None:
        threads = start_threads(1, pinger)
        await asyncio.to_thread(join_all, threads)

    loop.run_until_complete(main())
    assert count == rounds


def test_call_soon_threadsafe_before_the_loop_runs_is_kept(loop: Loop) -> None:
    ran: list[str] = []
    thread = threading.Thread(target=loop.call_soon_threadsafe, args=(ran.append, "queued"))
    thread.start()
    thread.join(JOIN_TIMEOUT)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["queued"]


def test_stop_from_another_thread(loop: Loop) -> None:
    started = threading.Event()

    def stopper() -> None:
        started.wait(JOIN_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=stopper)
    thread.start()
    loop.call_soon(started.set)
    loop.run_forever()  # returns only if the stop arrives
    thread.join(JOIN_TIMEOUT)
    assert not loop.is_running()


def test_call_soon_threadsafe_runs_in_the_given_context(loop: Loop) -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "given")
    seen: list[str] = []

    def from_thread() -> None:
        loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=from_thread)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    loop.run_forever()
    assert seen == ["given"]


def test_call_soon_threadsafe_on_a_closed_loop_raises(loop_factory: LoopFactory) -> None:
    loop = loop_factory()
    loop.close()
    errors: list[BaseException] = []

    def from_thread() -> None:
        try:
            loop.call_soon_threadsafe(print)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=from_thread)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    assert len(errors) == 1 and "closed" in str(errors[0])


def test_executor_jobs_run_concurrently(loop: Loop) -> None:
    parties = 4
    barrier = threading.Barrier(parties)

    def job(i: int) -> int:
        barrier.wait(JOIN_TIMEOUT)  # only passes if all jobs run at the same time
        return i

    async def main() -> list[int]:
        return await asyncio.gather(*(loop.run_in_executor(None, job, i) for i in range(parties)))

    assert loop.run_until_complete(main()) == list(range(parties))


def test_run_coroutine_threadsafe_exception_and_timeout_on_the_caller_side(loop: Loop) -> None:
    outcome: dict[str, Any] = {}

    async def slow() -> None:
        await asyncio.sleep(10)

    def client() -> None:
        fut = asyncio.run_coroutine_threadsafe(slow(), loop)
        try:
            fut.result(timeout=0.01)
        except TimeoutError:
            outcome["timeout"] = True
        fut.cancel()
        try:
            fut.result(JOIN_TIMEOUT)
        except BaseException as exc:
            outcome["after cancel"] = type(exc).__name__

    async def main() -> None:
        await asyncio.to_thread(client)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert outcome == {"timeout": True, "after cancel": "CancelledError"}
