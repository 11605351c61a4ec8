"""tidal's Task: drives one coroutine, step by step, on a loop.

Owns: Task (the only place tidal resumes a coroutine), eager start, and the eager task factory.
Not here: the Future state machine (futures.py), the ready queue (core/scheduler.py).

How a task is stepped (``_step``):

    created --(call_soon, or at once when eager)--> _step
    _step: coro.send(None) / coro.throw(exc)
        yields a future  -> park: fut.add_done_callback(_wakeup); _fut_waiter = fut
        yields None      -> bare yield (sleep(0)): call_soon(_step) again
        returns          -> set_result(value)            (FINISHED)
        raises Cancelled -> cancel()                      (CANCELLED)
        raises other     -> set_exception(exc)            (FINISHED)
    _wakeup(fut): _step(), or _step(exc) when fut failed or was cancelled

Cancellation: ``cancel()`` cancels the future we wait on if there is one; otherwise (or if that
future refuses) it sets ``_must_cancel`` so that the next step throws CancelledError in.

The private fields have asyncio's names and meanings (``_coro``, ``_fut_waiter``,
``_must_cancel``, ``_num_cancels_requested``, ``_log_destroy_pending``) because anyio and
CPython's tests read them. ``asyncio.current_task()`` and ``asyncio.all_tasks()`` see tidal tasks
because each step enters and leaves through asyncio's own ``_enter_task``/``_leave_task`` and each
task is registered with asyncio's ``_register_task``.
"""

from __future__ import annotations

import asyncio
import contextvars
import reprlib
import sys
import traceback
import types
from asyncio import coroutines, format_helpers
from collections.abc import Callable, Coroutine, Generator
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

from .core.errors import FATAL_EXCEPTIONS
from .core.handles import Handle
from .core.scheduler import Scheduler
from .futures import (
    CANCELLED,
    FINISHED,
    FUTURE_SLOTS,
    PENDING,
    CancelledError,
    FutureMixin,
    InvalidStateError,
)
from .futures import Future as _TidalFuture

_tasks_module: Any = asyncio.tasks
_enter_task = _tasks_module._enter_task
_leave_task = _tasks_module._leave_task
_register_task = _tasks_module._register_task
_name_counter: Callable[[], int] = _tasks_module._task_name_counter
_iscoroutine = coroutines.iscoroutine
_format_coroutine: Callable[[Any], str] = coroutines._format_coroutine  # type: ignore[attr-defined]
_CoroutineType = types.CoroutineType
_copy_context = contextvars.copy_context
# A task's result type, for type checkers only; covariant like typeshed's asyncio.Task.
_T_co = TypeVar("_T_co", covariant=True)

# 3.12 added eager tasks: a separate registry for tasks in their first (synchronous) step and a
# C helper that swaps the current task. On 3.11 we do the same with the current-task dict that
# asyncio's C module exposes, and register eager tasks like any other.
_register_eager_task: Callable[[Any], None] | None = getattr(
    _tasks_module, "_register_eager_task", None
)
_unregister_eager_task: Callable[[Any], None] | None = getattr(
    _tasks_module, "_unregister_eager_task", None
)
_swap_current_task: Callable[[Any, Any], Any]
if hasattr(_tasks_module, "_swap_current_task"):
    _swap_current_task = _tasks_module._swap_current_task
else:
    _current_tasks: dict[Any, Any] = _tasks_module._current_tasks

    def _swap_current_task(loop: Any, task: Any) -> Any:
        previous = _current_tasks.get(loop)
        if task is None:
            _current_tasks.pop(loop, None)
        else:
            _current_tasks[loop] = task
        return previous


# tidal.observe (observe/hooks.py) sets this to its handler while anyone listens for new tasks;
# while it is None, Task.__init__ pays one global test for observability.
_observe_spawn: Callable[[Any], None] | None = None

# 3.13 made uncancel() down to zero also clear a pending cancellation; match the running Python.
_UNCANCEL_CLEARS_MUST_CANCEL: Final = sys.version_info >= (3, 13)

