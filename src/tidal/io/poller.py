"""The poller: which file descriptors are ready, waiting at most ``timeout`` seconds.

Owns: the ``Poller`` protocol the scheduler depends on, and the choice of implementation:
``EpollPoller`` (io/epoll.py, ``select.epoll`` used directly) on Linux, the standard
``selectors`` module's best selector (kqueue, poll or select) elsewhere.
Not here: what happens when a descriptor is ready (the scheduler turns events into handles),
the wake-up descriptor's protocol (core/wakeup.py).

The protocol is the subset of ``selectors.BaseSelector`` the scheduler uses, so any selector
object satisfies it (test harnesses swap one in); keys only need ``SelectorKey``'s fields.
"""

from __future__ import annotations

import select
import selectors
from typing import Any, Protocol

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Key(Protocol):
    """What the scheduler reads from a registration (``selectors.SelectorKey`` has it)."""

    @property
    def fileobj(self) -> Any: ...

    @property
    def fd(self) -> int: ...

    @property
    def events(self) -> int: ...

    @property
    def data(self) -> Any: ...


class Poller(Protocol):
    """What the scheduler needs from an I/O poller (``selectors.BaseSelector`` satisfies it)."""

    def register(self, fileobj: Any, events: int, data: Any = None) -> Key: ...

    def modify(self, fileobj: Any, events: int, data: Any = None) -> Key: ...

    def unregister(self, fileobj: Any) -> Key: ...

    def get_key(self, fileobj: Any) -> Key: ...

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]: ...

    def get_map(self) -> Any: ...

    def close(self) -> None: ...


def default_poller() -> Poller:
    """The best poller this platform offers: ``EpollPoller`` on Linux, else a selector."""
    if hasattr(select, "epoll"):
        from .epoll import EpollPoller

        return EpollPoller()
    return selectors.DefaultSelector()  # pragma: no cover - non-Linux
