"""Make asyncio's own entry points hand out tidal loops: ``EventLoopPolicy`` and ``install``.

Owns: the policy class and its installation.
Not here: the loop (loop.py).

The policy subclasses the platform's default policy so that everything else it does (the
current-loop bookkeeping per thread, child watchers on 3.11-3.13 Unix) stays asyncio's.
"""

from __future__ import annotations

import asyncio

from .loop import EventLoop


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, except that new loops are tidal loops."""

    _loop_factory = EventLoop

    def new_event_loop(self) -> EventLoop:
        return EventLoop()


def install() -> None:
    """Make ``asyncio.run``, ``asyncio.new_event_loop`` and friends create tidal loops."""
    asyncio.set_event_loop_policy(EventLoopPolicy())
