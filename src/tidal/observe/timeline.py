"""The timeline recorder and its exports: Chrome/Perfetto trace JSON and an HTML page.

Owns: ``Recorder`` (records task steps, callbacks, timers, I/O waits and executor jobs into
bounded rings, one per loop), ``record`` (the context manager behind ``tidal.trace.record``),
``Recording`` (the result: lanes, events, exports).
Not here: drawing the HTML page (timeline_html.py), the hook registry and when hooks fire
(hooks.py), the await-chain walk of snapshots (tree.py; the recorder has its own cheaper walk,
below).

How recording stays cheap. While a recorder is the only thing listening per handle, phase 4
of the loop is ``_LoopTrack.run_ready``: per handle it reads the clock once and appends three
plain values to the loop's ring (a flat list; no tuple per record, so the cyclic GC has nothing
new to walk); the end of a batch appends three more. A handle's duration is the next record's
time minus its own, so it includes the few hundred nanoseconds of bookkeeping before the next
handle. Which lane a record belongs to, whether a task was waiting on a future or only
scheduled before a step, names and labels are all worked out in ``stop()``.

The one thing that cannot wait until then is *where* a task was parked: by the time the
recording stops the coroutine has moved on. The walk down the await chain happens when a task
resumes from a future (before the step runs, the chain is still the one it parked on), and only
when the wait may have lasted ``chain_min_wait`` seconds or more (default 100 us): a task's
previous resume is at least as old as the start of its wait, so a resume closer than that to
the previous one ended a shorter wait. Shorter waits still show what they waited on (the type of
the future the wake-up was called with) and say that the chain was not sampled. A task still
parked when recording stops has its chain walked then.

Raw records, RECORD_SLOTS (3) values each, in a loop's ring (times are perf_counter seconds):

    (step function, id(task), started)       a task's step ran (it was scheduled, not waiting)
    (future type, id(task), started)         a task woke from a short wait on such a future
    (_Chain key, id(task), started)          a task woke from a long wait; where it waited
    (function or qualname, handle type, started)   a plain callback or timer ran
    (None, None, ended)                      the batch ended
    (exit tag, id(task), raw name)           the step just recorded finished the task; after
    (error, where, None)                     the "failed" tag: the exception as text, and the
                                             frames it was raised through (innermost last)
    (SPAWN, id(task), at), (raw name, coroutine qualname, id(parent) or 0), (code, line, None)
    (IO, started, waited), (events, None, None)

Tasks are known by id: a task's spawn record starts its lane, so an id reused after a task was
collected starts a new lane. Tasks alive when recording starts get spawn records then (marked
as listed, ``True`` in the last slot: a task listed that way whose own spawn record follows, as a
C Task's does when recording starts from its creation, keeps the one lane).

Executor jobs come into the recorder (not a loop's ring) from the worker threads of tidal's own
pool, or from the done callbacks of jobs sent to any other executor (those have no thread: they
go on "other executor" lanes), with the loop they were submitted from and when. The task whose
step was running at that moment on that loop submitted the job (``asyncio.to_thread`` and
``run_in_executor`` from a task), which links the task's lane and the job's lane.

Ring buffer: cut back to its newest ``capacity`` records, just after a batch's end, whenever it
reaches twice that (checked once per batch), and once more when recording stops;
``Recording.dropped`` counts the records cut.

References: the ring holds ids, times, names, types and functions, never a task or a handle, so
recording keeps nothing alive; ``stop()`` asks the loop for its live tasks to finish the picture
(names, where they wait). A ``Recording`` holds only numbers and strings.

Events of a ``Recording`` are tuples, in time order. Shapes:

    (STEP, lane, started, duration, chain)    chain: id in Recording.chains of where the task
                                              was parked after the step; READY_CHAIN when it
                                              was only scheduled again (a bare yield); -1 when
                                              nothing followed (it finished, or the ring ends)
    (SPAWN, lane, at, parent_lane)            parent_lane -1 when no task created it
    (EXIT, lane, at, state)                   state: "finished", "cancelled" or "failed"
    (CALLBACK, lane, started, duration, label, is_timer)   lane: the loop's lane
    (IO_WAIT, lane, started, waited, events)
    (JOB, lane, started, duration, label, failed, task_lane, submitted)
                                              lane: the worker thread's lane; task_lane: the
                                              task that submitted it, or -1
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import functools
import json
import os
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Any, Final

from .. import futures as _futures
from ..core.errors import FATAL_EXCEPTIONS
from ..core.scheduler import Scheduler
from ..tasks import Task as _Task
from .hooks import ExecutorJob, add_loop_watcher, hooks_for, remove_loop_watcher, task_of_callback
from .stats import callback_name, caller_code_line
from .tree import short_path

# Records kept at most per loop (and executor jobs at most); the ring grows to twice this
# between cuts. A record is a small tuple, but it keeps what it names alive while recording.
DEFAULT_CAPACITY: Final = 200_000

# Seconds: the await chain is walked for waits that may be this long or longer (see above).
DEFAULT_CHAIN_MIN_WAIT: Final = 100e-6

STEP: Final = 0
SPAWN: Final = 1
EXIT: Final = 2
CALLBACK: Final = 3
IO_WAIT: Final = 4
JOB: Final = 5

READY_CHAIN: Final = -2  # STEP chain value: parked on nothing, runs again next turn
NO_CHAIN: Final = -1  # STEP chain value: nothing known after this step
_CoroutineType = types.CoroutineType
_MethodType = types.MethodType
_BuiltinMethodType = types.BuiltinMethodType
_FUTURE_AWAIT_CODE: Final = _futures.FutureMixin.__await__.__code__
_MAX_CHAIN: Final = 32
_UNSAMPLED: Final = "unsampled"  # first item of a chain key holding only the leaf

# The functions of a bound-method callback that resume a task after it waited on a future:
# tidal's Task._wakeup and the pure-Python asyncio Task's (name-mangled) __wakeup. The C Task's
# is a builtin method named "task_wakeup".
_WAKEUP_FUNCTIONS: Final = frozenset(
    fn
    for fn in (
        _Task._wakeup,
        getattr(getattr(asyncio.tasks, "_PyTask", None), "_Task__wakeup", None),
    )
    if fn is not None
)
_C_WAKEUP_NAME: Final = "task_wakeup"
# Every function of a bound-method callback that steps or wakes a task (tidal's, pure-Python
# asyncio's); the C Task's are not bound methods and go through ``_LoopTrack.note``.
_TASK_FUNCTIONS: Final = frozenset(
    fn
    for fn in (
        _Task._step,
        _Task._wakeup,
        *(
            getattr(getattr(asyncio.tasks, "_PyTask", None), name, None)
            for name in ("_Task__step", "_Task__wakeup")
        ),
    )
    if fn is not None
)
_TASK_STEP_CODES: Final = frozenset(
    code for fn in _TASK_FUNCTIONS if (code := getattr(fn, "__code__", None)) is not None
)
_STEP_MARK: Final = "step"  # record tag of a step of a task whose step is no bound method
_FunctionType = types.FunctionType
_PENDING: Final = _futures.PENDING
_CANCELLED: Final = _futures.CANCELLED  # the same string as asyncio's pure-Python futures use
RECORD_SLOTS: Final = 3  # items per raw record in a ring
# The lanes of jobs sent to executors tidal does not own (a process pool, Dask): "other
# executor", "other executor 2", ... as many as there were jobs in flight at once.
OTHER_EXECUTOR_LANE: Final = "other executor"

# Qualified names of coroutines the loop runs as tasks for itself (asyncio's and tidal's
# ``asyncio.run`` epilogue, a subprocess's pipe connector): their lanes are marked ``internal``
# and the HTML page folds them away until asked.
LOOP_INTERNAL_COROUTINES: Final = frozenset(
    {
        "EventLoop.shutdown_asyncgens",
        "EventLoop.shutdown_default_executor",
        "BaseEventLoop.shutdown_asyncgens",
        "BaseEventLoop.shutdown_default_executor",
        "SubprocessTransport._connect_pipes",
        "BaseSubprocessTransport._connect_pipes",
    }
)

# The last line of a chain description when the task waits for other tasks (a task, a gather,
# a TaskGroup's children, asyncio.wait): these waits get the "waiting-task" state.
TASK_WAIT_PREFIXES: Final = ("task ", "gather of ", "children of a TaskGroup", "tasks of asyncio")
_TASKGROUP_WAIT_CODES: Final = frozenset({"__aexit__", "_aexit"})  # in asyncio/taskgroups.py
_ASYNCIO_WAIT_CODES: Final = frozenset({"_wait"})  # in asyncio/tasks.py: asyncio.wait's body
_ERROR_FRAMES: Final = 8  # frames of a failed task's traceback kept, innermost last
_ERROR_TEXT: Final = 300  # characters of a failed task's exception message kept


@dataclass
class Lane:
    """One row of the timeline: a task, a loop's own work, or an executor thread.

    ``kind`` is "task", "loop" or "thread".
    """

    id: int
    kind: str
    name: str
    detail: str = ""  # the coroutine's qualified name, or the loop's repr
    created_at: str | None = None  # "file:line" that created the task, when known
    parent: int = -1  # the lane of the task that created this one
    # How the task stands at the end: "finished", "failed", "cancelled", "pending" (alive when
    # recording stopped) or "unknown" (its exit fell out of the ring); "" for loop and threads.
    state: str = ""
    error: str = ""  # a failed task's exception and the frames it was raised through
    internal: bool = False  # a task the loop runs for itself (see LOOP_INTERNAL_COROUTINES)
    # Lanes tied by executor jobs: a task's worker threads, or a thread's submitting tasks.
    linked: list[int] = field(default_factory=list)


class _Chain(tuple):  # type: ignore[type-arg]
    """Record tag: a task resumed from a long wait; the tuple is its chain key."""

    __slots__ = ()


class _Tag:
    """A record tag that is neither a callback label nor a type (see the module docstring)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<record tag {self.name}>"


