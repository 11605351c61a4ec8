"""Instrumentation hooks (tidal.observe.hooks): what fires when, error isolation, switches.

Hooks are a tidal feature (asyncio's loop has no call sites), so these tests run on tidal's loop;
``test_hooks_need_a_tidal_loop`` checks that asking asyncio's loop for hooks fails clearly.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import tidal
from tidal import tasks as tidal_tasks
from tidal.observe import hooks as hooks_module
from tidal.observe.hooks import HOOK_NAMES, ExecutorJob, hooks_for, task_of_callback


@pytest.fixture
def tloop() -> Iterator[tidal.EventLoop]:
    """A tidal loop whose exception handler records (instead of logging) what it is given."""
    loop = tidal.new_event_loop()
    loop.reports = []  # type: ignore[attr-defined]
    loop.set_exception_handler(lambda _l, ctx: loop.reports.append(ctx))  # type: ignore[attr-defined]
    yield loop
    if not loop.is_closed():
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    hooks = loop._hooks
    if hooks is not None:
        for name in HOOK_NAMES:
            for fn in getattr(hooks, name):
                hooks.remove(name, fn)
    assert tidal_tasks._observe_spawn is None, "a spawn observer is still installed"


class Events:
    """An observer recording every hook call as (hook, details)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def _add(self, hook: str, detail: Any) -> None:
        with self.lock:
            self.seen.append((hook, detail))

    def task_spawned(self, task: Any, parent: Any) -> None:
        # Names are read later: asyncio.create_task on 3.11 names the task after creating it.
        self._add("task_spawned", (task, parent))

    def before_task_step(self, task: Any) -> None:
        self._add("before_task_step", task.get_name())

    def after_task_step(self, task: Any, started: float, duration: float) -> None:
        assert duration >= 0
        self._add("after_task_step", task.get_name())

    def task_exited(self, task: Any) -> None:
        self._add("task_exited", task.get_name())

    def callback_ran(self, handle: Any, started: float, duration: float) -> None:
        self._add("callback_ran", getattr(handle._callback, "__name__", "?"))

    def before_io_wait(self, timeout: float | None) -> None:
        self._add("before_io_wait", timeout)

    def after_io_wait(self, started: float, waited: float, events: int) -> None:
        self._add("after_io_wait", waited)

    def executor_job_started(self, job: ExecutorJob) -> None:
        self._add("executor_job_started", job.label)

    def executor_job_finished(self, job: ExecutorJob) -> None:
        self._add("executor_job_finished", (job.label, job.error is not None))

    def loop_closing(self, loop: Any) -> None:
        self._add("loop_closing", None)

    def of(self, hook: str) -> list[Any]:
        return [detail for name, detail in self.seen if name == hook]


def test_every_hook_fires_with_its_arguments(tloop: tidal.EventLoop) -> None:
    events = Events()
    hooks = hooks_for(tloop)
    assert sorted(hooks.add_observer(events)) == sorted(HOOK_NAMES)

    def blocking(x: int) -> int:
        return x * 2

    async def child() -> int:
        await asyncio.sleep(0.01)  # a timer: the loop sleeps in the poller
        return 1

    async def main() -> int:
        tloop.call_soon(lambda: None)
        value = await asyncio.create_task(child(), name="child")
        return value + await tloop.run_in_executor(None, blocking, 20)

    assert tloop.run_until_complete(tloop.create_task(main(), name="main")) == 41
    tloop.run_until_complete(tloop.shutdown_default_executor())
    tloop.close()

    spawned = [(t.get_name(), p and p.get_name()) for t, p in events.of("task_spawned")]
    assert ("main", None) in spawned
    assert ("child", "main") in spawned
    assert events.of("before_task_step").count("child") == 2
    assert events.of("after_task_step").count("child") == 2
    assert events.of("task_exited")[:2] == ["child", "main"]
    assert "<lambda>" in events.of("callback_ran")
    # Task steps are not callbacks: they have their own hooks.
    assert "_step" not in events.of("callback_ran")
    assert "_wakeup" not in events.of("callback_ran")
    waits = events.of("after_io_wait")
    assert waits and max(waits) >= 0.005
    assert events.of("executor_job_started") == [
        "test_every_hook_fires_with_its_arguments.<locals>.blocking"
    ]
    assert events.of("executor_job_finished") == [(events.of("executor_job_started")[0], False)]
    assert events.of("loop_closing") == [None]
    assert not tloop.reports  # type: ignore[attr-defined]


