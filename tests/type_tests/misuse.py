"""Checked by mypy (tests/type_tests/test_mypy.py), never imported: every line marked
``# expect-error`` must be reported, and nothing else, which shows the result types are real
types and not ``Any``."""

from __future__ import annotations

import tidal


async def answer() -> int:
    return 42


async def main() -> None:
    loop = tidal.new_event_loop()
    fut: tidal.Future[int] = loop.create_future()
    fut.set_result("not an int")  # expect-error
    text: str = await fut  # expect-error
    task = tidal.Task(answer(), loop=loop)
    other: str = task.result()  # expect-error
    wrong: tidal.Task[str] = task  # expect-error
    fine: tidal.Task[object] = task  # covariant, like asyncio.Task
    del text, other, wrong, fine
