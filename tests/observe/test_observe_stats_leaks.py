"""Duration statistics (observe/stats.py) and the leak report (observe/leaks.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import warnings
from typing import Any

import pytest

import tidal
from tidal.observe import leaks, stats


def test_stats_group_steps_by_coroutine_and_callbacks_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = tidal.new_event_loop()

    async def worker() -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    async def slow() -> None:
        time.sleep(0.03)

    def tick() -> None:
        pass

    async def main() -> None:
        asyncio.get_running_loop().call_soon(tick)
        await asyncio.gather(worker(), worker(), slow())

    try:
        with (
            caplog.at_level(logging.WARNING, logger="asyncio"),
            stats.collect(loop, slow_duration=0.02) as collected,
        ):
            loop.run_until_complete(main())
    finally:
        loop.close()
    by_name = {row.name: row for row in collected.tasks()}
    assert (
        by_name["test_stats_group_steps_by_coroutine_and_callbacks_by_name.<locals>.worker"].count
        == 8
    )
    slow_row = by_name["test_stats_group_steps_by_coroutine_and_callbacks_by_name.<locals>.slow"]
    assert slow_row.slow == 1 and slow_row.max >= 0.03
    callbacks = {row.name.rsplit(".", 1)[-1]: row for row in collected.callbacks()}
    assert callbacks["tick"].count == 1
    assert any(
        r.getMessage().startswith("Executing <Task") and "took" in r.getMessage()
        for r in caplog.records
    )
    table = collected.format()
    assert "task steps:" in table and "worker" in table and "callbacks:" in table


def _reports() -> tuple[list[leaks.LeakReport], Any]:
    found: list[leaks.LeakReport] = []
    return found, found.append


def test_tasks_left_pending_when_main_finishes_are_reported_with_their_origin() -> None:
    found, report = _reports()

    async def forgotten() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        asyncio.create_task(forgotten(), name="forgotten")  # noqa: RUF006  # the leak under test
        await asyncio.sleep(0)

    tracking = leaks.track_all(report)
    try:
        tidal.run(main())
    finally:
        tracking.stop()
    assert len(found) == 1
    leaked = found[0].pending_when_main_finished
    assert [t.name for t in leaked] == ["forgotten"]
    assert leaked[0].created_at is not None and leaked[0].created_at.startswith(__file__)
    assert leaked[0].created_by == found[0].main_task
    assert "sleep" in leaked[0].waiting_at
    text = found[0].format()
    assert "still pending when the main task" in text and "forgotten" in text


def test_pending_tasks_at_close_and_lost_errors_are_reported() -> None:
    found, report = _reports()
    loop = tidal.new_event_loop()
    loop.set_exception_handler(lambda _loop, _context: None)
    tracker = leaks.watch(loop, report)

    async def fails() -> None:
        raise ValueError("nobody looks at me")

    async def hangs() -> None:
        await asyncio.Event().wait()

    kept: list[asyncio.Task[None]] = []  # alive at close (a collected one is logged by asyncio)

    async def main() -> None:
        kept.append(asyncio.create_task(fails(), name="fails"))
        kept.append(asyncio.create_task(hangs(), name="hangs"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(loop.create_task(main(), name="main"))
    loop.close()
    assert tracker.reports and found
    result = found[0]
    assert [t.name for t in result.pending_at_close] == ["hangs"]
    assert [e.name for e in result.unretrieved] == ["fails"]
    assert "nobody looks at me" in result.unretrieved[0].error
    # Reading the report did not mark the exception retrieved: asyncio still logs it later.
    assert kept[0]._log_traceback  # type: ignore[attr-defined]
    assert isinstance(kept[0].exception(), ValueError)
    kept[1]._log_destroy_pending = False  # type: ignore[attr-defined]


def test_never_awaited_coroutines_are_reported() -> None:
    found, report = _reports()
    loop = tidal.new_event_loop()

    async def job() -> None:
        pass

    async def main() -> None:
        job()  # forgotten await

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always", RuntimeWarning)
        # Attached inside: recording replaces showwarning, which the tracker wraps.
        leaks.watch(loop, report, coroutine_origins=True)
        loop.run_until_complete(main())
        gc.collect()
        loop.close()
    assert any("was never awaited" in str(w.message) for w in shown)  # still shown as usual
    never = found[0].never_awaited
    assert len(never) == 1 and "job" in never[0]
    assert __file__ in never[0]  # where it was created


def test_executor_jobs_still_running_at_close_are_reported() -> None:
    found, report = _reports()
    loop = tidal.new_event_loop()
    leaks.watch(loop, report)
    release = threading.Event()
    started = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(10)

    async def main() -> None:
        asyncio.get_running_loop().run_in_executor(None, stuck)
        await asyncio.to_thread(started.wait, 10)

    loop.run_until_complete(main())
    executor = loop._default_executor
    loop.close()
    release.set()
    assert executor is not None
    executor.shutdown(wait=True)
    jobs = found[0].executor_jobs
    assert len(jobs) == 1 and "stuck" in jobs[0]


def test_a_clean_program_produces_no_report() -> None:
    found, report = _reports()
    tracking = leaks.track_all(report)
    try:

        async def main() -> int:
            return await asyncio.create_task(asyncio.sleep(0, result=3))

        assert tidal.run(main()) == 3
    finally:
        tracking.stop()
    assert found == []
    assert not leaks.LeakReport("x", (), None, (), (), (), ())
