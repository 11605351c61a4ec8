"""Property tests (hypothesis): random programs and random bad input, asyncio's loop as oracle.

1. A random program of ``call_soon``, nested ``call_soon``, ``call_later``, ``cancel``,
   ``call_soon_threadsafe``, task creation (tasks that step through ``sleep(0)``) and task
   cancellation, issued from one callback, produces the same observable order of events on
   tidal's loops as on asyncio's. Timers of 10 ms or more depend on the wall clock relative to
   the rest, so they are compared as their own sequence; everything else (``call_later(0)``
   included, which runs at the next turn) must interleave identically.
2. Callbacks sent from a foreign thread with ``call_soon_threadsafe`` all run, in order.
3. A random public API call with a bad argument raises the same exception type as on asyncio's
   loop (or is accepted on both), and leaves the loop usable: what was queued before and after
   the bad call runs, in the same order as on asyncio's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidal

FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "tidal": tidal.new_event_loop,
    "tidal-py": lambda: tidal.new_event_loop(tasks="python"),
}
TIMER_UNIT = 0.01  # seconds; call_later delays are 0 or k * TIMER_UNIT

# 60 examples per property in the suite; TIDAL_PROPERTY_EXAMPLES=1000 for a longer search.
SETTINGS = settings(
    max_examples=int(os.environ.get("TIDAL_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)

Op = tuple[Any, ...]
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("soon")),
        st.tuples(st.just("soon_nested")),
        st.tuples(st.just("later"), st.integers(0, 2)),
        st.tuples(st.just("threadsafe")),
        st.tuples(st.just("cancel"), st.integers(0, 60)),
        st.tuples(st.just("task"), st.integers(0, 3)),
        st.tuples(st.just("cancel_task"), st.integers(0, 60)),
    ),
    max_size=40,
)


def run_program(
    factory: Callable[[], asyncio.AbstractEventLoop], ops: list[Op]
) -> tuple[list[Any], dict[int, float]]:
    """The events in the order they happened, and each timer's deadline by tag."""
    loop = factory()
    log: list[Any] = []
    deadlines: dict[int, float] = {}
    handles: list[asyncio.Handle] = []
    tasks: list[asyncio.Task[None]] = []

    def nested(tag: int) -> None:
        log.append(("nested", tag))
        loop.call_soon(log.append, ("nested-child", tag))

    async def stepper(tag: int, steps: int) -> None:
        try:
            log.append(("task", tag, 0))
            for step in range(steps):
                await asyncio.sleep(0)
                log.append(("task", tag, step + 1))
        except asyncio.CancelledError:
            log.append(("task-cancelled", tag))
            raise

    def program() -> None:
        for tag, op in enumerate(ops):
            kind = op[0]
            if kind == "soon":
                handles.append(loop.call_soon(log.append, ("soon", tag)))
            elif kind == "soon_nested":
                handles.append(loop.call_soon(nested, tag))
            elif kind == "later":
                delay = op[1] * TIMER_UNIT
                timer = loop.call_later(delay, log.append, ("later", op[1], tag))
                deadlines[tag] = timer.when()
                handles.append(timer)
            elif kind == "threadsafe":
                handles.append(loop.call_soon_threadsafe(log.append, ("threadsafe", tag)))
            elif kind == "cancel" and handles:
                handles[op[1] % len(handles)].cancel()
            elif kind == "task":
                tasks.append(loop.create_task(stepper(tag, op[1])))
            elif kind == "cancel_task" and tasks:
                tasks[op[1] % len(tasks)].cancel()

    async def main() -> None:
        await asyncio.sleep(3 * TIMER_UNIT + 0.02)
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        loop.call_soon(program)
        loop.run_until_complete(main())
    finally:
        loop.close()
    return log, deadlines


def split(log: list[Any], deadlines: dict[int, float]) -> tuple[list[Any], set[Any]]:
    """(the untimed events in order, the set of timers of 10 ms or more that fired); checks
    that those timers fired in the order of their deadlines on this loop."""
    timed = [e for e in log if e[0] == "later" and e[1] > 0]
    assert timed == sorted(timed, key=lambda e: (deadlines[e[2]], e[2]))
    immediate = [e for e in log if not (e[0] == "later" and e[1] > 0)]
    return immediate, set(timed)


