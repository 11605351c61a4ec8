"""Bad input gets the exception asyncio raises, on both loops, and the loop survives it.

Where tidal deliberately checks more than asyncio (``call_soon(non_callable)`` raises TypeError
at once even outside debug mode), the test is on tidal's loop alone: asyncio only notices when
the callback runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import tidal

Loop = asyncio.AbstractEventLoop
LoopFactory = Callable[[], Loop]


def collect_reports(loop: Loop) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    return reports


async def nothing() -> None:
    pass


# -- create_task and friends ----------------------------------------------------------------------


@pytest.mark.parametrize("not_a_coroutine", [None, 42, nothing, print])
def test_create_task_of_a_non_coroutine_raises_type_error(loop: Loop, not_a_coroutine: Any) -> None:
    with pytest.raises(TypeError):
        loop.create_task(not_a_coroutine)


def test_asyncio_create_task_of_a_non_coroutine_raises_type_error(loop: Loop) -> None:
    async def main() -> None:
        with pytest.raises(TypeError):
            asyncio.create_task(nothing)  # type: ignore[arg-type]  # noqa: RUF006

    loop.run_until_complete(main())


def test_tidal_task_constructor_rejects_a_non_coroutine(loop: Loop) -> None:
    with pytest.raises(TypeError, match="coroutine was expected"):
        tidal.Task(nothing, loop=loop)  # type: ignore[arg-type]


def test_run_until_complete_of_a_non_awaitable_raises_type_error(loop: Loop) -> None:
    with pytest.raises(TypeError):
        loop.run_until_complete(42)  # type: ignore[arg-type]


def test_awaiting_a_future_of_another_loop_is_a_runtime_error(
    loop: Loop, loop_factory: LoopFactory
) -> None:
    other = loop_factory()
    try:
        foreign = other.create_future()

        async def main() -> None:
            await foreign

        with pytest.raises(RuntimeError, match="different loop"):
            loop.run_until_complete(main())
        foreign.cancel()
    finally:
        other.close()


def test_run_until_complete_of_a_future_of_another_loop_raises_value_error(
    loop: Loop, loop_factory: LoopFactory
) -> None:
    other = loop_factory()
    try:
        foreign = other.create_future()
        with pytest.raises(ValueError):
            loop.run_until_complete(foreign)
        foreign.cancel()
    finally:
        other.close()


# -- raising callbacks ----------------------------------------------------------------------------


def test_raising_callbacks_are_reported_and_the_loop_keeps_running(loop: Loop) -> None:
    reports = collect_reports(loop)
    ran: list[int] = []

    def bad(i: int) -> None:
        ran.append(i)
        raise ValueError(i)

    for i in range(3):
        loop.call_soon(bad, i)
    loop.call_later(0.001, bad, 3)

    async def main() -> str:
        await asyncio.sleep(0.01)
        return "still running"

    assert loop.run_until_complete(main()) == "still running"
    assert ran == [0, 1, 2, 3]
    assert [c["exception"].args for c in reports] == [(0,), (1,), (2,), (3,)]
    assert all(c["message"].startswith("Exception in callback") for c in reports)


def test_a_raising_done_callback_is_reported(loop: Loop) -> None:
    reports = collect_reports(loop)

    def bad(_: Any) -> None:
        raise LookupError("in done callback")

    async def main() -> None:
        fut = loop.create_future()
        fut.add_done_callback(bad)
        fut.set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert len(reports) == 1
    assert isinstance(reports[0]["exception"], LookupError)


def test_a_raising_exception_handler_does_not_stop_the_loop(loop: Loop) -> None:
    def broken_handler(loop: Loop, context: dict[str, Any]) -> None:
        raise RuntimeError("the handler itself is broken")

    loop.set_exception_handler(broken_handler)
    loop.call_soon(lambda: 1 / 0)

    async def main() -> str:
        await asyncio.sleep(0)
        return "alive"

    import logging

    logger = logging.getLogger("asyncio")
    previous = logger.disabled
    logger.disabled = True  # the default handler logs the handler's failure; keep output clean
    try:
        assert loop.run_until_complete(main()) == "alive"
    finally:
        logger.disabled = previous


# -- a closed loop refuses work -------------------------------------------------------------------


@pytest.fixture
def closed_loop(loop_factory: LoopFactory) -> Loop:
    loop = loop_factory()
    loop.close()
    return loop


def test_call_soon_on_a_closed_loop_raises(closed_loop: Loop) -> None:
    with pytest.raises(RuntimeError, match="closed"):
        closed_loop.call_soon(print)


def test_call_later_and_call_at_on_a_closed_loop_raise(closed_loop: Loop) -> None:
    with pytest.raises(RuntimeError, match="closed"):
        closed_loop.call_later(1, print)
    with pytest.raises(RuntimeError, match="closed"):
        closed_loop.call_at(closed_loop.time() + 1, print)


def test_create_task_on_a_closed_loop_raises(closed_loop: Loop) -> None:
    coro = nothing()
    with pytest.raises(RuntimeError, match="closed"):
        closed_loop.create_task(coro)
    coro.close()


def test_run_until_complete_on_a_closed_loop_raises(closed_loop: Loop) -> None:
    coro = nothing()
    with pytest.raises(RuntimeError, match="closed"):
        closed_loop.run_until_complete(coro)
    coro.close()


def test_run_in_executor_on_a_closed_loop_raises(closed_loop: Loop) -> None:
    with pytest.raises(RuntimeError, match="closed"):
        closed_loop.run_in_executor(None, print)


def test_resolving_a_future_after_close_reports_nothing_and_raises(closed_loop: Loop) -> None:
    fut = closed_loop.create_future()
    fut.add_done_callback(print)
    with pytest.raises(RuntimeError, match="closed"):
        fut.set_result(None)


# -- wrong argument types -------------------------------------------------------------------------


def test_call_later_with_none_delay_raises_type_error(loop: Loop) -> None:
    with pytest.raises(TypeError):
        loop.call_later(None, print)  # type: ignore[arg-type]


def test_call_at_with_none_when_raises_type_error(loop: Loop) -> None:
    with pytest.raises(TypeError):
        loop.call_at(None, print)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_coroutine_functions_are_rejected_in_debug_mode(loop: Loop, method: str) -> None:
    loop.set_debug(True)
    args: tuple[Any, ...] = () if method == "call_soon" else (1,)
    with pytest.raises(TypeError):
        getattr(loop, method)(*args, nothing)


def test_call_soon_of_a_non_callable_in_debug_mode_raises_type_error(loop: Loop) -> None:
    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.call_soon(42)  # type: ignore[arg-type]


def test_tidal_call_soon_of_a_non_callable_raises_at_once_without_debug() -> None:
    loop = tidal.new_event_loop()
    loop.set_debug(False)
    try:
        for method, args in [
            (loop.call_soon, ()),
            (loop.call_later, (1,)),
            (loop.call_at, (1.0,)),
            (loop.call_soon_threadsafe, ()),
        ]:
            with pytest.raises(TypeError, match="callable"):
                method(*args, "not callable")  # type: ignore[operator]
        assert not loop._ready  # nothing half-scheduled
    finally:
        loop.close()


def test_set_default_executor_rejects_a_non_thread_pool(loop: Loop) -> None:
    import concurrent.futures

    with concurrent.futures.ProcessPoolExecutor(1) as pool, pytest.raises(TypeError):
        loop.set_default_executor(pool)  # type: ignore[arg-type]


def test_set_exception_handler_rejects_a_non_callable(loop: Loop) -> None:
    with pytest.raises(TypeError):
        loop.set_exception_handler(42)  # type: ignore[arg-type]


def test_future_set_exception_with_a_non_exception_raises_type_error(loop: Loop) -> None:
    fut = loop.create_future()
    with pytest.raises(TypeError):
        fut.set_exception("not an exception")  # type: ignore[arg-type]
    assert not fut.done()
    fut.cancel()


def test_gather_of_a_non_awaitable_raises_type_error(loop: Loop) -> None:
    async def main() -> None:
        with pytest.raises(TypeError):
            await asyncio.gather(42)  # type: ignore[arg-type]

    loop.run_until_complete(main())
