"""The timeline recorder and its exports: Chrome/Perfetto trace JSON and an HTML page.

Owns: ``Recorder`` (an observer writing task steps, callbacks, timers, I/O waits and executor
jobs into a bounded ring buffer), ``record`` (the context manager behind ``tidal.trace.record``),
``Recording`` (the result: lanes, events, exports).
Not here: drawing the HTML page (timeline_html.py), the hook registry and when hooks fire
(hooks.py), the await-chain walk of snapshots (tree.py; the recorder has its own cheaper walk,
below, because it runs after every step).

Events are tuples, newest last, in a ``collections.deque(maxlen=capacity)`` that exists only
while recording (and afterwards inside the ``Recording`` it produced). When it is full the
oldest events fall out; ``Recording.dropped`` says how many. Shapes (times are perf_counter
seconds, durations seconds):

    (STEP, lane, started, duration, chain)    chain: id in Recording.chains of where the task
                                              was parked after the step; READY_CHAIN when it
                                              parked on nothing (a bare yield, or finished)
    (SPAWN, lane, at, parent_lane)            parent_lane -1 when no task created it
    (EXIT, lane, at, state)                   state: "finished", "cancelled" or "failed"
    (CALLBACK, lane, started, duration, label, is_timer)   lane: the loop's lane
    (IO_WAIT, lane, started, waited, events)
    (JOB, lane, started, duration, label, failed)          lane: the worker thread's lane

Invariants:
- The recorder never keeps a task alive: it holds ids, lane numbers, names and code objects.
- A lane number is never reused within a recording. A task created while recording always gets
  a new lane at spawn, so an id() CPython reuses after a pending task was collected maps to the
  new task from then on.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final

from .. import futures as _futures
from ..core.handles import TimerHandle
from ..core.scheduler import Scheduler
from ..tasks import Task as _Task
from .hooks import ExecutorJob, Hooks, add_loop_watcher, hooks_for, remove_loop_watcher
from .stats import callback_name, caller_code_line
from .tree import short_path

# Events kept at most; at ~100 bytes each, 200k events is about 20 MB at the very worst.
DEFAULT_CAPACITY: Final = 200_000

STEP: Final = 0
SPAWN: Final = 1
EXIT: Final = 2
CALLBACK: Final = 3
IO_WAIT: Final = 4
JOB: Final = 5

READY_CHAIN: Final = -2  # STEP chain value: parked on nothing, runs again next turn
_CoroutineType = types.CoroutineType
_FUTURE_AWAIT_CODE: Final = _futures.FutureMixin.__await__.__code__
_MAX_CHAIN: Final = 32


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


class Recorder:
    """Hook observer that appends events to a ring buffer. Use ``record()`` rather than this.

    Everything per event is kept raw (ints, floats, code objects, names as the task holds them)
    and turned into words once, in ``stop()``: recording must stay cheap.

    Args:
        capacity: events kept at most; older ones are dropped first.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be a positive number of events, got {capacity}")
        self.capacity = capacity
        self._events: deque[tuple[Any, ...]] | None = None
        self._appended = 0
        # One row per lane: [kind, name, detail, created_at, parent]; name may be a tidal
        # task's raw _name (an int N for "Task-N"), created_at a (code, line) pair.
        self._rows: list[list[Any]] = []
        self._task_lanes: dict[int, int] = {}  # id(task) -> lane; set at spawn, popped at exit
        self._loop_lanes: dict[int, int] = {}  # id(loop) -> lane
        self._thread_lanes: dict[str, int] = {}  # worker thread name -> lane
        self._chains: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()  # lane creation from worker threads
        self._loops: weakref.WeakSet[Scheduler] = weakref.WeakSet()
        self.started = 0.0
        self.stopped: float | None = None
        self._wall_started = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Allocate the buffer and note the start time."""
        self._events = deque(maxlen=self.capacity)
        self.started = perf_counter()
        self._wall_started = time.time()

    def attach(self, loop: Scheduler) -> None:
        """Observe ``loop`` (idempotent)."""
        if loop in self._loops:
            return
        self._loops.add(loop)
        self._loop_lane(loop)
        hooks_for(loop).add_observer(self)
        running: Any = loop
        for task in asyncio.all_tasks(running):  # tasks that exist already get their lanes now
            self._task_lane(task)

    def stop(self) -> Recording:
        """Detach from every loop and return the recording (the buffer moves into it)."""
        for loop in list(self._loops):
            hooks: Hooks | None = loop._hooks
            if hooks is not None:
                hooks.remove_observer(self)
            if not loop.is_closed():
                running: Any = loop
                for task in asyncio.all_tasks(running):  # final names of the live tasks
                    lane = self._task_lanes.get(id(task))
                    if lane is not None:
                        self._rows[lane][1] = task.get_name()
        self._loops = weakref.WeakSet()
        self.stopped = perf_counter()
        events = self._events if self._events is not None else deque()
        self._events = None
        chains: list[list[str]] = [[] for _ in self._chains]
        for key, index in self._chains.items():
            chains[index] = _describe_chain(key)
        return Recording(
            lanes=[_lane(index, row) for index, row in enumerate(self._rows)],
            events=list(events),
            chains=chains,
            started=self.started,
            stopped=self.stopped,
            wall_started=self._wall_started,
            dropped=max(0, self._appended - len(events)),
        )

    # -- lanes -----------------------------------------------------------------------------

    def _new_lane(self, row: list[Any]) -> int:
        with self._lock:
            self._rows.append(row)
            return len(self._rows) - 1

    def _loop_lane(self, loop: Any) -> int:
        lane = self._loop_lanes.get(id(loop))
        if lane is None:
            name = f"loop {len(self._loop_lanes) + 1}"
            lane = self._loop_lanes[id(loop)] = self._new_lane(["loop", name, repr(loop), None, -1])
        return lane

    def _task_lane(self, task: Any, parent: Any = None, created_at: Any = None) -> int:
        """A new lane for ``task`` (at spawn, or when first seen), mapped from its id."""
        parent_lane = self._task_lanes.get(id(parent), -1) if parent is not None else -1
        coro = task.get_coro()
        name = task._name if type(task) is _Task else task.get_name()
        detail = getattr(coro, "__qualname__", None) or ""
        lane = self._new_lane(["task", name, detail, created_at, parent_lane])
        self._task_lanes[id(task)] = lane
        return lane

    def _append(self, event: tuple[Any, ...]) -> None:
        events = self._events
        if events is not None:
            events.append(event)
            self._appended += 1

    # -- hook methods ----------------------------------------------------------------------

    def task_spawned(self, task: Any, parent: Any) -> None:
        # Always a new lane: the id of a task collected while pending may be reused.
        lane = self._task_lane(task, parent, caller_code_line(2))
        self._append((SPAWN, lane, perf_counter(), self._rows[lane][4]))

    def after_task_step(self, task: Any, started: float, duration: float) -> None:
        lane = self._task_lanes.get(id(task))
        if lane is None:
            lane = self._task_lane(task)
        # Where it is parked now. A bare yield (sleep(0)) parks on nothing: it runs next turn,
        # and skipping the walk there keeps tight switching loops cheap to record.
        chain: int | None
        if getattr(task, "_fut_waiter", None) is None:
            chain = READY_CHAIN
        else:
            key = _chain_key(task)
            chain = self._chains.get(key)
            if chain is None:
                chain = self._chains[key] = len(self._chains)
        self._events.append((STEP, lane, started, duration, chain))  # type: ignore[union-attr]
        self._appended += 1

    def task_exited(self, task: Any) -> None:
        lane = self._task_lanes.pop(id(task), None)
        if lane is None:
            lane = self._task_lane(task)
            del self._task_lanes[id(task)]
        self._rows[lane][1] = task.get_name()
        if task.cancelled():
            state = "cancelled"
        elif getattr(task, "_exception", None) is not None:  # not exception(): it marks retrieval
            state = "failed"
        else:
            state = "finished"
        self._append((EXIT, lane, perf_counter(), state))

    def callback_ran(self, handle: Any, started: float, duration: float) -> None:
        lane = self._loop_lanes.get(id(handle._loop))
        if lane is None:
            lane = self._loop_lane(handle._loop)
        callback = handle._callback
        name = getattr(callback, "__qualname__", None) or callback_name(callback)
        self._append((CALLBACK, lane, started, duration, name, type(handle) is TimerHandle))

    def after_io_wait(self, started: float, waited: float, events: int) -> None:
        # One recorder can watch several loops; the waiting one is the one on this thread.
        loop = asyncio.events._get_running_loop()
        lane = self._loop_lanes.get(id(loop)) if loop is not None else None
        if lane is None:
            lane = self._loop_lane(loop)
        self._append((IO_WAIT, lane, started, waited, events))

    def executor_job_finished(self, job: ExecutorJob) -> None:
        thread = job.thread or "executor"
        lane = self._thread_lanes.get(thread)
        if lane is None:
            lane = self._thread_lanes[thread] = self._new_lane(["thread", thread, "", None, -1])
        started = job.started if job.started is not None else job.submitted
        finished = job.finished if job.finished is not None else perf_counter()
        self._append((JOB, lane, started, finished - started, job.label, job.error is not None))


def _lane(index: int, row: list[Any]) -> Lane:
    kind, name, detail, created_at, parent = row
    if isinstance(name, int):  # a tidal task's default name, not formatted yet
        name = f"Task-{name}"
    if isinstance(created_at, tuple):
        code, line = created_at
        created_at = f"{code.co_filename}:{line}"
    return Lane(index, kind, str(name), str(detail), created_at, parent)


def _chain_key(task: Any) -> tuple[Any, ...]:
    """Where ``task`` is parked: (code, line) pairs down its await chain, then the leaf future.

    Cheap on purpose (it runs after every step while recording): code objects and ints only;
    ``_describe_chain`` turns a key into words once, at export.
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
    elif isinstance(waiter, asyncio.Task):
        key.append("task")
        key.append(waiter.get_name())
    elif isinstance(getattr(waiter, "_children", None), list):
        key.append("gather")
        key.append(len(waiter._children))
    else:
        key.append("future")
        key.append(type(waiter).__qualname__)
    return tuple(key)


