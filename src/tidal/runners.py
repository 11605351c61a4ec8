"""Entry points that run a coroutine on a fresh tidal loop: ``run`` and ``Runner``.

Owns: the tidal defaults for asyncio's runner.
Not here: the loop itself (loop.py).

``Runner`` is asyncio's own ``asyncio.Runner`` with tidal's loop as the factory. Reusing it (rather
than writing a look-alike) guarantees the documented lifecycle exactly: a fresh loop and context,
Ctrl-C cancelling the main task and then raising KeyboardInterrupt, async generators and the
default executor shut down before the loop closes. The loop underneath is entirely tidal's.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .loop import EventLoop

_T = TypeVar("_T")


def new_event_loop(*, tasks: str | None = None) -> EventLoop:
    """Return a new tidal event loop (not set as the current loop).

    Args:
        tasks: "native" (CPython's C Future and Task, the default) or "python" (tidal's
            reference implementation); None reads ``$TIDAL_TASKS``.
    """
    return EventLoop(tasks=tasks)


class Runner(asyncio.Runner):  # type: ignore[misc]  # typeshed marks it @final; see docstring
    """``asyncio.Runner`` whose loops are tidal's unless ``loop_factory`` says otherwise.

    Args:
        debug: turn the loop's debug mode on or off (None leaves the default).
        loop_factory: a callable that returns a new loop; defaults to ``tidal.new_event_loop``.
    """

    def __init__(
        self,
        *,
        debug: bool | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        super().__init__(debug=debug, loop_factory=loop_factory or new_event_loop)


def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    context: contextvars.Context | None = None,
) -> _T:
    """Run ``main`` on a new tidal loop and return its result, as ``asyncio.run`` does.

    Raises:
        RuntimeError: called while an event loop is running in this thread.
        ValueError: ``main`` is not a coroutine.
    """
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError(
            "tidal.run() cannot be called from a running event loop; await the coroutine, "
            "or create a task with asyncio.create_task()"
        )
    with Runner(debug=debug) as runner:
        return runner.run(main, context=context)
