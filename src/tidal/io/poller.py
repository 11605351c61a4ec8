"""The poller: which file descriptors are ready, waiting at most ``timeout`` seconds.

Owns: the choice of OS mechanism (epoll on Linux, kqueue on BSD/macOS, poll/select elsewhere,
all through the standard ``selectors`` module) and the registration table of descriptors.
Not here: what happens when a descriptor is ready (the scheduler turns events into handles),
the wake-up descriptor's protocol (core/wakeup.py).

The scheduler depends only on the ``Poller`` protocol below, so a direct ``select.epoll``
implementation can replace the selectors-based one if a benchmark ever shows it is worth it.
"""

from __future__ import annotations

import selectors
from typing import Any, Protocol

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Poller(Protocol):
    """What the scheduler needs from an I/O poller (``selectors.BaseSelector`` satisfies it)."""

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey: ...

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey: ...

    def unregister(self, fileobj: Any) -> selectors.SelectorKey: ...

    def get_key(self, fileobj: Any) -> selectors.SelectorKey: ...

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]: ...

    def get_map(self) -> Any: ...

    def close(self) -> None: ...


def default_poller() -> Poller:
    """The best poller this platform offers (epoll on Linux)."""
    return selectors.DefaultSelector()