def test_switches_turn_on_and_off_with_observers(tloop: tidal.EventLoop) -> None:
    hooks = hooks_for(tloop)
    assert hooks_for(tloop) is hooks
    assert tloop._instrumented is False
    fn = lambda *args: None  # noqa: E731
    hooks.add("loop_closing", fn)
    assert tloop._instrumented is False  # not a turn-level hook
    hooks.add("callback_ran", fn)
    assert tloop._instrumented is True
    assert tidal_tasks._observe_spawn is None
    hooks.add("task_spawned", fn)
    assert tidal_tasks._observe_spawn is not None
    assert hooks.remove("task_spawned", fn) is True
    assert hooks.remove("task_spawned", fn) is False
    assert tidal_tasks._observe_spawn is None
    hooks.remove("callback_ran", fn)
    hooks.remove("loop_closing", fn)
    assert tloop._instrumented is False
    assert not hooks.listening()


def test_a_raising_observer_is_removed_and_reported_and_the_loop_goes_on(
    tloop: tidal.EventLoop,
) -> None:
    calls: list[str] = []

    class Broken:
        def after_task_step(self, task: Any, started: float, duration: float) -> None:
            calls.append("step")
            raise ValueError("observer bug")

        def callback_ran(self, handle: Any, started: float, duration: float) -> None:
            calls.append("callback")

    good: list[str] = []
    hooks = hooks_for(tloop)
    broken = Broken()
    hooks.add_observer(broken)
    hooks.add("after_task_step", lambda task, s, d: good.append(task.get_name()))

    async def main() -> str:
        for _ in range(3):
            await asyncio.sleep(0)
        return "done"

    assert tloop.run_until_complete(tloop.create_task(main(), name="m")) == "done"
    assert calls.count("step") == 1  # removed after its first error...
    assert "callback" not in calls[1:]  # ...from every hook it was registered for
    assert good.count("m") == 4  # the other observer kept seeing every step
    reports = tloop.reports  # type: ignore[attr-defined]
    assert len(reports) == 1
    assert isinstance(reports[0]["exception"], ValueError)
    assert "was removed" in reports[0]["message"]
    assert not hooks.after_task_step[:0] and len(hooks.after_task_step) == 1


def test_observer_errors_in_worker_threads_are_reported_on_the_loop(
    tloop: tidal.EventLoop,
) -> None:
    def bad(job: ExecutorJob) -> None:
        raise RuntimeError("in a worker")

    hooks_for(tloop).add("executor_job_started", bad)

    async def main() -> int:
        result = await tloop.run_in_executor(None, int, "7")
        await asyncio.sleep(0)  # let the report posted from the worker run
        return result

    assert tloop.run_until_complete(main()) == 7
    reports = tloop.reports  # type: ignore[attr-defined]
    assert [type(r["exception"]) for r in reports] == [RuntimeError]
    assert not hooks_for(tloop).executor_job_started


def test_asyncio_own_task_class_steps_are_seen(tloop: tidal.EventLoop) -> None:
    names: list[str] = []
    hooks_for(tloop).add("after_task_step", lambda task, s, d: names.append(task.get_name()))

    async def work() -> None:
        await asyncio.sleep(0)

    # aiohttp builds asyncio.Task directly on whatever loop runs.
    task = asyncio.Task(work(), loop=tloop, name="aio")
    tloop.run_until_complete(task)
    assert names.count("aio") == 2


