"""The blocked-loop watchdog, on asyncio's loop and tidal's: it names the line that blocks."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tidal.observe.watchdog import BlockReport, Watchdog


def test_a_blocking_call_in_a_coroutine_is_caught_while_it_blocks(
    loop: asyncio.AbstractEventLoop, run: Callable[..., Any]
) -> None:
    seen_while_blocked = threading.Event()
    live: list[BlockReport] = []

    def on_block(report: BlockReport) -> None:
        live.append(report)
        if report.duration is None:
            seen_while_blocked.set()

    async def handler() -> None:
        await asyncio.sleep(0)
        deadline = time.monotonic() + 5
        # Block until the watchdog has reported (bounded): proves the stack was read mid-block.
        while not seen_while_blocked.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)  # the blocking line the report must point at

    with Watchdog(loop, threshold=0.05, on_block=on_block) as watchdog:
        run(asyncio.ensure_future(handler(), loop=loop))
        run(asyncio.sleep(0.05))  # a healthy turn so the end of the episode is seen
    assert seen_while_blocked.is_set()
    report = watchdog.reports[0]
    assert report.duration is not None and report.duration >= report.blocked_for >= 0.05
    line = report.blocking_line
    assert line is not None
    assert line.filename == __file__ and "time.sleep(0.01)" in line.line
    assert report.task is not None
    text = report.format()
    assert "blocked for" in text and "time.sleep(0.01)" in text
    assert [r.duration is None for r in live] == [True, False]


def test_an_idle_loop_is_not_blocked(
    loop: asyncio.AbstractEventLoop, run: Callable[..., Any]
) -> None:
    async def idle() -> None:
        await asyncio.sleep(0.2)  # sleeping in the poller is not blocking

    with Watchdog(loop, threshold=0.03) as watchdog:
        run(idle())
    assert watchdog.reports == []


def test_default_reporting_logs_the_stack(
    loop: asyncio.AbstractEventLoop, run: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def busy() -> None:
        time.sleep(0.15)

    with caplog.at_level(logging.WARNING, logger="asyncio"), Watchdog(loop, threshold=0.04):
        run(busy())
        run(asyncio.sleep(0.05))
    messages = [r.getMessage() for r in caplog.records]
    assert any("has been blocked" in m and "time.sleep(0.15)" in m for m in messages)
    assert any("was blocked for" in m for m in messages)


def test_bad_thresholds_are_refused(loop: asyncio.AbstractEventLoop) -> None:
    with pytest.raises(ValueError, match="threshold"):
        Watchdog(loop, threshold=0)
    with pytest.raises(ValueError, match="interval"):
        Watchdog(loop, interval=-1)
    watchdog = Watchdog(loop).start()
    with pytest.raises(RuntimeError, match="already started"):
        watchdog.start()
    watchdog.stop()
