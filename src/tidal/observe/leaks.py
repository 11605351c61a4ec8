"""Leak and lost-error report: what a program left behind when its loop closed.

Owns: ``LeakTracker`` (an observer on the cheap hooks only: task_spawned, the executor hooks and
loop_closing), ``LeakReport`` and its text, and process-wide tracking of every tidal loop
(``track_all``, used by ``python -m tidal``).
Not here: the per-step hooks (none of this needs them, so tracking leaks never slows a step), the
task tree (tree.py; reused here for "where is it waiting").

What the report lists:
- tasks still pending when the loop's *main task* finished (a task created while the loop was
  not running, as ``asyncio.run`` and ``run_until_complete`` create theirs), with where each was
  created and where it is waiting: ``asyncio.run`` cancels them silently afterwards;
- tasks still pending when the loop closes;
- tasks that failed and whose exception nobody retrieved, among those still alive at close
  (one collected earlier has already been reported by asyncio's own "Task exception was never
  retrieved", at the moment it was collected);
- coroutines never awaited, with where they were created when coroutine origin tracking is on
  (``coroutine_origins``), else where they were dropped, which is usually the same line;
- executor jobs still queued or running.

Each section says what to do about it. What nobody can act on is left out:
- tasks of libraries (a coroutine of a library, created by library code: ipykernel's, tornado's
  long-lived tasks) are counted per library in one line, never listed; a report holding only
  those is not made at all;
- nothing is reported for a loop whose main task was interrupted (Ctrl-C: ``asyncio.run``
  cancels its main task; KeyboardInterrupt, SystemExit), nor at exit after an uncaught
  KeyboardInterrupt: whatever was pending was interrupted on purpose.

Where the report goes (the default reporter): a report is made inside ``loop.close()``, in
whichever thread closes the loop. It is written at once only where that cannot block nor go
through somebody else's stream from a foreign thread: in the main thread, or in another thread
while ``sys.stderr`` is still the process's own. Otherwise (a thread closing its loop while
``sys.stderr`` is replaced, as in a Jupyter kernel, whose stream sends through the very thread
that is closing) it is kept and written to the process's real stderr (``sys.__stderr__``) by the
main thread at exit.

Invariants:
- The tracker holds tasks weakly; it never changes whether or when a task is collected.
- Reading a task's outcome never marks its exception as retrieved (``_exception`` is read, not
  ``exception()``), so asyncio's own "exception was never retrieved" log is unaffected.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import site
import sys
import sysconfig
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final, TextIO

from ..core.scheduler import Scheduler
from .hooks import ExecutorJob, add_loop_watcher, hooks_for, remove_loop_watcher
from .stats import caller_site
from .tree import await_chain, describe_future, short_path

_NEVER_AWAITED: Final = "was never awaited"
DEFAULT_ORIGIN_DEPTH: Final = 8  # frames of coroutine origin kept when origins are tracked


def _library_dirs() -> list[str]:
    """Directories holding library code: the standard library and every site-packages."""
    found = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    found.update(getattr(site, "getsitepackages", list)())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if user_site:
        found.add(user_site)
    # Longest first: site-packages may lie inside the standard library's directory.
    return sorted(
        (os.path.join(os.path.realpath(d), "") for d in found if d), key=len, reverse=True
    )


# Code under these directories is a library's, not the program's (see "What nobody can act on").
LIBRARY_DIRS: list[str] = _library_dirs()


def library_of(filename: str | None) -> str | None:
    """The top-level package (or module) of library code at ``filename``, else None."""
    if not filename:
        return None
    path = os.path.realpath(filename)
    for directory in LIBRARY_DIRS:
        if path.startswith(directory):
            relative = path[len(directory) :]
            top = relative.split(os.sep, 1)[0]
            return top[:-3] if top.endswith(".py") else top
    return None


@dataclass(frozen=True)
class LeakedTask:
    """A task left pending."""

    name: str
    coro: str
    created_at: str | None  # "file:line", when the tracker saw it created
    created_by: str | None  # the creating task's name
    waiting_at: str  # innermost coroutine frame and the future at the leaf

    def format(self) -> str:
        text = f"task {self.name!r} ({self.coro})"
        if self.created_at:
            text += f", created at {short_path(self.created_at)}"
        if self.created_by:
            text += f" by {self.created_by!r}"
        if self.waiting_at:
            text += f", waiting at {self.waiting_at}"
        return text


@dataclass(frozen=True)
class LostError:
    """A task that failed with nobody retrieving its exception."""

    name: str
    coro: str
    created_at: str | None
    error: str  # repr of the exception

    def format(self) -> str:
        where = f", created at {short_path(self.created_at)}" if self.created_at else ""
        return f"task {self.name!r} ({self.coro}){where} raised {self.error}"


@dataclass(frozen=True)
class LeakReport:
    """Everything a loop left behind; falsy when there is nothing to report."""

    loop: str
    pending_when_main_finished: tuple[LeakedTask, ...]
    main_task: str | None
    pending_at_close: tuple[LeakedTask, ...]
    unretrieved: tuple[LostError, ...]
    never_awaited: tuple[str, ...]
    executor_jobs: tuple[str, ...]
    # (library, count) of the libraries' own tasks left pending: counted, not listed, and not a
    # reason to report by themselves.
    library_tasks: tuple[tuple[str, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.pending_when_main_finished
            or self.pending_at_close
            or self.unretrieved
            or self.never_awaited
            or self.executor_jobs
        )

    def format(self) -> str:
        """The report as text, one section per kind of leak (empty string if none)."""
        if not self:
            return ""
        lines = [f"tidal leak report for {self.loop}:"]

        def section(title: str, items: list[str], advice: str) -> None:
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    - {item}" for item in items)
                lines.append(f"    fix: {advice}")

        section(
            f"{len(self.pending_when_main_finished)} task(s) still pending when the main task "
            f"{self.main_task!r} finished (asyncio.run cancels them)",
            [t.format() for t in self.pending_when_main_finished],
            "await them before the main coroutine returns (an asyncio.TaskGroup does), or "
            "cancel them and await the cancellation if they are meant to stop there",
        )
        section(
            f"{len(self.pending_at_close)} task(s) still pending when the loop closed",
            [t.format() for t in self.pending_at_close],
            "await or cancel them before closing the loop; they never finished",
        )
        section(
            f"{len(self.unretrieved)} exception(s) never retrieved",
            [e.format() for e in self.unretrieved],
            "await these tasks (or read task.exception()) so their errors are not lost",
        )
        section(
            f"{len(self.never_awaited)} coroutine(s) never awaited",
            list(self.never_awaited),
            "the call only made a coroutine object: put await before it, or pass it to "
            "asyncio.create_task()",
        )
        section(
            f"{len(self.executor_jobs)} executor job(s) still queued or running",
            list(self.executor_jobs),
            "await their run_in_executor() futures, or await loop.shutdown_default_executor() "
            "before closing the loop",
        )
        if self.library_tasks:
            counts = ", ".join(f"{name}: {count}" for name, count in self.library_tasks)
            lines.append(
                f"  not listed: tasks of libraries still pending ({counts}); they are the "
                "libraries' own"
            )
        lines.append(
            "  (python -m tidal makes this report with --leak-report or TIDAL_LEAK_REPORT=1)"
        )
        return "\n".join(lines) + "\n"


class _Seen:
    __slots__ = ("created_at", "parent")

    def __init__(self, created_at: str | None, parent: str | None) -> None:
        self.created_at = created_at
        self.parent = parent


class LeakTracker:
    """Observer that builds a ``LeakReport`` when its loop closes.

    Args:
        report: called with the report at close, only when it is not empty. Default: write it
            to ``sys.stderr``.
        coroutine_origins: also turn on CPython's coroutine origin tracking in the threads that
            attach this tracker, so never-awaited coroutines say where they were created (each
            coroutine creation then costs a few frames' worth of bookkeeping).
    """

    def __init__(
        self,
        report: Callable[[LeakReport], Any] | None = None,
        *,
        coroutine_origins: bool = False,
    ) -> None:
        self._report = report if report is not None else _write_to_stderr
        self.coroutine_origins = coroutine_origins
        self._seen: weakref.WeakKeyDictionary[Any, _Seen] = weakref.WeakKeyDictionary()
        # id(loop) -> (main task name, tasks it left pending); the first such main task wins
        # (asyncio.run's later shutdown tasks are main tasks too, and leave nothing behind).
        self._left_by_main: dict[int, tuple[str, tuple[LeakedTask, ...]]] = {}
        self._jobs: dict[int, ExecutorJob] = {}
        self._jobs_lock = threading.Lock()
        self._never_awaited: list[str] = []
        self.reports: list[LeakReport] = []  # every report made, empty ones included
        self._attached: weakref.WeakSet[Scheduler] = weakref.WeakSet()
        self._saved_depth: int | None = None  # origin tracking depth to restore, if we raised it
        self._interrupted: set[int] = set()  # id(loop) of loops whose main task was interrupted

    # hook methods

    def task_spawned(self, task: Any, parent: Any) -> None:
        self._seen[task] = _Seen(caller_site(2), parent.get_name() if parent is not None else None)
        loop = task.get_loop()
        if not loop.is_running():
            # The main task (asyncio.run, run_until_complete): see what it leaves behind.
            task.add_done_callback(self._main_finished)

    def _main_finished(self, task: Any) -> None:
        loop = task.get_loop()
        if _was_interrupted(task):
            self._interrupted.add(id(loop))
            return
        pending = [t for t in asyncio.all_tasks(loop) if not t.done() and t is not task]
        pending = [t for t in pending if self._library_of_task(t) is None]
        if pending and id(loop) not in self._left_by_main:
            described = tuple(self._describe(t) for t in pending)
            self._left_by_main[id(loop)] = (task.get_name(), described)

    def _library_of_task(self, task: Any) -> str | None:
        """The library a task belongs to: its coroutine is library code and library code (or
        nobody we saw) created it. A library coroutine the program started is the program's."""
        code = getattr(task.get_coro(), "cr_code", None)
        library = library_of(getattr(code, "co_filename", None))
        if library is None:
            return None
        seen = self._seen.get(task)
        created_at = seen.created_at if seen is not None else None
        if created_at is not None and library_of(created_at.rpartition(":")[0]) is None:
            return None
        return library

    def executor_job_started(self, job: ExecutorJob) -> None:
        with self._jobs_lock:
            self._jobs[job.id] = job

    def executor_job_finished(self, job: ExecutorJob) -> None:
        with self._jobs_lock:
            self._jobs.pop(job.id, None)

    def loop_closing(self, loop: Any) -> None:
        # The main task was interrupted, or the loop closes while a Ctrl-C propagates (a
        # ``finally: loop.close()`` around run_until_complete).
        interrupted = id(loop) in self._interrupted or isinstance(
            sys.exc_info()[1], KeyboardInterrupt
        )
        self._interrupted.discard(id(loop))
        report = self.build_report(loop)
        self.reports.append(report)
        self.detach(loop)
        if report and not interrupted:
            self._report(report)

    # building the report

    def _describe(self, task: Any) -> LeakedTask:
        seen = self._seen.get(task)
        frames = await_chain(task.get_coro())
        waiting = str(frames[-1]) if frames else ""
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is not None:
            leaf = str(describe_future(waiter))
            waiting = f"{waiting} on {leaf}" if waiting else leaf
        coro = task.get_coro()
        return LeakedTask(
            name=task.get_name(),
            coro=str(getattr(coro, "__qualname__", None) or type(coro).__name__),
            created_at=seen.created_at if seen else None,
            created_by=seen.parent if seen else None,
            waiting_at=waiting,
        )

    def build_report(self, loop: Any) -> LeakReport:
        """Build the report for ``loop`` now (``loop_closing`` calls this)."""
        pending = []
        libraries: dict[str, int] = {}
        for task in asyncio.all_tasks(loop):
            if task.done():
                continue
            library = self._library_of_task(task)
            if library is None:
                pending.append(task)
            else:
                libraries[library] = libraries.get(library, 0) + 1
        unretrieved = []
        for task, seen in list(self._seen.items()):
            if task.get_loop() is not loop or not task.done() or task.cancelled():
                continue
            if getattr(task, "_log_traceback", False):
                coro = task.get_coro()
                unretrieved.append(
                    LostError(
                        name=task.get_name(),
                        coro=str(getattr(coro, "__qualname__", None) or "?"),
                        created_at=seen.created_at,
                        error=repr(getattr(task, "_exception", None)),
                    )
                )
        now = perf_counter()
        with self._jobs_lock:
            jobs = [
                f"{job.label} in {job.thread or 'a worker'}, "
                f"submitted {now - job.submitted:.3f} s ago"
                for job in self._jobs.values()
                if job.finished is None
            ]
        main_task, left = self._left_by_main.pop(id(loop), (None, ()))
        return LeakReport(
            loop=repr(loop),
            pending_when_main_finished=left,
            main_task=main_task,
            pending_at_close=tuple(self._describe(t) for t in pending),
            unretrieved=tuple(unretrieved),
            never_awaited=tuple(_drain_never_awaited()),
            executor_jobs=tuple(jobs),
            library_tasks=tuple(sorted(libraries.items())),
        )

    def attach(self, loop: Scheduler) -> None:
        """Observe ``loop`` (what ``track_all`` and ``watch`` do for you); idempotent."""
        if loop in self._attached:
            return
        self._attached.add(loop)
        hooks_for(loop).add_observer(self)
        if self.coroutine_origins and self._saved_depth is None:
            depth = sys.get_coroutine_origin_tracking_depth()
            if depth < DEFAULT_ORIGIN_DEPTH:
                self._saved_depth = depth
                sys.set_coroutine_origin_tracking_depth(DEFAULT_ORIGIN_DEPTH)
        _capture_never_awaited(True)

    def detach(self, loop: Scheduler) -> None:
        """Stop observing ``loop`` (done automatically once it has closed); idempotent."""
        if loop not in self._attached:
            return
        self._attached.discard(loop)
        hooks_for(loop).remove_observer(self)
        if not self._attached and self._saved_depth is not None:
            sys.set_coroutine_origin_tracking_depth(self._saved_depth)
            self._saved_depth = None
        _capture_never_awaited(False)


def _was_interrupted(task: Any) -> bool:
    """Did this main task end because the program was interrupted (Ctrl-C, SystemExit)?"""
    if task.cancelled():
        return True  # asyncio.run/Runner cancel the main task on Ctrl-C
    return isinstance(getattr(task, "_exception", None), (KeyboardInterrupt, SystemExit))


def _exiting_after_interrupt() -> bool:
    """At exit: True after an uncaught KeyboardInterrupt (the interpreter records it in
    ``sys.last_value``; only meaningful at exit, since a REPL sets it after every error)."""
    return isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)


