"""Unix signal handlers run as loop callbacks: ``add_signal_handler``/``remove_signal_handler``.

Owns: the per-loop ``SignalDispatcher``: the table of handlers, a socket pair that carries
signal numbers into the poller, the process-wide ``signal.set_wakeup_fd`` while handlers are
installed, and putting back what was there before.
Not here: Ctrl-C under ``tidal.run`` (``asyncio.Runner`` installs its own SIGINT handler, see
below), the loop's cross-thread wake-up (core/wakeup.py), child processes (subprocess.py).

How a signal becomes a callback:
1. ``add_signal_handler`` installs a Python-level handler that does nothing and points
   ``signal.set_wakeup_fd`` at the write end of a socket pair this loop owns.
2. When the signal arrives, CPython's C-level handler writes the signal number, one byte, to
   that socket. That happens even while the main thread sleeps in ``epoll_wait``, and even if
   the signal lands between the loop's last look at its queues and the system call: the
   byte is in the socket, so the poll returns at once. (A flag set by a Python-level handler
   cannot close that window; the Python handler only runs once the poll returns.)
3. The read end is registered with ``add_reader``; its callback drains the socket and
   schedules the registered callback of each signal number it finds with ``call_soon``.

Why a socket pair of its own, not the loop's wake-up descriptor: ``set_wakeup_fd`` writes one
byte per signal, and tidal's wake-up descriptor is an eventfd, which accepts only 8-byte writes
(a 1-byte write fails with EINVAL and CPython would print "Exception ignored ... signal wakeup
fd" on every signal). The bytes also carry the signal numbers the loop needs, which an eventfd
counter would add up and lose. A pipe would do as well as a socket pair on Unix.
What it costs: nothing until the first ``add_signal_handler``; the socket pair is then kept
until the loop closes, and it is registered in the poller only while a handler is installed,
so a loop without signal handlers never polls it.

Process-wide state, and how it is put back:
- There is one wake-up fd per process. The one installed before ours is saved and restored
  when the last handler is removed or the loop closes, unless someone replaced ours in the
  meantime, in which case theirs is left in place. (asyncio sets -1 instead.)
- On removal, a signal gets back the disposition it had before this loop's first handler for
  it (asyncio installs SIG_DFL, or ``default_int_handler`` for SIGINT, which for example turns
  Python's SIG_IGN for SIGPIPE into "kill the process", and under ``asyncio.Runner`` removes
  its graceful Ctrl-C handling).

Ctrl-C under ``tidal.run``/``asyncio.run``: the Runner's own SIGINT handler cancels the main
task and calls ``call_soon_threadsafe``. While tidal sleeps in ``epoll_wait`` the signal
interrupts the call (EINTR); CPython runs the handler before retrying the poll; the handler's
``call_soon_threadsafe`` sees the loop asleep and writes the eventfd, so the retried poll
returns at once and the cancelled main task runs. That path has the window described in (2)
when SIGINT lands just before the poll starts, exactly as on asyncio's loop; a program that
adds its own SIGINT handler with ``add_signal_handler`` gets the race-free path above.

Invariants:
- ``_handlers`` is non-empty exactly when ``_wakeup_installed`` and ``_reader_registered``.
- ``_saved_dispositions`` has an entry for exactly the signals in ``_handlers``.
- All of it lives on the main thread: ``signal.signal`` and ``set_wakeup_fd`` refuse others.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from .core.handles import Handle

if TYPE_CHECKING:
    from .loop import EventLoop

# asyncio's logger, so that existing logging configuration covers tidal's reports too.
logger: Final = logging.getLogger("asyncio")

# Bytes read from the signal socket per recv(); one byte per signal delivered.
_READ_SIZE: Final = 4096

# Socket pairs whose write end may still be the process's wake-up fd because restoring it
# failed (a loop closed from a thread other than the main one). They are kept open so that the
# fd number is never reused by something that would then receive signal bytes.
_stranded_sockets: list[socket.socket] = []


def _noop_handler(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the work happens through the wake-up fd (see module doc)."""


def check_signal(sig: object) -> None:
    """Validate a signal number as asyncio does.

    Raises:
        TypeError: ``sig`` is not an int.
        ValueError: ``sig`` is not a valid signal number on this platform.
    """
    if not isinstance(sig, int):
        raise TypeError(f"sig must be an int, not {sig!r}")
    if sig not in signal.valid_signals():
        raise ValueError(f"invalid signal number {sig}; see signal.valid_signals()")