_SPAWN_TAG: Final = _Tag("spawn")  # 3 records: see _LoopTrack.add_task
_IO_TAG: Final = _Tag("io wait")  # 2 records: see _LoopTrack.after_io_wait
_EXIT_TAGS: Final = {state: _Tag(state) for state in ("finished", "cancelled", "failed")}
_EXIT_STATE: Final = {tag: state for state, tag in _EXIT_TAGS.items()}
_GROUP_SIZE: Final = {_SPAWN_TAG: 3, _IO_TAG: 2}  # records in a tag's group; others: 1


class _LoopTrack:
    """The recording of one loop: its ring, and the batch loop phase 4 hands over.

    Registered with the loop's hooks as a batch recorder (``Hooks.add_recorder``) and as the
    ``task_spawned`` and ``after_io_wait`` observer.
    """

    __slots__ = (
        "capacity",
        "cut",
        "job_finished",
        "limit",
        "loop",
        "min_wait",
        "name",
        "resumed",
        "ring",
    )

    def __init__(
        self,
        loop: Scheduler,
        name: str,
        capacity: int,
        min_wait: float,
        on_job: Callable[[str, ExecutorJob], None],
    ) -> None:
        self.loop = loop
        self.name = name  # the loop lane's name, "loop N"
        self.ring: list[Any] = []  # raw records, RECORD_SLOTS items each (module docstring)
        self.cut = 0  # records cut from the front of the ring so far
        self.capacity = capacity
        self.limit = 2 * RECORD_SLOTS * capacity  # ring length that triggers a cut
        # id(task) -> when it last resumed from a future. Ids, not tasks: a stale entry left by
        # a collected task whose id is reused is older than the new task, so it can only make
        # the new task's wait look shorter than this bound, never hide a long one.
        self.resumed: dict[int, float] = {}
        self.min_wait = min_wait
        # The executor_job_finished observer for this loop: ``on_job`` told which loop it was.
        self.job_finished: Callable[[ExecutorJob], None] = functools.partial(on_job, name)

    # -- phase 4 (hooks.py hands the batch over while we are the only per-handle listener) --

    def run_ready(self, count: int) -> None:
        """Run ``count`` ready handles like the scheduler does, recording each one.

        Fast paths, in order: a tidal task's step or wake-up (a bound method of Task), any
        other bound method, a plain function; everything else goes through ``note``.
        """
        # Locals for what every handle uses; a batch is often a single handle, so the rest
        # stays global.
        loop: Any = self.loop
        popleft = loop._ready.popleft
        ring = self.ring
        append = ring.append
        clock = perf_counter
        method_type = _MethodType
        task_functions = _TASK_FUNCTIONS
        pending = _PENDING
        try:
            for _ in range(count):
                handle = popleft()
                if handle._cancelled:
                    continue
                callback = handle._callback
                now = clock()
                task: Any = None
                if type(callback) is method_type:
                    func = callback.__func__
                    if func in task_functions:
                        task = callback.__self__
                        if func in _WAKEUP_FUNCTIONS:
                            # Resumed from a future: walk the chain only if the wait was long.
                            key = id(task)
                            resumed = self.resumed
                            if now - resumed.get(key, -1.0) >= self.min_wait:
                                append(_Chain(_chain_key(task)))
                            else:
                                args = handle._args
                                append(type(args[0]) if args else _NoFuture)
                            resumed[key] = now
                            append(key)
                        else:
                            append(func)
                            append(id(task))
                    else:
                        append(func)
                        append(type(handle))
                    append(now)
                elif type(callback) is _FunctionType:
                    append(callback.__qualname__)
                    append(type(handle))
                    append(now)
                else:
                    task = self.note(handle, callback, now)
                try:
                    handle._context.run(callback, *handle._args)
                except FATAL_EXCEPTIONS:
                    raise
                except BaseException as exc:
                    loop._report_handle_error(handle, exc)
                if task is not None and task._state != pending:  # (C Tasks: an equal str)
                    self.task_done(task)  # once per task
        finally:
            append(None)
            append(None)
            append(clock())
            if len(ring) >= self.limit:
                self._cut()

    def note(self, handle: Any, callback: Any, started: float) -> Any:
        """``handle`` starts running at ``started``; return the task it steps, or None.

        The general form of what ``run_ready`` does inline (the observed phase 4 calls it).
        """
        ring = self.ring
        task = _task_of(callback)
        if task is None:
            if type(callback) is _MethodType:
                ring.append(callback.__func__)
            else:
                label = getattr(callback, "__qualname__", None)
                ring.append(label if isinstance(label, str) else callback_name(callback))
            ring.append(type(handle))
        elif _is_wakeup(callback):
            key = id(task)
            if started - self.resumed.get(key, -1.0) >= self.min_wait:
                ring.append(_Chain(_chain_key(task)))
            else:
                args = handle._args
                ring.append(type(args[0]) if args else _NoFuture)
            self.resumed[key] = started
            ring.append(key)
        else:
            ring.append(_STEP_MARK)
            ring.append(id(task))
        ring.append(started)
        return task

    def task_done(self, task: Any) -> None:
        """The step just noted finished ``task``: (exit tag, id, name as the task holds it),
        and for a failed task (error, where, None): text, so the exception is not kept."""
        error = None
        if task._state == _CANCELLED:
            state = "cancelled"
        else:
            error = getattr(task, "_exception", None)  # exception() would mark it retrieved
            state = "finished" if error is None else "failed"
        name = task._name if type(task) is _Task else task.get_name()
        self.ring.extend((_EXIT_TAGS[state], id(task), name))
        if error is not None:
            self.ring.extend((*_describe_error(error), None))

    def end_batch(self, ended: float) -> None:
        """The batch that the last ``note`` belonged to ended at ``ended``."""
        self.ring.extend((None, None, ended))
        if len(self.ring) >= self.limit:
            self._cut()

    def _cut(self) -> None:
        """Drop the oldest records down to ``capacity``, cutting just after a batch's end (so
        never inside a group of records)."""
        ring = self.ring
        end = len(ring)
        at = max(0, end - self.capacity * RECORD_SLOTS)
        while at < end and ring[at] is not None:
            at += RECORD_SLOTS
        if at < end:
            del ring[: at + RECORD_SLOTS]
            self.cut += (at + RECORD_SLOTS) // RECORD_SLOTS
        if len(self.resumed) > 4 * self.capacity:
            self.resumed.clear()  # ids only; forgetting them walks a few more chains

    # -- hook observers ----------------------------------------------------------------------

    def task_spawned(self, task: Any, parent: Any) -> None:
        # Frames up from caller_code_line: this method, Hooks.emit("task_spawned"),
        # hooks._on_task_spawned, then Task.__init__ (the only caller of that emit); starting
        # the walk for a frame outside tidal there saves materialising two frame objects.
        self.add_task(task, parent, caller_code_line(4))

    def add_task(
        self, task: Any, parent: Any, created_at: tuple[Any, int] | None, listed: bool = False
    ) -> None:
        """Start a lane for ``task`` (at its creation, or ``listed`` when recording starts).

        Records: (SPAWN, id, at), (name, coroutine qualname, id(parent) or 0), (code, line,
        listed or None): no tuple is kept, so the ring gives the cyclic GC nothing to walk.
        """
        name = task._name if type(task) is _Task else task.get_name()
        detail = getattr(task.get_coro(), "__qualname__", None) or ""
        code, line = created_at if created_at is not None else (None, 0)
        self.ring.extend(
            (
                _SPAWN_TAG,
                id(task),
                perf_counter(),
                name,
                detail,
                id(parent) if parent is not None else 0,
                code,
                line,
                True if listed else None,
            )
        )

    def after_io_wait(self, started: float, waited: float, events: int) -> None:
        self.ring.extend((_IO_TAG, started, waited, events, None, None))