# Reports made where writing them could block or go through a replaced stream from a foreign
# thread; the main thread writes them to the real stderr at exit.
_deferred_reports: list[str] = []
_deferred_lock = threading.Lock()


def _write_to_stderr(report: LeakReport, file: TextIO | None = None) -> None:
    text = report.format()
    if file is None:
        on_main_thread = threading.current_thread() is threading.main_thread()
        if not on_main_thread and sys.stderr is not sys.__stderr__:
            thread = threading.current_thread().name
            _defer(f"{text}  (closed in thread {thread!r}; reported at exit)\n")
            return
        file = sys.stderr
        if file is None:  # pythonw, or a daemon that closed its streams
            return
    file.write(text)
    file.flush()


def _defer(text: str) -> None:
    with _deferred_lock:
        first = not _deferred_reports
        _deferred_reports.append(text)
    if first:
        atexit.register(_write_deferred_reports)


def _write_deferred_reports() -> None:
    """atexit, main thread: the deferred reports, on the process's real stderr."""
    with _deferred_lock:
        texts = list(_deferred_reports)
        _deferred_reports.clear()
    out = sys.__stderr__
    if not texts or out is None or _exiting_after_interrupt():
        return
    for text in texts:
        out.write(text)
    out.flush()


# -- never-awaited coroutines: the RuntimeWarning CPython emits when one is collected ---------

