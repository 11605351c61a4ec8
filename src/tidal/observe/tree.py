"""The task tree: every task of a loop, what it waits on, and who waits on it.

Owns: ``snapshot`` (a frozen, JSON-ready picture of a loop's tasks), the await-chain walk, the
"who awaits whom" inference, and the two text renderings: ``format_tree`` (in the spirit of
Python 3.14's ``python -m asyncio pstree``) and ``format_table`` (``ps``).
Not here: per-task accounting (stats.py supplies creator, age, steps and running time when
tracking is on), serving snapshots to other processes (monitor.py).

Everything comes from data asyncio itself exposes, so it works on asyncio's loop as well as
tidal's, on 3.11 and later:
- ``asyncio.all_tasks(loop)`` and ``asyncio.current_task(loop)``;
- ``task._fut_waiter``: the future a task is parked on;
- the coroutine chain ``cr_await`` (``gi_yieldfrom``, ``ag_await``) with each frame's
  ``f_lineno``, from the task's coroutine down to the leaf;
- the done callbacks of pending futures (``_callbacks``): a task's wakeup method, or a closure
  or ``functools.partial`` that holds the future another task waits on (gather, wait, shield,
  wait_for), or a TaskGroup (its ``_parent_task``).
How "awaits" is inferred: task A awaits task B if A is parked on B, or if B's done callbacks lead
(through at most ``MAX_FUTURE_HOPS`` intermediate futures) to the future A is parked on, or to a
TaskGroup whose parent task is A. That is the shape of asyncio's call graph in 3.14.

Invariants:
- A snapshot never keeps a task alive: it holds ids, names and strings only.
- The walk never raises on odd objects: whatever it cannot read becomes "unknown".
"""

from __future__ import annotations

import asyncio
import enum
import functools
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Final

from .. import futures as _futures
from .stats import accounting_for, is_internal_file

MAX_CHAIN: Final = 64  # links followed down one await chain before giving up (cycles, depth)
MAX_FUTURE_HOPS: Final = 4  # futures followed through done callbacks when finding awaiters

_FUTURE_AWAIT_CODE: Final = _futures.FutureMixin.__await__.__code__  # tidal's, shown as leaf


class TaskState(enum.Enum):
    """Where a task is in its life, as seen from outside."""

    RUNNING = "running"  # its step is executing right now
    WAITING = "waiting"  # parked on a future
    READY = "ready"  # scheduled to run its next step
    FINISHED = "finished"  # returned a value
    CANCELLED = "cancelled"
    FAILED = "failed"  # raised an exception


@dataclass(frozen=True)
class AwaitLink:
    """One link of an await chain: a suspended coroutine frame or the future at the leaf.

    ``kind`` is "coroutine" (also generators and async generators), "task", "gather" or
    "future". Frames have ``filename`` and ``lineno``; a "task" link has ``task_id``.
    """

    kind: str
    name: str
    filename: str | None = None
    lineno: int | None = None
    task_id: int | None = None

    def where(self) -> str:
        """``file:line`` (shortened), or "" for links without a location."""
        if self.filename is None:
            return ""
        return f"{short_path(self.filename)}:{self.lineno}"

    def __str__(self) -> str:
        where = self.where()
        return f"{self.name} {where}" if where else self.name


@dataclass(frozen=True)
class TaskInfo:
    """One task, frozen at snapshot time. Times are seconds.

    ``created_by``/``created_at``/``age``/``steps``/``running_time`` are None unless accounting
    was on (``tidal.inspect.track``) when the task was created or stepped.
    """

    id: int
    name: str
    state: TaskState
    coro: str  # qualified name of the task's coroutine
    chain: tuple[AwaitLink, ...]  # from the task's coroutine down to what it waits on
    waits_for: tuple[int, ...]  # ids of the tasks this one awaits
    awaited_by: tuple[int, ...]  # ids of the tasks awaiting this one
    created_by: int | None = None
    created_by_name: str | None = None
    created_at: str | None = None
    age: float | None = None
    steps: int | None = None
    running_time: float | None = None
    cancelling: int = 0

    @property
    def waiting_on(self) -> str:
        """The leaf of the chain in words ("" while running or ready)."""
        return str(self.chain[-1]) if self.chain and self.state is TaskState.WAITING else ""


