"""``tidal.inspect``: what every task of a loop is doing, as data or as an ASCII tree.

Owns: the public surface of the task tree; the work is in ``tidal.observe.tree`` (snapshots and
rendering) and ``tidal.observe.stats`` (accounting).
Not here: timelines (``tidal.trace``), other processes (``python -m tidal ps/pstree PID``).

    snap = tidal.inspect.snapshot()          # inside a coroutine: the running loop
    for task in snap.tasks:
        print(task.name, task.state, task.waiting_on)
    tidal.inspect.print_tree()               # the same, drawn as a tree

``snapshot`` works on asyncio's loop too. Creator, age, step count and running time are filled
in once ``track(loop)`` has been called on a tidal loop (it costs a clock read per step).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from .observe.stats import track, untrack
from .observe.tree import (
    AwaitLink,
    Location,
    Snapshot,
    TaskInfo,
    TaskState,
    format_table,
    format_tree,
    snapshot,
)

__all__ = [
    "AwaitLink",
    "Location",
    "Snapshot",
    "TaskInfo",
    "TaskState",
    "format_table",
    "format_tree",
    "print_tree",
    "snapshot",
    "track",
    "untrack",
]


def print_tree(loop: asyncio.AbstractEventLoop | None = None, file: TextIO | None = None) -> None:
    """Print the task tree of ``loop`` (default: the running loop) to ``file`` (stdout).

    Raises:
        RuntimeError: no loop was given and none is running in this thread.
    """
    (file if file is not None else sys.stdout).write(format_tree(snapshot(loop)))