_never_awaited: list[str] = []
_capture_lock = threading.Lock()
_capture_users = 0
_saved_showwarning: Any = None
_saved_unraisablehook: Any = None


def _note_warning(message: Any, filename: str, lineno: int) -> bool:
    text = str(message)
    if _NEVER_AWAITED not in text:
        return False
    first, _, origin = text.partition("\n")
    # With origin tracking CPython appends "Coroutine created at ...", innermost frame last.
    frames = [line.strip() for line in origin.splitlines() if line.strip().startswith('File "')]
    if frames:
        _never_awaited.append(f"{first}; created at {frames[-1]}")
    else:
        _never_awaited.append(f"{first} (dropped at {short_path(filename)}:{lineno})")
    return True


def _showwarning(
    message: Any,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if issubclass(category, RuntimeWarning):
        _note_warning(message, filename, lineno)
    _saved_showwarning(message, category, filename, lineno, file, line)


def _unraisablehook(unraisable: Any) -> None:
    # With warnings turned into errors (-W error, pytest's filterwarnings=error), the
    # never-awaited warning arrives here as an unraisable RuntimeWarning instead.
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeWarning):
        frame = getattr(unraisable.exc_traceback, "tb_frame", None)
        filename = frame.f_code.co_filename if frame is not None else "?"
        lineno = getattr(unraisable.exc_traceback, "tb_lineno", 0)
        _note_warning(exc, filename, lineno)
    _saved_unraisablehook(unraisable)


