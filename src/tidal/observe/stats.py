"""Per-task accounting and duration statistics for steps and callbacks.

Owns: ``TaskAccounting`` (for each task: who created it, where, when, how many steps it took and
how long it ran; the task tree shows these), ``Stats`` (duration statistics per coroutine and
per callback, and the per-step slow check that logs asyncio's "Executing %s took %.3f seconds"
wording), and turning both on for a loop (``track``, ``collect``).
Not here: the hook registry (hooks.py), what a task waits on (tree.py), the blocked-loop
watchdog thread (watchdog.py).

Both are observers on the loop's hooks, so they cost nothing until turned on; once on, every
step and callback is timed (see hooks.py for what that costs).

Invariants:
- Records are keyed weakly by task: accounting never keeps a task alive, so asyncio's "Task was
  destroyed but it is pending!" report still happens when it should.
- ``DurationStats`` are immutable snapshots; the running totals live in ``_Durations``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final

from .hooks import Hooks, hooks_for

logger: Final = logging.getLogger("asyncio")  # the slow-step warning uses asyncio's logger

# Seconds; a step or callback at least this long is logged by Stats (asyncio's debug default).
DEFAULT_SLOW_DURATION: Final = 0.1

_ASYNCIO_DIR: Final = os.path.dirname(asyncio.__file__) + os.sep
_TIDAL_DIR: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# tidal's own files a user's code is never in; demo.py and cli.py hold user-level code.
_USER_FILES_IN_TIDAL: Final = frozenset({"demo.py", "cli.py"})


def is_internal_file(filename: str) -> bool:
    """True for asyncio's and tidal's machinery, which creation sites and stacks skip."""
    if filename.startswith(_ASYNCIO_DIR):
        return True
    if filename.startswith(_TIDAL_DIR):
        return os.path.basename(filename) not in _USER_FILES_IN_TIDAL
    return filename.startswith("<frozen ")


# filename -> is_internal_file(filename), cached. Keyed by the filename string (whose hash is
# cached in the string) rather than the code object: hashing a code object hashes its constants
# again on every lookup, which made creation-site lookups cost most of a task's creation.
_internal_code: dict[str, bool] = {}


def caller_code_line(skip: int = 1) -> tuple[Any, int] | None:
    """Like ``caller_site`` but returns ``(code, line)``, formatted later (cheaper per call)."""
    frame: Any = sys._getframe(skip)
    cache = _internal_code
    for _ in range(40):
        if frame is None:
            return None
        code = frame.f_code
        filename = code.co_filename
        internal = cache.get(filename)
        if internal is None:
            internal = cache[filename] = is_internal_file(filename)
        if not internal:
            return (code, frame.f_lineno)
        frame = frame.f_back
    return None


def caller_site(skip: int = 1) -> str | None:
    """Return ``file:line`` of the nearest frame outside asyncio and tidal, or None."""
    frame: Any = sys._getframe(skip)
    cache = _internal_code
    for _ in range(40):
        if frame is None:
            return None
        code = frame.f_code
        filename = code.co_filename
        internal = cache.get(filename)
        if internal is None:
            internal = cache[filename] = is_internal_file(filename)
        if not internal:
            return f"{code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class TaskRecord:
    """What accounting knows about one task. Read it through ``TaskAccounting.record``."""

    __slots__ = ("created", "created_at", "parent_id", "parent_name", "running", "steps")

    def __init__(
        self, created: float | None, created_at: str | None, parent: asyncio.Task[Any] | None
    ) -> None:
        self.created = created  # perf_counter() at creation; None if created before tracking
        self.created_at = created_at  # "file:line" of the code that created it, if known
        self.parent_id = id(parent) if parent is not None else None  # the creating task
        self.parent_name = parent.get_name() if parent is not None else None
        self.steps = 0  # steps run since tracking began
        self.running = 0.0  # seconds spent in those steps


class TaskAccounting:
    """Observer keeping a ``TaskRecord`` per task of one loop (see ``track``)."""

    def __init__(self) -> None:
        self._records: weakref.WeakKeyDictionary[Any, TaskRecord] = weakref.WeakKeyDictionary()
        self.started = perf_counter()

    def record(self, task: Any) -> TaskRecord | None:
        """Return the record of ``task``, or None if it has not been seen."""
        return self._records.get(task)

    # hook methods (registered by Hooks.add_observer)

    def task_spawned(self, task: Any, parent: Any) -> None:
        self._records[task] = TaskRecord(perf_counter(), caller_site(2), parent)

    def after_task_step(self, task: Any, started: float, duration: float) -> None:
        record = self._records.get(task)
        if record is None:
            record = self._records[task] = TaskRecord(None, None, None)
        record.steps += 1
        record.running += duration


_accounting: weakref.WeakKeyDictionary[Any, TaskAccounting] = weakref.WeakKeyDictionary()
_accounting_lock = threading.Lock()


def accounting_for(loop: object) -> TaskAccounting | None:
    """Return the accounting running on ``loop``, or None."""
    try:
        return _accounting.get(loop)
    except TypeError:  # not weak-referenceable: never tracked
        return None


def track(loop: object) -> TaskAccounting:
    """Start per-task accounting on a tidal loop (idempotent); the task tree shows its data.

    From then on every task records its creator, creation site and time, and its steps and
    running time. Tasks created earlier get records from their next step (without creator).

    Raises:
        TypeError: ``loop`` is not a tidal loop.
    """
    with _accounting_lock:
        existing = _accounting.get(loop)
        if existing is not None:
            return existing
        accounting = TaskAccounting()
        hooks_for(loop).add_observer(accounting)
        _accounting[loop] = accounting
        return accounting


def untrack(loop: object) -> None:
    """Stop the accounting that ``track`` started on ``loop`` (no error if there is none)."""
    with _accounting_lock:
        accounting = _accounting.pop(loop, None)
    if accounting is not None:
        hooks_for(loop).remove_observer(accounting)


# -- duration statistics ------------------------------------------------------------------


@dataclass(frozen=True)
class DurationStats:
    """Durations of the steps of one coroutine, or of the runs of one callback (seconds)."""

    name: str  # coroutine or callback qualified name
    count: int
    total: float
    max: float
    slow: int  # how many took at least the collector's slow threshold

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class _Durations:
    __slots__ = ("count", "max", "slow", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.slow = 0


class Stats:
    """Observer: duration statistics per coroutine (task steps) and per callback.

    Steps are grouped by the qualified name of the task's coroutine function, callbacks by the
    callback's qualified name. A step or callback lasting ``slow_duration`` or more is counted
    and logged on the "asyncio" logger as "Executing <task or handle> took N seconds".

    Args:
        slow_duration: seconds; None turns the slow log off (the count is kept either way).
    """

    def __init__(self, slow_duration: float | None = DEFAULT_SLOW_DURATION) -> None:
        self.slow_duration = slow_duration
        self._tasks: dict[str, _Durations] = {}
        self._callbacks: dict[str, _Durations] = {}

    def _add(self, table: dict[str, _Durations], key: str, duration: float, what: Any) -> None:
        entry = table.get(key)
        if entry is None:
            entry = table[key] = _Durations()
        entry.count += 1
        entry.total += duration
        if duration > entry.max:
            entry.max = duration
        threshold = self.slow_duration
        if threshold is not None and duration >= threshold:
            entry.slow += 1
            logger.warning("Executing %s took %.3f seconds", what, duration)

    # hook methods

    def after_task_step(self, task: Any, started: float, duration: float) -> None:
        coro = task.get_coro()
        key = getattr(coro, "__qualname__", None) or type(coro).__name__
        self._add(self._tasks, key, duration, task)

    def callback_ran(self, handle: Any, started: float, duration: float) -> None:
        self._add(self._callbacks, callback_name(handle._callback), duration, handle)

    # reading

    def tasks(self) -> list[DurationStats]:
        """Step durations per coroutine, most total time first."""
        return _freeze(self._tasks)

    def callbacks(self) -> list[DurationStats]:
        """Run durations per callback, most total time first."""
        return _freeze(self._callbacks)

    def format(self, limit: int = 20) -> str:
        """A text table of the ``limit`` heaviest coroutines and callbacks."""
        lines = []
        for title, rows in (("task steps", self.tasks()), ("callbacks", self.callbacks())):
            lines.append(f"{title}: {'(none)' if not rows else ''}".rstrip())
            if rows:
                lines.append(
                    f"  {'name':<40} {'count':>7} {'total ms':>10} {'mean ms':>9} "
                    f"{'max ms':>9} {'slow':>5}"
                )
            for row in rows[:limit]:
                name = row.name if len(row.name) <= 40 else "…" + row.name[-39:]
                lines.append(
                    f"  {name:<40} {row.count:>7} {row.total * 1e3:>10.3f} "
                    f"{row.mean * 1e3:>9.3f} {row.max * 1e3:>9.3f} {row.slow:>5}"
                )
        return "\n".join(lines) + "\n"


def _freeze(table: dict[str, _Durations]) -> list[DurationStats]:
    rows = [DurationStats(k, v.count, v.total, v.max, v.slow) for k, v in list(table.items())]
    rows.sort(key=lambda row: row.total, reverse=True)
    return rows


def callback_name(callback: Any) -> str:
    """A stable, readable name for a callback: its qualified name, unwrapping partials."""
    inner = getattr(callback, "func", None)
    if inner is not None:
        callback = inner
    name = getattr(callback, "__qualname__", None)
    if name is None:
        owner = getattr(callback, "__self__", None)
        method = getattr(callback, "__name__", None)
        if owner is not None and method is not None:
            return f"{type(owner).__qualname__}.{method}"
        return type(callback).__qualname__
    return str(name)


@contextmanager
def collect(
    loop: object, *, slow_duration: float | None = DEFAULT_SLOW_DURATION
) -> Iterator[Stats]:
    """Collect ``Stats`` on a tidal loop for the duration of the ``with`` block.

    Raises:
        TypeError: ``loop`` is not a tidal loop.
    """
    hooks: Hooks = hooks_for(loop)
    stats = Stats(slow_duration)
    hooks.add_observer(stats)
    try:
        yield stats
    finally:
        hooks.remove_observer(stats)
