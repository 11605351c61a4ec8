"""The event-loop API, run on asyncio's loop and on tidal's: the same calls, the same results.

Covers scheduling (call_soon, call_later, call_at, handles), running and stopping, the
run_until_complete error paths, close(), the exception-handler API and the default handler,
debug mode, the task factory, executors, async-generator shutdown, name resolution and time().
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import logging
import socket
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest

Loop = asyncio.AbstractEventLoop
LoopFactory = Callable[[], Loop]
Contexts = list[dict[str, Any]]


def collect_reports(loop: Loop) -> Contexts:
    """Install an exception handler on ``loop`` that records every context it receives."""
    reports: Contexts = []
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    return reports


# -- call_soon, call_later, call_at ---------------------------------------------------------------


def test_call_soon_runs_callbacks_in_fifo_order_with_their_args(loop: Loop) -> None:
    order: list[tuple[str, int]] = []
    for i in range(20):
        loop.call_soon(order.append, ("soon", i))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == [("soon", i) for i in range(20)]


def test_call_soon_runs_in_the_given_context(loop: Loop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inside")
    seen: list[str] = []
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_soon(lambda: seen.append(var.get()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["inside", "unset"]


def test_callbacks_scheduled_by_a_callback_run_on_a_later_turn(loop: Loop) -> None:
    order: list[str] = []

    def first() -> None:
        order.append("first")
        loop.call_soon(order.append, "scheduled by first")

    loop.call_soon(first)
    loop.call_soon(order.append, "second")
    loop.call_soon(loop.call_soon, loop.stop)
    loop.run_forever()
    assert order == ["first", "second", "scheduled by first"]


def test_timers_fire_in_deadline_order_and_equal_deadlines_keep_fifo(loop: Loop) -> None:
    order: list[str] = []
    now = loop.time()
    loop.call_at(now + 0.03, order.append, "at+0.03")
    loop.call_later(0.01, order.append, "later0.01-a")
    loop.call_at(now + 0.02, order.append, "at+0.02")
    loop.call_later(0.01, order.append, "later0.01-b")
    loop.call_at(now + 0.001, order.append, "at+0.001-a")
    loop.call_at(now + 0.001, order.append, "at+0.001-b")
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert order == [
        "at+0.001-a",
        "at+0.001-b",
        "later0.01-a",
        "later0.01-b",
        "at+0.02",
        "at+0.03",
    ]


def test_timer_handle_when_is_absolute_loop_time(loop: Loop) -> None:
    before = loop.time()
    later = loop.call_later(10, print)
    after = loop.time()
    at = loop.call_at(before + 5, print)
    assert before + 10 <= later.when() <= after + 10
    assert at.when() == before + 5
    assert isinstance(later, asyncio.TimerHandle)
    assert isinstance(at, asyncio.TimerHandle)
    later.cancel()
    at.cancel()


def test_timer_does_not_fire_before_its_deadline(loop: Loop) -> None:
    fired: list[float] = []
    handle = loop.call_later(0.05, lambda: fired.append(loop.time()))
    loop.call_later(0.06, loop.stop)
    loop.run_forever()
    assert len(fired) == 1
    # asyncio allows a timer to run up to one clock resolution early.
    assert fired[0] >= handle.when() - time.get_clock_info("monotonic").resolution


def test_call_later_with_zero_or_negative_delay_runs_on_the_next_turn(loop: Loop) -> None:
    order: list[str] = []
    loop.call_later(-1, order.append, "negative")
    loop.call_later(0, order.append, "zero")
    loop.call_soon(order.append, "soon")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert sorted(order) == ["negative", "soon", "zero"]
    assert order.index("negative") < order.index("zero")


def test_cancelled_handles_and_timers_do_not_run(loop: Loop) -> None:
    ran: list[str] = []
    soon = loop.call_soon(ran.append, "soon")
    timer = loop.call_later(0.001, ran.append, "timer")
    kept = loop.call_later(0.002, ran.append, "kept")
    assert not soon.cancelled()
    soon.cancel()
    timer.cancel()
    timer.cancel()  # cancelling twice is harmless
    assert soon.cancelled() and timer.cancelled() and not kept.cancelled()
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert ran == ["kept"]


def test_a_callback_can_cancel_a_handle_later_in_the_same_batch(loop: Loop) -> None:
    ran: list[str] = []
    handles: list[asyncio.Handle] = []
    loop.call_soon(lambda: handles[0].cancel())
    handles.append(loop.call_soon(ran.append, "cancelled before it ran"))
    loop.call_soon(ran.append, "ran")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["ran"]


def test_many_cancelled_timers_are_dropped_and_live_ones_still_fire(loop: Loop) -> None:
    ran: list[int] = []
    handles = [loop.call_later(0.001 + i * 1e-6, ran.append, i) for i in range(500)]
    for handle in handles[:450]:
        handle.cancel()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert ran == list(range(450, 500))


def test_handle_get_context_is_the_context_it_runs_in(loop: Loop, loop_name: str) -> None:
    if loop_name == "asyncio" and not hasattr(asyncio.Handle, "get_context"):
        pytest.skip("asyncio's Handle.get_context() is new in 3.12 (tidal has it on 3.11 too)")
    ctx = contextvars.copy_context()
    handle = loop.call_soon(print, context=ctx)
    timer = loop.call_later(1, print, context=ctx)
    assert handle.get_context() is ctx
    assert timer.get_context() is ctx
    handle.cancel()
    timer.cancel()


def test_time_is_monotonic_and_tracks_the_monotonic_clock(loop: Loop) -> None:
    readings = [loop.time() for _ in range(1000)]
    assert readings == sorted(readings)
    start, mono_start = loop.time(), time.monotonic()
    time.sleep(0.02)
    elapsed, mono_elapsed = loop.time() - start, time.monotonic() - mono_start
    assert abs(elapsed - mono_elapsed) < 0.01


# -- run_forever, stop, run_until_complete, close -------------------------------------------------


def test_stop_inside_a_callback_finishes_the_current_batch(loop: Loop) -> None:
    order: list[str] = []
    loop.call_soon(order.append, "a")
    loop.call_soon(lambda: (loop.stop(), loop.call_soon(order.append, "next turn")))
    loop.call_soon(order.append, "b, same batch as stop")
    loop.run_forever()
    assert order == ["a", "b, same batch as stop"]
    assert not loop.is_running()
    # The callback scheduled during the stopped turn waits for the next run.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["a", "b, same batch as stop", "next turn"]


def test_stop_before_run_forever_runs_one_turn(loop: Loop) -> None:
    order: list[str] = []
    loop.call_soon(order.append, "ready before stop")
    loop.stop()
    loop.run_forever()
    assert order == ["ready before stop"]
    loop.call_soon(order.append, "second run")
    loop.stop()
    loop.run_forever()
    assert order == ["ready before stop", "second run"]


def test_is_running_inside_and_outside(loop: Loop) -> None:
    seen: list[bool] = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    assert not loop.is_running()
    loop.run_forever()
    assert seen == [True]
    assert not loop.is_running()


def test_run_until_complete_returns_a_coroutines_value_and_raises_its_error(
    loop: Loop,
) -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 42

    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    assert loop.run_until_complete(value()) == 42
    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(fail())


def test_run_until_complete_accepts_a_future_and_an_awaitable(loop: Loop) -> None:
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "future value")
    assert loop.run_until_complete(fut) == "future value"

    class Awaitable:
        def __await__(self) -> Any:
            yield from asyncio.sleep(0).__await__()
            return "awaitable value"

    assert loop.run_until_complete(Awaitable()) == "awaitable value"


def test_running_loop_is_set_only_while_running(loop: Loop) -> None:
    async def main() -> Loop:
        return asyncio.get_running_loop()

    assert loop.run_until_complete(main()) is loop
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


def test_run_until_complete_on_a_closed_loop_raises(loop_factory: LoopFactory) -> None:
    loop = loop_factory()
    loop.close()
    loop.close()  # closing twice is harmless
    assert loop.is_closed()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_until_complete(coro)
    coro.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_forever()


def test_run_until_complete_while_running_raises(loop: Loop) -> None:
    errors: list[BaseException] = []

    async def main() -> None:
        fut = loop.create_future()
        fut.set_result(None)
        try:
            loop.run_until_complete(fut)
        except RuntimeError as exc:
            errors.append(exc)
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(exc)

    loop.run_until_complete(main())
    assert len(errors) == 2
    assert all("already running" in str(exc) for exc in errors)


def test_run_until_complete_while_another_loop_runs_in_this_thread_raises(
    loop: Loop, loop_factory: LoopFactory
) -> None:
    other = loop_factory()
    errors: list[BaseException] = []

    async def main() -> None:
        fut = other.create_future()
        fut.set_result(None)
        try:
            other.run_until_complete(fut)
        except RuntimeError as exc:
            errors.append(exc)

    try:
        loop.run_until_complete(main())
    finally:
        other.close()
    assert len(errors) == 1
    assert "another loop is running" in str(errors[0])


def test_run_until_complete_stopped_before_the_future_completed_raises(loop: Loop) -> None:
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="stopped before Future completed"):
        loop.run_until_complete(fut)
    assert not fut.done()
    # The future is still usable: a later run completes it.
    loop.call_soon(fut.set_result, 7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_removes_its_done_callback(loop: Loop) -> None:
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError):
        loop.run_until_complete(fut)
    fut.set_result(None)
    # Completing the future later must not stop a loop that is running for something else.
    order: list[str] = []
    loop.call_soon(order.append, "a")
    loop.call_soon(order.append, "b")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["a", "b"]


def test_close_of_a_running_loop_raises(loop: Loop) -> None:
    errors: list[BaseException] = []

    def try_close() -> None:
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(exc)
        loop.stop()

    loop.call_soon(try_close)
    loop.run_forever()
    assert len(errors) == 1
    assert "running" in str(errors[0])
    assert not loop.is_closed()


def test_close_drops_pending_callbacks_and_marks_the_loop_closed(
    loop_factory: LoopFactory,
) -> None:
    loop = loop_factory()
    ran: list[str] = []
    loop.call_soon(ran.append, "never")
    loop.call_later(0.001, ran.append, "never either")
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    assert ran == []


# -- exceptions: the handler API, its contexts and the default handler ----------------------------


def test_exception_handler_get_and_set(loop: Loop) -> None:
    def handler(loop: Loop, context: dict[str, Any]) -> None:
        pass

    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None
    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    with pytest.raises(TypeError):
        loop.set_exception_handler("not callable")  # type: ignore[arg-type]
    assert loop.get_exception_handler() is handler


def test_a_raising_callback_is_reported_with_message_exception_and_handle(loop: Loop) -> None:
    loop.set_debug(False)  # no source_traceback outside debug mode
    reports = collect_reports(loop)
    error = ZeroDivisionError("in callback")

    def bad() -> None:
        raise error

    handle = loop.call_soon(bad)
    ran: list[str] = []
    loop.call_soon(ran.append, "after")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["after"]
    assert len(reports) == 1
    context = reports[0]
    assert context["message"].startswith("Exception in callback")
    assert "bad" in context["message"]
    assert context["exception"] is error
    assert context["handle"] is handle
    assert "source_traceback" not in context


def test_reports_carry_source_traceback_in_debug_mode(loop: Loop) -> None:
    loop.set_debug(True)
    reports = collect_reports(loop)

    def bad() -> None:
        raise KeyError("debug")

    loop.call_soon(bad)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(reports) == 1
    frames = reports[0]["source_traceback"]
    assert any(
        frame.name == "test_reports_carry_source_traceback_in_debug_mode" for frame in frames
    )


def test_future_exception_never_retrieved_reaches_the_handler(loop: Loop) -> None:
    reports = collect_reports(loop)
    fut = loop.create_future()
    fut.set_exception(ValueError("lost"))
    del fut
    gc.collect()
    assert len(reports) == 1
    assert reports[0]["message"] == "Future exception was never retrieved"
    assert isinstance(reports[0]["exception"], ValueError)
    assert "future" in reports[0]


def test_retrieved_future_exception_is_not_reported(loop: Loop) -> None:
    reports = collect_reports(loop)
    fut = loop.create_future()
    fut.set_exception(ValueError("seen"))
    assert isinstance(fut.exception(), ValueError)
    del fut
    other = loop.create_future()
    other.set_exception(ValueError("seen through result"))
    with pytest.raises(ValueError):
        other.result()
    del other
    gc.collect()
    assert reports == []


def test_call_exception_handler_passes_the_context_through(loop: Loop) -> None:
    reports = collect_reports(loop)
    context = {"message": "custom", "exception": OSError("x"), "extra": 1}
    loop.call_exception_handler(context)
    assert reports == [context]


def test_default_handler_logs_on_the_asyncio_logger(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    loop.set_exception_handler(None)

    def bad() -> None:
        raise RuntimeError("logged, not raised")

    loop.call_soon(bad)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.run_forever()
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("Exception in callback")
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_default_exception_handler_formats_extra_keys(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "something odd", "detail": "the detail"})
    (record,) = [r for r in caplog.records if r.name == "asyncio"]
    message = record.getMessage()
    assert message.splitlines()[0] == "something odd"
    assert "detail: 'the detail'" in message
    assert not record.exc_info


def test_a_raising_exception_handler_is_logged_by_the_default_one(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(loop: Loop, context: dict[str, Any]) -> None:
        raise LookupError("handler is broken")

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "original"})
    (record,) = [r for r in caplog.records if r.name == "asyncio"]
    assert "Unhandled error in exception handler" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], LookupError)


# -- debug mode -----------------------------------------------------------------------------------


def test_get_and_set_debug(loop: Loop) -> None:
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_debug_mode_logs_slow_callbacks(loop: Loop, caplog: pytest.LogCaptureFixture) -> None:
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05  # type: ignore[attr-defined]

    def slow() -> None:
        time.sleep(0.08)

    def fast() -> None:
        pass

    loop.call_soon(slow)
    loop.call_soon(fast)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_forever()
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    slow_reports = [m for m in messages if m.startswith("Executing") and " took " in m]
    # Only the slow callback is named (a fast one is reported only if the machine stalls).
    named = [m for m in slow_reports if "slow" in m]
    assert len(named) == 1
    assert named[0].endswith("seconds")
    took = float(named[0].rsplit(" took ", 1)[1].split()[0])
    assert took >= 0.08


def test_debug_mode_reports_a_slow_task_step_by_the_task(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05  # type: ignore[attr-defined]

    async def blocking_step() -> None:
        time.sleep(0.08)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(blocking_step())
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    slow = [m for m in messages if m.startswith("Executing") and " took " in m]
    assert len([m for m in slow if "blocking_step" in m]) == 1


def test_debug_mode_rejects_a_call_soon_from_another_thread(loop: Loop) -> None:
    loop.set_debug(True)
    errors: list[BaseException] = []

    def from_thread() -> None:
        try:
            loop.call_soon(print)
        except RuntimeError as exc:
            errors.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=from_thread)
    loop.call_soon(thread.start)
    loop.run_forever()
    thread.join(5)
    assert len(errors) == 1
    assert "thread" in str(errors[0]).lower()


# -- the task factory -----------------------------------------------------------------------------


def test_task_factory_is_used_by_create_task(loop: Loop) -> None:
    made: list[str] = []

    def factory(loop: Loop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        made.append(coro.__name__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def child() -> str:
        return "child"

    async def main() -> str:
        return await asyncio.create_task(child(), name="named-child")

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    assert loop.run_until_complete(main()) == "child"
    assert made == ["main", "child"]
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


def test_task_factory_names_the_task(loop: Loop) -> None:
    loop.set_task_factory(lambda loop, coro, **kw: asyncio.Task(coro, loop=loop, **kw))

    async def child() -> str:
        current = asyncio.current_task()
        assert current is not None
        return current.get_name()

    async def main() -> str:
        return await loop.create_task(child(), name="given name")

    assert loop.run_until_complete(main()) == "given name"


def test_set_task_factory_rejects_a_non_callable(loop: Loop) -> None:
    with pytest.raises(TypeError):
        loop.set_task_factory(1)  # type: ignore[arg-type]
    assert loop.get_task_factory() is None


# -- executors ------------------------------------------------------------------------------------


def test_run_in_executor_runs_in_a_pool_thread_of_the_default_executor(loop: Loop) -> None:
    def where(x: int) -> tuple[int, str]:
        return x * 2, threading.current_thread().name

    async def main() -> tuple[int, str]:
        return await loop.run_in_executor(None, where, 21)

    value, thread_name = loop.run_until_complete(main())
    assert value == 42
    assert thread_name.startswith("asyncio")
    assert thread_name != threading.current_thread().name


def test_run_in_executor_propagates_the_exception(loop: Loop) -> None:
    def fail() -> None:
        raise OSError("from the pool")

    with pytest.raises(OSError, match="from the pool"):
        loop.run_until_complete(loop.run_in_executor(None, fail))


def test_run_in_executor_with_an_explicit_executor(loop: Loop) -> None:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine") as pool:
        fut = loop.run_in_executor(pool, lambda: threading.current_thread().name)
        assert isinstance(fut, asyncio.Future)
        assert loop.run_until_complete(fut).startswith("mine")


def test_set_default_executor_is_used_and_must_be_a_thread_pool(loop: Loop) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-default")
    loop.set_default_executor(pool)
    name = loop.run_until_complete(
        loop.run_in_executor(None, lambda: threading.current_thread().name)
    )
    assert name.startswith("custom-default")
    with pytest.raises(TypeError):
        loop.set_default_executor(concurrent.futures.Executor())  # type: ignore[arg-type]


def test_shutdown_default_executor_waits_then_refuses_new_work(loop: Loop) -> None:
    finished: list[str] = []

    def job() -> None:
        time.sleep(0.01)
        finished.append("job")

    async def main() -> None:
        pool_future = loop.run_in_executor(None, job)
        await loop.shutdown_default_executor()
        assert finished == ["job"]
        assert pool_future.done() or await pool_future is None

    loop.run_until_complete(main())
    with pytest.raises(RuntimeError, match="shutdown"):
        loop.run_in_executor(None, print)


def test_shutdown_default_executor_without_an_executor_is_a_no_op(loop: Loop) -> None:
    loop.run_until_complete(loop.shutdown_default_executor())


def test_shutdown_default_executor_with_timeout_warns_and_returns(
    loop: Loop, loop_name: str
) -> None:
    if loop_name == "asyncio" and sys.version_info < (3, 13):
        pytest.skip("asyncio before 3.13 waits for the threads despite the timeout")
    release = threading.Event()
    started = threading.Event()

    def blocked() -> None:
        started.set()
        release.wait(10)

    threads_before = set(threading.enumerate())

    async def main() -> None:
        loop.run_in_executor(None, blocked)
        while not started.is_set():
            await asyncio.sleep(0.001)
        with pytest.warns(RuntimeWarning, match="did not finish"):
            await loop.shutdown_default_executor(timeout=0.05)

    started_at = time.monotonic()
    loop.run_until_complete(main())
    assert time.monotonic() - started_at < 2
    release.set()
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(5)
    loop.close()  # drops the joiner's late completion callback


# -- async generators -----------------------------------------------------------------------------


def test_shutdown_asyncgens_finalizes_suspended_generators(loop: Loop) -> None:
    events: list[str] = []

    async def agen() -> AsyncGenerator[int, None]:
        try:
            yield 1
            yield 2
        finally:
            events.append("finally ran")

    gens: list[AsyncGenerator[int, None]] = []

    async def main() -> int:
        gen = agen()
        gens.append(gen)
        return await gen.__anext__()

    assert loop.run_until_complete(main()) == 1
    assert events == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == ["finally ran"]


def test_an_abandoned_async_generator_is_closed_by_the_loop(loop: Loop) -> None:
    events: list[str] = []

    async def agen() -> AsyncGenerator[int, None]:
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)  # needs the loop: only a task can run this
            events.append("closed in a task")

    async def main() -> None:
        gen = agen()
        assert await gen.__anext__() == 1
        del gen
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert events == ["closed in a task"]


def test_shutdown_asyncgens_reports_a_generator_that_fails_to_close(loop: Loop) -> None:
    reports = collect_reports(loop)

    async def stubborn() -> AsyncGenerator[int, None]:
        try:
            yield 1
        finally:
            raise ValueError("cannot close")

    gens: list[AsyncGenerator[int, None]] = []

    async def main() -> None:
        gen = stubborn()
        gens.append(gen)
        await gen.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(reports) == 1
    assert "closing of asynchronous generator" in reports[0]["message"]
    assert isinstance(reports[0]["exception"], ValueError)
    assert reports[0]["asyncgen"] is gens[0]


# -- name resolution ------------------------------------------------------------------------------


def test_getaddrinfo_resolves_localhost(loop: Loop) -> None:
    infos = loop.run_until_complete(
        loop.getaddrinfo("localhost", 80, family=socket.AF_INET, type=socket.SOCK_STREAM)
    )
    expected = socket.getaddrinfo("localhost", 80, socket.AF_INET, socket.SOCK_STREAM)
    assert sorted(infos) == sorted(expected)
    assert ("127.0.0.1", 80) in [info[4] for info in infos]


def test_getaddrinfo_error_is_raised(loop: Loop) -> None:
    with pytest.raises(socket.gaierror):
        loop.run_until_complete(loop.getaddrinfo("name.invalid", 80, flags=socket.AI_NUMERICHOST))


def test_getnameinfo_on_localhost(loop: Loop) -> None:
    result = loop.run_until_complete(
        loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
    )
    assert result == ("127.0.0.1", "80")


def test_default_handler_logs_the_same_text_on_both_loops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import re

    import tidal

    def scenario(loop: Loop) -> list[str]:
        def bad_callback() -> None:
            raise ValueError("from a callback")

        async def fails() -> None:
            raise KeyError("from a task")

        async def pending_forever() -> None:
            await asyncio.get_running_loop().create_future()

        async def main() -> None:
            loop.call_soon(bad_callback)
            failing = asyncio.create_task(fails(), name="failing")
            pending = asyncio.create_task(pending_forever(), name="pending")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            del failing, pending

        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.run_until_complete(main())
            gc.collect()
            loop.call_exception_handler({"message": "custom", "detail": [1, 2]})
        loop.close()
        texts = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        exc_types = [type(r.exc_info[1]).__name__ if r.exc_info else None for r in caplog.records]
        masked = [re.sub(r"0x[0-9a-f]+", "0xADDR", t) for t in texts]
        # Known cosmetic difference: the task's wake-up callback is asyncio's C method
        # "task_wakeup" and tidal's "_wakeup"; mask the name, keep everything around it.
        masked = [re.sub(r"Task\.(task_wakeup|_wakeup)\(\)", "Task.<wakeup>()", t) for t in masked]
        return sorted(f"{t} | {e}" for t, e in zip(masked, exc_types, strict=True))

    loops = [asyncio.new_event_loop(), tidal.new_event_loop()]
    for each in loops:
        each.set_debug(False)  # debug mode adds creation stacks, whose frames differ
    on_asyncio, on_tidal = scenario(loops[0]), scenario(loops[1])
    assert len(on_asyncio) == 4
    assert on_tidal == on_asyncio


def test_keyboard_interrupt_in_a_callback_leaves_the_loop_reusable(loop: Loop) -> None:
    order: list[str] = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    loop.call_soon(order.append, "before")
    loop.call_soon(interrupt)
    loop.call_soon(order.append, "after, same batch")
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert order == ["before"]
    assert not loop.is_running()
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["before", "after, same batch"]


def test_system_exit_in_a_task_propagates_out_of_run_until_complete(loop: Loop) -> None:
    async def leave() -> None:
        await asyncio.sleep(0)
        raise SystemExit(4)

    with pytest.raises(SystemExit) as info:
        loop.run_until_complete(leave())
    assert info.value.code == 4

    async def again() -> str:
        return "loop still usable"

    assert loop.run_until_complete(again()) == "loop still usable"
