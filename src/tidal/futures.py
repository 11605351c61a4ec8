"""tidal's Future: a result that will arrive later, awaited by tasks, set by callbacks.

Owns: the Future state machine and the behaviour shared with Task (``FutureMixin``).
Not here: stepping coroutines (tasks.py), running callbacks (core/scheduler.py).

State machine (the same strings asyncio uses, because libraries read ``_state``)::

    PENDING -> FINISHED   set_result() / set_exception()
    PENDING -> CANCELLED  cancel()

Why subclass ``asyncio.Future``: libraries (tornado, aiohttp helpers) test
``isinstance(x, asyncio.Future)``, and a loop is a drop-in only if those tests pass. Every method
is ours; the C base contributes nothing but the type identity (its fields stay unused, and our
``__slots__`` shadow its descriptors of the same names). Task cannot inherit from both this class
and ``asyncio.Task`` (their C layouts conflict), so the behaviour lives in ``FutureMixin``, a class
with no instance layout that both ``Future`` and ``tasks.Task`` put first in their bases.

Invariants:
- ``_callbacks`` is a list of ``(callback, context)`` pairs, as asyncio keeps it (anyio reads it);
  it is emptied when the future completes.
- ``_log_traceback`` is True only while an exception is set and nobody has looked at it.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import reprlib
import sys
from asyncio import format_helpers
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .core.handles import Handle
from .core.scheduler import Scheduler

if TYPE_CHECKING:
    from types import TracebackType

PENDING: Final = "PENDING"
CANCELLED: Final = "CANCELLED"
FINISHED: Final = "FINISHED"

CancelledError = asyncio.CancelledError
InvalidStateError = asyncio.InvalidStateError
_copy_context = contextvars.copy_context

_T = TypeVar("_T")  # the result type of a Future or Task, for type checkers only

# Python 3.13 stores a StopIteration given to set_exception() as a RuntimeError caused by it;
# earlier versions raise TypeError. Match the running Python.
_STOP_ITERATION_BECOMES_RUNTIME_ERROR: Final = sys.version_info >= (3, 13)

# The instance fields every future-like object of tidal carries (Task adds its own).
FUTURE_SLOTS: Final = (
    "_loop",  # the loop whose call_soon runs our done callbacks
    "_state",  # PENDING, CANCELLED or FINISHED
    "_result",  # the value given to set_result()
    "_exception",  # the exception given to set_exception(), or None
    "_exception_tb",  # its traceback at set time, re-attached when result() raises it
    "_callbacks",  # list of (callback, context) pairs run once when done
    "_cancel_message",  # the msg given to cancel(), carried by the CancelledError
    "_cancelled_exc",  # the CancelledError that cancelled us, chained into the next one
    "_log_traceback",  # True: report "exception was never retrieved" when collected
    "_source_traceback",  # where we were created (debug mode only), else None
    "_asyncio_future_blocking",  # True between "yield self" in __await__ and the task seeing it
    "_ready",  # the ready deque of a tidal loop (done callbacks go straight in), else None
)


class FutureMixin:
    """The Future behaviour shared by ``Future`` and ``tasks.Task`` (no layout of its own)."""

    if not TYPE_CHECKING:  # the concrete classes declare the slots; mypy checks them there
        __slots__ = ()

    # Declared for the type checker; the concrete classes provide the slots.
    _loop: Any
    _state: str
    _result: Any
    _exception: BaseException | None
    _exception_tb: TracebackType | None
    _callbacks: list[tuple[Callable[[Any], object], contextvars.Context]]
    _cancel_message: Any
    _cancelled_exc: BaseException | None
    _log_traceback: bool
    _source_traceback: Any
    _asyncio_future_blocking: bool
    _ready: collections.deque[Handle] | None

    def _init_future(self, loop: Any) -> None:
        """Set the Future fields (``Future.__init__``; Task inlines the same for speed)."""
        if loop is None:
            loop = asyncio.get_event_loop()
        self._loop = loop
        if isinstance(loop, Scheduler):
            self._ready = loop._ready
            debug = loop._debug
        else:
            self._ready = None
            debug = loop.get_debug()
        self._state = PENDING
        self._result = None
        self._exception = None
        self._callbacks = []
        self._cancel_message = None
        self._cancelled_exc = None
        self._log_traceback = False
        self._asyncio_future_blocking = False
        self._source_traceback = format_helpers.extract_stack(sys._getframe(2)) if debug else None

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {' '.join(self._repr_info())}>"

    def _repr_info(self) -> list[str]:
        info = [self._state.lower()]
        if self._state == FINISHED:
            if self._exception is not None:
                info.append(f"exception={self._exception!r}")
            else:
                # reprlib shortens long values the way asyncio's repr does.
                info.append(f"result={reprlib.repr(self._result)}")
        if self._callbacks:
            info.append(f"cb=[{_format_callbacks(self._callbacks)}]")
        if self._source_traceback:
            frame = self._source_traceback[-1]
            info.append(f"created at {frame[0]}:{frame[1]}")
        return info

    def __del__(self) -> None:
        try:
            if not self._log_traceback:
                return
        except AttributeError:  # a subclass skipped __init__: there is nothing to report
            return
        context: dict[str, Any] = {
            "message": f"{self.__class__.__name__} exception was never retrieved",
            "exception": self._exception,
            "future": self,
        }
        if self._source_traceback:
            context["source_traceback"] = self._source_traceback
        self._loop.call_exception_handler(context)

    def get_loop(self) -> Any:
        """Return the event loop the Future is bound to.

        Raises:
            RuntimeError: ``__init__`` never ran (a subclass skipped ``super().__init__()``).
        """
        try:
            return self._loop
        except AttributeError:
            raise RuntimeError(
                "Future object is not initialized; a subclass's __init__ must call "
                "super().__init__()"
            ) from None

    def _make_cancelled_error(self) -> CancelledError:
        """Build the CancelledError to raise; call once per cancellation (it consumes state)."""
        saved = self._cancelled_exc
        if saved is not None:
            self._cancelled_exc = None
            return saved  # type: ignore[return-value]  # only CancelledErrors are saved
        if self._cancel_message is None:
            return CancelledError()
        return CancelledError(self._cancel_message)

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the future and schedule its callbacks; False if it was already done."""
        self._log_traceback = False
        if self._state is not PENDING:
            return False
        self._state = CANCELLED
        self._cancel_message = msg
        self._schedule_callbacks()
        return True

    def _schedule_callbacks(self) -> None:
        callbacks = self._callbacks
        if not callbacks:
            return
        self._callbacks = []
        ready = self._ready
        if ready is None:
            call_soon = self._loop.call_soon
            for callback, context in callbacks:
                call_soon(callback, self, context=context)
            return
        # Fast path on a tidal loop: what call_soon would do, minus its argument checks (the
        # callbacks were checked when added) and the method call.
        loop = self._loop
        if loop._closed:
            loop._raise_closed()
        args = (self,)
        for callback, context in callbacks:
            ready.append(Handle(callback, args, loop, context))

    def cancelled(self) -> bool:
        """Return True if the future was cancelled."""
        return self._state is CANCELLED

    def done(self) -> bool:
        """Return True if the future has a result, an exception, or was cancelled."""
        return self._state is not PENDING

    def result(self) -> Any:
        """Return the result, raise the exception set, or raise CancelledError.

        Raises:
            InvalidStateError: the future is not done yet.
        """
        state = self._state
        if state is FINISHED:
            self._log_traceback = False
            exc = self._exception
            if exc is not None:
                # This frame joins the exception's traceback: let it hold neither the exception
                # nor the future, or each raise leaves a cycle for the collector (asyncio's C
                # Future adds no frame at all).
                tb = self._exception_tb
                del self
                try:
                    raise exc.with_traceback(tb)
                finally:
                    del exc, tb
            return self._result
        if state is CANCELLED:
            raise self._make_cancelled_error()
        raise InvalidStateError("Result is not ready.")

    def exception(self) -> BaseException | None:
        """Return the exception set on the future (None if it has a result).

        Raises:
            CancelledError: the future was cancelled.
            InvalidStateError: the future is not done yet.
        """
        state = self._state
        if state is FINISHED:
            self._log_traceback = False
            return self._exception
        if state is CANCELLED:
            raise self._make_cancelled_error()
        raise InvalidStateError("Exception is not set.")

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: contextvars.Context | None = None
    ) -> None:
        """Call ``fn(future)`` through the loop once the future is done (at once if it is)."""
        if self._state is not PENDING:
            self._loop.call_soon(fn, self, context=context)
        else:
            self._callbacks.append((fn, _copy_context() if context is None else context))

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        """Remove every registration of ``fn``; return how many were removed."""
        kept = [(f, ctx) for (f, ctx) in self._callbacks if f != fn]
        removed = len(self._callbacks) - len(kept)
        if removed:
            self._callbacks[:] = kept
        return removed

    def set_result(self, result: Any) -> None:
        """Mark the future done with ``result``.

        Raises:
            InvalidStateError: the future is already done.
        """
        if self._state is not PENDING:
            raise InvalidStateError(f"{self._state}: {self!r}")
        self._result = result
        self._state = FINISHED
        self._schedule_callbacks()

    def set_exception(self, exception: type[BaseException] | BaseException) -> None:
        """Mark the future done with ``exception`` (a class is instantiated).

        Raises:
            InvalidStateError: the future is already done.
            TypeError: ``exception`` is a StopIteration, which cannot travel through a coroutine
                (before Python 3.13; 3.13+ stores a RuntimeError caused by it instead).
        """
        if self._state is not PENDING:
            raise InvalidStateError(f"{self._state}: {self!r}")
        if isinstance(exception, type):
            exception = exception()
        if not isinstance(exception, BaseException):
            raise TypeError(
                f"set_exception() expects an exception instance or class, not "
                f"{type(exception).__name__}"
            )
        if _STOP_ITERATION_BECOMES_RUNTIME_ERROR:
            if isinstance(exception, StopIteration):
                # 3.13+: store a RuntimeError caused by it instead of refusing (asyncio does).
                replacement = RuntimeError(
                    "StopIteration interacts badly with generators and cannot be raised into a "
                    "Future"
                )
                replacement.__cause__ = replacement.__context__ = exception
                exception = replacement
        elif type(exception) is StopIteration:
            raise TypeError(
                "StopIteration interacts badly with generators and cannot be raised into a Future"
            )
        self._exception = exception
        self._exception_tb = exception.__traceback__
        self._state = FINISHED
        self._schedule_callbacks()
        self._log_traceback = True

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            if self._state is PENDING:
                self._asyncio_future_blocking = True
                yield self  # the driving task parks itself on us until we are done
                if self._state is PENDING:
                    raise RuntimeError("await wasn't used with future")
            return self.result()
        finally:
            # An exception raised here (or thrown in at the yield) keeps this frame in its
            # traceback: don't let the frame keep the future, which holds the exception.
            del self

    __iter__ = __await__  # for "yield from" in generator-based code


class Future(FutureMixin, asyncio.Future[_T]):
    """A result that will be available later; asyncio's Future API and semantics.

    Generic in its result type, like ``asyncio.Future``: ``tidal.Future[int]`` works for type
    checkers and at run time (``__class_getitem__`` comes from the asyncio base).

    Args:
        loop: the loop that runs the done callbacks; defaults to ``asyncio.get_event_loop()``.
    """

    __slots__ = FUTURE_SLOTS

    def __init__(self, *, loop: Any = None) -> None:
        self._init_future(loop)

    if TYPE_CHECKING:  # FutureMixin's untyped methods, seen through the result type

        def result(self) -> _T: ...
        def set_result(self, result: _T) -> None: ...
        def __await__(self) -> Generator[Any, None, _T]: ...


def _format_callbacks(callbacks: list[tuple[Callable[[Any], object], Any]]) -> str:
    names = [format_helpers._format_callback_source(cb, ()) for cb, _ in callbacks]
    if len(names) > 2:
        return f"{names[0]}, <{len(names) - 2} more>, {names[-1]}"
    return ", ".join(names)