@pytest.mark.slow
@SETTINGS
@given(ops=ops_strategy)
def test_random_programs_run_in_the_same_order_as_on_asyncio(ops: list[Op]) -> None:
    expected = split(*run_program(asyncio.new_event_loop, ops))
    for name, factory in FACTORIES.items():
        assert split(*run_program(factory, ops)) == expected, name


def _threadsafe_order(
    factory: Callable[[], asyncio.AbstractEventLoop], counts: list[int]
) -> list[tuple[int, int]]:
    """Threads send ``counts[t]`` callbacks each; return (thread, index) in the order run."""
    loop = factory()
    seen: list[tuple[int, int]] = []
    total = sum(counts)
    done = loop.create_future()

    def record(item: tuple[int, int]) -> None:
        seen.append(item)
        if len(seen) == total:
            done.set_result(None)

    def sender(thread: int, count: int) -> None:
        for i in range(count):
            loop.call_soon_threadsafe(record, (thread, i))

    threads = [threading.Thread(target=sender, args=(t, n)) for t, n in enumerate(counts)]
    try:
        for thread in threads:
            thread.start()
        loop.run_until_complete(asyncio.wait_for(done, 10))
    finally:
        for thread in threads:
            thread.join()
        loop.close()
    return seen


@pytest.mark.slow
@SETTINGS
@given(counts=st.lists(st.integers(1, 200), min_size=1, max_size=4))
def test_threadsafe_callbacks_from_threads_all_run_in_order(counts: list[int]) -> None:
    for factory in (asyncio.new_event_loop, *FACTORIES.values()):
        seen = _threadsafe_order(factory, counts)
        for t, n in enumerate(counts):
            assert [i for thread, i in seen if thread == t] == list(range(n))


# -- bad input ------------------------------------------------------------------------------------


def _noop() -> None:
    pass


async def _coro() -> None:
    pass


BAD_VALUES: list[Any] = [
    None,
    "x",
    -1,
    1.5,
    object(),
    b"",
    [],
    math.nan,
    math.inf,
    2**70,
    _coro,
]

# Each call gets the loop and one bad value; it returns what the loop returned, to be undone.
CALLS: dict[str, Callable[[asyncio.AbstractEventLoop, Any], Any]] = {
    "call_soon(bad)": lambda loop, bad: loop.call_soon(bad),
    "call_later(bad, cb)": lambda loop, bad: loop.call_later(bad, _noop),
    "call_later(0.01, bad)": lambda loop, bad: loop.call_later(0.01, bad),
    "call_at(bad, cb)": lambda loop, bad: loop.call_at(bad, _noop),
    "call_soon_threadsafe(bad)": lambda loop, bad: loop.call_soon_threadsafe(bad),
    "create_task(bad)": lambda loop, bad: loop.create_task(bad),
    "run_until_complete(bad)": lambda loop, bad: loop.run_until_complete(bad),
    "set_exception_handler(bad)": lambda loop, bad: loop.set_exception_handler(bad),
    "set_task_factory(bad)": lambda loop, bad: loop.set_task_factory(bad),
    "set_default_executor(bad)": lambda loop, bad: loop.set_default_executor(bad),
    "add_reader(bad, cb)": lambda loop, bad: ("reader", loop.add_reader(bad, _noop), bad),
    "add_writer(bad, cb)": lambda loop, bad: ("writer", loop.add_writer(bad, _noop), bad),
    "add_signal_handler(bad, cb)": lambda loop, bad: (
        "signal",
        loop.add_signal_handler(bad, _noop),
        bad,
    ),
    "add_signal_handler(SIGUSR1, bad)": lambda loop, bad: (
        "signal",
        loop.add_signal_handler(signal.SIGUSR1, bad),
        signal.SIGUSR1,
    ),
    "remove_signal_handler(bad)": lambda loop, bad: loop.remove_signal_handler(bad),
    "create_future().set_result(bad) twice": lambda loop, bad: _twice(loop.create_future(), bad),
}


