"""The scheduler: the ready queue, the timer heap, the poller, and the turn that drives them.

Owns: ``Scheduler``, the part of the event loop that decides what runs next: ``call_soon``,
``call_at``/``call_later``, ``call_soon_threadsafe``, reader/writer registration, ``_run_once``,
``run_forever``/``stop``/``close``, debug mode and the exception-handler API.
Not here: futures and tasks (futures.py, tasks.py), the public façade and everything built on
the scheduler (loop.py), the wake-up descriptor's protocol (core/wakeup.py).

Invariants:
- ``_ready`` holds Handles in FIFO order; only the loop thread pops, any thread may append.
- ``_timers`` is a heap of ``(when, seq, TimerHandle)``; ``seq`` keeps equal deadlines FIFO and
  keeps comparisons in C (asyncio compares TimerHandles with a Python ``__lt__``).
- ``_timer_cancelled_count`` counts cancelled handles still in the heap.
- The wake-up descriptor is registered in the poller with ``data=None``; every other
  registration carries ``(reader_handle, writer_handle)`` as asyncio's selector loop does.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import itertools
import logging
import numbers
import os
import sys
import threading
import time
import traceback
import warnings
from asyncio import base_events, coroutines, format_helpers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVarTuple, Unpack

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

from ..io.poller import EVENT_READ, EVENT_WRITE, Poller, default_poller
from .errors import FATAL_EXCEPTIONS
from .handles import Handle, TimerHandle
from .wakeup import Wakeup

# asyncio's logger, so that existing logging configuration covers tidal's reports too.
logger: Final = logging.getLogger("asyncio")


def _report_logger() -> logging.Logger:
    """The logger for error reports and slow-callback warnings, looked up at report time.

    It is the same "asyncio" logger, but read from ``asyncio.base_events.logger`` on each report
    because code that captures the loop's reports patches that module attribute (CPython's own
    test-suite does, with ``mock.patch('asyncio.base_events.logger')``). Reports are rare, so
    the lookup costs nothing that matters.
    """
    return base_events.logger  # type: ignore[attr-defined,no-any-return]


# Seconds; the poller never sleeps longer than this in one call (asyncio uses one day too).
MAXIMUM_POLL_TIMEOUT: Final = 24 * 3600.0

# Compact the timer heap once at least this many entries are cancelled...
MIN_CANCELLED_TIMERS_TO_COMPACT: Final = 100
# ...and they are at least this fraction of the heap (asyncio uses the same two numbers).
CANCELLED_TIMERS_FRACTION_TO_COMPACT: Final = 0.5

# Depth of coroutine-origin tracking in debug mode (asyncio.constants.DEBUG_STACK_DEPTH).
DEBUG_STACK_DEPTH: Final = 10

_Ts = TypeVarTuple("_Ts")
_copy_context = contextvars.copy_context
_new_object = object.__new__
_Real = numbers.Real
_warn = warnings.warn
_is_finalizing = sys.is_finalizing
_heappush = heapq.heappush
_heappop = heapq.heappop


def _debug_mode_from_environment() -> bool:
    """Debug mode defaults on under ``python -X dev`` or with PYTHONASYNCIODEBUG set.

    asyncio answers this in ``asyncio.coroutines._is_debug_mode()``; asking it (rather than
    repeating its test) keeps one answer for both loops, including where a program or a test
    patches that function (CPython's test_runners does). The fallback is the same test.
    """
    is_debug_mode = getattr(coroutines, "_is_debug_mode", None)
    if is_debug_mode is not None:
        return bool(is_debug_mode())
    return sys.flags.dev_mode or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    )


class Scheduler:
    """The turning part of the loop; ``tidal.EventLoop`` builds the asyncio API on it.

    In the compiled build this class is an extension type whose fields are C struct members
    (scheduler.pxd declares them): a field added in ``__init__`` must be declared there too.
    """

    def __init__(self, poller: Poller | None = None) -> None:
        self.slow_callback_duration = 0.1  # seconds; debug mode logs callbacks slower than this
        self._ready: collections.deque[Handle] = collections.deque()  # runnable handles
        self._timers: list[tuple[float, int, TimerHandle]] = []  # heap, see module invariants
        self._timer_seq = itertools.count().__next__  # tie-breaker for equal deadlines
        self._timer_cancelled_count = 0  # cancelled handles still in _timers
        self._stopping = False  # set by stop(): leave run_forever after this turn
        self._closed = False
        self._thread_id: int | None = None  # the thread inside run_forever, else None
        self._debug = _debug_mode_from_environment()
        self._clock_resolution = time.get_clock_info("monotonic").resolution
        self._exception_handler: Callable[[Any, dict[str, Any]], object] | None = None
        self._current_handle: Handle | None = None  # the handle running (debug mode only)
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth: int | None = None
        self._poller: Poller = default_poller() if poller is None else poller
        self._wakeup = Wakeup()
        self._poller.register(self._wakeup.fileno(), EVENT_READ, None)
        self._io_registrations = 0  # descriptors in the poller besides the wake-up one
        # Observability (tidal.observe.hooks): the hook registry once someone asked for one, and
        # whether phases 2 and 4 must go through it. Core never imports observe, hence Any.
        self._hooks: Any = None
        self._instrumented = False  # Invariant: True only while a turn-level hook has observers

    # -- time ------------------------------------------------------------------------------

    def time(self) -> float:
        """Return the loop's clock: ``time.monotonic()``, in seconds."""
        return time.monotonic()

    # -- scheduling callbacks ----------------------------------------------------------------

    def call_soon(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> Handle:
        """Run ``callback(*args)`` on the next loop turn, in FIFO order.

        Raises:
            RuntimeError: the loop is closed.
            TypeError: ``callback`` is not callable (asyncio checks this only in debug mode).
        """
        if self._closed or self._debug or not callable(callback):
            return self._call_soon_checked(callback, args, context)
        # The hot path: every step of a C Task and every done callback of a C Future comes
        # through here. The Handle is filled in place rather than through Handle.__init__:
        # one Python frame fewer per callback (~120 ns of ~420 ns on 3.11 and 3.13).
        handle = _new_object(Handle)
        handle._callback = callback
        handle._args = args
        handle._loop = self
        handle._context = _copy_context() if context is None else context
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        self._ready.append(handle)
        return handle

    def _call_soon_checked(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> Handle:
        """``call_soon`` when the loop is closed, in debug mode, or given a non-callable."""
        if self._closed:
            self._raise_closed()
        if self._debug:
            self._check_thread()
        self._check_callback(callback, "call_soon")  # TypeError: coroutines, non-callables
        handle = Handle(callback, args, self, _copy_context() if context is None else context)
        self._ready.append(handle)
        return handle

    def call_later(
        self,
        delay: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> TimerHandle:
        """Run ``callback(*args)`` once ``delay`` seconds have passed."""
        if delay is None:
            raise TypeError("delay must not be None; pass a number of seconds")
        return self._call_at(self.time() + delay, callback, args, context, "call_later")

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> TimerHandle:
        """Run ``callback(*args)`` at loop time ``when`` (see ``time()``)."""
        if when is None:
            raise TypeError("when cannot be None; pass an absolute loop time (loop.time() + s)")
        return self._call_at(when, callback, args, context, "call_at")

    def _call_at(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
        method: str,
    ) -> TimerHandle:
        if self._closed:
            self._raise_closed()
        if type(when) is not float and not isinstance(when, _Real):
            # Checked before the heap push: a deadline that cannot be compared would raise
            # from inside heappush and leave its entry in the heap, breaking every later turn.
            raise TypeError(
                f"{method}() needs a number of seconds (loop time for call_at), got {when!r}"
            )
        if context is None:
            context = _copy_context()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, method)
            timer = TimerHandle(when, callback, args, self, context)
        else:
            if not callable(callback):
                self._check_callback(callback, method)
            timer = TimerHandle(when, callback, args, self, context)
        _heappush(self._timers, (when, self._timer_seq(), timer))
        timer._scheduled = True
        return timer

    def call_soon_threadsafe(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> Handle:
        """Like ``call_soon``, from any thread: wakes the loop if it is waiting for I/O."""
        if self._closed:
            self._raise_closed()
        if self._debug or not callable(callback):
            self._check_callback(callback, "call_soon_threadsafe")
        handle = Handle(callback, args, self, _copy_context() if context is None else context)
        self._ready.append(handle)  # deque.append is atomic: safe without a lock
        self._wakeup.notify()
        return handle

    def _write_to_self(self) -> None:
        """Wake the loop from another thread even if it is not sleeping yet (asyncio's name)."""
        self._wakeup.force()

    # -- readers and writers -----------------------------------------------------------------

    def add_reader(
        self, fd: FileDescriptorLike, callback: Callable[[Unpack[_Ts]], Any], *args: *_Ts
    ) -> None:
        """Run ``callback(*args)`` whenever ``fd`` is readable."""
        self._add_watcher(fd, EVENT_READ, callback, args)

    def add_writer(
        self, fd: FileDescriptorLike, callback: Callable[[Unpack[_Ts]], Any], *args: *_Ts
    ) -> None:
        """Run ``callback(*args)`` whenever ``fd`` is writable."""
        self._add_watcher(fd, EVENT_WRITE, callback, args)

    def remove_reader(self, fd: FileDescriptorLike) -> bool:
        """Stop watching ``fd`` for reading; return True if it was watched."""
        return self._remove_watcher(fd, EVENT_READ)

    def remove_writer(self, fd: FileDescriptorLike) -> bool:
        """Stop watching ``fd`` for writing; return True if it was watched."""
        return self._remove_watcher(fd, EVENT_WRITE)

    def _add_watcher(
        self, fd: Any, event: int, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        if self._closed:
            self._raise_closed()
        self._check_callback(callback, "add_reader" if event == EVENT_READ else "add_writer")
        handle = Handle(callback, args, self, _copy_context())
        try:
            key = self._poller.get_key(fd)
        except KeyError:
            data = (handle, None) if event == EVENT_READ else (None, handle)
            self._poller.register(fd, event, data)
            self._io_registrations += 1
            return
        reader, writer = key.data
        if event == EVENT_READ:
            previous, data = reader, (handle, writer)
        else:
            previous, data = writer, (reader, handle)
        self._poller.modify(fd, key.events | event, data)
        if previous is not None:
            previous.cancel()

    def _remove_watcher(self, fd: Any, event: int) -> bool:
        if self._closed:
            return False
        try:
            key = self._poller.get_key(fd)
        except KeyError:
            return False
        reader, writer = key.data
        mask = key.events & ~event
        if event == EVENT_READ:
            previous, data = reader, (None, writer)
        else:
            previous, data = writer, (reader, None)
        if not mask:
            self._poller.unregister(fd)
            self._io_registrations -= 1
        else:
            self._poller.modify(fd, mask, data)
        if previous is None:
            return False
        previous.cancel()
        return True

    # -- one turn of the loop ----------------------------------------------------------------

    def _run_once(self) -> None:
        """Run exactly one turn of the loop (tests and tools drive the loop this way)."""
        self._run_turns(once=True)

    def _run_turns(self, once: bool) -> None:
        """Turn the loop until ``stop()`` (or once). Each turn has four phases.

        Phase 1 tidies the timer heap, phase 2 polls for I/O (only when that can find
        something), phase 3 moves due timers to the ready queue, phase 4 runs the batch of
        handles that was ready when it started. The turns are a loop here, not a method called
        per turn, because a turn with one callback in it is the common case.
        """
        ready = self._ready
        timers = self._timers
        wakeup = self._wakeup
        popleft = ready.popleft
        polled = False  # did the previous turn poll? (see phase 2)
        while True:
            # Phase 1: drop cancelled timers, lazily; compact the heap when they pile up.
            cancelled = self._timer_cancelled_count
            if cancelled:
                if (
                    cancelled > MIN_CANCELLED_TIMERS_TO_COMPACT
                    and cancelled > len(timers) * CANCELLED_TIMERS_FRACTION_TO_COMPACT
                ):
                    self._compact_timers()
                else:
                    while timers and timers[0][2]._cancelled:
                        _heappop(timers)[2]._scheduled = False
                        self._timer_cancelled_count -= 1

            # Phase 2: poll. With work ready and no descriptor but the wake-up one, the poller
            # could tell us nothing (threads append to _ready directly): skip the syscall.
            # With work ready and descriptors registered, poll (timeout 0) only if the previous
            # turn did not: a turn that just polled and found a descriptor ready usually
            # leaves only that callback's follow-ups (a task wake-up) for this turn, so a second
            # poll right away finds nothing. Busy loops still poll every other turn, so I/O
            # waits at most one extra turn.
            if ready or self._stopping:
                if self._io_registrations and not polled:
                    self._process_events(self._poller.select(0))
                    polled = True
                else:
                    polled = False
            else:
                polled = True
                timeout: float | None = None
                if timers:
                    timeout = min(max(0.0, timers[0][0] - self.time()), MAXIMUM_POLL_TIMEOUT)
                wakeup.sleeping = True  # from here on, other threads write the wake-up fd
                if ready:  # a thread appended between our check and the flag: don't sleep
                    timeout = 0
                try:
                    if self._instrumented:
                        events = self._hooks.observed_select(timeout)
                    else:
                        events = self._poller.select(timeout)
                finally:
                    wakeup.sleeping = False
                if events:
                    self._process_events(events)

            # Phase 3: due timers join the ready queue, in deadline order.
            if timers:
                end_time = self.time() + self._clock_resolution
                while timers and timers[0][0] < end_time:
                    timer = _heappop(timers)[2]
                    timer._scheduled = False
                    if timer._cancelled:
                        self._timer_cancelled_count -= 1
                    else:
                        ready.append(timer)

            # Phase 4: run only the batch that was ready when this phase started; whatever it
            # schedules runs next turn, so I/O and timers are never starved (asyncio's rule).
            if self._instrumented:
                self._hooks.run_ready(len(ready))  # timing and hooks, off the fast path
            elif self._debug:
                self._run_ready_debug(len(ready))
            else:
                for _ in range(len(ready)):
                    handle = popleft()
                    if handle._cancelled:
                        continue
                    try:
                        handle._context.run(handle._callback, *handle._args)
                    except FATAL_EXCEPTIONS:
                        raise
                    except BaseException as exc:
                        self._report_handle_error(handle, exc)
            if once or self._stopping:
                # A traceback that passed through a callback keeps this frame (as f_back) after
                # we return; it must not keep the last handle, and what it holds, with it.
                handle = None  # type: ignore[assignment]
                return

    def _process_events(self, events: list[tuple[Any, int]]) -> None:
        ready_append = self._ready.append
        for key, mask in events:
            data = key.data
            if data is None:
                self._wakeup.drain()
                continue
            reader, writer = data
            if mask & EVENT_READ and reader is not None:
                if reader._cancelled:
                    self._remove_watcher(key.fileobj, EVENT_READ)
                else:
                    ready_append(reader)
            if mask & EVENT_WRITE and writer is not None:
                if writer._cancelled:
                    self._remove_watcher(key.fileobj, EVENT_WRITE)
                else:
                    ready_append(writer)

    def _compact_timers(self) -> None:
        kept = []
        for entry in self._timers:
            if entry[2]._cancelled:
                entry[2]._scheduled = False
            else:
                kept.append(entry)
        heapq.heapify(kept)
        self._timers[:] = kept
        self._timer_cancelled_count = 0

    def _run_ready_debug(self, count: int) -> None:
        """Phase 4 in debug mode: time every callback and log the slow ones."""
        popleft = self._ready.popleft
        for _ in range(count):
            handle = popleft()
            if handle._cancelled:
                continue
            self._current_handle = handle
            started = self.time()
            try:
                handle._context.run(handle._callback, *handle._args)
            except FATAL_EXCEPTIONS:
                raise
            except BaseException as exc:
                self._report_handle_error(handle, exc)
            finally:
                self._current_handle = None
            took = self.time() - started
            if took >= self.slow_callback_duration:
                _report_logger().warning(
                    "Executing %s took %.3f seconds", _format_handle(handle), took
                )
        handle = None  # type: ignore[assignment]  # as in _run_turns: tracebacks keep frames

    def _report_handle_error(self, handle: Handle, exc: BaseException) -> None:
        source = format_helpers._format_callback_source(handle._callback, handle._args)
        context: dict[str, Any] = {
            "message": f"Exception in callback {source}",
            "exception": exc,
            "handle": handle,
        }
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    # -- running and stopping ----------------------------------------------------------------

    def run_forever(self) -> None:
        """Run turns until ``stop()`` is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        self._install_asyncgen_hooks()
        asyncio.events._set_running_loop(self)  # type: ignore[arg-type]
        try:
            self._run_turns(once=False)
        finally:
            self._stopping = False
            self._thread_id = None
            asyncio.events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_hooks)

    def _install_asyncgen_hooks(self) -> None:
        """Overridden by the loop, which tracks async generators."""

    def stop(self) -> None:
        """Leave ``run_forever`` once the current turn's batch has run."""
        self._stopping = True

    def is_running(self) -> bool:
        return self._thread_id is not None

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the loop: drop pending callbacks and release the poller.

        Raises:
            RuntimeError: the loop is running (stop it first).
        """
        if self.is_running():
            raise RuntimeError(
                "Cannot close a running event loop; call loop.stop() and let run_forever() return"
            )
        if self._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        if self._hooks is not None:
            self._hooks.emit_loop_closing()  # observability (observe/hooks.py)
        self._closed = True
        self._ready.clear()
        self._timers.clear()
        self._timer_cancelled_count = 0
        self._poller.close()
        self._wakeup.close()

    def __del__(self) -> None:
        # self only, no default arguments: the compiled build makes Scheduler an extension type
        # (scheduler.pxd), whose finalizer takes none. The module globals it needs may be None
        # this late in interpreter shutdown.
        warn, finalizing = _warn, _is_finalizing
        # "is not False": a loop whose __init__ never finished has no _closed (Python) or a
        # None one (extension type); either way there is nothing to close.
        if warn is None or finalizing is None or getattr(self, "_closed", True) is not False:
            return
        warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
        if finalizing():
            # Interpreter shutdown (a loop never closed, kept by the policy until now): the
            # modules close() needs may already be torn down (their globals are None) and no
            # thread can start to reap a child. The process is ending: the OS closes our
            # descriptors and init adopts our children.
            return
        if not self.is_running():
            self.close()

    def __repr__(self) -> str:
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self._closed} debug={self._debug}>"
        )

    # -- checks --------------------------------------------------------------------------------

    def _raise_closed(self) -> None:
        raise RuntimeError("Event loop is closed")

    def _check_closed(self) -> None:
        if self._closed:
            raise RuntimeError("Event loop is closed")

    def _check_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if asyncio.events._get_running_loop() is not None:
            raise RuntimeError(
                "Cannot run the event loop while another loop is running in this thread"
            )

    def _check_thread(self) -> None:
        if self._thread_id is not None and threading.get_ident() != self._thread_id:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current "
                "one; use loop.call_soon_threadsafe() or asyncio.run_coroutine_threadsafe()"
            )

    def _check_callback(self, callback: object, method: str) -> None:
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError(
                f"coroutines cannot be used with {method}(); wrap it in a task with "
                f"loop.create_task()"
            )
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

    # -- debug mode ----------------------------------------------------------------------------

    def get_debug(self) -> bool:
        return self._debug

    def set_debug(self, enabled: bool) -> None:
        self._debug = enabled
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled: bool) -> None:
        if bool(enabled) == self._coroutine_origin_tracking_enabled:
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(DEBUG_STACK_DEPTH)
        else:
            saved = self._coroutine_origin_tracking_saved_depth
            sys.set_coroutine_origin_tracking_depth(saved or 0)
        self._coroutine_origin_tracking_enabled = bool(enabled)

    # -- errors ----------------------------------------------------------------------------------

    def get_exception_handler(self) -> Callable[[Any, dict[str, Any]], object] | None:
        return self._exception_handler

    def set_exception_handler(
        self, handler: Callable[[Any, dict[str, Any]], object] | None
    ) -> None:
        """Route loop errors to ``handler(loop, context)``; None restores the default."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Log ``context`` on the 'asyncio' logger, as asyncio's default handler does."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info: Any = (
            (type(exception), exception, exception.__traceback__)
            if exception is not None
            else False
        )
        current = self._current_handle
        if "source_traceback" not in context and current is not None and current._source_traceback:
            context["handle_traceback"] = current._source_traceback
        lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key == "source_traceback":
                text = "".join(traceback.format_list(value)).rstrip()
                value = "Object created at (most recent call last):\n" + text
            elif key == "handle_traceback":
                text = "".join(traceback.format_list(value)).rstrip()
                value = "Handle created at (most recent call last):\n" + text
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        _report_logger().error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """Report an error the loop cannot raise anywhere (see asyncio for the context keys)."""
        handler = self._exception_handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except FATAL_EXCEPTIONS:
                raise
            except BaseException:
                _report_logger().error("Exception in default exception handler", exc_info=True)
            return
        try:
            thing = context.get("task") or context.get("future") or context.get("handle")
            get_context = getattr(thing, "get_context", None)
            ctx = get_context() if get_context is not None else None
            if ctx is not None and hasattr(ctx, "run"):
                ctx.run(handler, self, context)
            else:
                handler(self, context)
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except FATAL_EXCEPTIONS:
                raise
            except BaseException:
                _report_logger().error(
                    "Exception in default exception handler while handling an unexpected "
                    "error in custom exception handler",
                    exc_info=True,
                )


def _format_handle(handle: Handle) -> str:
    owner = getattr(handle._callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return repr(owner)
    return str(handle)
