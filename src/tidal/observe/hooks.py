"""Instrumentation hooks: who listens to a loop, and the slow paths that tell them.

Owns: ``Hooks``, the per-loop registry of observers (one tuple per hook), attaching it to a loop
(``hooks_for``), the observed variants of the loop's phase 2 (``observed_select``) and phase 4
(``run_ready``), error isolation (an observer that raises is removed and reported through the
loop's exception handler, never propagated into the loop), and "loop watchers" that attach
observers to every tidal loop a program creates (``python -m tidal trace`` needs them: the
script makes its own loop).
Not here: the call sites (core/scheduler.py phases 2 and 4 and ``close``, tasks.py
``Task.__init__``, threads.py), what observers do with events (timeline.py, stats.py, leaks.py).

Hooks, with the arguments each observer receives. Times come from ``time.perf_counter()``;
durations are seconds.

    task_spawned(task, parent)          Task.__init__; parent is the task running then, or None
    before_task_step(task)              a task's step (or wakeup) is about to run
    after_task_step(task, started, duration)
    task_exited(task)                   the step that just ran finished the task
    callback_ran(handle, started, duration)   a handle that is *not* a task step
    before_io_wait(timeout)             the loop is about to sleep in the poller
    after_io_wait(started, waited, events)    ``events``: how many descriptors were ready
    executor_job_started(job)           in the worker thread; ``job`` is an ExecutorJob
    executor_job_finished(job)          in the worker thread; job.finished is set
                                        (other executors: see "Executor jobs" below)
    loop_closing(loop)                  the start of ``loop.close()``

Task steps are seen where the loop runs them: phase 4 recognises a handle whose callback is a
task's step or wakeup (tidal's Task and asyncio's own alike), so ``Task._step`` itself carries
no hook test at all. A task's eager first step runs inside the code that created it and counts
towards that code's step.

What a hook costs:
- Nobody listens: the loop's ``_instrumented`` flag is False; phases 2 and 4 test it once per
  turn, ``Task.__init__`` tests one module global (``tasks._observe_spawn``), and
  ``run_in_executor`` and ``close`` test ``loop._hooks``.
- Someone listens to any loop-turn hook: phase 4 runs ``run_ready`` below, which reads the
  clock twice per handle and calls each observer.
- A timeline recorder and nothing else per handle: phase 4 runs the recorder's own batch loop
  (``BatchRecorder.run_ready``, timeline.py), which reads the clock once per handle and appends
  one raw tuple; everything else is worked out when the recording stops.

Executor jobs: observing must never change what is sent to an executor. Only tidal's own thread
pools (the default executor tidal creates) run the job inside a wrapper, which emits both hooks
in the worker thread. Any other executor gets ``func, *args`` untouched (a process pool or Dask's
executor pickles them, and a wrapper cannot be pickled); there ``executor_job_started`` is
emitted once the job is submitted (``job.started`` and ``job.thread`` stay None: when and where
it starts is the executor's business) and ``executor_job_finished`` from the job's done callback,
in whichever thread completes it.

Batch recorders (``add_recorder``) are not observers of a hook: they see every handle phase 4
runs, before it runs (``note``), and the end of each batch (``end_batch``). While one is the only
thing listening per handle (and debug mode is off), phase 4 is handed to it whole.

Invariants:
- A hook's observers are a tuple, replaced (never mutated) on change: emitting iterates a
  snapshot, and worker threads (executor hooks) read it without a lock.
- ``loop._instrumented`` is True exactly when some turn-level hook has an observer or a batch
  recorder is attached.
- ``tasks._observe_spawn`` is set exactly when some loop has ``task_spawned`` observers or some
  loop watcher is registered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Final, Protocol

from .. import tasks as _tasks
from ..core.errors import FATAL_EXCEPTIONS
from ..core.scheduler import Scheduler

logger: Final = logging.getLogger("tidal.observe")

HOOK_NAMES: Final = (
    "task_spawned",
    "before_task_step",
    "after_task_step",
    "task_exited",
    "callback_ran",
    "before_io_wait",
    "after_io_wait",
    "executor_job_started",
    "executor_job_finished",
    "loop_closing",
)

# Hooks fired from inside the loop's turn: any observer on one of these turns the loop's
# ``_instrumented`` flag on, which routes phases 2 and 4 through this module.
_TURN_HOOKS: Final = frozenset(
    {
        "before_task_step",
        "after_task_step",
        "task_exited",
        "callback_ran",
        "before_io_wait",
        "after_io_wait",
    }
)

# How a handle that resumes a task looks, per Task implementation: tidal's bound methods, the
# pure-Python asyncio Task's (name-mangled in the source, plain in __name__), and the C Task's
# wrapper type (its step) and builtin method (its wakeup).
_STEP_NAMES: Final = frozenset({"_step", "_wakeup", "__step", "__wakeup", "task_wakeup"})
_STEP_WRAPPER_NAME: Final = "TaskStepMethWrapper"

_Task = _tasks.Task
_TIDAL_STEP_FUNCTIONS: Final = frozenset({_Task._step, _Task._wakeup})
_AsyncioTask = asyncio.Task
_current_task = asyncio.current_task


def task_of_callback(callback: object) -> asyncio.Task[Any] | None:
    """Return the task that ``callback`` resumes if it is a task's step or wakeup, else None."""
    owner = getattr(callback, "__self__", None)
    if owner is None or not isinstance(owner, _AsyncioTask):
        return None
    if type(callback).__name__ == _STEP_WRAPPER_NAME:
        return owner
    if getattr(callback, "__name__", None) in _STEP_NAMES:
        return owner
    return None