class Recorder:
    """Records a timeline of the loops it is attached to. Use ``record()`` rather than this.

    Args:
        capacity: records kept at most per loop (and executor jobs at most); older ones are
            dropped first.
        chain_min_wait: seconds; await chains are walked for waits that may be at least this
            long (0 walks every one, the slowest and most detailed).

    Raises:
        ValueError: ``capacity`` is not positive, or ``chain_min_wait`` is negative.
    """

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, chain_min_wait: float = DEFAULT_CHAIN_MIN_WAIT
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be a positive number of events, got {capacity}")
        if not chain_min_wait >= 0:
            raise ValueError(f"chain_min_wait must be >= 0 seconds, got {chain_min_wait!r}")
        self.capacity = capacity
        self.chain_min_wait = float(chain_min_wait)
        self._tracks: list[_LoopTrack] = []
        self._attached: weakref.WeakSet[Scheduler] = weakref.WeakSet()
        self._jobs: list[_JobEntry] = []  # from worker threads
        self._jobs_cut = 0
        self._lock = threading.Lock()  # _jobs (worker threads) and _tracks
        self.started = 0.0
        self.stopped: float | None = None
        self._wall_started = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Note the start time (the rings are made per loop, at ``attach``)."""
        self.started = perf_counter()
        self._wall_started = time.time()

    def attach(self, loop: Scheduler) -> None:
        """Record ``loop`` from now on (idempotent)."""
        if loop in self._attached:
            return
        self._attached.add(loop)
        with self._lock:
            name = f"loop {len(self._tracks) + 1}"
            track = _LoopTrack(
                loop, name, self.capacity, self.chain_min_wait, self.executor_job_finished
            )
            self._tracks.append(track)
        hooks_for(loop).add_recorder(track, self._observers(track))
        running: Any = loop
        for task in asyncio.all_tasks(running):  # tasks that exist already get their lanes now
            track.add_task(task, None, None, listed=True)

    def stop(self) -> Recording:
        """Detach from every loop and return the recording; every reference is released."""
        with self._lock:
            tracks, self._tracks = self._tracks, []
            jobs, self._jobs = self._jobs, []
        for track in tracks:
            loop = track.loop
            hooks = loop._hooks
            if hooks is not None:
                hooks.remove_recorder(track, self._observers(track))
        self._attached = weakref.WeakSet()
        self.stopped = perf_counter()
        builder = _Builder(self.stopped)
        for track in tracks:
            if len(track.ring) > track.capacity * RECORD_SLOTS:
                track._cut()
            builder.add_track(track)
            track.ring = []  # drop the handles and tasks now, not when the track goes
            track.resumed = {}
        builder.add_jobs(jobs[-self.capacity :])
        dropped = self._jobs_cut + max(0, len(jobs) - self.capacity)
        dropped += sum(track.cut for track in tracks)
        return builder.recording(self.started, self.stopped, self._wall_started, dropped)

    def _observers(self, track: _LoopTrack) -> tuple[tuple[str, Callable[..., Any]], ...]:
        return (
            ("task_spawned", track.task_spawned),
            ("after_io_wait", track.after_io_wait),
            ("executor_job_finished", track.job_finished),
        )

    # -- executor jobs (worker threads) ------------------------------------------------------

    def executor_job_finished(self, loop_name: str, job: ExecutorJob) -> None:
        """``executor_job_finished`` of the loop whose lane is ``loop_name`` (worker threads)."""
        started = job.started if job.started is not None else job.submitted
        finished = job.finished if job.finished is not None else perf_counter()
        label = _job_label(job)
        if job.error is not None:
            label += "\nraised " + _describe_error(job.error)[0]
        entry = (
            loop_name,
            job.thread,
            job.submitted,
            started,
            finished - started,
            label,
            job.error is not None,
        )
        with self._lock:
            self._jobs.append(entry)
            if len(self._jobs) >= 2 * self.capacity:
                extra = len(self._jobs) - self.capacity
                del self._jobs[:extra]
                self._jobs_cut += extra


class _Builder:
    """Turns raw records into lanes and events (``Recorder.stop``)."""

    def __init__(self, stopped: float) -> None:
        self.stopped = stopped
        # [kind, name, detail, created_at, parent, state, error] per lane
        self.rows: list[list[Any]] = []
        self.events: list[tuple[Any, ...]] = []
        self.chains: dict[tuple[Any, ...], int] = {}
        self.thread_lane: dict[str, int] = {}
        # loop lane name -> (starts, event indices) of its task steps, in time order
        self.steps: dict[str, tuple[list[float], list[int]]] = {}
        self.links: dict[int, list[int]] = {}  # lane -> lanes tied to it by executor jobs

    def _new_lane(self, row: list[Any]) -> int:
        self.rows.append(row)
        return len(self.rows) - 1

    def _chain_id(self, key: tuple[Any, ...]) -> int:
        index = self.chains.get(key)
        if index is None:
            index = self.chains[key] = len(self.chains)
        return index

    def add_track(self, track: _LoopTrack) -> None:
        events = self.events
        rows = self.rows
        loop_lane = self._new_lane(["loop", track.name, repr(track.loop), None, -1, "", ""])
        lanes: dict[int, int] = {}  # id(task) -> its lane, from its spawn record (ids get reused)
        task_lanes: list[tuple[int, int]] = []  # (id(task), lane) of every task lane, in order
        listed: set[int] = set()  # lanes of tasks listed at the start, not stepped yet
        last_step: dict[int, int] = {}  # task lane -> index in events of its newest STEP
        spawned: dict[int, int] = {}  # task lane -> index of its SPAWN, until its first step
        exits: dict[int, str] = {}  # task lane -> final state
        step_starts: list[float] = []
        step_indices: list[int] = []
        open_index = -1  # the STEP or CALLBACK event whose end is the next record's time

        def close(ended: float) -> None:
            event = events[open_index]
            events[open_index] = (*event[:3], ended - event[2], *event[4:])

        ring = track.ring
        index = 0
        end = len(ring) - RECORD_SLOTS + 1
        while index < end:
            tag, what, at = ring[index], ring[index + 1], ring[index + 2]
            kind = type(tag)
            index += RECORD_SLOTS
            if tag is None:  # the batch ended
                if open_index >= 0:
                    close(at)
                    open_index = -1
            elif kind is _Tag:
                if tag is _SPAWN_TAG:
                    name, detail, parent, code, line, is_listing = ring[index : index + 6]
                    index += 2 * RECORD_SLOTS
                    created_at = (code, line) if code is not None else None
                    parent_lane = lanes.get(parent, -1) if parent else -1
                    lane = lanes.get(what, -1)
                    if lane in listed and not is_listing:
                        # Listed when recording started, then reported as created (a C Task
                        # whose creation started the recording): one task, one lane.
                        listed.discard(lane)
                        rows[lane][3:5] = [created_at, parent_lane]
                        continue
                    row = ["task", name, detail, created_at, parent_lane, "", ""]
                    lane = lanes[what] = self._new_lane(row)
                    task_lanes.append((what, lane))
                    if is_listing:
                        listed.add(lane)
                    spawned[lane] = len(events)
                    events.append((SPAWN, lane, at, parent_lane))
                elif tag is _IO_TAG:  # (IO, started, waited), (events, None, None)
                    count = ring[index]
                    index += RECORD_SLOTS
                    events.append((IO_WAIT, loop_lane, what, at, count))
                else:  # a task finished in the step recorded last
                    lane = lanes.get(what, -1)
                    state = _EXIT_STATE[tag]
                    if state == "failed":  # (error, where, None) follows
                        error, where = ring[index], ring[index + 1]
                        index += RECORD_SLOTS
                        if lane >= 0:
                            rows[lane][6] = f"{error}\n{where}" if where else error
                    if lane >= 0:
                        exits[lane] = state
                        rows[lane][1] = at
            else:  # a handle started: it ends where the next one starts
                if open_index >= 0:
                    close(at)
                task_step = tag is _STEP_MARK or kind is _Chain or isinstance(tag, type)
                if not task_step:
                    try:
                        task_step = tag in _TASK_FUNCTIONS
                    except TypeError:  # an unhashable label: not a task's
                        task_step = False
                if not task_step:
                    label = tag if isinstance(tag, str) else callback_name(tag)
                    is_timer = isinstance(what, type) and issubclass(what, asyncio.TimerHandle)
                    open_index = len(events)
                    events.append((CALLBACK, loop_lane, at, 0.0, label, is_timer))
                    continue
                lane = lanes.get(what, -1)
                if lane < 0:  # a task that existed before recording and was not listed
                    row = ["task", "a task", "", None, -1, "", ""]
                    lane = lanes[what] = self._new_lane(row)
                    task_lanes.append((what, lane))
                listed.discard(lane)
                # What the task did between its previous step and this one.
                if kind is _Chain:
                    chain = self._chain_id(tuple(tag))
                elif isinstance(tag, type):
                    chain = self._chain_id((_UNSAMPLED, *_leaf_of_type(tag)))
                elif tag in _WAKEUP_FUNCTIONS:
                    chain = self._chain_id((_UNSAMPLED, "future", "a future"))
                else:
                    chain = READY_CHAIN
                previous = last_step.get(lane)
                if previous is not None:
                    event = events[previous]
                    events[previous] = (*event[:4], chain)
                spawned.pop(lane, None)
                last_step[lane] = open_index = len(events)
                step_starts.append(at)
                step_indices.append(open_index)
                events.append((STEP, lane, at, 0.0, NO_CHAIN))
        if open_index >= 0:
            close(self.stopped)
        self.steps[track.name] = (step_starts, step_indices)

        # How each task stands at the end: finished, parked (where), or scheduled.
        live: dict[int, Any] = {}
        if not track.loop.is_closed():
            running: Any = track.loop
            live = {id(task): task for task in asyncio.all_tasks(running)}
        for ident, lane in task_lanes:
            last = last_step.get(lane)
            final = exits.get(lane)
            # Only the newest lane of an id can be a live task (older ones were collected).
            task = live.get(ident) if lanes.get(ident) == lane else None
            if final is not None:
                rows[lane][5] = final
                if last is not None:
                    _, _, started, duration, _ = events[last]
                    at = started + duration
                elif lane in spawned:  # finished in an eager first step
                    at = events[spawned[lane]][2]
                else:
                    continue
                events.append((EXIT, lane, at, final))
            elif task is not None:
                rows[lane][5] = "pending"
                rows[lane][1] = task.get_name()  # its name now, as the program left it
                if last is not None:
                    if getattr(task, "_fut_waiter", None) is None:
                        chain = READY_CHAIN
                    else:
                        chain = self._chain_id(_chain_key(task))
                    event = events[last]
                    events[last] = (*event[:4], chain)
            else:
                rows[lane][5] = "unknown"

    def add_jobs(self, jobs: list[_JobEntry]) -> None:
        """Executor jobs: a lane per worker thread, each job tied to the task that submitted it
        (the task whose step ran on the job's loop when the job was submitted)."""
        events = self.events
        busy_until: list[float] = []  # per "other executor" lane: when its last job ended
        for loop_name, thread, submitted, started, duration, label, failed in sorted(
            jobs, key=lambda job: job[3]
        ):
            if thread is None:
                # Not on a thread of ours: jobs in flight at once go on lanes of their own,
                # the first one free, so a lane's segments never overlap.
                slot = next((n for n, end in enumerate(busy_until) if end <= started), None)
                if slot is None:
                    slot = len(busy_until)
                    busy_until.append(0.0)
                busy_until[slot] = started + duration
                thread = OTHER_EXECUTOR_LANE + (f" {slot + 1}" if slot else "")
                label += "\n(in flight from submission to completion; not a thread of tidal's)"
            lane = self.thread_lane.get(thread)
            if lane is None:
                row = ["thread", thread, "", None, -1, "", ""]
                lane = self.thread_lane[thread] = self._new_lane(row)
            task_lane = -1
            starts, indices = self.steps.get(loop_name, ((), ()))
            at = bisect.bisect_right(starts, submitted) - 1
            if at >= 0:
                _, step_lane, step_started, step_duration, _ = events[indices[at]]
                if submitted <= step_started + step_duration:
                    task_lane = step_lane
                    for one, other in ((task_lane, lane), (lane, task_lane)):
                        tied = self.links.setdefault(one, [])
                        if other not in tied:
                            tied.append(other)
            events.append((JOB, lane, started, duration, label, failed, task_lane, submitted))

    def recording(
        self, started: float, stopped: float, wall_started: float, dropped: int
    ) -> Recording:
        chains: list[list[str]] = [[] for _ in self.chains]
        for key, index in self.chains.items():
            chains[index] = _describe_chain(key)
        events = sorted(self.events, key=_event_time)  # stable: a lane's order is kept
        return Recording(
            lanes=[_lane(index, row, self.links.get(index)) for index, row in enumerate(self.rows)],
            events=events,
            chains=chains,
            started=started,
            stopped=stopped,
            wall_started=wall_started,
            dropped=dropped,
        )


def _event_time(event: tuple[Any, ...]) -> float:
    return float(event[2])


def _task_of(callback: Any) -> Any:
    """The task a handle's callback steps or wakes, or None (a plain callback)."""
    if type(callback) is _MethodType:
        owner = callback.__self__
        if type(owner) is _Task:
            return owner if callback.__func__ in (_Task._step, _Task._wakeup) else None
    return task_of_callback(callback)


def _is_wakeup(callback: Any) -> bool:
    if type(callback) is _MethodType:
        return callback.__func__ in _WAKEUP_FUNCTIONS
    return getattr(callback, "__name__", None) == _C_WAKEUP_NAME


class _NoFuture:
    """Stands for the future of a wake-up handle that had no arguments (never expected)."""


def _leaf_of_type(kind: type) -> tuple[Any, ...]:
    """The end of a chain key for a future of type ``kind`` (short waits: type only)."""
    if kind is _NoFuture:
        return ("future", "a future")
    if issubclass(kind, asyncio.Task):
        return ("task", "(a task)")
    if kind.__name__ == "_GatheringFuture":
        return ("gather", "futures")
    return ("future", kind.__qualname__)


def _leaf_key(waited: Any) -> tuple[Any, ...]:
    """The end of a chain key for the future ``waited`` (what a wake-up was called with)."""
    if waited is None:
        return ("future", "a future")
    if isinstance(waited, asyncio.Task):
        return ("task", waited.get_name())
    if isinstance(getattr(waited, "_children", None), list):
        return ("gather", len(waited._children))
    return ("future", type(waited).__qualname__)


def _lane(index: int, row: list[Any], linked: list[int] | None) -> Lane:
    kind, name, detail, created_at, parent, state, error = row
    if isinstance(name, int):  # a tidal task's default name, not formatted yet
        name = f"Task-{name}"
    if isinstance(created_at, tuple):
        code, line = created_at
        created_at = f"{code.co_filename}:{line}"
    internal = kind == "task" and detail in LOOP_INTERNAL_COROUTINES
    return Lane(
        index,
        kind,
        str(name),
        str(detail),
        created_at,
        parent,
        state,
        error,
        internal,
        sorted(linked or ()),
    )


# One executor job as it is reported: (loop lane name, worker thread name or None, submitted,
# started, duration, label, failed). Jobs of executors tidal does not own (process pools, Dask)
# have no thread, and run from submission to completion as far as anyone here can tell.
_JobEntry = tuple[str, str | None, float, float, float, str, bool]


def _job_label(job: ExecutorJob) -> str:
    """What a job runs: ``asyncio.to_thread(fn)`` submits ``partial(context.run, fn, ...)``,
    which is labelled ``fn``; anything else as the executor hooks label it."""
    func = job.func
    if isinstance(func, functools.partial) and func.args:
        owner = getattr(func.func, "__self__", None)
        if isinstance(owner, contextvars.Context):
            inner = func.args[0]
            name = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None)
            if isinstance(name, str):
                return name
    return job.label


