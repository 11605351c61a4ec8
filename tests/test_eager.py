"""Eager task start: the first step runs inside ``create_task``, on both loops.

``tidal.eager_task_factory`` works on every Python tidal supports (3.11 included);
``asyncio.eager_task_factory`` (3.12+) must work on tidal's loop exactly as on asyncio's.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from typing import Any

import pytest

import tidal

Loop = asyncio.AbstractEventLoop

FACTORIES: dict[str, Any] = {"tidal.eager_task_factory": tidal.eager_task_factory}
if sys.version_info >= (3, 12):
    FACTORIES["asyncio.eager_task_factory"] = asyncio.eager_task_factory  # type: ignore[attr-defined]
    FACTORIES["asyncio.create_eager_task_factory(asyncio.Task)"] = (
        asyncio.create_eager_task_factory(asyncio.Task)  # type: ignore[attr-defined]
    )
FACTORIES["tidal.create_eager_task_factory(tidal.Task)"] = tidal.create_eager_task_factory(
    tidal.Task
)


@pytest.fixture(params=sorted(FACTORIES))
def eager_loop(request: pytest.FixtureRequest, loop: Loop) -> Loop:
    """The loop under test with one of the eager task factories installed."""
    loop.set_task_factory(FACTORIES[request.param])
    return loop


def test_a_coroutine_that_never_suspends_is_done_right_after_create_task(
    eager_loop: Loop,
) -> None:
    async def immediate() -> str:
        return "at once"

    async def main() -> None:
        task = asyncio.create_task(immediate())
        assert task.done()
        assert task.result() == "at once"
        assert await task == "at once"

    eager_loop.run_until_complete(main())


def test_the_first_step_runs_inside_create_task(eager_loop: Loop) -> None:
    log: list[str] = []

    async def child() -> None:
        log.append("child first step")
        await asyncio.sleep(0)
        log.append("child second step")

    async def main() -> None:
        log.append("before create_task")
        task = asyncio.create_task(child())
        log.append("after create_task")
        assert not task.done()
        await task

    eager_loop.run_until_complete(main())
    assert log == [
        "before create_task",
        "child first step",
        "after create_task",
        "child second step",
    ]


def test_current_task_during_and_after_the_eager_step(eager_loop: Loop) -> None:
    seen: dict[str, Any] = {}

    async def child() -> None:
        seen["in child"] = asyncio.current_task()
        await asyncio.sleep(0)
        seen["child later"] = asyncio.current_task()

    async def main() -> None:
        me = asyncio.current_task()
        task = asyncio.create_task(child())
        seen["back in main"] = asyncio.current_task()
        assert task in asyncio.all_tasks()
        await task
        assert seen == {"in child": task, "back in main": me, "child later": task}

    eager_loop.run_until_complete(main())


def test_an_exception_in_the_eager_step_is_stored_not_raised(eager_loop: Loop) -> None:
    async def fails() -> None:
        raise ValueError("eager failure")

    async def main() -> None:
        task = asyncio.create_task(fails())
        assert task.done()
        with pytest.raises(ValueError, match="eager failure"):
            await task

    eager_loop.run_until_complete(main())


def test_eager_tasks_get_names_and_contexts(eager_loop: Loop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def child() -> str:
        return var.get()

    async def main() -> None:
        ctx = contextvars.copy_context()
        ctx.run(var.set, "given")
        task = asyncio.get_running_loop().create_task(child(), name="eager-named", context=ctx)
        assert task.get_name() == "eager-named"
        assert await task == "given"

    eager_loop.run_until_complete(main())


def test_cancelling_a_suspended_eager_task(eager_loop: Loop) -> None:
    async def child() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(child())
        task.cancel("stop")
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    eager_loop.run_until_complete(main())


def test_eager_tasks_under_gather_and_taskgroup(eager_loop: Loop) -> None:
    async def value(x: int, suspend: bool) -> int:
        if suspend:
            await asyncio.sleep(0)
        return x

    async def main() -> tuple[list[int], list[int]]:
        gathered = await asyncio.gather(*(value(i, i % 2 == 0) for i in range(6)))
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(value(i, i % 3 == 0)) for i in range(6)]
        return gathered, [t.result() for t in tasks]

    assert eager_loop.run_until_complete(main()) == (list(range(6)), list(range(6)))


def test_eager_factory_outside_a_running_loop_schedules_normally(eager_loop: Loop) -> None:
    ran: list[str] = []

    async def child() -> None:
        ran.append("ran")

    task = eager_loop.create_task(child())
    assert not task.done()
    assert ran == []
    eager_loop.run_until_complete(task)
    assert ran == ["ran"]


def test_tidal_eager_factory_matches_the_asyncio_one_on_312(loop: Loop) -> None:
    if sys.version_info < (3, 12):
        pytest.skip("asyncio.eager_task_factory is new in 3.12")
    logs: dict[str, list[str]] = {}
    for name in ("tidal.eager_task_factory", "asyncio.eager_task_factory"):
        log: list[str] = []
        logs[name] = log

        async def child(log: list[str] = log) -> None:
            log.append("child 1")
            await asyncio.sleep(0)
            log.append("child 2")

        async def main(log: list[str] = log) -> None:
            task = asyncio.create_task(child())
            log.append("main")
            await task

        loop.set_task_factory(FACTORIES[name])
        loop.run_until_complete(main())
    assert logs["tidal.eager_task_factory"] == logs["asyncio.eager_task_factory"]


def test_asyncio_task_built_directly_with_eager_start(loop: Loop) -> None:
    # aiohttp builds asyncio.Task(coro, loop=loop, eager_start=True) itself (COMPAT-NOTES.md).
    if sys.version_info < (3, 12):
        pytest.skip("Task(eager_start=) is new in 3.12")
    log: list[str] = []

    async def child() -> str:
        log.append("child first step")
        await asyncio.sleep(0)
        return "child done"

    async def immediate() -> str:
        return "immediate"

    async def main() -> None:
        task = asyncio.Task(child(), loop=loop, eager_start=True)  # type: ignore[call-arg]
        log.append("after Task()")
        assert asyncio.current_task() is not task
        done = asyncio.Task(immediate(), loop=loop, eager_start=True)  # type: ignore[call-arg]
        assert done.done() and done.result() == "immediate"
        assert await task == "child done"

    loop.run_until_complete(main())
    assert log == ["child first step", "after Task()"]