TASK_SLOTS: Final = (
    "_coro",  # the coroutine we drive; None once done after an eager start
    "_context",  # contextvars.Context every step runs in
    "_name",  # str, or the int N of a default name "Task-N" not yet formatted
    "_must_cancel",  # True: throw CancelledError into the coroutine at the next step
    "_fut_waiter",  # the future the coroutine is parked on, or None while runnable
    "_num_cancels_requested",  # cancel() calls minus uncancel() calls (>= 0)
    "_log_destroy_pending",  # False: being collected while pending is expected, stay silent
    "_step_handle",  # the Handle that runs our next step, reused for every bare yield; None
    # once done (it refers back to us, and that cycle must not outlive the task)
)


class Task(FutureMixin, asyncio.Task[_T_co]):
    """A coroutine wrapped in a Future; asyncio's Task API and semantics.

    Generic in its result type, like ``asyncio.Task``: ``tidal.Task[int]`` works for type checkers
    and at run time.

    Args:
        coro: the coroutine to run.
        loop: the loop to run it on; defaults to ``asyncio.get_event_loop()``.
        name: the task's name; ``"Task-N"`` if omitted.
        context: the ``contextvars.Context`` to run in; a copy of the current one if omitted.
        eager_start: run the first step now, synchronously, if the loop is running.

    Raises:
        TypeError: ``coro`` is not a coroutine.
    """

    __slots__ = FUTURE_SLOTS + TASK_SLOTS

    _coro: Coroutine[Any, Any, Any] | None
    _context: contextvars.Context
    _name: str | int
    _must_cancel: bool
    _fut_waiter: Any
    _num_cancels_requested: int
    _log_destroy_pending: bool
    _step_handle: Handle | None

    def __init__(
        self,
        coro: Coroutine[Any, Any, _T_co],
        *,
        loop: Any = None,
        name: object = None,
        context: contextvars.Context | None = None,
        eager_start: bool = False,
    ) -> None:
        # The Future fields, set inline: task creation is hot (gather, TaskGroup).
        if loop is None:
            loop = asyncio.get_event_loop()
        self._loop = loop
        if isinstance(loop, Scheduler):
            self._ready = ready = loop._ready
            debug = loop._debug
        else:
            self._ready = ready = None
            debug = loop.get_debug()
        self._state = PENDING
        self._result = None
        self._exception = None
        self._callbacks = []
        self._cancel_message = None
        self._cancelled_exc = None
        self._log_traceback = False
        self._asyncio_future_blocking = False
        self._source_traceback = format_helpers.extract_stack(sys._getframe(1)) if debug else None
        if type(coro) is not _CoroutineType and not _iscoroutine(coro):
            self._log_destroy_pending = False
            self._coro = None
            raise TypeError(
                f"a coroutine was expected, got {coro!r}; pass the result of calling an "
                f"'async def' function (e.g. create_task(main()), not create_task(main))"
            )
        self._coro = coro
        # The default name is formatted only when someone asks (see get_name).
        self._name = _name_counter() if name is None else str(name)
        self._must_cancel = False
        self._fut_waiter = None
        self._num_cancels_requested = 0
        self._log_destroy_pending = True
        self._context = context = _copy_context() if context is None else context
        if _observe_spawn is not None:
            _observe_spawn(self)
        if eager_start and (
            loop._thread_id is not None if ready is not None else loop.is_running()
        ):
            self._step_handle = None
            self._eager_start()
            return
        if ready is not None:
            if loop._closed:
                loop._raise_closed()
            # Invariant: a task has at most one step scheduled at a time, so one Handle can
            # carry all of its bare-yield steps (asyncio allocates one per step).
            self._step_handle = handle = Handle(self._step, (), loop, context)
            ready.append(handle)
        else:
            self._step_handle = None
            loop.call_soon(self._step, context=context)
        _register_task(self)

    if TYPE_CHECKING:  # FutureMixin's untyped methods, seen through the result type

        def result(self) -> _T_co: ...
        def __await__(self) -> Generator[Any, None, _T_co]: ...

    def __del__(self) -> None:
        # Runs for every task that is freed: one frame, no super() call, on the common path.
        if self._state is PENDING:
            if self._log_destroy_pending:
                context: dict[str, Any] = {
                    "task": self,
                    "message": "Task was destroyed but it is pending!",
                }
                if self._source_traceback:
                    context["source_traceback"] = self._source_traceback
                self._loop.call_exception_handler(context)
        elif self._log_traceback:
            FutureMixin.__del__(self)  # "exception was never retrieved"

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {' '.join(self._repr_info())}>"

    def _repr_info(self) -> list[str]:
        info = FutureMixin._repr_info(self)
        if self._num_cancels_requested and self._state is PENDING:
            info[0] = "cancelling"
        info.insert(1, f"name={self.get_name()!r}")
        if self._fut_waiter is not None:
            info.insert(2, f"wait_for={self._fut_waiter!r}")
        if self._coro is not None:
            info.insert(2, f"coro=<{_format_coroutine(self._coro)}>")
        return info

    # -- the public Task API ---------------------------------------------------------------

    def get_coro(self) -> Any:
        """Return the coroutine this task wraps (None after an eager task finished)."""
        return self._coro

    def get_context(self) -> contextvars.Context:
        """Return the context every step of this task runs in."""
        return self._context

    def get_name(self) -> str:
        name = self._name
        if isinstance(name, int):
            self._name = name = f"Task-{name}"
        return name

    def set_name(self, value: object) -> None:
        self._name = str(value)

    def set_result(self, result: Any) -> None:
        raise RuntimeError(
            "Task does not support set_result operation; return a value from the coroutine"
        )

    def set_exception(self, exception: Any) -> None:
        raise RuntimeError(
            "Task does not support set_exception operation; raise it inside the coroutine"
        )

    def get_stack(self, *, limit: int | None = None) -> list[FrameType]:
        """Return the frames where the coroutine is suspended, or of the exception it raised.

        Frames run oldest to newest. ``limit`` keeps the newest frames of a stack and the oldest
        frames of a traceback, as the traceback module does.
        """
        coro = self._coro
        frame: FrameType | None = None
        for attr in ("cr_frame", "gi_frame", "ag_frame"):
            if hasattr(coro, attr):
                frame = getattr(coro, attr)
                break
        frames: list[FrameType] = []
        if frame is not None:
            while frame is not None and (limit is None or len(frames) < limit):
                frames.append(frame)
                frame = frame.f_back
            frames.reverse()
        elif self._exception is not None:
            tb = self._exception.__traceback__
            # The traceback starts in our own stepping code (asyncio's C Task adds no frame
            # there): skip it so the first frame is the coroutine's, as on asyncio.
            while tb is not None and tb.tb_frame.f_globals.get("__name__") == __name__:
                tb = tb.tb_next
            while tb is not None and (limit is None or len(frames) < limit):
                frames.append(tb.tb_frame)
                tb = tb.tb_next
        return frames

    def print_stack(self, *, limit: int | None = None, file: IO[str] | None = None) -> None:
        """Print ``get_stack()`` in the traceback module's format (default: sys.stderr)."""
        extracted = traceback.StackSummary.extract(
            ((f, f.f_lineno) for f in self.get_stack(limit=limit)), limit=None
        )
        out = sys.stderr if file is None else file
        exc = self._exception
        if not extracted:
            print(f"No stack for {self!r}", file=out)
        elif exc is not None:
            print(f"Traceback for {self!r} (most recent call last):", file=out)
        else:
            print(f"Stack for {self!r} (most recent call last):", file=out)
        traceback.print_list(extracted, file=out)
        if exc is not None:
            for line in traceback.format_exception_only(type(exc), exc):
                print(line, file=out, end="")

    def cancel(self, msg: Any | None = None) -> bool:
        """Ask the task to cancel itself: CancelledError is thrown into it at its next step.

        Returns False if the task is already done. The coroutine may catch the error; the task
        is only cancelled once the coroutine lets CancelledError out.
        """
        self._log_traceback = False
        if self._state is not PENDING:
            return False
        self._num_cancels_requested += 1
        waiter = self._fut_waiter
        if waiter is not None and waiter.cancel(msg=msg):
            return True
        self._must_cancel = True
        self._cancel_message = msg
        return True

    def cancelling(self) -> int:
        """Return how many cancellation requests are outstanding."""
        return self._num_cancels_requested

    def uncancel(self) -> int:
        """Withdraw one cancellation request; return how many remain."""
        if self._num_cancels_requested > 0:
            self._num_cancels_requested -= 1
            if _UNCANCEL_CLEARS_MUST_CANCEL and self._num_cancels_requested == 0:
                self._must_cancel = False
        return self._num_cancels_requested

    # -- stepping --------------------------------------------------------------------------

    def _step(self, exc: BaseException | None = None) -> None:
        """Run the coroutine until its next suspension point. This is the hot path.

        Fast paths, in order: a bare yield (``asyncio.sleep(0)``), then a tidal future of our
        loop; everything else (foreign futures, mistakes) goes to ``_park_other``.
        """
        if self._state is not PENDING:
            raise InvalidStateError(f"_step(): already done: {self!r}, {exc!r}")
        if self._must_cancel:
            if not isinstance(exc, CancelledError):
                exc = self._make_cancelled_error()
            self._must_cancel = False
        self._fut_waiter = None
        loop = self._loop
        _enter_task(loop, self)
        try:
            try:
                if exc is None:
                    result = self._coro.send(None)  # type: ignore[union-attr]  # not None while pending
                else:
                    result = self._coro.throw(exc)  # type: ignore[union-attr]
            except StopIteration as stop:
                self._step_handle = None
                if self._must_cancel:
                    # cancel() arrived while the coroutine was finishing: honour it.
                    self._must_cancel = False
                    FutureMixin.cancel(self, msg=self._cancel_message)
                else:
                    # set_result(), inlined: every task ends here.
                    self._result = stop.value
                    self._state = FINISHED
                    if self._callbacks:
                        self._schedule_callbacks()
            except CancelledError as cancelled:
                self._step_handle = None
                self._cancelled_exc = cancelled  # chained into the error result() raises
                FutureMixin.cancel(self)
            except FATAL_EXCEPTIONS as fatal:
                self._step_handle = None
                FutureMixin.set_exception(self, fatal)
                raise
            except BaseException as error:
                self._step_handle = None
                FutureMixin.set_exception(self, error)
            else:
                if result is None:
                    # A bare yield (asyncio.sleep(0)): run again on the next loop turn.
                    handle = self._step_handle
                    if handle is not None:
                        self._ready.append(handle)  # type: ignore[union-attr]
                    elif self._ready is not None:
                        self._step_handle = handle = Handle(self._step, (), loop, self._context)
                        self._ready.append(handle)
                    else:
                        loop.call_soon(self._step, context=self._context)
                elif (
                    (type(result) is _TidalFuture or type(result) is Task)
                    and result._loop is loop
                    and result._asyncio_future_blocking
                    and result is not self
                ):
                    # A tidal future of our loop: park on it without going through its API.
                    # The step handle is kept only by tasks that bare-yield: a parked task
                    # would only keep it (and its bound method) alive for the GC to walk.
                    self._step_handle = None
                    result._asyncio_future_blocking = False
                    if result._state is PENDING:
                        result._callbacks.append((self._wakeup, self._context))
                    else:
                        loop.call_soon(self._wakeup, result, context=self._context)
                    self._fut_waiter = result
                    if self._must_cancel and result.cancel(msg=self._cancel_message):
                        self._must_cancel = False
                else:
                    self._park_other(result)
        finally:
            _leave_task(loop, self)
            # An exception the coroutine raised keeps this frame alive through its traceback;
            # without this the frame would keep the task alive too (task -> exception ->
            # traceback -> frame -> task), and "exception was never retrieved" would wait for
            # the cycle collector instead of being reported when the task is dropped. The same
            # holds for the exception thrown in: it is in that traceback, and it would keep the
            # coroutine's frames (and all they hold) alive, where asyncio's C step frees them.
            self = None  # type: ignore[assignment]
            exc = None

    def _park_other(self, result: Any) -> None:
        """The coroutine yielded something other than None or one of our loop's futures."""
        loop = self._loop
        blocking = getattr(result, "_asyncio_future_blocking", None)
        if blocking is None:
            if isinstance(result, Generator):
                message = (
                    f"yield was used instead of yield from for generator in task {self!r} "
                    f"with {result!r}"
                )
            else:
                message = f"Task got bad yield: {result!r}"
            self._step_soon(RuntimeError(message))
        elif _get_loop(result) is not loop:
            self._step_soon(
                RuntimeError(f"Task {self!r} got Future {result!r} attached to a different loop")
            )
        elif not blocking:
            self._step_soon(
                RuntimeError(
                    f"yield was used instead of yield from in task {self!r} with {result!r}"
                )
            )
        elif result is self:
            self._step_soon(RuntimeError(f"Task cannot await on itself: {self!r}"))
        else:
            # A foreign future (asyncio's, a library's own): use its public API.
            self._step_handle = None
            result._asyncio_future_blocking = False
            result.add_done_callback(self._wakeup, context=self._context)
            self._fut_waiter = result
            if self._must_cancel and result.cancel(msg=self._cancel_message):
                self._must_cancel = False

    def _step_soon(self, exc: BaseException) -> None:
        self._loop.call_soon(self._step, exc, context=self._context)

    def _wakeup(self, future: Any) -> None:
        """Done callback of the future we waited on: resume the coroutine with its outcome."""
        if type(future) is _TidalFuture or type(future) is Task:
            # Our own future: read its state instead of raising and catching its result.
            state = future._state
            if state is FINISHED and future._exception is None:
                self._step()
                return
            if state is CANCELLED:
                self._step(future._make_cancelled_error())
                return
        try:
            future.result()
        except BaseException as exc:
            self._step(exc)
            # Same cycle as at the end of _step; the future holds exc, whose traceback has us.
            self = future = None  # type: ignore[assignment]
        else:
            self._step()

    def _eager_start(self) -> None:
        """Run the first step now, inside create_task, as asyncio's eager tasks do (3.12+).

        The creating task (if any) stops being "current" for the duration, so that the step's
        own enter/leave bookkeeping works, and becomes current again afterwards.
        """
        loop = self._loop
        previous = _swap_current_task(loop, None)
        if _register_eager_task is not None:
            _register_eager_task(self)
        else:
            _register_task(self)
        try:
            self._context.run(self._step)
        finally:
            if _unregister_eager_task is not None:
                _unregister_eager_task(self)
            _swap_current_task(loop, previous)
            if self._state is not PENDING:
                self._coro = None
            elif _register_eager_task is not None:
                _register_task(self)


def _get_loop(fut: Any) -> Any:
    get_loop = getattr(fut, "get_loop", None)
    if get_loop is not None:
        return get_loop()
    return fut._loop


def eager_task_factory(
    loop: Any,
    coro: Coroutine[Any, Any, Any],
    *,
    name: object = None,
    context: contextvars.Context | None = None,
) -> Task[Any]:
    """A task factory whose tasks run their first step synchronously inside create_task.

    ``loop.set_task_factory(tidal.eager_task_factory)``: like ``asyncio.eager_task_factory``
    (3.12+), and available on 3.11 too. A coroutine that finishes without suspending never
    touches the ready queue.
    """
    return Task(coro, loop=loop, name=name, context=context, eager_start=True)


def create_eager_task_factory(
    custom_task_constructor: Callable[..., Any],
) -> Callable[..., Any]:
    """Build an eager factory around another Task class (asyncio.create_eager_task_factory)."""

    def factory(
        loop: Any,
        coro: Coroutine[Any, Any, Any],
        *,
        name: object = None,
        context: contextvars.Context | None = None,
    ) -> Any:
        return custom_task_constructor(
            coro, loop=loop, name=name, context=context, eager_start=True
        )

    return factory