def _describe_error(error: BaseException) -> tuple[str, str]:
    """A failed task's exception as text: ("Type: message", the frames it was raised
    through as "qualname file:line" lines, innermost last). Text only: nothing is kept alive."""
    message = str(error)
    if len(message) > _ERROR_TEXT:
        message = message[:_ERROR_TEXT] + "…"
    kind = type(error).__qualname__
    text = f"{kind}: {message}" if message else kind
    frames: list[str] = []
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code in _TASK_STEP_CODES:  # the Python Tasks' own step; the C Task has none
            tb = tb.tb_next
            continue
        name = getattr(code, "co_qualname", code.co_name)
        frames.append(f"{name} {short_path(code.co_filename)}:{tb.tb_lineno}")
        tb = tb.tb_next
    if not frames:
        return text, ""
    kept = frames[-_ERROR_FRAMES:]
    lines = [f"  raised at {kept[-1]}"]
    lines.extend(f"  via {frame}" for frame in reversed(kept[:-1]))
    return text, "\n".join(lines)


def _chain_key(task: Any) -> tuple[Any, ...]:
    """Where ``task`` is parked: (code, line) pairs down its await chain, then the leaf future.

    Cheap on purpose (it runs while recording): code objects and ints only; ``_describe_chain``
    turns a key into words once, at export.
    """
    key: list[Any] = []
    obj = task.get_coro()
    for _ in range(_MAX_CHAIN):
        if type(obj) is _CoroutineType:
            frame = obj.cr_frame
            if frame is None:
                break
            key.append(frame.f_code)
            key.append(frame.f_lineno)
            obj = obj.cr_await
            continue
        frame = getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)
        if frame is None:
            break
        if frame.f_code is not _FUTURE_AWAIT_CODE:
            key.append(frame.f_code)
            key.append(frame.f_lineno)
        obj = getattr(obj, "gi_yieldfrom", None) or getattr(obj, "ag_await", None)
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:
        key.append("ready")
    else:
        key.extend(_leaf_key(waiter))
    return tuple(key)


