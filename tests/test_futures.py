"""The Future API on asyncio's loop and on tidal's: states, results, callbacks, awaiting.

Futures come from ``loop.create_future()`` (tidal's Future on tidal's loop), plus asyncio's own
``asyncio.Future(loop=...)`` hosted by either loop, so that both directions of mixing work:
tidal tasks awaiting asyncio futures and asyncio tasks awaiting tidal futures.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Generator
from typing import Any

import pytest

Loop = asyncio.AbstractEventLoop


def run_turns(loop: Loop, turns: int = 1) -> None:
    """Run the loop for exactly ``turns`` turns."""
    for _ in range(turns):
        loop.call_soon(loop.stop)
        loop.run_forever()


def test_a_new_future_is_pending(loop: Loop) -> None:
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert asyncio.isfuture(fut)
    assert not fut.done()
    assert not fut.cancelled()
    assert fut.get_loop() is loop
    with pytest.raises(asyncio.InvalidStateError):
        fut.result()
    with pytest.raises(asyncio.InvalidStateError):
        fut.exception()
    assert "pending" in repr(fut)
    fut.cancel()


def test_set_result(loop: Loop) -> None:
    fut = loop.create_future()
    fut.set_result([1, 2])
    assert fut.done() and not fut.cancelled()
    assert fut.result() == [1, 2]
    assert fut.exception() is None
    assert "finished" in repr(fut) and "result=[1, 2]" in repr(fut)
    with pytest.raises(asyncio.InvalidStateError):
        fut.set_result(3)
    with pytest.raises(asyncio.InvalidStateError):
        fut.set_exception(ValueError())
    assert fut.cancel() is False
    assert fut.result() == [1, 2]


def test_set_exception_instance_and_class(loop: Loop) -> None:
    fut = loop.create_future()
    error = ValueError("bad")
    fut.set_exception(error)
    assert fut.exception() is error
    with pytest.raises(ValueError, match="bad") as info:
        fut.result()
    assert info.value is error

    from_class = loop.create_future()
    from_class.set_exception(KeyError)
    assert type(from_class.exception()) is KeyError


def test_set_exception_of_stop_iteration(loop: Loop) -> None:
    fut = loop.create_future()
    stop = StopIteration("stop")
    if sys.version_info >= (3, 13):
        # 3.13 stores a RuntimeError caused by the StopIteration.
        fut.set_exception(stop)
        error = fut.exception()
        assert type(error) is RuntimeError
        assert "StopIteration" in str(error)
        assert error.__cause__ is stop
    else:
        with pytest.raises(TypeError, match="StopIteration"):
            fut.set_exception(stop)
        assert not fut.done()
        fut.cancel()


def test_result_reraises_with_the_original_traceback(loop: Loop) -> None:
    def raiser() -> None:
        raise OSError("deep")

    fut = loop.create_future()
    try:
        raiser()
    except OSError as exc:
        fut.set_exception(exc)
    with pytest.raises(OSError) as info:
        fut.result()
    names = [entry.name for entry in info.traceback]
    assert "raiser" in names


def test_cancel_with_a_message(loop: Loop) -> None:
    fut = loop.create_future()
    assert fut.cancel(msg="stop it") is True
    assert fut.cancelled() and fut.done()
    assert fut.cancel() is False
    with pytest.raises(asyncio.CancelledError, match="stop it"):
        fut.result()
    with pytest.raises(asyncio.CancelledError, match="stop it"):
        fut.exception()
    with pytest.raises(asyncio.InvalidStateError):
        fut.set_result(1)
    assert "cancelled" in repr(fut)


def test_cancel_without_a_message_raises_a_bare_cancelled_error(loop: Loop) -> None:
    fut = loop.create_future()
    fut.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        fut.result()
    assert info.value.args == ()


def test_done_callbacks_run_through_the_loop_in_order(loop: Loop) -> None:
    fut = loop.create_future()
    calls: list[tuple[str, Any]] = []
    fut.add_done_callback(lambda f: calls.append(("first", f.result())))
    fut.add_done_callback(lambda f: calls.append(("second", f.result())))
    fut.set_result("value")
    assert calls == []  # scheduled, not called synchronously
    run_turns(loop)
    assert calls == [("first", "value"), ("second", "value")]


def test_done_callback_added_after_completion_is_scheduled_soon(loop: Loop) -> None:
    fut = loop.create_future()
    fut.set_result(None)
    calls: list[asyncio.Future[Any]] = []
    fut.add_done_callback(calls.append)
    assert calls == []
    run_turns(loop)
    assert calls == [fut]


def test_done_callback_runs_in_the_given_context(loop: Loop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "given")
    seen: list[str] = []
    fut = loop.create_future()
    fut.add_done_callback(lambda _: seen.append(var.get()), context=ctx)
    var.set("at registration")
    fut.add_done_callback(lambda _: seen.append(var.get()))
    var.set("changed after registration")
    fut.set_result(None)
    run_turns(loop)
    assert seen == ["given", "at registration"]


def test_remove_done_callback_counts_every_registration(loop: Loop) -> None:
    fut = loop.create_future()
    calls: list[str] = []

    def a(_: Any) -> None:
        calls.append("a")

    def b(_: Any) -> None:
        calls.append("b")

    fut.add_done_callback(a)
    fut.add_done_callback(b)
    fut.add_done_callback(a)
    assert fut.remove_done_callback(a) == 2
    assert fut.remove_done_callback(a) == 0
    fut.set_result(None)
    run_turns(loop)
    assert calls == ["b"]


def test_cancel_runs_done_callbacks(loop: Loop) -> None:
    fut = loop.create_future()
    seen: list[bool] = []
    fut.add_done_callback(lambda f: seen.append(f.cancelled()))
    fut.cancel()
    run_turns(loop)
    assert seen == [True]


def test_awaiting_a_future_outside_a_task_is_an_error(loop: Loop) -> None:
    fut = loop.create_future()
    gen: Generator[Any, None, Any] = fut.__await__()
    assert next(gen) is fut  # the future yields itself to whoever drives it
    with pytest.raises(RuntimeError, match="await wasn't used with future"):
        gen.send(None)
    fut.cancel()


def test_awaiting_a_done_future_does_not_suspend(loop: Loop) -> None:
    fut = loop.create_future()
    fut.set_result("ready")
    gen: Generator[Any, None, Any] = fut.__await__()
    with pytest.raises(StopIteration) as info:
        next(gen)
    assert info.value.value == "ready"


def test_a_task_awaits_a_future_set_by_a_timer(loop: Loop) -> None:
    async def main() -> str:
        fut = loop.create_future()
        loop.call_later(0.001, fut.set_result, "from timer")
        return await fut

    assert loop.run_until_complete(main()) == "from timer"


def test_a_task_gets_the_exception_of_an_awaited_future(loop: Loop) -> None:
    async def main() -> None:
        fut = loop.create_future()
        loop.call_soon(fut.set_exception, LookupError("missing"))
        await fut

    with pytest.raises(LookupError, match="missing"):
        loop.run_until_complete(main())


def test_a_task_awaiting_a_cancelled_future_is_cancelled_with_its_message(loop: Loop) -> None:
    async def main() -> str:
        fut = loop.create_future()
        loop.call_soon(fut.cancel, "the message")
        try:
            await fut
        except asyncio.CancelledError as exc:
            return str(exc)
        return "not cancelled"

    assert loop.run_until_complete(main()) == "the message"


def test_a_native_task_awaits_an_asyncio_future_on_the_loop(loop: Loop) -> None:
    async def main() -> Any:
        fut: asyncio.Future[str] = asyncio.Future(loop=loop)
        loop.call_soon(fut.set_result, "asyncio future")
        return await fut

    assert loop.run_until_complete(main()) == "asyncio future"


def test_asyncio_future_exception_and_cancel_reach_a_native_task(loop: Loop) -> None:
    async def main() -> list[str]:
        outcomes: list[str] = []
        failing: asyncio.Future[None] = asyncio.Future(loop=loop)
        loop.call_soon(failing.set_exception, ValueError("asyncio-side"))
        try:
            await failing
        except ValueError as exc:
            outcomes.append(str(exc))
        cancelled: asyncio.Future[None] = asyncio.Future(loop=loop)
        loop.call_soon(cancelled.cancel, "asyncio-side cancel")
        try:
            await cancelled
        except asyncio.CancelledError as exc:
            outcomes.append(str(exc))
        return outcomes

    assert loop.run_until_complete(main()) == ["asyncio-side", "asyncio-side cancel"]


def test_cancelling_a_native_task_cancels_the_asyncio_future_it_awaits(loop: Loop) -> None:
    async def main() -> bool:
        fut: asyncio.Future[None] = asyncio.Future(loop=loop)

        async def waiter() -> None:
            await fut

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return fut.cancelled()

    assert loop.run_until_complete(main()) is True


def test_an_asyncio_task_awaits_a_loop_future(loop: Loop) -> None:
    async def child(fut: asyncio.Future[str]) -> str:
        return await fut

    async def main() -> str:
        fut = loop.create_future()
        task = asyncio.Task(child(fut), loop=loop)
        loop.call_soon(fut.set_result, "loop future")
        return await task

    assert loop.run_until_complete(main()) == "loop future"


def test_an_asyncio_task_is_cancelled_through_a_loop_future(loop: Loop) -> None:
    async def child(fut: asyncio.Future[None]) -> None:
        await fut

    async def main() -> tuple[bool, bool]:
        fut = loop.create_future()
        task = asyncio.Task(child(fut), loop=loop)
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait([task])
        return task.cancelled(), fut.cancelled()

    assert loop.run_until_complete(main()) == (True, True)


def test_asyncio_future_callbacks_run_on_the_hosting_loop(loop: Loop) -> None:
    fut: asyncio.Future[int] = asyncio.Future(loop=loop)
    seen: list[int] = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    fut.set_result(5)
    assert seen == []
    run_turns(loop)
    assert seen == [5]
    assert fut.get_loop() is loop


def test_wrap_future_of_a_concurrent_future(loop: Loop) -> None:
    import concurrent.futures

    async def main() -> int:
        cfut: concurrent.futures.Future[int] = concurrent.futures.Future()
        afut = asyncio.wrap_future(cfut)
        assert afut.get_loop() is loop
        loop.call_soon(cfut.set_result, 9)
        return await afut

    assert loop.run_until_complete(main()) == 9


def test_ensure_future_passes_a_future_through(loop: Loop) -> None:
    fut = loop.create_future()
    assert asyncio.ensure_future(fut, loop=loop) is fut
    fut.cancel()


def test_future_repr_lists_callbacks(loop: Loop) -> None:
    fut = loop.create_future()

    def on_done(_: Any) -> None:
        pass

    fut.add_done_callback(on_done)
    assert "on_done" in repr(fut)
    fut.cancel()
    run_turns(loop)