# Where tidal is deliberately stricter than asyncio: outside debug mode asyncio accepts a
# non-callable callback and fails only when it runs (in the loop's exception handler; for
# add_signal_handler, when the signal arrives); tidal refuses it at once with TypeError.
STRICTER: dict[str, tuple[Callable[[Any], bool], str]] = {
    call: (lambda bad: not callable(bad), "TypeError")
    for call in (
        "call_soon(bad)",
        "call_soon_threadsafe(bad)",
        "call_later(0.01, bad)",
        "add_signal_handler(SIGUSR1, bad)",
    )
}


def _twice(future: asyncio.Future[Any], value: Any) -> None:
    future.set_result(value)
    future.set_result(value)


def _undo(loop: asyncio.AbstractEventLoop, returned: Any) -> None:
    """Take back whatever a bad call was allowed to do, so the next call starts clean."""
    if isinstance(returned, asyncio.Handle):
        returned.cancel()
    elif isinstance(returned, asyncio.Future):
        returned.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(returned)
    elif isinstance(returned, tuple) and len(returned) == 3:
        kind, _, target = returned
        if kind == "reader":
            loop.remove_reader(target)
        elif kind == "writer":
            loop.remove_writer(target)
        else:
            loop.remove_signal_handler(target)
    loop.set_exception_handler(None)
    loop.set_task_factory(None)


def try_bad_call(
    factory: Callable[[], asyncio.AbstractEventLoop], call: str, bad: Any
) -> tuple[str | None, list[int], str | None]:
    """(exception type name or None, the order in which the queued work ran, and the
    exception type that running the loop afterwards raised, None if it ran cleanly)."""
    loop = factory()
    ran: list[int] = []
    errors: list[Any] = []

    async def queued(n: int) -> None:
        ran.append(n)

    try:
        loop.call_soon(ran.append, 1)
        loop.call_later(0, ran.append, 2)
        task = loop.create_task(queued(3))
        raised: str | None = None
        returned: Any = None
        try:
            with contextlib.suppress(RuntimeWarning):
                returned = CALLS[call](loop, bad)
        except Exception as exc:
            raised = type(exc).__name__
        _undo(loop, returned)
        loop.set_exception_handler(lambda _l, ctx: errors.append(ctx))
        loop.call_soon(ran.append, 4)
        broken: str | None = None
        try:
            loop.run_until_complete(task)
            loop.run_until_complete(asyncio.sleep(0.001))
        except Exception as exc:
            broken = type(exc).__name__
            task.cancel()
    finally:
        loop.close()
    return raised, ran, broken


def _known_bug(call: str, bad: Any) -> bool:
    # call_at with a deadline that is not a number: see the strict xfail below.
    return call == "call_at(bad, cb)" and bad is not None and not isinstance(bad, int | float)


@pytest.mark.slow
@SETTINGS
@given(
    case=st.tuples(st.sampled_from(sorted(CALLS)), st.sampled_from(BAD_VALUES)).filter(
        lambda case: not _known_bug(*case)
    )
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # "coroutine ... was never awaited"
def test_bad_arguments_raise_what_asyncio_raises_and_lose_nothing(case: tuple[str, Any]) -> None:
    call, bad = case
    raised, ran, broken = try_bad_call(asyncio.new_event_loop, call, bad)
    if call in STRICTER and raised is None and STRICTER[call][0](bad):
        raised = STRICTER[call][1]
    for name, factory in FACTORIES.items():
        theirs = try_bad_call(factory, call, bad)
        if broken is None:
            assert sorted(ran) == [1, 2, 3, 4]
            assert theirs == (raised, ran, None), name
        else:
            # asyncio's own loop is left broken (call_at("x") leaves a timer with a string
            # deadline in its heap); tidal must refuse the same way and stay usable.
            assert theirs[0] == raised, name
            assert sorted(theirs[1]) == [1, 2, 3, 4] and theirs[2] is None, name


# Found by the property test above: the deadline was pushed onto the timer heap before anything
# checked it, so a non-number raised from inside heappush and stayed in the heap, failing every
# later turn (asyncio's loop still has this defect, so only tidal's loops are checked here).
@pytest.mark.parametrize("bad", ["x", b"", [], object()])
def test_call_at_with_a_non_number_deadline_leaves_the_loop_usable(bad: Any) -> None:
    for factory in FACTORIES.values():
        raised, ran, broken = try_bad_call(factory, "call_at(bad, cb)", bad)
        assert raised == "TypeError"
        assert (sorted(ran), broken) == ([1, 2, 3, 4], None)