def test_task_of_callback_recognises_steps_and_only_steps(tloop: tidal.EventLoop) -> None:
    async def work() -> None:
        await asyncio.sleep(0)

    task = tidal.Task(work(), loop=tloop)  # tidal's Python Task, whatever the loop makes
    assert task_of_callback(task._step) is task
    assert task_of_callback(task._wakeup) is task
    assert task_of_callback(task.cancel) is None
    assert task_of_callback(print) is None
    tloop.run_until_complete(task)

    # CPython's C Task (the loop's default): its steps reach call_soon as wrappers whose
    # __self__ is the task.
    seen: list[Any] = []
    original = tloop.call_soon

    def spy(callback: Any, *args: Any, context: Any = None) -> Any:
        seen.append(callback)
        return original(callback, *args, context=context)

    tloop.call_soon = spy  # type: ignore[method-assign]
    native = tloop.create_task(work())
    tloop.run_until_complete(native)
    del tloop.call_soon
    steps = [cb for cb in seen if task_of_callback(cb) is native]
    assert len(steps) == 2  # the first step, and the step after sleep(0)


def test_eager_tasks_report_their_creator(tloop: tidal.EventLoop) -> None:
    pairs: list[tuple[Any, Any]] = []
    hooks_for(tloop).add("task_spawned", lambda task, parent: pairs.append((task, parent)))
    tloop.set_task_factory(tidal.eager_task_factory)

    async def child() -> int:
        return 5

    async def main() -> int:
        return await asyncio.create_task(child(), name="eager-child")

    assert tloop.run_until_complete(tloop.create_task(main(), name="main")) == 5
    hooks_for(tloop).remove("task_spawned", hooks_for(tloop).task_spawned[0])
    spawned = [(t.get_name(), p and p.get_name()) for t, p in pairs]
    assert ("eager-child", "main") in spawned


def test_debug_mode_still_logs_slow_callbacks_while_observed(
    tloop: tidal.EventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    tloop.set_debug(True)
    tloop.slow_callback_duration = 0.01
    hooks_for(tloop).add("callback_ran", lambda *a: None)
    tloop.call_soon(time.sleep, 0.02)
    tloop.call_soon(tloop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        tloop.run_forever()
    assert any("Executing" in r.getMessage() and "took" in r.getMessage() for r in caplog.records)


def test_callback_errors_still_reach_the_exception_handler_when_observed(
    tloop: tidal.EventLoop,
) -> None:
    ran: list[str] = []
    hooks_for(tloop).add("callback_ran", lambda h, s, d: ran.append("x"))

    def fail() -> None:
        raise KeyError("boom")

    tloop.call_soon(fail)
    tloop.call_soon(tloop.stop)
    tloop.run_forever()
    assert ran == ["x", "x"]
    assert isinstance(tloop.reports[0]["exception"], KeyError)  # type: ignore[attr-defined]


def test_bad_registrations_raise_clear_errors(tloop: tidal.EventLoop) -> None:
    hooks = hooks_for(tloop)
    with pytest.raises(ValueError, match="unknown hook 'task_started'"):
        hooks.add("task_started", print)
    with pytest.raises(TypeError, match="must be callable"):
        hooks.add("task_spawned", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no method named after a hook"):
        hooks.add_observer(object())


def test_hooks_need_a_tidal_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError, match="need a tidal loop"):
            hooks_for(loop)
    finally:
        loop.close()


def test_loop_watchers_see_new_loops_once() -> None:
    seen: list[object] = []
    hooks_module.add_loop_watcher(seen.append)
    try:

        async def main() -> None:
            await asyncio.gather(*(asyncio.sleep(0) for _ in range(3)))

        tidal.run(main())
        tidal.run(main())
    finally:
        hooks_module.remove_loop_watcher(seen.append)
    assert len(seen) == 2 and seen[0] is not seen[1]
    assert tidal_tasks._observe_spawn is None
