"""An exception that went through the loop is not kept alive by the loop (issue 10, A4).

After an error passes through a future, a task, a TaskGroup, ``wait_for`` or a failed
``create_connection``, nothing of the loop's may refer to it: no frame of tidal's or asyncio's
code (a frame in the traceback that holds the exception, or the future holding it, is a
reference cycle that only the cyclic collector frees), no future, task or handle. With the
collector off, dropping the exception must free it at once, as on asyncio's loop.

Each scenario runs in debug mode and out of it (debug mode has its own ready loop). Only the
loop's behaviour is compared, so the tests hold whether the loop hosts tidal's Python
Task/Future or CPython's C ones.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
import types
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import tidal

Loop = asyncio.AbstractEventLoop

# Code under these directories belongs to a loop; user code (this file) does not.
LOOP_CODE_DIRS = (
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(tidal.__file__) + os.sep,
)


class Boom(Exception):
    """The error under test (a Python subclass, so it can be weakly referenced)."""


@pytest.fixture(params=[False, True], ids=["nodebug", "debug"])
def debug_loop(loop: Loop, request: pytest.FixtureRequest) -> Loop:
    loop.set_debug(request.param)
    return loop


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Turn the cyclic collector off: a cycle then shows as an object that is never freed."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def free_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def failing() -> None:
    await asyncio.sleep(0)
    raise Boom("from a task")


def failed_future() -> asyncio.Future[Any]:
    """A future of the running loop that fails on the next turn (held by no frame of ours)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, Boom("from a future"))
    return fut


async def through_future() -> None:
    await failed_future()


async def through_task() -> None:
    await asyncio.create_task(failing())


async def through_task_group() -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(failing())


async def through_wait_for() -> None:
    await asyncio.wait_for(failing(), 5)


async def through_connect() -> None:
    loop = asyncio.get_running_loop()
    await loop.create_connection(asyncio.Protocol, "127.0.0.1", free_port())


async def through_happy_eyeballs() -> None:
    loop = asyncio.get_running_loop()
    await loop.create_connection(
        asyncio.Protocol, "localhost", free_port(), happy_eyeballs_delay=0.05
    )


def loop_holders(target: object, exclude: set[int], depth: int = 5) -> set[str]:
    """What of a loop's refers to ``target``, directly or through other objects.

    Follows referrers (up to ``depth`` levels) through containers, cells, bound methods and
    futures, and names every frame of tidal's or asyncio's code (``frame tidal/futures.py:
    result``) and every handle (``Handle``) found on the way.
    """
    found: set[str] = set()
    seen = set(exclude)
    level: list[object] = [target]
    for _ in range(depth):
        next_level: list[object] = []
        seen.add(id(level))
        for obj in level:
            referrers = gc.get_referrers(obj)
            seen.add(id(referrers))
            for ref in referrers:
                if id(ref) in seen:
                    continue
                seen.add(id(ref))
                if isinstance(ref, types.FrameType):
                    code = ref.f_code
                    if code.co_filename.startswith(LOOP_CODE_DIRS):
                        where = os.path.join(*code.co_filename.split(os.sep)[-2:])
                        found.add(f"frame {where}:{code.co_name}")
                elif isinstance(ref, asyncio.Handle):
                    found.add(type(ref).__name__)
                elif asyncio.isfuture(ref) or isinstance(ref, FOLLOWED_TYPES):
                    next_level.append(ref)
            del referrers
        level = next_level
    return found


FOLLOWED_TYPES = (list, tuple, dict, set, types.CellType, types.MethodType)


def outcome(
    loop: Loop,
    scenario: Callable[[], Coroutine[Any, Any, None]],
    catch_type: type[BaseException],
) -> tuple[set[str], bool]:
    """Run ``scenario`` on ``loop`` to its error (cyclic GC off).

    Returns what of the loop's still holds the error two turns later (when every callback that
    carried it has run and been dropped), and whether dropping the error then frees it at once
    (reference counts, so it works for exceptions that take no weak reference, as OSError).
    """
    caught: list[BaseException] = []

    async def main() -> set[str]:
        try:
            await scenario()
        except catch_type as exc:
            caught.append(exc)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        error = caught[0]
        exclude = {id(caught), id(sys._getframe())}
        if isinstance(error, BaseExceptionGroup):
            exclude.add(id(error.exceptions))
            return loop_holders(error, exclude) | loop_holders(error.exceptions[0], exclude)
        return loop_holders(error, exclude)

    holders = loop.run_until_complete(main())
    error = caught.pop()
    # Two references are ours (``error`` and getrefcount's argument); any other is a holder.
    if isinstance(error, BaseExceptionGroup):
        leaf = error.exceptions[0]
        freed = sys.getrefcount(error) == 2
        del error
        freed = freed and sys.getrefcount(leaf) == 2
    else:
        freed = sys.getrefcount(error) == 2
    return holders, freed


SCENARIOS = [
    (through_future, Boom),
    (through_task, Boom),
    (through_task_group, BaseExceptionGroup),
    (through_wait_for, Boom),
    (through_connect, OSError),
    pytest.param(through_happy_eyeballs, OSError, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(
    ("scenario", "catch_type"), SCENARIOS, ids=lambda s: getattr(s, "__name__", "")
)
@pytest.mark.usefixtures("no_cyclic_gc")
def test_an_error_is_held_by_nothing_of_the_loop(
    debug_loop: Loop,
    scenario: Callable[[], Coroutine[Any, Any, None]],
    catch_type: type[BaseException],
) -> None:
    holders, freed = outcome(debug_loop, scenario, catch_type)
    # No frame of tidal's code and no handle may hold it, whichever Task/Future the loop hosts.
    assert {h for h in holders if h.startswith("frame tidal/") or "Handle" in h} == set()
    # asyncio's own high-level code (TaskGroup.__aexit__, 3.11's wait_for) and asyncio's happy
    # eyeballs (3.12+) keep some errors in reference cycles on any loop, so "freed at once" is
    # asked of the loop under test exactly where asyncio's loop frees the error.
    oracle_loop = asyncio.new_event_loop()
    try:
        oracle_loop.set_debug(debug_loop.get_debug())
        _, oracle_freed = outcome(oracle_loop, scenario, catch_type)
    finally:
        oracle_loop.close()
    assert freed or not oracle_freed, holders
