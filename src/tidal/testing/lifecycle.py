"""The strict lifecycle check: what a test left behind, each with where it was created.

Owns: the checks behind ``--tidal-strict``: pending tasks, errors reported to the loop and
never seen (an exception never retrieved, above all), coroutines never awaited, transports and
servers left open, and, for the process, new descriptors, threads and child processes.
Not here: when the checks run (testing/pytest_plugin.py), recording creation sites of
transports and servers (testing/loop.py, ``track=True``).

Where each creation site comes from:
- tasks: the coroutine's origin (``sys.set_coroutine_origin_tracking_depth``, switched on by
  ``Watch``), else the coroutine's first line and where it is suspended;
- errors: the ``source_traceback`` asyncio attaches in debug mode, and for a task its
  coroutine's origin;
- coroutines never awaited: Python's own warning, which names the origin while tracking is on;
- transports and servers: the stack recorded by the loop when it made them;
- descriptors: what ``/proc/self/fd`` points at; threads: their target function; children:
  their command line. The process-level counts read ``/proc`` and are skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import _pytest as pytest_pkg
import pluggy as pluggy_pkg

import tidal as tidal_pkg

from .loop import ControlledLoop

# Frames of a coroutine's origin kept while a test runs under the strict check.
ORIGIN_DEPTH: Final = 16
# Seconds to let threads and children that are already ending finish before calling them leaks.
GRACE_SECONDS: Final = 1.0

_NEVER_AWAITED: Final = r"coroutine .* was never awaited"

# Frames from these directories are the machinery between a test and its code (pytest, pluggy,
# asyncio, tidal): creation sites leave them out.
_MACHINERY: Final = tuple(
    os.path.dirname(os.path.abspath(module.__file__ or "")) + os.sep
    for module in (asyncio, pytest_pkg, pluggy_pkg, tidal_pkg)
)


@dataclass
class Snapshot:
    """What the process had open at one moment (empty sets where /proc is missing)."""

    fds: set[int] = field(default_factory=set)
    threads: set[threading.Thread] = field(default_factory=set)
    children: set[int] = field(default_factory=set)


def snapshot() -> Snapshot:
    """Descriptors, threads and child processes of this process now."""
    return Snapshot(_open_fds(), set(threading.enumerate()), _child_pids())


def process_leaks(before: Snapshot) -> list[str]:
    """New descriptors, threads and children since ``before``, after a short grace period."""
    deadline = time.monotonic() + GRACE_SECONDS
    while True:
        gc.collect()
        now = snapshot()
        fds = now.fds - before.fds
        threads = {t for t in now.threads - before.threads if t.is_alive()}
        children = now.children - before.children
        if not (fds or threads or children) or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    found = [f"descriptor {fd} left open: {_describe_fd(fd)}" for fd in sorted(fds)]
    found += [f"thread left running: {_describe_thread(t)}" for t in threads]
    found += [f"child process left running: {_describe_child(pid)}" for pid in sorted(children)]
    return found


def pending_tasks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Tasks of ``loop`` that are not done, each with where it was created."""
    return [
        f"task left pending: {task!r}\n{_task_origin(task)}"
        for task in asyncio.all_tasks(loop)
        if not task.done()
    ]


def open_resources(loop: ControlledLoop) -> list[str]:
    """Transports and servers ``loop`` made (``track=True``) and nobody closed."""
    found = []
    for thing, stack in loop.created_resources():
        if isinstance(thing, asyncio.AbstractServer):
            still_open = thing.is_serving() or bool(getattr(thing, "sockets", ()))
            kind = "server"
        else:
            still_open = not thing.is_closing()
            kind = "transport"
        if still_open:
            found.append(f"{kind} left open: {thing!r}\n{_format_stack(stack)}")
    return found


def describe_error(context: dict[str, Any]) -> str:
    """One report from a loop's exception handler, with its creation site when known."""
    lines = [str(context.get("message") or "error reported to the loop")]
    exception = context.get("exception")
    if exception is not None:
        lines.append(f"  {type(exception).__name__}: {exception}")
    source = context.get("source_traceback")
    if source:
        lines.append(_format_stack(traceback.StackSummary.from_list(source)))
    future = context.get("task") or context.get("future")
    if isinstance(future, asyncio.Task):
        lines.append(_task_origin(future))
    return "\n".join(lines)


class Watch:
    """Collects, while entered, the coroutines never awaited, and tracks coroutine origins.

    Only the "never awaited" warning is diverted (into ``never_awaited``); every other warning
    meets the filters it would have met anyway, so ``filterwarnings = error`` keeps working.
    """

    def __init__(self) -> None:
        self.never_awaited: list[str] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Watch:
        saved_depth = sys.get_coroutine_origin_tracking_depth()
        sys.set_coroutine_origin_tracking_depth(max(saved_depth, ORIGIN_DEPTH))
        self._stack.callback(sys.set_coroutine_origin_tracking_depth, saved_depth)
        self._stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("always", message=_NEVER_AWAITED, category=RuntimeWarning)
        shown = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if issubclass(category, RuntimeWarning) and " was never awaited" in str(message):
                self.never_awaited.append(_trim_origin_text(str(message)))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()


@contextlib.contextmanager
def collecting_errors(loop: asyncio.AbstractEventLoop) -> Iterator[list[dict[str, Any]]]:
    """Route ``loop``'s error reports into a list for the duration (and after, for gc)."""
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors


# -- descriptions -------------------------------------------------------------------------------


def _task_origin(task: asyncio.Task[Any]) -> str:
    coro: Any = task.get_coro()
    origin = getattr(coro, "cr_origin", None)
    if origin:
        frames = traceback.StackSummary.from_list(
            [(filename, lineno, name, None) for filename, lineno, name in reversed(origin)]
        )
        return _format_stack(frames)
    code = getattr(coro, "cr_code", None)
    if code is not None:
        return f"  coroutine {code.co_qualname} defined at {code.co_filename}:{code.co_firstlineno}"
    return f"  {coro!r}"


def _is_machinery(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_MACHINERY)


def _trim_origin_text(message: str) -> str:
    """Python's "never awaited" text, without the frames of the machinery in its origin."""
    lines = message.splitlines()
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith('  File "'):
            filename = line.split('"')[1]
            body = [line]
            if index + 1 < len(lines) and not lines[index + 1].startswith('  File "'):
                body.append(lines[index + 1])
                index += 1
            if not _is_machinery(filename):
                kept += body
        else:
            kept.append(line)
        index += 1
    return "\n".join(kept)


def _format_stack(stack: traceback.StackSummary) -> str:
    stack = traceback.StackSummary.from_list(
        [frame for frame in stack if not _is_machinery(frame.filename)]
    )
    if not stack:
        return "  (creation site unknown)"
    body = "".join(stack.format()).rstrip()
    return "  created at (most recent call last):\n" + body


def _open_fds() -> set[int]:
    try:
        dir_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return set()
    try:
        return {int(name) for name in os.listdir(dir_fd)} - {dir_fd}
    finally:
        os.close(dir_fd)


def _describe_fd(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "(closed since)"


def _child_pids() -> set[int]:
    me, found = str(os.getpid()), set[int]()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                found.add(int(entry))
    return found


def _describe_child(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = "?"
    return f"pid {pid}: {command or '(zombie: exited, never reaped)'}"


def _describe_thread(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    code = getattr(target, "__code__", None)
    where = f", target {target.__qualname__} at {code.co_filename}:{code.co_firstlineno}"  # type: ignore[union-attr]
    return f"{thread.name!r}{where if code is not None else ''}"
