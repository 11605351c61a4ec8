"""The blocked-loop watchdog: a thread that notices the loop not coming back, and shows why.

Owns: ``Watchdog`` (a daemon thread per watched loop), ``BlockReport`` and its text.
Not here: per-step duration statistics and the "Executing %s took" log, which need hooks and
report only after the fact (stats.py); the monitor's view of a blocked loop (monitor.py).

How it works: the thread posts a heartbeat into the loop with ``call_soon_threadsafe`` (the
loop's only cross-thread door, which also wakes it from the poller) and waits up to
``threshold`` seconds for the loop to run it. If the heartbeat is late, the loop is stuck in
some callback or step: the thread reads the loop thread's current frame with
``sys._current_frames()`` *while it is still stuck*, so the report names the line that blocks
(``time.sleep(2)`` inside a coroutine, a ``requests.get``, a long computation), plus the task
running it. When the heartbeat finally runs, the report gets the total blocked time.

It needs no hooks and works on asyncio's loop as well as tidal's. A loop that is not running
is not "blocked": the watchdog only arms while ``loop.is_running()``.

Invariants:
- At most one heartbeat is outstanding; a blocked episode produces exactly one report.
- The watchdog thread never touches loop state except through ``call_soon_threadsafe`` and
  read-only calls (``is_running``, ``is_closed``, ``current_task``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any, Final

from .tree import Location, program_frames, short_path

logger: Final = logging.getLogger("asyncio")

DEFAULT_THRESHOLD: Final = 0.1  # seconds; asyncio's slow_callback_duration default
MAX_STACK: Final = 40  # frames kept per report, innermost ones


@dataclass(frozen=True)
class BlockReport:
    """One episode of the loop not running its heartbeat within the threshold.

    Attributes:
        loop: repr of the loop.
        threshold: the watchdog's threshold, seconds.
        blocked_for: how long the loop had been unresponsive when the stack was captured.
        duration: total unresponsive time, once the loop came back (None while still stuck, or
            if the watchdog stopped first).
        task: the name of the task whose step was running, if any.
        stack: the loop thread's stack at capture time, outermost first.
    """

    loop: str
    threshold: float
    blocked_for: float
    duration: float | None
    task: str | None
    stack: tuple[Location, ...]

    @property
    def blocking_line(self) -> Location | None:
        """The innermost frame: the line that was running when the loop was caught stuck."""
        return self.stack[-1] if self.stack else None

    def format(self) -> str:
        """Human-readable report, the blocking line last (as in a traceback)."""
        if self.duration is None:
            head = f"the event loop has been blocked for {self.blocked_for:.3f} s"
        else:
            head = f"the event loop was blocked for {self.duration:.3f} s"
        head += f" (threshold {self.threshold:.3f} s)"
        if self.task is not None:
            head += f", inside task {self.task!r}"
        lines = [f"tidal watchdog: {head}; loop thread stack (most recent call last):"]
        # The program's frames below the loop's own machinery; the whole stack stays in .stack.
        shown = program_frames(self.stack)
        if len(shown) < len(self.stack):
            lines.append(f"  ... {len(self.stack) - len(shown)} frames of the loop's machinery ...")
        for loc in shown:
            lines.append(f'  File "{short_path(loc.filename)}", line {loc.lineno}, in {loc.name}')
            if loc.line:
                lines.append(f"    {loc.line}")
        return "\n".join(lines)


def thread_stack(thread_id: int, limit: int = MAX_STACK) -> tuple[Location, ...]:
    """The current stack of thread ``thread_id``, outermost first (empty if it is gone)."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return ()
    summary = traceback.extract_stack(frame, limit=limit)
    return tuple(Location(f.name, f.filename, f.lineno or 0, f.line or "") for f in summary)


class Watchdog:
    """Watch ``loop`` from a thread; report every time it stays busy longer than ``threshold``.

    Use it as a context manager, or call ``start()`` and ``stop()``::

        with tidal.observe.watchdog.Watchdog(loop, threshold=0.2):
            loop.run_until_complete(main())

    Args:
        loop: any asyncio event loop (tidal's or asyncio's).
        threshold: seconds the loop may stay busy before it counts as blocked.
        on_block: called (in the watchdog thread) with the report as soon as the block is seen,
            and again with ``duration`` set once the loop is back. Default: log both on the
            "asyncio" logger, the first with the stack.
        interval: seconds between heartbeats while the loop is healthy (default threshold / 2).

    Raises:
        ValueError: ``threshold`` or ``interval`` is not positive.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        on_block: Callable[[BlockReport], Any] | None = None,
        interval: float | None = None,
    ) -> None:
        if threshold <= 0:
            raise ValueError(f"threshold must be a positive number of seconds, got {threshold}")
        if interval is not None and interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval}")
        self.loop = loop
        self.threshold = threshold
        self.interval = threshold / 2 if interval is None else interval
        self.reports: list[BlockReport] = []  # finished episodes, oldest first
        self._on_block = on_block
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread_id: int | None = None

    def start(self) -> Watchdog:
        """Start the watchdog thread (once).

        Raises:
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError("this Watchdog was already started; create a new one")
        self._thread = threading.Thread(
            target=self._watch, name=f"tidal-watchdog-{id(self.loop):x}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and join the watchdog thread."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the thread ------------------------------------------------------------------------

    def _beat(self, arrived: threading.Event) -> None:
        self._loop_thread_id = threading.get_ident()
        arrived.set()

    def _watch(self) -> None:
        stopping = self._stopping
        loop = self.loop
        while not stopping.is_set():
            if loop.is_closed():
                return
            if not loop.is_running():
                stopping.wait(self.interval)
                continue
            arrived = threading.Event()
            posted = perf_counter()
            try:
                loop.call_soon_threadsafe(self._beat, arrived)
            except RuntimeError:  # closed between our check and the call
                return
            if arrived.wait(self.threshold):
                stopping.wait(self.interval)
                continue
            if stopping.is_set() or not loop.is_running():
                continue
            report = self._capture(perf_counter() - posted)
            self._emit(report)
            while not arrived.wait(self.threshold):
                if stopping.is_set() or loop.is_closed():
                    self.reports.append(report)
                    return
                if not loop.is_running():
                    break  # stopped while stuck; the heartbeat will run when it restarts
            finished = replace(report, duration=perf_counter() - posted)
            self.reports.append(finished)
            self._emit(finished)

    def _capture(self, blocked_for: float) -> BlockReport:
        thread_id = getattr(self.loop, "_thread_id", None) or self._loop_thread_id
        stack = thread_stack(thread_id) if thread_id is not None else ()
        try:
            task = asyncio.current_task(self.loop)
        except RuntimeError:
            task = None
        return BlockReport(
            loop=repr(self.loop),
            threshold=self.threshold,
            blocked_for=blocked_for,
            duration=None,
            task=task.get_name() if task is not None else None,
            stack=stack,
        )

    def _emit(self, report: BlockReport) -> None:
        if self._on_block is not None:
            try:
                self._on_block(report)
            except Exception:
                logger.exception("tidal watchdog: on_block callback failed")
            return
        if report.duration is None:
            logger.warning("%s", report.format())
        else:
            logger.warning(
                "tidal watchdog: the event loop was blocked for %.3f s (task %s)",
                report.duration,
                report.task,
            )
