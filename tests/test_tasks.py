"""The Task API on asyncio's loop and on tidal's: identity, names, contexts, stacks, cancellation.

Everything here runs the same code on both loops and compares what a program can observe.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import io
import sys
import weakref
from collections.abc import Callable
from typing import Any

import pytest

Loop = asyncio.AbstractEventLoop
Contexts = list[dict[str, Any]]


def collect_reports(loop: Loop) -> Contexts:
    reports: Contexts = []
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    return reports


async def forever() -> None:
    await asyncio.get_running_loop().create_future()


# -- identity and introspection -------------------------------------------------------------------


def test_a_task_is_an_asyncio_task_and_future(loop: Loop) -> None:
    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(0))
        assert isinstance(task, asyncio.Task)
        assert isinstance(task, asyncio.Future)
        assert asyncio.isfuture(task)
        assert task.get_loop() is loop
        await task

    loop.run_until_complete(main())


def test_create_task_schedules_but_does_not_run_the_coroutine(loop: Loop) -> None:
    events: list[str] = []

    async def child() -> None:
        events.append("child runs")

    async def main() -> None:
        task = asyncio.create_task(child())
        events.append("after create_task")
        await task

    loop.run_until_complete(main())
    assert events == ["after create_task", "child runs"]


def test_get_coro_returns_the_wrapped_coroutine(loop: Loop) -> None:
    async def child() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        coro = child()
        task = asyncio.create_task(coro)
        assert task.get_coro() is coro
        await task

    loop.run_until_complete(main())


def test_task_names(loop: Loop) -> None:
    async def main() -> None:
        default = asyncio.create_task(asyncio.sleep(0))
        assert default.get_name().startswith("Task-")
        number = int(default.get_name().removeprefix("Task-"))
        second = asyncio.create_task(asyncio.sleep(0))
        assert second.get_name() == f"Task-{number + 1}"
        named = asyncio.create_task(asyncio.sleep(0), name="worker")
        assert named.get_name() == "worker"
        named.set_name(42)
        assert named.get_name() == "42"
        assert "name='42'" in repr(named)
        await asyncio.gather(default, second, named)

    loop.run_until_complete(main())


def test_current_task_and_all_tasks(loop: Loop) -> None:
    assert asyncio.current_task(loop) is None

    async def child(started: asyncio.Event) -> asyncio.Task[Any] | None:
        started.set()
        await asyncio.sleep(0)
        return asyncio.current_task()

    async def main() -> None:
        me = asyncio.current_task()
        assert me is not None
        assert asyncio.current_task(loop) is me
        started = asyncio.Event()
        task = asyncio.create_task(child(started))
        await started.wait()
        assert asyncio.all_tasks() == {me, task}
        assert asyncio.all_tasks(loop) == {me, task}
        assert await task is task
        assert asyncio.all_tasks() == {me}

    loop.run_until_complete(main())
    assert asyncio.all_tasks(loop) == set()


def test_repr_shows_state_name_and_coroutine(loop: Loop) -> None:
    async def sleeper() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(sleeper(), name="sleepy")
        await asyncio.sleep(0)
        text = repr(task)
        assert text.startswith("<Task pending")
        assert "name='sleepy'" in text and "sleeper()" in text and "wait_for=" in text
        task.cancel()
        assert repr(task).startswith("<Task cancelling")
        await asyncio.wait([task])
        assert repr(task).startswith("<Task cancelled")

    loop.run_until_complete(main())


def test_set_result_and_set_exception_are_refused(loop: Loop) -> None:
    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(0))
        with pytest.raises(RuntimeError):
            task.set_result(1)
        with pytest.raises(RuntimeError):
            task.set_exception(ValueError())
        await task

    loop.run_until_complete(main())


def test_get_context_is_the_context_the_task_runs_in(loop: Loop, loop_name: str) -> None:
    if sys.version_info < (3, 12) and loop_name != "tidal-py":
        pytest.skip("asyncio.Task.get_context() is new in 3.12 (tidal's Task has it on 3.11 too)")
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")

    async def child() -> str:
        var.set("set inside")
        return var.get()

    async def main() -> None:
        ctx = contextvars.copy_context()
        task = asyncio.create_task(child(), context=ctx)
        assert task.get_context() is ctx  # type: ignore[attr-defined]
        assert await task == "set inside"
        assert ctx[var] == "set inside"
        assert var.get() == "outer"
        default = asyncio.create_task(child())
        assert isinstance(default.get_context(), contextvars.Context)  # type: ignore[attr-defined]
        await default

    loop.run_until_complete(main())


def test_each_task_runs_in_its_own_copy_of_the_context(loop: Loop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def child(value: str) -> list[str]:
        seen = [var.get()]
        var.set(value)
        await asyncio.sleep(0)
        seen.append(var.get())
        return seen

    async def main() -> None:
        var.set("parent")
        results = await asyncio.gather(child("a"), child("b"))
        assert results == [["parent", "a"], ["parent", "b"]]
        assert var.get() == "parent"

    loop.run_until_complete(main())


def test_get_stack_and_print_stack_of_a_suspended_task(loop: Loop) -> None:
    async def inner_wait() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(inner_wait(), name="stacked")
        await asyncio.sleep(0)
        frames = task.get_stack()
        assert [f.f_code.co_name for f in frames] == ["inner_wait"]
        assert len(task.get_stack(limit=1)) == 1
        out = io.StringIO()
        task.print_stack(file=out)
        text = out.getvalue()
        assert text.startswith("Stack for <Task")
        assert "in inner_wait" in text
        task.cancel()
        await asyncio.wait([task])

    loop.run_until_complete(main())


def test_get_stack_of_a_failed_task_walks_the_traceback(loop: Loop) -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("stack me")

    async def main() -> None:
        task = asyncio.create_task(fails())
        await asyncio.wait([task])
        assert [f.f_code.co_name for f in task.get_stack()] == ["fails"]
        out = io.StringIO()
        task.print_stack(file=out)
        text = out.getvalue()
        assert text.startswith("Traceback for <Task")
        assert "ValueError: stack me" in text
        task.exception()

    loop.run_until_complete(main())


def test_get_stack_of_a_finished_task_is_empty(loop: Loop) -> None:
    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(0))
        await task
        assert task.get_stack() == []
        out = io.StringIO()
        task.print_stack(file=out)
        assert out.getvalue().startswith("No stack for <Task")

    loop.run_until_complete(main())


# -- results and errors ---------------------------------------------------------------------------


def test_awaiting_a_task_returns_its_value_or_raises_its_error(loop: Loop) -> None:
    async def value() -> str:
        await asyncio.sleep(0)
        return "value"

    async def error() -> None:
        await asyncio.sleep(0)
        raise KeyError("error")

    async def main() -> None:
        assert await asyncio.create_task(value()) == "value"
        with pytest.raises(KeyError):
            await asyncio.create_task(error())

    loop.run_until_complete(main())


def test_a_task_awaiting_itself_gets_a_runtime_error(loop: Loop) -> None:
    holder: list[asyncio.Task[None]] = []

    async def selfish() -> None:
        await asyncio.sleep(0)
        await holder[0]

    async def main() -> None:
        task = asyncio.create_task(selfish())
        holder.append(task)
        with pytest.raises(RuntimeError, match="await on itself"):
            await task

    loop.run_until_complete(main())


def test_a_bad_yield_is_a_runtime_error(loop: Loop) -> None:
    class Bad:
        def __await__(self) -> Any:
            yield "not a future"

    async def main() -> None:
        with pytest.raises(RuntimeError, match="bad yield"):
            await Bad()

    loop.run_until_complete(main())


def test_task_exception_never_retrieved_reaches_the_handler(loop: Loop) -> None:
    reports = collect_reports(loop)

    async def fails() -> None:
        raise ValueError("nobody looks")

    async def main() -> None:
        task = asyncio.create_task(fails())
        await asyncio.sleep(0)
        assert task.done()

    loop.run_until_complete(main())
    gc.collect()
    assert len(reports) == 1
    context = reports[0]
    assert context["message"] == "Task exception was never retrieved"
    assert isinstance(context["exception"], ValueError)
    assert isinstance(context["future"], asyncio.Task)


def test_task_destroyed_while_pending_reaches_the_handler(loop: Loop) -> None:
    reports = collect_reports(loop)

    async def waits_forever() -> None:
        await asyncio.get_running_loop().create_future()

    async def main() -> None:
        # Deliberately unreferenced: the loop must report it when it is collected.
        asyncio.create_task(waits_forever(), name="abandoned")  # noqa: RUF006
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    gc.collect()
    pending = [c for c in reports if c["message"] == "Task was destroyed but it is pending!"]
    assert len(pending) == 1
    assert pending[0]["task"].get_name() == "abandoned"


def test_debug_mode_reports_where_the_task_was_created(loop: Loop) -> None:
    loop.set_debug(True)
    reports = collect_reports(loop)

    async def fails() -> None:
        raise ValueError("debug")

    async def main() -> None:
        asyncio.create_task(fails())  # noqa: RUF006  # dropped on purpose
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    gc.collect()
    assert len(reports) == 1
    frames = reports[0]["source_traceback"]
    assert "main" in [frame.name for frame in frames]


# -- cancellation ---------------------------------------------------------------------------------


def test_cancel_before_the_first_step_never_runs_the_coroutine(loop: Loop) -> None:
    ran: list[str] = []

    async def child() -> None:
        ran.append("ran")

    async def main() -> None:
        task = asyncio.create_task(child())
        assert task.cancel() is True
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    loop.run_until_complete(main())
    assert ran == []


def test_cancel_while_awaiting_a_future_cancels_the_future(loop: Loop) -> None:
    async def main() -> None:
        fut = loop.create_future()

        async def waiter() -> None:
            await fut

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        assert task.cancel(msg="reason") is True
        assert task.cancelling() == 1
        with pytest.raises(asyncio.CancelledError, match="reason"):
            await task
        assert fut.cancelled()
        assert task.cancelled()
        assert task.cancel() is False

    loop.run_until_complete(main())


def test_cancel_message_reaches_the_coroutine_and_the_awaiter(loop: Loop) -> None:
    seen: list[tuple[Any, ...]] = []

    async def child() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as exc:
            seen.append(exc.args)
            raise

    async def main() -> None:
        task = asyncio.create_task(child())
        await asyncio.sleep(0)
        task.cancel("the message")
        try:
            await task
        except asyncio.CancelledError as exc:
            seen.append(exc.args)
        assert task.cancelled()

    loop.run_until_complete(main())
    assert seen == [("the message",), ("the message",)]


def test_a_task_that_catches_cancelled_error_completes_normally(loop: Loop) -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            return "survived"
        return "not cancelled"

    async def main() -> None:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        task.cancel()
        assert await task == "survived"
        assert not task.cancelled()
        assert task.cancelling() == 1

    loop.run_until_complete(main())


def test_cancel_of_a_task_that_is_finishing_wins(loop: Loop) -> None:
    async def child(fut: asyncio.Future[None]) -> str:
        await fut
        return "finished"

    async def main() -> None:
        fut = loop.create_future()
        task = asyncio.create_task(child(fut))
        await asyncio.sleep(0)
        fut.set_result(None)  # the task's wakeup is now scheduled...
        task.cancel()  # ...and the cancel arrives before it runs
        with pytest.raises(asyncio.CancelledError):
            await task

    loop.run_until_complete(main())


def test_cancelling_counts_requests_and_uncancel_withdraws_them(loop: Loop) -> None:
    async def main() -> None:
        task = asyncio.create_task(forever())
        await asyncio.sleep(0)
        assert task.cancelling() == 0
        task.cancel()
        task.cancel()
        assert task.cancelling() == 2
        assert task.uncancel() == 1
        assert task.uncancel() == 0
        assert task.uncancel() == 0
        await asyncio.wait([task])
        assert task.cancelled()

    loop.run_until_complete(main())


def test_uncancel_to_zero_before_the_first_step(loop: Loop) -> None:
    # 3.13 changed uncancel(): reaching zero also withdraws the pending cancellation.
    async def child() -> str:
        return "ran"

    async def main() -> None:
        task = asyncio.create_task(child())
        task.cancel()
        assert task.uncancel() == 0
        await asyncio.wait([task])
        if sys.version_info >= (3, 13):
            assert not task.cancelled()
            assert task.result() == "ran"
        else:
            assert task.cancelled()

    loop.run_until_complete(main())


def test_cancelled_error_raised_inside_cancels_the_task(loop: Loop) -> None:
    async def child() -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError("self-cancelled")

    async def main() -> None:
        task = asyncio.create_task(child())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    loop.run_until_complete(main())


def test_cancelling_the_awaiter_cancels_the_awaited_task(loop: Loop) -> None:
    async def main() -> None:
        inner = asyncio.create_task(forever())

        async def outer() -> None:
            await inner

        outer_task = asyncio.create_task(outer())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        outer_task.cancel()
        await asyncio.wait([outer_task])
        assert outer_task.cancelled()
        assert inner.cancelled()

    loop.run_until_complete(main())


def test_keyboard_interrupt_in_a_task_propagates_out_of_the_loop(loop: Loop) -> None:
    async def interrupt() -> None:
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    task = loop.create_task(interrupt())
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(task)
    assert task.done()
    with pytest.raises(KeyboardInterrupt):
        task.result()


# -- private fields that libraries read (COMPAT-NOTES.md) ----------------------------------------


def test_private_fields_anyio_reads_have_asyncio_meanings(loop: Loop) -> None:
    async def main() -> None:
        me = asyncio.current_task()
        assert me is not None
        # anyio finds the root task through run_until_complete's done callback.
        callbacks = [cb for cb, _ctx in me._callbacks]  # type: ignore[attr-defined]
        assert asyncio.base_events._run_until_complete_cb in callbacks  # type: ignore[attr-defined]
        fut = loop.create_future()

        async def waiter() -> None:
            await fut

        task = asyncio.create_task(waiter())
        assert task._must_cancel is False  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        assert task._fut_waiter is fut  # type: ignore[attr-defined]
        fut.set_result(None)
        await task
        assert task._fut_waiter is None  # type: ignore[attr-defined]
        fresh = asyncio.create_task(waiter())
        fresh.cancel()
        assert fresh._must_cancel is True  # type: ignore[attr-defined]
        await asyncio.wait([fresh])

    loop.run_until_complete(main())


def test_default_executor_fields_anyio_reads(loop: Loop) -> None:
    assert loop._default_executor is None  # type: ignore[attr-defined]
    loop.run_until_complete(loop.run_in_executor(None, int))
    assert loop._default_executor is not None  # type: ignore[attr-defined]
    assert loop._executor_shutdown_called is False  # type: ignore[attr-defined]
    loop.run_until_complete(loop.shutdown_default_executor())
    assert loop._executor_shutdown_called is True  # type: ignore[attr-defined]


# -- the same text on both loops ----------------------------------------------------------------


def test_reprs_read_the_same_on_both_loops() -> None:
    import tidal

    def reprs(loop: Loop) -> list[str]:
        async def sleeper() -> None:
            await asyncio.sleep(10)

        async def main() -> list[str]:
            out: list[str] = []
            fut = loop.create_future()
            out.append(repr(fut))
            fut.set_result("x" * 100)
            out.append(repr(fut))
            failed = loop.create_future()
            failed.set_exception(ValueError("bad"))
            out.append(repr(failed))
            failed.exception()
            cancelled = loop.create_future()
            cancelled.cancel()
            out.append(repr(cancelled))
            task = asyncio.create_task(sleeper(), name="T")
            await asyncio.sleep(0)
            out.append(repr(task).split(" wait_for=")[0])
            task.cancel()
            out.append(repr(task).split(" wait_for=")[0])
            await asyncio.wait([task])
            out.append(repr(task))
            done = asyncio.create_task(asyncio.sleep(0, result=3), name="D")
            await done
            out.append(repr(done))
            return out

        try:
            return loop.run_until_complete(main())
        finally:
            loop.close()

    loops = [asyncio.new_event_loop(), tidal.new_event_loop()]
    for each in loops:
        each.set_debug(False)  # debug mode adds "created at", whose frames differ
    on_asyncio, on_tidal = reprs(loops[0]), reprs(loops[1])
    assert on_tidal == on_asyncio


def test_cancelled_task_frees_its_frames_without_the_cycle_collector(
    run: Callable[..., Any],
) -> None:
    """A timed-out wait_for must not leave the inner coroutine's locals in a reference cycle."""

    class Payload:
        pass

    async def inner(payload: Payload) -> None:
        await asyncio.sleep(10)

    async def main() -> weakref.ref[Payload]:
        payload = Payload()
        ref = weakref.ref(payload)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inner(payload), 0.01)
        del payload
        return ref

    gc.disable()
    try:
        ref = run(main())
        assert ref() is None
    finally:
        gc.enable()