@dataclass(frozen=True)
class Location:
    """A frame of a thread's stack."""

    name: str
    filename: str
    lineno: int
    line: str = ""

    def __str__(self) -> str:
        return f"{self.name} {short_path(self.filename)}:{self.lineno}"


@dataclass(frozen=True)
class Snapshot:
    """A loop's tasks at one moment, plus where the snapshot came from.

    ``consistent`` is False when the snapshot was read from another thread while the loop was
    busy (the monitor does that when the loop does not answer): fields may then disagree by a
    step. ``loop_stack`` is the loop thread's stack in that case, innermost frame last.
    """

    tasks: tuple[TaskInfo, ...]
    pid: int = field(default_factory=os.getpid)
    taken_at: float = field(default_factory=time.time)
    loop: str = ""
    consistent: bool = True
    loop_stack: tuple[Location, ...] = ()
    note: str = ""

    def by_id(self) -> dict[int, TaskInfo]:
        return {info.id: info for info in self.tasks}

    def roots(self) -> list[TaskInfo]:
        """Tasks nobody awaits, then one task of each await cycle not reachable from those."""
        by_id = self.by_id()
        roots = [info for info in self.tasks if not info.awaited_by]
        reachable: set[int] = set()

        def mark(start: int) -> None:
            todo = [start]
            while todo:
                current = todo.pop()
                if current not in reachable:
                    reachable.add(current)
                    if current in by_id:
                        todo.extend(by_id[current].waits_for)

        for info in roots:
            mark(info.id)
        for info in self.tasks:
            if info.id not in reachable:
                roots.append(info)
                mark(info.id)
        return roots

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the monitor's wire format)."""
        return {
            "pid": self.pid,
            "taken_at": self.taken_at,
            "loop": self.loop,
            "consistent": self.consistent,
            "note": self.note,
            "loop_stack": [vars(loc) for loc in self.loop_stack],
            "tasks": [_task_to_dict(info) for info in self.tasks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """Inverse of ``to_dict``.

        Raises:
            KeyError, TypeError, ValueError: ``data`` is not a snapshot dict.
        """
        return cls(
            tasks=tuple(_task_from_dict(item) for item in data["tasks"]),
            pid=int(data["pid"]),
            taken_at=float(data["taken_at"]),
            loop=str(data.get("loop", "")),
            consistent=bool(data.get("consistent", True)),
            loop_stack=tuple(Location(**loc) for loc in data.get("loop_stack", ())),
            note=str(data.get("note", "")),
        )


def _task_to_dict(info: TaskInfo) -> dict[str, Any]:
    data = dict(vars(info))
    data["state"] = info.state.value
    data["chain"] = [vars(link) for link in info.chain]
    data["waits_for"] = list(info.waits_for)
    data["awaited_by"] = list(info.awaited_by)
    return data


def _task_from_dict(data: dict[str, Any]) -> TaskInfo:
    values = dict(data)
    values["state"] = TaskState(values["state"])
    values["chain"] = tuple(AwaitLink(**link) for link in values["chain"])
    values["waits_for"] = tuple(values["waits_for"])
    values["awaited_by"] = tuple(values["awaited_by"])
    return TaskInfo(**values)


# -- taking a snapshot -------------------------------------------------------------------------


def snapshot(
    loop: asyncio.AbstractEventLoop | None = None, *, consistent: bool | None = None
) -> Snapshot:
    """Return a ``Snapshot`` of every task of ``loop`` (default: the running loop).

    Call it on the loop's own thread for an exact picture. From another thread it still works
    (``tidal.observe.monitor`` does so when the loop is blocked), but the loop may move on
    while it reads; the snapshot then says ``consistent=False``.

    Raises:
        RuntimeError: no loop was given and none is running in this thread.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    if consistent is None:
        thread_id = getattr(loop, "_thread_id", None)
        consistent = thread_id is None or thread_id == threading.get_ident()
    tasks = _all_tasks(loop)
    current = _current_task(loop)
    waiter_of: dict[int, list[Any]] = {}  # id(future) -> tasks parked on it
    for task in tasks:
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is not None:
            waiter_of.setdefault(id(waiter), []).append(task)
    awaited_by: dict[int, list[int]] = {id(task): [] for task in tasks}
    waits_for: dict[int, list[int]] = {id(task): [] for task in tasks}
    for task in tasks:
        for awaiter in _awaiters(task, waiter_of):
            if awaiter is task or id(awaiter) not in waits_for:
                continue
            if id(awaiter) not in awaited_by[id(task)]:
                awaited_by[id(task)].append(id(awaiter))
                waits_for[id(awaiter)].append(id(task))
    accounting = accounting_for(loop)
    now = perf_counter()
    infos = []
    for task in tasks:
        record = accounting.record(task) if accounting is not None else None
        infos.append(
            TaskInfo(
                id=id(task),
                name=_safe(task.get_name, "?"),
                state=_state(task, current),
                coro=_coro_name(task),
                chain=_chain(task),
                waits_for=tuple(waits_for[id(task)]),
                awaited_by=tuple(awaited_by[id(task)]),
                created_by=record.parent_id if record else None,
                created_by_name=record.parent_name if record else None,
                created_at=record.created_at if record else None,
                age=(now - record.created) if record and record.created is not None else None,
                steps=record.steps if record else None,
                running_time=record.running if record else None,
                cancelling=_safe(getattr(task, "cancelling", lambda: 0), 0),
            )
        )
    infos.sort(key=_creation_order)
    return Snapshot(tasks=tuple(infos), loop=_safe(lambda: repr(loop), "?"), consistent=consistent)


def _all_tasks(loop: Any) -> list[Any]:
    for _ in range(100):  # another thread may resize the registry under us: retry
        try:
            return [task for task in asyncio.all_tasks(loop)]
        except RuntimeError:
            continue
    return []


def _current_task(loop: Any) -> Any:
    try:
        return asyncio.current_task(loop)
    except RuntimeError:
        return None


def _safe(fn: Any, default: Any) -> Any:
    try:
        return fn()
    except Exception:
        return default


def _creation_order(info: TaskInfo) -> tuple[float, int, str]:
    """Order tasks by age when known, else by the number in "Task-N", else by name."""
    age = -info.age if info.age is not None else 0.0
    number = info.name.rsplit("-", 1)[-1]
    return (age, int(number) if number.isdigit() else sys.maxsize, info.name)


def _state(task: Any, current: Any) -> TaskState:
    if task is current:
        return TaskState.RUNNING
    if task.done():
        if task.cancelled():
            return TaskState.CANCELLED
        exception = getattr(task, "_exception", None)
        return TaskState.FAILED if exception is not None else TaskState.FINISHED
    if getattr(task, "_fut_waiter", None) is not None:
        return TaskState.WAITING
    return TaskState.READY


def _coro_name(task: Any) -> str:
    coro = _safe(task.get_coro, None)
    if coro is None:
        return "?"
    return str(getattr(coro, "__qualname__", None) or type(coro).__qualname__)


def _frame_of(obj: Any) -> Any:
    for attr in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(obj, attr, None)
        if frame is not None:
            return frame
    return None


def _next_awaited(obj: Any) -> Any:
    for attr in ("cr_await", "gi_yieldfrom", "ag_await"):
        nxt = getattr(obj, attr, None)
        if nxt is not None:
            return nxt
    return None


def await_chain(coro: Any) -> list[AwaitLink]:
    """The suspended frames from ``coro`` down its await chain (tidal's Future.__await__ left
    out: the future at the leaf is described by the caller)."""
    links: list[AwaitLink] = []
    obj = coro
    for _ in range(MAX_CHAIN):
        if obj is None:
            break
        frame = _frame_of(obj)
        if frame is None:
            break
        code = frame.f_code
        if code is not _FUTURE_AWAIT_CODE:
            name = getattr(code, "co_qualname", code.co_name)
            links.append(AwaitLink("coroutine", name, code.co_filename, frame.f_lineno))
        obj = _next_awaited(obj)
    return links


def _chain(task: Any) -> tuple[AwaitLink, ...]:
    links = _safe(lambda: await_chain(task.get_coro()), [])
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is not None:
        links.append(describe_future(waiter))
    return tuple(links)


def describe_future(fut: Any) -> AwaitLink:
    """The leaf link for a future a task is parked on."""
    if isinstance(fut, asyncio.Task):
        return AwaitLink("task", f"task {_safe(fut.get_name, '?')}", task_id=id(fut))
    children = getattr(fut, "_children", None)
    if isinstance(children, list):
        return AwaitLink("gather", f"gather of {len(children)}")
    source = getattr(fut, "_source_traceback", None)
    name = type(fut).__qualname__
    if source:
        frame = source[-1]
        return AwaitLink("future", name, frame[0], frame[1])
    return AwaitLink("future", name)


def _callback_objects(callback: Any) -> Iterable[Any]:
    """Objects a done callback holds that may lead to whoever waits: self, cells, partial args."""
    owner = getattr(callback, "__self__", None)
    if owner is not None:
        yield owner
    if isinstance(callback, functools.partial):
        yield from callback.args
        yield from _callback_objects(callback.func)
    for cell in getattr(callback, "__closure__", None) or ():
        try:
            yield cell.cell_contents
        except ValueError:  # an empty cell
            continue


def _awaiters(fut: Any, waiter_of: dict[int, list[Any]], hops: int = 0) -> list[Any]:
    """Tasks waiting for ``fut``, directly or through futures that its completion completes."""
    found = list(waiter_of.get(id(fut), ()))
    if hops >= MAX_FUTURE_HOPS:
        return found
    try:
        callbacks = list(getattr(fut, "_callbacks", None) or ())
    except Exception:
        return found
    for entry in callbacks:
        callback = entry[0] if isinstance(entry, tuple) else entry
        for obj in _callback_objects(callback):
            if obj is fut:
                continue
            if isinstance(obj, asyncio.Task):
                if getattr(obj, "_fut_waiter", None) is fut or obj in found:
                    continue
                # A task holding a done callback on fut (e.g. its wakeup) waits for it.
                found.append(obj)
            elif isinstance(obj, asyncio.Future):
                found.extend(t for t in _awaiters(obj, waiter_of, hops + 1) if t not in found)
            elif isinstance(obj, asyncio.TaskGroup):
                parent = getattr(obj, "_parent_task", None)
                if parent is not None and parent not in found:
                    found.append(parent)
    return found


# -- text renderings ---------------------------------------------------------------------------

_HOME: Final = os.path.expanduser("~")
_STDLIB_DIR: Final = os.path.dirname(os.__file__) + os.sep


def short_path(filename: str) -> str:
    """Shorten a path for display: stdlib-relative, cwd-relative, or ~-relative."""
    if filename.startswith(_STDLIB_DIR):
        return filename[len(_STDLIB_DIR) :]
    try:
        cwd = os.getcwd() + os.sep
    except OSError:
        cwd = ""
    if cwd and filename.startswith(cwd):
        return filename[len(cwd) :]
    if _HOME and filename.startswith(_HOME + os.sep):
        return "~" + filename[len(_HOME) :]
    return filename


def format_seconds(seconds: float | None) -> str:
    """1.23s, 45.6ms, 789us; "-" for None."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds * 1e6:.0f}us"


def _task_label(info: TaskInfo) -> str:
    parts = [f"(T) {info.name}", f"[{info.state.value}]"]
    if info.cancelling:
        parts.append(f"cancelling x{info.cancelling}")
    details = []
    if info.age is not None:
        details.append(f"age {format_seconds(info.age)}")
    if info.steps is not None:
        details.append(f"{info.steps} step{'s' if info.steps != 1 else ''}")
    if info.running_time is not None:
        details.append(f"ran {format_seconds(info.running_time)}")
    if info.created_by_name is not None:
        details.append(f"created by {info.created_by_name}")
    if details:
        parts.append(" · ".join(details))
    return "  ".join(parts)


def format_tree(snap: Snapshot) -> str:
    """Render the snapshot as an ASCII tree: awaiting tasks above the tasks they await.

    Each task shows its await chain, one coroutine frame per line, down to the leaf; tasks it
    awaits hang below that leaf. A task awaited by several tasks is drawn once and referred to
    elsewhere; an await cycle is marked.
    """
    by_id = snap.by_id()
    lines: list[str] = []
    drawn: set[int] = set()

    def draw(info: TaskInfo, prefix: str, last: bool, path: tuple[int, ...]) -> None:
        branch = "└── " if last else "├── "
        if info.id in path:
            lines.append(f"{prefix}{branch}(T) {info.name}  <- await cycle!")
            return
        if info.id in drawn:
            lines.append(f"{prefix}{branch}(T) {info.name}  (shown above)")
            return
        drawn.add(info.id)
        lines.append(f"{prefix}{branch}{_task_label(info)}")
        inner = prefix + ("    " if last else "│   ")
        children = sorted((by_id[c] for c in info.waits_for if c in by_id), key=_creation_order)
        chain = [link for link in info.chain if link.kind != "task" or not children]
        for link in chain:
            lines.append(f"{inner}└──  {link}")
            inner += "    "
        for index, child in enumerate(children):
            draw(child, inner, index == len(children) - 1, (*path, info.id))

    roots = snap.roots()
    for index, root in enumerate(roots):
        draw(root, "", index == len(roots) - 1, ())
    header = f"pid {snap.pid}: {len(snap.tasks)} task{'s' if len(snap.tasks) != 1 else ''}"
    if snap.loop:
        header += f" on {snap.loop}"
    out = [header]
    out.extend(_blocked_lines(snap))
    out.extend(lines)
    return "\n".join(out) + "\n"


def _blocked_lines(snap: Snapshot) -> list[str]:
    out = []
    if snap.note:
        out.append(f"note: {snap.note}")
    if snap.loop_stack:
        out.append("loop thread stack (innermost last):")
        for loc in snap.loop_stack:
            out.append(f"    {loc}")
            if loc.line:
                out.append(f"        {loc.line}")
    return out


def program_frames(stack: tuple[Location, ...]) -> tuple[Location, ...]:
    """The program's frames of a thread's stack (outermost first): those below the innermost
    frame of asyncio's or tidal's machinery, which also leaves out the launcher above it. When
    the thread is inside the machinery itself, its innermost five frames."""
    internal = [i for i, loc in enumerate(stack) if is_internal_file(loc.filename)]
    shown = stack[internal[-1] + 1 :] if internal else stack
    return shown if shown else stack[-5:]


def format_table(snap: Snapshot) -> str:
    """Render the snapshot as a table, one task per line (``python -m tidal ps``)."""
    by_id = snap.by_id()
    header = (
        "ID",
        "NAME",
        "STATE",
        "AGE",
        "STEPS",
        "RAN",
        "CREATED BY",
        "AWAITED BY",
        "WAITING ON",
    )
    rows = [header]
    for info in snap.tasks:
        awaited = ", ".join(by_id[i].name for i in info.awaited_by if i in by_id) or "-"
        # The future, the innermost frame, and the innermost frame of the program's own code.
        parts = [info.waiting_on] if info.waiting_on else []
        frames = [link for link in info.chain if link.kind == "coroutine"]
        if frames:
            parts.append(str(frames[-1]))
            own = [f for f in frames if f.filename and not is_internal_file(f.filename)]
            if own and own[-1] is not frames[-1]:
                parts.append(str(own[-1]))
        leaf = " <- ".join(parts)
        rows.append(
            (
                f"{info.id:#x}",
                info.name,
                info.state.value,
                format_seconds(info.age),
                "-" if info.steps is None else str(info.steps),
                format_seconds(info.running_time),
                info.created_by_name or "-",
                awaited,
                leaf or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    count = len(snap.tasks)
    lines = [f"pid {snap.pid}: {count} task{'s' if count != 1 else ''}", *_blocked_lines(snap)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"