class SignalDispatcher:
    """One loop's signal handlers and the socket pair that wakes the loop for them."""

    __slots__ = (
        "_handlers",
        "_loop",
        "_reader_registered",
        "_rsock",
        "_saved_dispositions",
        "_saved_wakeup_fd",
        "_wakeup_installed",
        "_wsock",
    )

    def __init__(self, loop: EventLoop) -> None:
        self._loop = loop
        self._handlers: dict[int, Handle] = {}  # signal -> callback to schedule
        self._saved_dispositions: dict[int, Any] = {}  # signal -> handler before ours
        self._rsock: socket.socket | None = None  # created by the first add()
        self._wsock: socket.socket | None = None
        self._saved_wakeup_fd = -1  # the wake-up fd before ours, while ours is installed
        self._wakeup_installed = False
        self._reader_registered = False

    def add(self, sig: int, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        """See ``EventLoop.add_signal_handler``."""
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError(
                "coroutines cannot be used with add_signal_handler(); pass a plain function "
                "that creates a task, e.g. lambda: loop.create_task(coro())"
            )
        check_signal(sig)
        self._loop._check_closed()
        if not callable(callback):
            raise TypeError(
                f"a callable object was expected by add_signal_handler(), got {callback!r}"
            )
        self._install_wakeup()
        handle = Handle(callback, args, self._loop, contextvars.copy_context())
        try:
            previous = signal.signal(sig, _noop_handler)
            signal.siginterrupt(sig, False)  # SA_RESTART: fewer EINTRs elsewhere
        except OSError as exc:
            if not self._handlers:
                self._uninstall_wakeup()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(
                    f"sig {sig} cannot be caught (SIGKILL and SIGSTOP never reach a handler)"
                ) from None
            raise
        self._saved_dispositions.setdefault(sig, previous)
        self._handlers[sig] = handle
        self._register_reader()

    def remove(self, sig: int) -> bool:
        """See ``EventLoop.remove_signal_handler``."""
        check_signal(sig)
        if sig not in self._handlers:
            return False
        previous = self._saved_dispositions.get(sig)
        if previous is None:  # installed from C, so not restorable from Python
            previous = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, previous)  # ValueError outside the main thread, as asyncio
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught") from None
            raise
        del self._handlers[sig]
        del self._saved_dispositions[sig]
        if not self._handlers:
            self._unregister_reader()
            self._uninstall_wakeup()
        return True

    def close(self) -> None:
        """Loop-close hook: remove every handler, restore the wake-up fd, close the sockets."""
        if self._handlers:
            if sys.is_finalizing():
                warnings.warn(
                    f"Closing the loop {self._loop!r} on interpreter shutdown stage, "
                    "skipping signal handlers removal",
                    ResourceWarning,
                    stacklevel=2,
                    source=self._loop,
                )
                self._handlers.clear()
                self._saved_dispositions.clear()
            elif threading.current_thread() is not threading.main_thread():
                logger.warning(
                    "%r closed outside the main thread: its signal handlers stay installed; "
                    "close the loop from the main thread to remove them",
                    self._loop,
                )
                self._handlers.clear()
                self._saved_dispositions.clear()
            else:
                for sig in list(self._handlers):
                    self.remove(sig)
        self._unregister_reader()
        self._uninstall_wakeup()
        if self._rsock is not None and self._wsock is not None:
            if self._wakeup_installed:
                _stranded_sockets.extend((self._rsock, self._wsock))
            else:
                self._rsock.close()
                self._wsock.close()
            self._rsock = self._wsock = None

    # -- the wake-up socket pair ---------------------------------------------------------------

    def _install_wakeup(self) -> None:
        if self._wsock is None:
            self._rsock, self._wsock = socket.socketpair()
            self._rsock.setblocking(False)
            self._wsock.setblocking(False)
        try:
            # Also the main-thread check: set_wakeup_fd raises ValueError in other threads.
            previous = signal.set_wakeup_fd(self._wsock.fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(
                f"{exc}: add_signal_handler() works only on a loop running in the main thread"
            ) from None
        if not self._wakeup_installed:
            self._saved_wakeup_fd = previous
            self._wakeup_installed = True

    def _uninstall_wakeup(self) -> None:
        if not self._wakeup_installed or self._wsock is None:
            return
        ours = self._wsock.fileno()
        try:
            current = signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)
            return
        self._wakeup_installed = False
        restore = self._saved_wakeup_fd if current == ours else current
        if restore != -1:
            try:
                signal.set_wakeup_fd(restore)
            except (ValueError, OSError) as exc:  # the saved fd was closed meanwhile
                logger.info("could not restore the signal wake-up fd %d: %s", restore, exc)

    def _register_reader(self) -> None:
        if not self._reader_registered and self._rsock is not None:
            self._loop.add_reader(self._rsock.fileno(), self._read_signals)
            self._reader_registered = True

    def _unregister_reader(self) -> None:
        if self._reader_registered and self._rsock is not None:
            self._reader_registered = False
            self._loop.remove_reader(self._rsock.fileno())

    def _read_signals(self) -> None:
        """Reader callback: drain the signal numbers and schedule their handlers."""
        rsock = self._rsock
        while rsock is not None:
            try:
                data = rsock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            for signum in data:
                self._dispatch(signum)

    def _dispatch(self, sig: int) -> None:
        handle = self._handlers.get(sig)
        if handle is None:
            return  # a signal with a handler of someone else's (e.g. the Runner's SIGINT)
        if handle._cancelled:
            self.remove(sig)
            return
        self._loop.call_soon(handle._callback, *handle._args, context=handle._context)


def dispatcher_for(loop: EventLoop) -> SignalDispatcher:
    """The loop's SignalDispatcher, created on first use."""
    dispatcher = loop._signal_dispatcher
    if dispatcher is None:
        dispatcher = loop._signal_dispatcher = SignalDispatcher(loop)
    return dispatcher


def remove_signal_handler(loop: EventLoop, sig: int) -> bool:
    """See ``EventLoop.remove_signal_handler`` (validates ``sig`` even with no dispatcher)."""
    dispatcher = loop._signal_dispatcher
    if dispatcher is None:
        check_signal(sig)
        return False
    return dispatcher.remove(sig)


def close(loop: EventLoop) -> None:
    """Loop-close hook: remove the loop's handlers and restore the process-wide state."""
    dispatcher = loop._signal_dispatcher
    if dispatcher is not None:
        dispatcher.close()