_job_ids = itertools.count(1).__next__


@dataclass(eq=False)
class ExecutorJob:
    """One ``run_in_executor`` call, as the executor hooks see it.

    Attributes:
        id: a process-wide sequence number.
        func: the callable, as given.
        submitted: when ``run_in_executor`` was called (perf_counter seconds).
        started: when a worker began running it, or None.
        finished: when it returned or raised, or None.
        thread: the worker thread's name once started.
        error: the exception it raised, if any.
    """

    func: Callable[..., Any]
    submitted: float
    id: int = field(default_factory=_job_ids)
    started: float | None = None
    finished: float | None = None
    thread: str | None = None
    error: BaseException | None = None

    @property
    def label(self) -> str:
        """A short name for the callable: its qualified name, or its repr."""
        func = self.func
        inner = getattr(func, "func", None)  # functools.partial, as asyncio.to_thread uses
        if inner is not None:
            func = inner
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
        return str(name) if name else repr(func)


class Hooks:
    """The observers of one loop, one tuple per hook. Get it with ``hooks_for(loop)``.

    Observers are plain callables registered per hook (``add``), or objects whose methods are
    named after hooks (``add_observer``). An observer that raises is removed from every hook it
    was registered for, and the error goes to the loop's exception handler.
    """

    __slots__ = (*HOOK_NAMES, "recorders", "_fast_recorder", "_loop", "__weakref__")

    task_spawned: tuple[Callable[..., Any], ...]
    before_task_step: tuple[Callable[..., Any], ...]
    after_task_step: tuple[Callable[..., Any], ...]
    task_exited: tuple[Callable[..., Any], ...]
    callback_ran: tuple[Callable[..., Any], ...]
    before_io_wait: tuple[Callable[..., Any], ...]
    after_io_wait: tuple[Callable[..., Any], ...]
    executor_job_started: tuple[Callable[..., Any], ...]
    executor_job_finished: tuple[Callable[..., Any], ...]
    loop_closing: tuple[Callable[..., Any], ...]
    recorders: tuple[BatchRecorder, ...]  # batch recorders (timeline.py), see the module doc
    # Invariant: the only recorder when no per-handle hook has observers, else None; phase 4
    # hands whole batches to it (outside debug mode).
    _fast_recorder: BatchRecorder | None

    def __init__(self, loop: Scheduler) -> None:
        self._loop = loop
        for name in HOOK_NAMES:
            setattr(self, name, ())
        self.recorders = ()
        self._fast_recorder = None

    @property
    def loop(self) -> Scheduler:
        """The loop these hooks observe."""
        return self._loop

    # -- registration ----------------------------------------------------------------------

    def add(self, hook: str, observer: Callable[..., Any]) -> None:
        """Call ``observer`` on every ``hook`` event of this loop (see the module docstring).

        Raises:
            ValueError: ``hook`` is not one of ``HOOK_NAMES``.
            TypeError: ``observer`` is not callable.
        """
        _check_hook(hook)
        if not callable(observer):
            raise TypeError(f"an observer must be callable, got {observer!r}")
        with _registry_lock:
            setattr(self, hook, (*getattr(self, hook), observer))
            self._update_flags()

    def remove(self, hook: str, observer: Callable[..., Any]) -> bool:
        """Stop calling ``observer`` for ``hook``; return False if it was not registered.

        Raises:
            ValueError: ``hook`` is not one of ``HOOK_NAMES``.
        """
        _check_hook(hook)
        with _registry_lock:
            current = getattr(self, hook)
            kept = tuple(fn for fn in current if fn != observer)
            if len(kept) == len(current):
                return False
            setattr(self, hook, kept)
            self._update_flags()
            return True

    def add_observer(self, observer: object) -> list[str]:
        """Register every method of ``observer`` named after a hook; return those hook names.

        Raises:
            TypeError: ``observer`` has no method named after a hook.
        """
        names = [name for name in HOOK_NAMES if callable(getattr(observer, name, None))]
        if not names:
            raise TypeError(
                f"{observer!r} has no method named after a hook; define one of {HOOK_NAMES}"
            )
        for name in names:
            self.add(name, getattr(observer, name))
        return names

    def remove_observer(self, observer: object) -> None:
        """Undo ``add_observer``: remove each of its hook-named methods that is registered."""
        for name in HOOK_NAMES:
            method = getattr(observer, name, None)
            if method is not None:
                self.remove(name, method)

    def add_recorder(
        self,
        recorder: BatchRecorder,
        observers: tuple[tuple[str, Callable[..., Any]], ...] = (),
    ) -> None:
        """Show ``recorder`` every handle phase 4 runs (see ``BatchRecorder``), and register
        ``observers``, (hook, observer) pairs, in the same update (a recorder per loop is
        attached as loops are created, so this is kept to one pass).

        Raises:
            ValueError: a hook name is not one of ``HOOK_NAMES``.
        """
        for hook, _ in observers:
            _check_hook(hook)
        with _registry_lock:
            for hook, observer in observers:
                setattr(self, hook, (*getattr(self, hook), observer))
            self.recorders = (*self.recorders, recorder)
            self._update_flags()

    def remove_recorder(
        self,
        recorder: BatchRecorder,
        observers: tuple[tuple[str, Callable[..., Any]], ...] = (),
    ) -> bool:
        """Undo ``add_recorder``; return False if ``recorder`` was not registered."""
        with _registry_lock:
            for hook, observer in observers:
                setattr(self, hook, tuple(fn for fn in getattr(self, hook) if fn != observer))
            kept = tuple(r for r in self.recorders if r is not recorder)
            found = len(kept) != len(self.recorders)
            self.recorders = kept
            self._update_flags()
            return found

    def listening(self) -> bool:
        """Return True if any hook of this loop has an observer (or a recorder is attached)."""
        return bool(self.recorders) or any(getattr(self, name) for name in HOOK_NAMES)

    def _update_flags(self) -> None:
        per_handle = (
            self.before_task_step or self.after_task_step or self.task_exited or self.callback_ran
        )
        recorders = self.recorders
        self._fast_recorder = recorders[0] if len(recorders) == 1 and not per_handle else None
        self._loop._instrumented = bool(
            recorders or per_handle or self.before_io_wait or self.after_io_wait
        )
        if self.task_spawned and not self._loop.is_closed():
            _spawning_loops.add(self)
        else:
            _spawning_loops.discard(self)
        _update_spawn_switch()

    # -- error isolation -------------------------------------------------------------------

    def _evict(self, hook: str, observer: Callable[..., Any], exc: BaseException) -> None:
        """Remove ``observer`` from every hook and report ``exc`` on the loop's thread."""
        owner = getattr(observer, "__self__", None)
        with _registry_lock:
            for name in HOOK_NAMES:
                current = getattr(self, name)
                kept = tuple(
                    fn
                    for fn in current
                    if fn != observer
                    and (owner is None or getattr(fn, "__self__", None) is not owner)
                )
                if len(kept) != len(current):
                    setattr(self, name, kept)
            self._update_flags()
        context = {
            "message": (
                f"tidal observer {observer!r} raised in hook {hook!r} and was removed; "
                f"fix the observer or catch its errors"
            ),
            "exception": exc,
        }
        loop = self._loop
        if loop.is_closed():
            logger.error(context["message"], exc_info=exc)
        elif loop._thread_id in (None, threading.get_ident()):
            loop.call_exception_handler(context)
        else:
            loop.call_soon_threadsafe(loop.call_exception_handler, context)

    # -- emitting (each observer's error is its own) ---------------------------------------

    def emit(self, hook: str, *args: Any) -> None:
        """Call every observer of ``hook`` with ``args``; one that raises is evicted, not fatal."""
        for fn in getattr(self, hook):
            try:
                fn(*args)
            except FATAL_EXCEPTIONS:
                raise
            except BaseException as exc:
                self._evict(hook, fn, exc)

    def emit_loop_closing(self) -> None:
        """Tell ``loop_closing`` observers; afterwards this loop no longer counts as spawning
        (a closed loop runs no task, so it must not keep ``Task.__init__`` on the slow path)."""
        self.emit("loop_closing", self._loop)
        with _registry_lock:
            _spawning_loops.discard(self)
            _update_spawn_switch()

    # -- executor jobs (threads.py calls these while someone listens) ----------------------

    def wrap_job(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Callable[[], Any]:
        """Return a callable for ``executor.submit`` that runs ``func(*args)`` between the
        ``executor_job_started`` and ``executor_job_finished`` hooks (in the worker thread).

        Only for tidal's own thread pools: the callable is a closure, which cannot be pickled.
        """
        job = ExecutorJob(func, perf_counter())

        def run_job() -> Any:
            job.thread = threading.current_thread().name
            job.started = perf_counter()
            if self.executor_job_started:
                self.emit("executor_job_started", job)
            try:
                return func(*args)
            except BaseException as exc:
                job.error = exc
                raise
            finally:
                job.finished = perf_counter()
                if self.executor_job_finished:
                    self.emit("executor_job_finished", job)

        return run_job

    def submit_observed(
        self,
        executor: concurrent.futures.Executor,
        func: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> concurrent.futures.Future[Any]:
        """``executor.submit(func, *args)``, unchanged, for an executor tidal does not own;
        the job is observed from outside (see "Executor jobs" in the module docstring)."""
        submitted = perf_counter()
        future = executor.submit(func, *args)
        job = ExecutorJob(func, submitted)
        if self.executor_job_started:
            self.emit("executor_job_started", job)
        future.add_done_callback(functools.partial(self._observed_job_done, job))
        return future

    def _observed_job_done(self, job: ExecutorJob, future: concurrent.futures.Future[Any]) -> None:
        job.finished = perf_counter()
        if future.cancelled():
            job.error = concurrent.futures.CancelledError()
        else:
            job.error = future.exception()
        if self.executor_job_finished:
            self.emit("executor_job_finished", job)

    # -- the observed slow paths the loop enters while _instrumented is True -------------------

    def observed_select(self, timeout: float | None) -> list[Any]:
        """Phase 2's poll, bracketed by ``before_io_wait`` and ``after_io_wait``."""
        if self.before_io_wait:
            self.emit("before_io_wait", timeout)
        started = perf_counter()
        events = self._loop._poller.select(timeout)
        if self.after_io_wait:
            self.emit("after_io_wait", started, perf_counter() - started, len(events))
        return events

    def run_ready(self, count: int) -> None:
        """Phase 4 while someone listens: run ``count`` handles, timing each one.

        Same semantics as the scheduler's batch loop (FIFO, cancelled handles skipped, errors to
        the exception handler, SystemExit and KeyboardInterrupt propagate), plus the step and
        callback hooks, plus debug mode's "Executing %s took %.3f seconds" warning, plus what
        batch recorders are shown. A lone recorder (and no debug mode) gets the batch instead.
        """
        loop: Any = self._loop
        fast = self._fast_recorder
        if fast is not None and not loop._debug:
            fast.run_ready(count)
            return
        recorders = self.recorders
        try:
            self._run_ready_observed(loop, count, recorders)
        finally:
            if recorders:
                ended = perf_counter()
                for recorder in recorders:
                    recorder.end_batch(ended)

    def _run_ready_observed(self, loop: Any, count: int, recorders: tuple[Any, ...]) -> None:
        popleft = loop._ready.popleft
        debug = loop._debug
        slow = loop.slow_callback_duration
        clock = perf_counter
        task_type = _Task
        step_functions = _TIDAL_STEP_FUNCTIONS
        for _ in range(count):
            handle = popleft()
            if handle._cancelled:
                continue
            callback = handle._callback
            # Which task does this handle resume? tidal's own tasks first (the common case).
            owner = getattr(callback, "__self__", None)
            task: Any
            if owner is None:
                task = None
            elif type(owner) is task_type:
                task = owner if getattr(callback, "__func__", None) in step_functions else None
            else:
                task = task_of_callback(callback)
            for recorder in recorders:
                recorder.note(handle, callback, clock())
            if task is not None and self.before_task_step:
                self.emit("before_task_step", task)
            if debug:
                loop._current_handle = handle
            started = clock()
            try:
                handle._context.run(callback, *handle._args)
            except FATAL_EXCEPTIONS:
                raise
            except BaseException as exc:
                loop._report_handle_error(handle, exc)
            finally:
                if debug:
                    loop._current_handle = None
            took = clock() - started
            if recorders and task is not None and task.done():
                for recorder in recorders:
                    recorder.task_done(task)
            if task is None:
                if self.callback_ran:
                    self.emit("callback_ran", handle, started, took)
            else:
                if self.after_task_step:
                    self.emit("after_task_step", task, started, took)
                if self.task_exited and task.done():
                    self.emit("task_exited", task)
            if debug and took >= slow:
                _log_slow(handle, task, took)


class BatchRecorder(Protocol):
    """What ``add_recorder`` takes: something that sees every handle phase 4 runs.

    ``run_ready(count)`` must behave exactly like the scheduler's batch loop (FIFO, cancelled
    handles skipped, errors to ``loop._report_handle_error``, SystemExit and KeyboardInterrupt
    propagate); it is called only while this recorder is the only per-handle listener.
    """

    def run_ready(self, count: int) -> None: ...

    def note(self, handle: Any, callback: Any, started: float) -> None: ...

    def task_done(self, task: Any) -> None: ...

    def end_batch(self, ended: float) -> None: ...


def _log_slow(handle: Any, task: Any, took: float) -> None:
    what = repr(task) if task is not None else str(handle)
    logging.getLogger("asyncio").warning("Executing %s took %.3f seconds", what, took)


def _check_hook(hook: str) -> None:
    if hook not in HOOK_NAMES:
        raise ValueError(f"unknown hook {hook!r}; the hooks are: {', '.join(HOOK_NAMES)}")


# -- attaching registries, and the process-wide spawn switch ----------------------------------

_registry_lock = threading.RLock()
_spawning_loops: weakref.WeakSet[Hooks] = weakref.WeakSet()  # registries with spawn observers
_loop_watchers: list[Callable[[Scheduler], None]] = []  # called once per new tidal loop
_watched_loops: weakref.WeakSet[Scheduler] = weakref.WeakSet()  # loops the watchers have seen


def hooks_for(loop: object) -> Hooks:
    """Return ``loop``'s hook registry, attaching an empty one on first use.

    Raises:
        TypeError: ``loop`` is not a tidal loop (asyncio's own loop has no hook call sites).
    """
    if not isinstance(loop, Scheduler):
        raise TypeError(
            f"instrumentation hooks need a tidal loop, got {loop!r}; create it with "
            f"tidal.new_event_loop() or run under tidal.run()"
        )
    hooks = loop._hooks
    if hooks is None:
        with _registry_lock:
            hooks = loop._hooks
            if hooks is None:
                hooks = loop._hooks = Hooks(loop)
    return hooks  # type: ignore[no-any-return]  # _hooks is Any in core (no observe import)


def add_loop_watcher(watcher: Callable[[Scheduler], None]) -> None:
    """Call ``watcher(loop)`` once for every tidal loop, when its first task is created.

    Loops that already had tasks before the watcher was added are reported when their next task
    is created. Used by recorders that must see loops a program creates on its own
    (``asyncio.run`` inside a script run by ``python -m tidal trace``).
    """
    with _registry_lock:
        _loop_watchers.append(watcher)
        _update_spawn_switch()


def remove_loop_watcher(watcher: Callable[[Scheduler], None]) -> None:
    """Stop calling ``watcher`` for new loops."""
    with _registry_lock:
        try:
            _loop_watchers.remove(watcher)
        except ValueError:
            pass
        if not _loop_watchers:
            _watched_loops.clear()
        _update_spawn_switch()


def _update_spawn_switch() -> None:
    _tasks._observe_spawn = _on_task_spawned if (_spawning_loops or _loop_watchers) else None


def _on_task_spawned(task: Any) -> None:
    """``tasks._observe_spawn``: called from ``Task.__init__`` while anyone listens."""
    loop = task._loop
    if _loop_watchers and loop not in _watched_loops and isinstance(loop, Scheduler):
        _watched_loops.add(loop)
        for watcher in tuple(_loop_watchers):
            try:
                watcher(loop)
            except FATAL_EXCEPTIONS:
                raise
            except BaseException:
                logger.exception("tidal loop watcher %r failed; removing it", watcher)
                remove_loop_watcher(watcher)
    hooks = getattr(loop, "_hooks", None)
    if hooks is not None and hooks.task_spawned:
        hooks.emit("task_spawned", task, _current_task(loop))
