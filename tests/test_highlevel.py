"""asyncio's high-level API, unchanged, on asyncio's loop and on tidal's.

timeout(), TaskGroup, gather, shield, wait, wait_for, as_completed, sleep, the queues and the
synchronisation primitives, to_thread, run_coroutine_threadsafe and wrap_future are asyncio's own
code: these tests check that they behave the same when tidal's loop, futures and tasks sit
underneath them, including on their cancellation paths.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

Run = Callable[[Coroutine[Any, Any, Any]], Any]


async def forever() -> None:
    await asyncio.get_running_loop().create_future()


async def value_after(value: Any, delay: float = 0) -> Any:
    await asyncio.sleep(delay)
    return value


async def fail_after(exc: BaseException, delay: float = 0) -> None:
    await asyncio.sleep(delay)
    raise exc


# -- sleep ----------------------------------------------------------------------------------------


def test_sleep_returns_its_result_and_waits_at_least_the_delay(run: Run) -> None:
    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await asyncio.sleep(0.02, result="slept")
        return result, loop.time() - start

    result, elapsed = run(main())
    assert result == "slept"
    assert elapsed >= 0.02 - 0.002


def test_sleep_zero_lets_other_tasks_run(run: Run) -> None:
    async def main() -> list[str]:
        order: list[str] = []

        async def other() -> None:
            order.append("other")

        task = asyncio.create_task(other())
        order.append("before sleep(0)")
        await asyncio.sleep(0)
        order.append("after sleep(0)")
        await task
        return order

    assert run(main()) == ["before sleep(0)", "other", "after sleep(0)"]


# -- timeout --------------------------------------------------------------------------------------


def test_timeout_expires_and_uncancels(run: Run) -> None:
    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01) as cm:
                await asyncio.sleep(10)
        assert cm.expired()
        assert task.cancelling() == 0
        # The task is still usable: nothing left over from the timeout's cancel.
        await asyncio.sleep(0)

    run(main())


def test_timeout_not_reached_leaves_the_result(run: Run) -> None:
    async def main() -> str:
        async with asyncio.timeout(5) as cm:
            result = await value_after("in time")
        assert not cm.expired()
        return result

    assert run(main()) == "in time"


def test_timeout_reschedule_and_when(run: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as cm:
            assert cm.when() is None
            deadline = loop.time() + 0.01
            cm.reschedule(deadline)
            assert cm.when() == deadline
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        run(main())


def test_nested_timeouts_the_inner_one_fires(run: Run) -> None:
    async def main() -> str:
        async with asyncio.timeout(5):
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.sleep(10)
            except TimeoutError:
                return "inner fired, outer intact"
        return "no timeout"  # pragma: no cover

    assert run(main()) == "inner fired, outer intact"


def test_timeout_at(run: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(loop.time() + 0.01):
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        run(main())


def test_outer_cancel_inside_timeout_is_not_a_timeout(run: Run) -> None:
    async def main() -> str:
        async def inner() -> None:
            async with asyncio.timeout(5):
                await asyncio.sleep(10)

        task = asyncio.create_task(inner())
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        except TimeoutError:  # pragma: no cover
            return "timeout"
        return "finished"  # pragma: no cover

    assert run(main()) == "cancelled"


# -- TaskGroup ------------------------------------------------------------------------------------


def test_taskgroup_waits_for_all_tasks(run: Run) -> None:
    async def main() -> list[Any]:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(value_after(i, 0.001 * (5 - i))) for i in range(5)]
        return [t.result() for t in tasks]

    assert run(main()) == [0, 1, 2, 3, 4]


def test_taskgroup_error_cancels_the_siblings_and_raises_an_exception_group(run: Run) -> None:
    async def main() -> tuple[list[str], list[bool]]:
        siblings: list[asyncio.Task[None]] = []
        try:
            async with asyncio.TaskGroup() as tg:
                siblings.append(tg.create_task(forever()))
                siblings.append(tg.create_task(forever()))
                tg.create_task(fail_after(ValueError("one"), 0.001))
                tg.create_task(fail_after(KeyError("two"), 0.001))
        except* ValueError as group:
            values = [str(e) for e in group.exceptions]
        except* KeyError as group:
            values_k = [repr(e) for e in group.exceptions]
            assert values_k == ["KeyError('two')"]
        return values, [s.cancelled() for s in siblings]

    assert run(main()) == (["one"], [True, True])


def test_taskgroup_body_error_cancels_children(run: Run) -> None:
    async def main() -> bool:
        child: list[asyncio.Task[None]] = []
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                child.append(tg.create_task(forever()))
                await asyncio.sleep(0)
                raise OSError("body failed")
        assert [type(e) for e in info.value.exceptions] == [OSError]
        return child[0].cancelled()

    assert run(main()) is True


def test_cancelling_the_task_running_a_taskgroup_cancels_its_children(run: Run) -> None:
    async def main() -> tuple[bool, bool, int]:
        children: list[asyncio.Task[None]] = []

        async def owner() -> None:
            async with asyncio.TaskGroup() as tg:
                children.append(tg.create_task(forever()))
                children.append(tg.create_task(forever()))

        task = asyncio.create_task(owner())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel("from outside")
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled(), all(c.cancelled() for c in children), len(children)

    assert run(main()) == (True, True, 2)


def test_taskgroup_refuses_tasks_after_it_finished(run: Run) -> None:
    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            pass
        coro = value_after(1)
        with pytest.raises(RuntimeError):
            tg.create_task(coro)
        coro.close()

    run(main())


def test_taskgroup_child_catching_cancelled_error_still_lets_the_group_finish(run: Run) -> None:
    async def main() -> list[str]:
        events: list[str] = []

        async def stubborn() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                events.append("child cleaned up")
                raise

        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(stubborn())
                tg.create_task(fail_after(RuntimeError("x"), 0.001))
        events.append("group done")
        return events

    assert run(main()) == ["child cleaned up", "group done"]


# -- gather ---------------------------------------------------------------------------------------


def test_gather_returns_results_in_argument_order(run: Run) -> None:
    async def main() -> list[Any]:
        return await asyncio.gather(value_after("slow", 0.01), value_after("fast"), value_after(3))

    assert run(main()) == ["slow", "fast", 3]


def test_gather_of_tasks_returns_results_in_order(run: Run) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> list[int]:
        return await asyncio.gather(*(asyncio.create_task(double(i)) for i in range(5)))

    assert run(main()) == [0, 2, 4, 6, 8]


def test_gather_raises_the_first_error_and_leaves_the_others_running(run: Run) -> None:
    async def main() -> tuple[str, str]:
        slow = asyncio.create_task(value_after("still ran", 0.01))
        with pytest.raises(ValueError, match="first"):
            await asyncio.gather(slow, fail_after(ValueError("first")))
        return await slow, "ok"

    assert run(main()) == ("still ran", "ok")


def test_gather_return_exceptions(run: Run) -> None:
    async def main() -> list[Any]:
        return await asyncio.gather(
            value_after(1), fail_after(KeyError("k")), value_after(3), return_exceptions=True
        )

    result = run(main())
    assert result[0] == 1 and result[2] == 3
    assert isinstance(result[1], KeyError)


def test_gather_return_exceptions_includes_cancelled_children(run: Run) -> None:
    async def main() -> list[Any]:
        child = asyncio.create_task(forever())
        asyncio.get_running_loop().call_soon(child.cancel)
        return await asyncio.gather(child, value_after("ok"), return_exceptions=True)

    result = run(main())
    assert isinstance(result[0], asyncio.CancelledError)
    assert result[1] == "ok"


def test_cancelling_gather_cancels_its_children(run: Run) -> None:
    async def main() -> tuple[bool, list[bool]]:
        children = [asyncio.create_task(forever()) for _ in range(3)]
        gathering = asyncio.gather(*children)
        await asyncio.sleep(0)
        assert gathering.cancel() is True
        with pytest.raises(asyncio.CancelledError):
            await gathering
        return gathering.done(), [c.cancelled() for c in children]

    assert run(main()) == (True, [True, True, True])


def test_gather_of_nothing(run: Run) -> None:
    async def main() -> list[Any]:
        return await asyncio.gather()

    assert run(main()) == []


# -- shield ---------------------------------------------------------------------------------------


def test_shield_protects_the_inner_task_from_the_outer_cancel(run: Run) -> None:
    async def main() -> tuple[bool, str]:
        inner = asyncio.create_task(value_after("inner done", 0.01))

        async def outer() -> str:
            return await asyncio.shield(inner)

        outer_task = asyncio.create_task(outer())
        await asyncio.sleep(0)
        outer_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer_task
        return inner.cancelled(), await inner

    assert run(main()) == (False, "inner done")


def test_shield_passes_the_result_and_the_inner_cancel_through(run: Run) -> None:
    async def main() -> tuple[str, bool]:
        value = await asyncio.shield(value_after("shielded"))
        inner = asyncio.create_task(forever())
        asyncio.get_running_loop().call_soon(inner.cancel)
        cancelled = False
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            cancelled = True
        return value, cancelled

    assert run(main()) == ("shielded", True)


# -- wait, wait_for, as_completed -----------------------------------------------------------------


def test_wait_first_completed(run: Run) -> None:
    async def main() -> tuple[list[Any], int]:
        fast = asyncio.create_task(value_after("fast"))
        slow = asyncio.create_task(value_after("slow", 10))
        done, pending = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        slow.cancel()
        await asyncio.wait([slow])
        return [t.result() for t in done], len(pending)

    assert run(main()) == (["fast"], 1)


def test_wait_first_exception_and_all_completed(run: Run) -> None:
    async def main() -> tuple[int, int, int]:
        failing = asyncio.create_task(fail_after(ValueError(), 0.001))
        slow = asyncio.create_task(value_after("slow", 10))
        done, pending = await asyncio.wait([failing, slow], return_when=asyncio.FIRST_EXCEPTION)
        assert failing in done and slow in pending
        failing.exception()
        slow.cancel()
        tasks = [asyncio.create_task(value_after(i, 0.001 * i)) for i in range(3)]
        all_done, none_pending = await asyncio.wait(tasks)
        await asyncio.wait([slow])
        return len(done), len(all_done), len(none_pending)

    assert run(main()) == (1, 3, 0)


def test_wait_with_timeout_returns_the_pending_tasks(run: Run) -> None:
    async def main() -> tuple[int, int]:
        task = asyncio.create_task(forever())
        done, pending = await asyncio.wait([task], timeout=0.01)
        task.cancel()
        await asyncio.wait([task])
        return len(done), len(pending)

    assert run(main()) == (0, 1)


def test_wait_rejects_bare_coroutines_and_empty_sets(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            await asyncio.wait(set())
        coro = value_after(1)
        with pytest.raises(TypeError):
            await asyncio.wait([coro])  # type: ignore[list-item]
        coro.close()

    run(main())


def test_wait_for_result_and_timeout(run: Run) -> None:
    async def main() -> tuple[str, bool]:
        result = await asyncio.wait_for(value_after("in time"), timeout=5)
        inner = asyncio.create_task(forever())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(inner, timeout=0.01)
        return result, inner.cancelled()

    assert run(main()) == ("in time", True)


def test_wait_for_without_timeout_and_with_zero(run: Run) -> None:
    async def main() -> tuple[str, bool]:
        result = await asyncio.wait_for(value_after("no timeout"), timeout=None)
        inner = asyncio.create_task(forever())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(inner, timeout=0)
        await asyncio.sleep(0)
        return result, inner.cancelled()

    assert run(main()) == ("no timeout", True)


def test_as_completed_yields_in_completion_order(run: Run) -> None:
    async def main() -> list[Any]:
        aws = [value_after("c", 0.03), value_after("a", 0.0), value_after("b", 0.015)]
        return [await fut for fut in asyncio.as_completed(aws)]

    assert run(main()) == ["a", "b", "c"]


def test_as_completed_timeout(run: Run) -> None:
    async def main() -> list[str]:
        results: list[str] = []
        tasks = [asyncio.create_task(value_after("quick")), asyncio.create_task(forever())]
        with pytest.raises(TimeoutError):
            for fut in asyncio.as_completed(tasks, timeout=0.02):
                results.append(await fut)
        tasks[1].cancel()
        await asyncio.wait([tasks[1]])
        return results

    assert run(main()) == ["quick"]


# -- queues ---------------------------------------------------------------------------------------


def test_queue_producer_consumer_with_join(run: Run) -> None:
    async def main() -> list[int]:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
        consumed: list[int] = []

        async def consumer() -> None:
            while True:
                item = await queue.get()
                consumed.append(item)
                queue.task_done()

        worker = asyncio.create_task(consumer())
        for i in range(10):
            await queue.put(i)
            assert queue.qsize() <= 2
        await queue.join()
        worker.cancel()
        await asyncio.wait([worker])
        return consumed

    assert run(main()) == list(range(10))


def test_queue_nowait_errors_and_ordering_variants(run: Run) -> None:
    async def main() -> tuple[list[int], list[int]]:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        with pytest.raises(asyncio.QueueEmpty):
            queue.get_nowait()
        queue.put_nowait(1)
        with pytest.raises(asyncio.QueueFull):
            queue.put_nowait(2)
        assert queue.full()
        lifo: asyncio.LifoQueue[int] = asyncio.LifoQueue()
        prio: asyncio.PriorityQueue[int] = asyncio.PriorityQueue()
        for i in (2, 3, 1):
            lifo.put_nowait(i)
            prio.put_nowait(i)
        return [lifo.get_nowait() for _ in range(3)], [prio.get_nowait() for _ in range(3)]

    assert run(main()) == ([1, 3, 2], [1, 2, 3])


def test_queue_get_wakes_when_an_item_arrives(run: Run) -> None:
    async def main() -> str:
        queue: asyncio.Queue[str] = asyncio.Queue()
        asyncio.get_running_loop().call_later(0.001, queue.put_nowait, "arrived")
        return await asyncio.wait_for(queue.get(), timeout=5)

    assert run(main()) == "arrived"


# -- synchronisation primitives -------------------------------------------------------------------


def test_lock_is_mutually_exclusive_and_fifo(run: Run) -> None:
    async def main() -> list[str]:
        lock = asyncio.Lock()
        events: list[str] = []

        async def worker(name: str) -> None:
            async with lock:
                events.append(f"{name} in")
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                events.append(f"{name} out")

        await asyncio.gather(*(worker(n) for n in "abc"))
        assert not lock.locked()
        return events

    assert run(main()) == ["a in", "a out", "b in", "b out", "c in", "c out"]


def test_lock_release_when_unlocked_is_an_error(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError):
            asyncio.Lock().release()

    run(main())


def test_event_wait_set_clear(run: Run) -> None:
    async def main() -> list[str]:
        event = asyncio.Event()
        order: list[str] = []

        async def waiter(name: str) -> None:
            await event.wait()
            order.append(name)

        tasks = [asyncio.create_task(waiter(n)) for n in ("w1", "w2")]
        await asyncio.sleep(0)
        assert not event.is_set()
        order.append("setting")
        event.set()
        await asyncio.gather(*tasks)
        event.clear()
        assert not event.is_set()
        return order

    assert run(main()) == ["setting", "w1", "w2"]


def test_condition_notify_and_wait_for(run: Run) -> None:
    async def main() -> list[str]:
        cond = asyncio.Condition()
        items: list[int] = []
        log: list[str] = []

        async def consumer(name: str) -> None:
            async with cond:
                await cond.wait_for(lambda: bool(items))
                log.append(f"{name} got {items.pop()}")

        tasks = [asyncio.create_task(consumer(n)) for n in ("c1", "c2")]
        await asyncio.sleep(0)
        for i in (1, 2):
            async with cond:
                items.append(i)
                cond.notify(1)
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        async with cond:
            cond.notify_all()  # nobody waiting: harmless
        return log

    assert run(main()) == ["c1 got 1", "c2 got 2"]


def test_semaphore_limits_concurrency(run: Run) -> None:
    async def main() -> int:
        sem = asyncio.Semaphore(2)
        active = 0
        peak = 0

        async def worker() -> None:
            nonlocal active, peak
            async with sem:
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.001)
                active -= 1

        await asyncio.gather(*(worker() for _ in range(6)))
        return peak

    assert run(main()) == 2


def test_bounded_semaphore_over_release_is_an_error(run: Run) -> None:
    async def main() -> None:
        sem = asyncio.BoundedSemaphore(1)
        await sem.acquire()
        sem.release()
        with pytest.raises(ValueError):
            sem.release()

    run(main())


def test_barrier_releases_all_parties_together(run: Run) -> None:
    async def main() -> list[Any]:
        barrier = asyncio.Barrier(3)
        log: list[str] = []

        async def party(name: str) -> int:
            log.append(f"{name} arrives")
            index = await barrier.wait()
            log.append(f"{name} leaves")
            return index

        indices = await asyncio.gather(*(party(n) for n in "abc"))
        return [sorted(indices), log[:3], sorted(log[3:])]

    assert run(main()) == [
        [0, 1, 2],
        ["a arrives", "b arrives", "c arrives"],
        ["a leaves", "b leaves", "c leaves"],
    ]


def test_barrier_abort_breaks_the_waiters(run: Run) -> None:
    async def main() -> str:
        barrier = asyncio.Barrier(2)
        waiter = asyncio.create_task(barrier.wait())
        await asyncio.sleep(0)
        await barrier.abort()
        with pytest.raises(asyncio.BrokenBarrierError):
            await waiter
        return "broken" if barrier.broken else "intact"

    assert run(main()) == "broken"


# -- threads --------------------------------------------------------------------------------------


def test_to_thread_runs_in_another_thread_with_the_context(run: Run) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def in_thread(x: int) -> tuple[int, bool, str]:
        return x + 1, threading.current_thread() is threading.main_thread(), var.get()

    async def main() -> tuple[int, bool, str]:
        var.set("copied")
        return await asyncio.to_thread(in_thread, 1)

    assert run(main()) == (2, False, "copied")


def test_run_coroutine_threadsafe_from_a_thread(run: Run) -> None:
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        results: list[Any] = []

        def worker() -> None:
            results.append(asyncio.run_coroutine_threadsafe(value_after(5, 0.001), loop).result(5))
            failing = asyncio.run_coroutine_threadsafe(fail_after(KeyError("t")), loop)
            try:
                failing.result(5)
            except KeyError as exc:
                results.append(repr(exc))

        await asyncio.to_thread(worker)
        return results

    assert run(main()) == [5, "KeyError('t')"]


def test_run_coroutine_threadsafe_cancel_from_the_thread(run: Run) -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        cancelled = asyncio.Event()

        async def victim() -> None:
            started.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        def worker() -> bool:
            fut = asyncio.run_coroutine_threadsafe(victim(), loop)
            asyncio.run_coroutine_threadsafe(started.wait(), loop).result(5)
            fut.cancel()
            asyncio.run_coroutine_threadsafe(cancelled.wait(), loop).result(5)
            return fut.cancelled()

        return await asyncio.to_thread(worker)

    assert run(main()) is True


def test_wrap_future_of_a_pool_future(run: Run) -> None:
    async def main() -> int:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            cfut = pool.submit(sum, [1, 2, 3])
            return await asyncio.wrap_future(cfut)

    assert run(main()) == 6


def test_wrap_future_cancel_propagates_to_the_concurrent_future(run: Run) -> None:
    async def main() -> bool:
        cfut: concurrent.futures.Future[int] = concurrent.futures.Future()
        afut = asyncio.wrap_future(cfut)
        afut.cancel()
        await asyncio.sleep(0)
        return cfut.cancelled()

    assert run(main()) is True
