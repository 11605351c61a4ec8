"""The only cross-thread door into a loop: wake it when it sleeps in the poller.

Owns: one file descriptor that another thread (or a signal handler) makes readable, and the
flags that decide whether writing to it is needed at all.
Not here: the ready queue the other thread appends to (core/scheduler.py).

Why it is cheap: asyncio writes a byte to its self-pipe on every ``call_soon_threadsafe``. tidal
writes only when the loop is, or is about to be, blocked in the poller. The protocol, with the
GIL making each step atomic:

    loop thread                              other thread
    1. sleeping = True                       a. append handle to the ready deque
    2. look at the ready deque               b. if sleeping and not pending:
    3. poll(timeout 0 if it had work)               pending = True; write the fd
    4. sleeping = False; drain if readable

If (b) sees ``sleeping`` False, step 1 has not happened yet, so step 2 will see the handle that
(a) appended: nothing is lost. If it sees True, the write wakes the poll, or makes the next
poll return at once: at worst one spurious wake-up, never a missed one.

Linux gets an eventfd (one descriptor, an 8-byte counter); elsewhere a socket pair.
"""

from __future__ import annotations

import os
import socket
from typing import Final

_EVENTFD_INCREMENT: Final = (1).to_bytes(8, "little")  # eventfd write of 1; native order is
# irrelevant because only non-zero matters.


class Wakeup:
    """A self-notifying descriptor: ``fileno()`` goes readable after ``notify()``."""

    __slots__ = ("_closer", "_read_fd", "_write_fd", "pending", "sleeping")

    def __init__(self) -> None:
        # True while the loop thread is inside (or about to enter) the poller.
        self.sleeping = False
        # True after a notify() that the loop has not drained yet; limits writes to one per sleep.
        self.pending = False
        eventfd = getattr(os, "eventfd", None)
        self._read_fd: int
        self._write_fd: int
        if eventfd is not None:
            fd: int = eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._read_fd = self._write_fd = fd
            self._closer: tuple[object, ...] = ()
        else:  # pragma: no cover - non-Linux
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._read_fd, self._write_fd = rsock.fileno(), wsock.fileno()
            self._closer = (rsock, wsock)

    def fileno(self) -> int:
        return self._read_fd

    def notify(self) -> None:
        """Wake the loop if it sleeps. Safe from any thread and from signal handlers."""
        if self.sleeping and not self.pending:
            self.pending = True
            try:
                os.write(self._write_fd, _EVENTFD_INCREMENT)
            except OSError:
                # Full (the loop is already awake with a backlog) or closed during shutdown:
                # either way there is nobody left to wake.
                pass

    def force(self) -> None:
        """Make the descriptor readable even if the loop is not sleeping yet."""
        self.pending = True
        try:
            os.write(self._write_fd, _EVENTFD_INCREMENT)
        except OSError:
            pass

    def drain(self) -> None:
        """Consume every pending notification (loop thread only)."""
        self.pending = False
        try:
            while os.read(self._read_fd, 4096):
                if self._read_fd == self._write_fd:
                    break  # an eventfd read resets the counter in one go
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        if self._closer:
            for sock in self._closer:
                sock.close()  # type: ignore[attr-defined]
        elif self._read_fd >= 0:
            os.close(self._read_fd)
        self._read_fd = self._write_fd = -1