def _describe_chain(key: tuple[Any, ...]) -> list[str]:
    """Turn a chain key into lines: "qualname file:line" per frame, then the leaf."""
    lines = []
    index = 0
    while index < len(key) and isinstance(key[index], types.CodeType):
        code, lineno = key[index], key[index + 1]
        name = getattr(code, "co_qualname", code.co_name)
        lines.append(f"{name} {short_path(code.co_filename)}:{lineno}")
        index += 2
    rest = key[index:]
    if rest and rest[0] == "task":
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
                        if lines and lines[-1].startswith(("task ", "gather"))
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
                _, _, started, duration, label, failed = event
                start = started - origin
                state = "job-failed" if failed else "job"
                per_lane[lane].append(Segment(lane, start, start + duration, state, label))
        end = self.duration
        for lane, (wait_start, state, tip) in open_wait.items():
            if end > wait_start:
                per_lane[lane].append(Segment(lane, wait_start, end, state, tip))
        for lane, (at, state) in ended.items():
            per_lane[lane].append(Segment(lane, at, at, state, f"task {state}"))
        out: list[Segment] = []
        for lane_id in sorted(per_lane):
            out.extend(sorted(per_lane[lane_id], key=lambda s: (s.start, s.end)))
        return out

    # -- exports ---------------------------------------------------------------------------

    def to_chrome_trace(self) -> dict[str, Any]:
        """The recording in Chrome's trace-event format (open it in Perfetto or chrome://tracing).

        Each lane is a thread (``tid``) of one process; segments are complete ("X") events with
        microsecond ``ts``/``dur``; the await chain goes in ``args``.
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
        capacity: events kept at most (a ring buffer: the oldest are dropped first).

    Raises:
        TypeError: ``loop`` is not a tidal loop.
        ValueError: ``capacity`` is not positive.
    """
    recorder = Recorder(capacity)
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
