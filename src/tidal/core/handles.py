"""Handles: what call_soon, call_later and call_at give back, and what the ready queue holds.

Owns: Handle and TimerHandle, the objects the scheduler runs.
Not here: running them (core/scheduler.py), the heap of timers (core/scheduler.py).

Both subclass asyncio's own classes so that ``isinstance(h, asyncio.Handle)`` holds and the
inherited ``cancel()``, ``cancelled()``, ``when()`` and ``repr`` keep asyncio's wording; only the
constructor is ours, because asyncio's asks the loop for its debug flag on every call.

Invariant: ``_context`` is never None; the loop decides which context a callback runs in.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from asyncio import format_helpers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .scheduler import Scheduler


class Handle(asyncio.Handle):
    """A callback with its arguments and context, waiting in the ready queue.

    In debug mode the handle records where it was made: ``stack_depth`` frames above its
    constructor (1, the caller, unless the caller is itself tidal's plumbing).
    """

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: Sequence[Any],
        loop: Scheduler,
        context: contextvars.Context,
        stack_depth: int = 1,
    ) -> None:
        self._callback = callback
        self._args = args
        self._loop = loop
        self._context = context
        self._cancelled = False
        self._repr = None
        self._source_traceback = (
            format_helpers.extract_stack(sys._getframe(stack_depth)) if loop._debug else None
        )

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
        stack_depth: int = 1,
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
        self._source_traceback = (
            format_helpers.extract_stack(sys._getframe(stack_depth)) if loop._debug else None
        )

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