def _capture_never_awaited(on: bool) -> None:
    """Reference-counted install/removal of the warning and unraisable hooks."""
    global _capture_users, _saved_showwarning, _saved_unraisablehook
    with _capture_lock:
        if on:
            _capture_users += 1
            # Check rather than count: warnings.catch_warnings() restores showwarning on exit,
            # which may have removed ours since the last attach.
            if warnings.showwarning is not _showwarning:
                _saved_showwarning = warnings.showwarning
                warnings.showwarning = _showwarning
            if sys.unraisablehook is not _unraisablehook:
                _saved_unraisablehook = sys.unraisablehook
                sys.unraisablehook = _unraisablehook
        elif _capture_users > 0:
            _capture_users -= 1
            if _capture_users == 0:
                if warnings.showwarning is _showwarning:
                    warnings.showwarning = _saved_showwarning
                if sys.unraisablehook is _unraisablehook:
                    sys.unraisablehook = _saved_unraisablehook


def _drain_never_awaited() -> list[str]:
    with _capture_lock:
        items = list(_never_awaited)
        _never_awaited.clear()
    return items


# -- process-wide tracking (python -m tidal) -----------------------------------------------


class GlobalLeakTracking:
    """Attach one ``LeakTracker`` to every tidal loop created from now on; report at exit."""

    def __init__(self, tracker: LeakTracker) -> None:
        self.tracker = tracker
        self._loops: weakref.WeakSet[Scheduler] = weakref.WeakSet()

    def _attach(self, loop: Scheduler) -> None:
        self._loops.add(loop)
        self.tracker.attach(loop)

    def start(self) -> None:
        add_loop_watcher(self._attach)
        atexit.register(self.at_exit)

    def stop(self) -> None:
        remove_loop_watcher(self._attach)
        atexit.unregister(self.at_exit)
        for loop in list(self._loops):
            self.tracker.detach(loop)
        self._loops = weakref.WeakSet()

    def at_exit(self) -> None:
        """Report loops that were never closed (not after Ctrl-C), then stop."""
        if not _exiting_after_interrupt():
            for loop in list(self._loops):
                if not loop.is_closed():
                    self.tracker.loop_closing(loop)
        self.stop()


def track_all(
    report: Callable[[LeakReport], Any] | None = None, *, coroutine_origins: bool = False
) -> GlobalLeakTracking:
    """Report leaks of every tidal loop created from now on, at its close or at exit."""
    tracking = GlobalLeakTracking(LeakTracker(report, coroutine_origins=coroutine_origins))
    tracking.start()
    return tracking


def watch(
    loop: object,
    report: Callable[[LeakReport], Any] | None = None,
    *,
    coroutine_origins: bool = False,
) -> LeakTracker:
    """Report what ``loop`` leaves behind when it closes.

    Raises:
        TypeError: ``loop`` is not a tidal loop.
    """
    if not isinstance(loop, Scheduler):
        raise TypeError(f"leak tracking needs a tidal loop, got {loop!r}")
    tracker = LeakTracker(report, coroutine_origins=coroutine_origins)
    tracker.attach(loop)
    return tracker
