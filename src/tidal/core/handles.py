"""Handles: what call_soon, call_later and call_at give back, and what the ready queue holds.

Owns: Handle and TimerHandle, the objects the scheduler runs.
Not here: running them (core/scheduler.py), the heap of timers (core/scheduler.py).

Both subclass asyncio's own classes so that ``isinstance(h, asyncio.Handle)`` holds and the
inherited ``cancel()``, ``cancelled()``, ``when()`` and ``repr`` keep asyncio's wording; only the
constructor is ours, because asyncio's asks the loop for its debug flag on every call.

Invariant: ``_context`` is never None; the loop decides which context a callback runs in.

Debug mode records where each handle was made: the stack from the nearest frame outside tidal's
own package, so it ends at the user's ``call_soon``/``call_later`` line. Counting a fixed number
of frames up would not do: in the compiled build tidal's functions leave no frames at all.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import traceback
from asyncio import format_helpers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .scheduler import Scheduler


# src/tidal: frames from files under it are tidal's plumbing, not the user's code.
PACKAGE_DIR: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def creation_stack() -> traceback.StackSummary:
    """Debug mode: the current stack, starting at the nearest frame outside tidal's package."""
    # Frame 0 is this function's own when it runs as Python, and the nearest Python frame (the
    # caller's or further out) when it is compiled: the walk below starts right either way.
    frame: Any = sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR):
        frame = frame.f_back
    return format_helpers.extract_stack(frame)


class Handle(asyncio.Handle):
    """A callback with its arguments and context, waiting in the ready queue.

    In debug mode the handle records where it was made (``creation_stack``).
    """

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: Sequence[Any],
        loop: Scheduler,
        context: contextvars.Context,
    ) -> None:
        self._callback = callback
        self._args = args
        self._loop = loop
        self._context = context
        self._cancelled = False
        self._repr = None
        self._source_traceback = creation_stack() if loop._debug else None

    def get_context(self) -> contextvars.Context:
        """Return the context the callback runs in (asyncio has this from 3.12)."""
        return self._context

    def cancel(self) -> None:
        """Stop the callback from running; the loop drops the handle when it reaches it."""
        if not self._cancelled:
            self._cancelled = True
            if self._loop._debug:
                self._repr = repr(self)  # type: ignore[assignment]  # typeshed: always None
            self._callback = None  # type: ignore[assignment]
            self._args = None  # type: ignore[assignment]


class TimerHandle(Handle, asyncio.TimerHandle):
    """A Handle that waits in the timer heap until loop time ``when``.

    ``cancel()`` counts the handle as dead weight in the loop's heap (which drops cancelled
    entries lazily and compacts itself when they pile up); asyncio's does the same through
    four method calls, ours in one.
    """

    __slots__ = ()

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: Sequence[Any],
        loop: Scheduler,
        context: contextvars.Context,
    ) -> None:
        # Handle.__init__ inlined: calling it costs ~4% on timer-heavy benchmarks.
        self._callback = callback
        self._args = args
        self._loop = loop
        self._context = context
        self._cancelled = False
        self._repr = None
        self._when = when
        self._scheduled = False
        self._source_traceback = creation_stack() if loop._debug else None

    def get_context(self) -> contextvars.Context:
        """Return the context the callback runs in (asyncio has this from 3.12)."""
        return self._context

    def cancel(self) -> None:
        """Stop the callback from running; the heap entry is dropped lazily."""
        if not self._cancelled:
            self._cancelled = True
            loop = self._loop
            if self._scheduled:
                loop._timer_cancelled_count += 1
            if loop._debug:
                self._repr = repr(self)  # type: ignore[assignment]  # typeshed: always None
            self._callback = None  # type: ignore[assignment]
            self._args = None  # type: ignore[assignment]