def _describe_chain(key: tuple[Any, ...]) -> list[str]:
    """Turn a chain key into lines: "qualname file:line" per frame, then the leaf.

    The leaf of a TaskGroup's ``async with`` exit and of ``asyncio.wait`` is a plain future;
    it is described as what it stands for (the tasks awaited), like a task or a gather.
    """
    lines = []
    index = 0
    if key and key[0] == _UNSAMPLED:
        lines.append("(short wait: await chain not sampled)")
        index = 1
    waits_for: str | None = None
    while index < len(key) and isinstance(key[index], types.CodeType):
        code, lineno = key[index], key[index + 1]
        name = getattr(code, "co_qualname", code.co_name)
        filename = code.co_filename.replace(os.sep, "/")
        if filename.endswith("asyncio/taskgroups.py") and code.co_name in _TASKGROUP_WAIT_CODES:
            waits_for = "children of a TaskGroup"
        elif filename.endswith("asyncio/tasks.py") and code.co_name in _ASYNCIO_WAIT_CODES:
            waits_for = "tasks of asyncio.wait"
        lines.append(f"{name} {short_path(code.co_filename)}:{lineno}")
        index += 2
    rest = key[index:]
    if waits_for is not None and rest and rest[0] == "future":
        lines.append(f"{waits_for} ({rest[1]})")
    elif rest and rest[0] == "task":
        lines.append(f"task {rest[1]}")
    elif rest and rest[0] == "gather":
        lines.append(f"gather of {rest[1]}")
    elif rest and rest[0] == "future":
        lines.append(str(rest[1]))
    elif rest and rest[0] == "ready":
        lines.append("(ready to run)")
    return lines


