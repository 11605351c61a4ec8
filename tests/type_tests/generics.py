"""Checked by mypy (tests/type_tests/test_type_tests.py), never imported by pytest.

tidal.Future and tidal.Task are generic in their result type, as asyncio's are; the loop's
create_future() gives Future[Any]. ``assert_type`` fails the mypy run if a type is wrong (an
Any where an int belongs fails too).
"""

from __future__ import annotations

import asyncio
from typing import Any, assert_type

import tidal


async def answer() -> int:
    return 42


async def main() -> None:
    loop = tidal.new_event_loop()
    fut: tidal.Future[int] = tidal.Future(loop=loop)
    fut.set_result(1)
    assert_type(fut.result(), int)
    assert_type(await fut, int)

    anything = loop.create_future()
    assert_type(anything, tidal.Future[Any])

    task = tidal.Task(answer(), loop=loop)
    assert_type(task, tidal.Task[int])
    assert_type(task.result(), int)
    assert_type(await task, int)

    # tidal's classes stand in wherever asyncio's are expected.
    as_asyncio: asyncio.Future[int] = fut
    as_asyncio_task: asyncio.Task[int] = task
    covariant: tidal.Task[object] = task
    del as_asyncio, as_asyncio_task, covariant

    # Subscripting works at run time too.
    alias = tidal.Future[int]
    del alias