@dataclass
class Recording:
    """What a recording captured; export it with ``save`` (``.html`` or ``.json``)."""

    lanes: list[Lane]
    events: list[tuple[Any, ...]]
    chains: list[list[str]]  # chain id -> lines, outermost coroutine first
    started: float
    stopped: float
    wall_started: float
    dropped: int

    @property
    def duration(self) -> float:
        return self.stopped - self.started

    def task_lanes(self) -> list[Lane]:
        return [lane for lane in self.lanes if lane.kind == "task"]

    # -- segments: the timeline as (lane, start, end, state, tip) intervals ----------------------

    def segments(self) -> list[Segment]:
        """The recording as intervals per lane, in lane order then time order.

        Task lanes alternate "scheduled" (created, first step pending), "running" (a step) and
        "waiting" (parked, with the await chain as ``tip``); loop lanes show "io" (sleeping in
        the poller), "callback" and "timer"; thread lanes show "job" or "job-failed".
        """
        per_lane: dict[int, list[Segment]] = {lane.id: [] for lane in self.lanes}
        jobs: list[tuple[int, float, str, str]] = []  # (task lane, submitted, label, thread)
        open_wait: dict[int, tuple[float, str, str]] = {}  # lane -> (since, state, tip)
        ended: dict[int, tuple[float, str]] = {}
        origin = self.started
        for event in self.events:
            kind, lane = event[0], event[1]
            if kind == STEP:
                _, _, started, duration, chain = event
                start = started - origin
                since = open_wait.pop(lane, None)
                if since is not None and start > since[0]:
                    per_lane[lane].append(Segment(lane, since[0], start, since[1], since[2]))
                per_lane[lane].append(Segment(lane, start, start + duration, "running", ""))
                if chain == READY_CHAIN:
                    open_wait[lane] = (start + duration, "scheduled", "ready: runs next turn")
                elif chain >= 0:
                    lines = self.chains[chain]
                    state = (
                        "waiting-task"
                        if lines and lines[-1].startswith(TASK_WAIT_PREFIXES)
                        else "waiting"
                    )
                    if lines and lines[-1] == "(ready to run)":
                        state = "scheduled"
                    open_wait[lane] = (start + duration, state, "\n".join(lines))
            elif kind == SPAWN:
                open_wait[lane] = (event[2] - origin, "scheduled", "created, first step pending")
            elif kind == EXIT:
                since = open_wait.pop(lane, None)
                ended[lane] = (event[2] - origin, event[3])
            elif kind == CALLBACK:
                _, _, started, duration, label, is_timer = event
                state = "timer" if is_timer else "callback"
                start = started - origin
                per_lane[lane].append(Segment(lane, start, start + duration, state, label))
            elif kind == IO_WAIT:
                _, _, started, waited, count = event
                start = started - origin
                tip = f"waiting for I/O or timers: {count} event{'s' if count != 1 else ''}"
                per_lane[lane].append(Segment(lane, start, start + waited, "io", tip))
            elif kind == JOB:
                _, _, started, duration, label, failed, task_lane, _ = event
                start = started - origin
                state = "job-failed" if failed else "job"
                if task_lane >= 0:
                    label += f"\nsubmitted by task {self.lanes[task_lane].name}"
                    first_line = label.split("\n", 1)[0]
                    where = self.lanes[lane].name
                    if not where.startswith(OTHER_EXECUTOR_LANE):
                        where = f"thread {where}"
                    jobs.append((task_lane, event[7] - origin, first_line, where))
                per_lane[lane].append(Segment(lane, start, start + duration, state, label))
        end = self.duration
        for lane, (wait_start, state, tip) in open_wait.items():
            if end > wait_start:
                per_lane[lane].append(Segment(lane, wait_start, end, state, tip))
        for lane, (at, state) in ended.items():
            error = self.lanes[lane].error if state == "failed" else ""
            tip = f"task {state}" + (f"\n{error}" if error else "")
            per_lane[lane].append(Segment(lane, at, at, state, tip))
        out: list[Segment] = []
        for lane_id in sorted(per_lane):
            out.extend(sorted(per_lane[lane_id], key=lambda s: (s.start, s.end)))
        if jobs:
            _name_job_waits(out, jobs)
        return out

    # -- exports ---------------------------------------------------------------------------

    def to_chrome_trace(self) -> dict[str, Any]:
        """The recording in Chrome's trace-event format (open it in Perfetto or chrome://tracing).

        Each lane is a thread (``tid``) of one process; segments are complete ("X") events with
        microsecond ``ts``/``dur``; the await chain goes in ``args``. Flow arrows (flow events
        "s" then "f", bound to the enclosing slices) go from the step of a task that created
        another task to the new task's lane ("created"), and from the step that submitted an
        executor job to the job on its worker thread ("executor job").
        """
        pid = os.getpid()
        events: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "tidal"}}
        ]
        for lane in self.lanes:
            label = (
                f"{lane.name} ({lane.detail})" if lane.kind == "task" and lane.detail else lane.name
            )
            events.append(
                {
                    "name": "thread_name",
                    "ph": "M",
                    "pid": pid,
                    "tid": lane.id + 1,
                    "args": {"name": label},
                }
            )
            events.append(
                {
                    "name": "thread_sort_index",
                    "ph": "M",
                    "pid": pid,
                    "tid": lane.id + 1,
                    "args": {"sort_index": lane.id},
                }
            )
        for seg in self.segments():
            entry: dict[str, Any] = {
                "name": seg.state if seg.state != "callback" else (seg.tip or "callback"),
                "cat": seg.state,
                "ph": "X" if seg.end > seg.start else "i",
                "ts": round(seg.start * 1e6, 3),
                "pid": pid,
                "tid": seg.lane + 1,
            }
            if seg.end > seg.start:
                entry["dur"] = round((seg.end - seg.start) * 1e6, 3)
            else:
                entry["s"] = "t"
            if seg.tip:
                entry["args"] = {"detail": seg.tip}
            events.append(entry)
        events.extend(self._flow_events(pid))
        return {
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {
                "recorder": "tidal.trace",
                "started_unix": self.wall_started,
                "duration_s": self.duration,
                "dropped_events": self.dropped,
            },
        }

    def flows(self) -> list[tuple[str, int, float, int, float]]:
        """Arrows between lanes: (kind, from lane, at, to lane, at), times in seconds since the
        start; kind "created" (a task created another) or "executor job" (a task's job ran on
        a worker thread)."""
        origin = self.started
        out: list[tuple[str, int, float, int, float]] = []
        for event in self.events:
            if event[0] == SPAWN and event[3] >= 0:
                at = event[2] - origin
                out.append(("created", event[3], at, event[1], at))
            elif event[0] == JOB and event[6] >= 0:
                out.append(
                    ("executor job", event[6], event[7] - origin, event[1], event[2] - origin)
                )
        return out

    def _flow_events(self, pid: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for ident, (kind, source, at, target, arrives) in enumerate(self.flows(), 1):
            common = {"name": kind, "cat": "flow", "id": ident, "pid": pid}
            events.append({**common, "ph": "s", "ts": round(at * 1e6, 3), "tid": source + 1})
            events.append(
                {**common, "ph": "f", "bp": "e", "ts": round(arrives * 1e6, 3), "tid": target + 1}
            )
        return events

    def to_html(self, title: str = "tidal timeline") -> str:
        """A self-contained HTML page: one lane per task, coloured by state, hover for details."""
        from .timeline_html import render_html

        return render_html(self, title)

    def save(self, path: str | os.PathLike[str], title: str = "tidal timeline") -> None:
        """Write the recording to ``path``: HTML if it ends in .html/.htm, else trace JSON."""
        name = os.fspath(path)
        if name.lower().endswith((".html", ".htm")):
            text = self.to_html(title)
        else:
            text = json.dumps(self.to_chrome_trace())
        with open(name, "w", encoding="utf-8") as out:
            out.write(text)


def _name_job_waits(segments: list[Segment], jobs: list[tuple[int, float, str, str]]) -> None:
    """Add to a task's wait the executor jobs it waits for: jobs submitted in the step just
    before the wait (``asyncio.to_thread``, ``await loop.run_in_executor``, a gather of them).

    ``segments`` are in lane order, then time order (as ``Recording.segments`` returns them).
    """
    lanes: dict[int, tuple[list[int], list[float]]] = {}  # lane -> (indices, starts)
    for index, seg in enumerate(segments):
        entry = lanes.setdefault(seg.lane, ([], []))
        entry[0].append(index)
        entry[1].append(seg.start)
    notes: dict[int, dict[tuple[str, str], int]] = {}  # segment index -> (label, lane): count
    for task_lane, submitted, label, thread in jobs:
        indices, starts = lanes.get(task_lane, ((), ()))
        first = bisect.bisect_left(starts, submitted)
        for index in indices[first : first + 4]:  # the step's end, then its wait
            if segments[index].state in ("waiting", "waiting-task"):
                counts = notes.setdefault(index, {})
                counts[label, thread] = counts.get((label, thread), 0) + 1
                break
    for index, counts in notes.items():
        seg = segments[index]
        lines = [seg.tip] if seg.tip else []
        for (label, thread), count in counts.items():
            what = f"executor job {label}" if count == 1 else f"{count} executor jobs {label}"
            lines.append(f"{what} on {thread}")
        segments[index] = replace(seg, tip="\n".join(lines))


@dataclass(frozen=True)
class Segment:
    """An interval of one lane; times are seconds since the recording started."""

    lane: int
    start: float
    end: float
    state: str
    tip: str


# -- recording -----------------------------------------------------------------------------


class RecordingSession:
    """What ``record()`` yields: stop it (or leave the block), then read ``.recording``."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._watcher: Any = None
        self.recording: Recording | None = None

    def stop(self) -> Recording:
        """Stop recording (idempotent) and return the ``Recording``."""
        if self.recording is None:
            if self._watcher is not None:
                remove_loop_watcher(self._watcher)
            self.recording = self._recorder.stop()
        return self.recording

    def save(self, path: str | os.PathLike[str], title: str = "tidal timeline") -> None:
        """Stop if still recording, then ``Recording.save``."""
        self.stop().save(path, title)


@contextmanager
def record(
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    capacity: int = DEFAULT_CAPACITY,
    chain_min_wait: float = DEFAULT_CHAIN_MIN_WAIT,
) -> Iterator[RecordingSession]:
    """Record a timeline of ``loop``, or of every tidal loop used inside the block.

    ``loop`` defaults to the loop running in this thread; when none runs (``with`` around
    ``tidal.run(main())``), every tidal loop whose tasks are created inside the block is
    recorded. After the block, ``session.recording`` holds the result::

        with tidal.trace.record() as session:
            tidal.run(main())
        session.save("timeline.html")

    Args:
        loop: the tidal loop to record; None for the running loop, or all new loops.
        capacity: records kept at most per loop (a ring buffer: the oldest are dropped first).
        chain_min_wait: seconds; a wait that may be this long or longer gets its await chain
            recorded (shorter ones show only what they waited on). 0 records every chain.

    Raises:
        TypeError: ``loop`` is not a tidal loop.
        ValueError: ``capacity`` is not positive or ``chain_min_wait`` is negative.
    """
    recorder = Recorder(capacity, chain_min_wait)
    session = RecordingSession(recorder)
    if loop is None:
        loop = asyncio.events._get_running_loop()
    if loop is not None and not isinstance(loop, Scheduler):
        raise TypeError(
            f"tidal.trace.record needs a tidal loop, got {loop!r}; run the program with "
            f"tidal.run(), tidal.install() or python -m tidal"
        )
    recorder.start()
    if loop is not None:
        recorder.attach(loop)
    else:
        session._watcher = recorder.attach
        add_loop_watcher(recorder.attach)
    try:
        yield session
    finally:
        session.stop()
