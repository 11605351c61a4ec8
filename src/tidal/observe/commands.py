"""What the observability parts of ``python -m tidal`` do: ps, pstree, trace, and the run options.

Owns: showing another process's tasks (``ps``), running a program under a timeline recording
(``trace``), and switching on, for a whole program, the monitor (``--monitor``), the leak report
at exit and the blocked-loop watchdog (``--watchdog``).
Not here: parsing arguments and running the program as ``__main__`` (cli.py), snapshots
(tree.py), the monitor protocol (monitor.py), recording (timeline.py), the watchdog thread
(watchdog.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .tree import Snapshot, program_frames


def ps(
    pid: int, *, tree: bool = False, as_json: bool = False, prog: str = "python -m tidal"
) -> int:
    """``python -m tidal ps PID`` (a table) or ``pstree PID``; return the exit status.
    Errors go to stderr, one line prefixed with ``prog``."""
    from .monitor import MonitorError, fetch_snapshots
    from .tree import format_table, format_tree

    try:
        snapshots = fetch_snapshots(pid)
    except MonitorError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return 1
    if as_json:
        sys.stdout.write(json.dumps([snap.to_dict() for snap in snapshots], indent=1) + "\n")
        return 0
    if not snapshots:
        sys.stdout.write(f"pid {pid}: no event loop is being monitored (none has run a task yet)\n")
        return 0
    render = format_tree if tree else format_table
    sys.stdout.write("\n".join(render(_program_stack_only(snap)) for snap in snapshots))
    return 0


def _program_stack_only(snap: Snapshot) -> Snapshot:
    """The snapshot with a blocked loop's stack cut to the program's frames, as the watchdog
    shows it (the JSON output keeps every frame)."""
    if not snap.loop_stack:
        return snap
    shown = program_frames(snap.loop_stack)
    hidden = len(snap.loop_stack) - len(shown)
    note = snap.note
    if hidden:
        machinery = f"{hidden} frame{'s' if hidden != 1 else ''} of the launcher and the loop"
        note = f"{note}; {machinery} not shown" if note else f"{machinery} not shown"
    return replace(snap, loop_stack=shown, note=note)


def trace(run: Callable[[], None], *, output: str, capacity: int, title: str) -> int:
    """Run the program (``run``) under ``tidal.trace.record`` and save the timeline to
    ``output``, also when the program exits or fails; return the exit status (0)."""
    from .timeline import record

    with record(capacity=capacity) as session:
        try:
            run()
        finally:
            recording = session.stop()
            recording.save(output, title)
            sys.stderr.write(
                f"tidal: timeline of {len(recording.task_lanes())} tasks over "
                f"{recording.duration:.3f} s written to {output}\n"
            )
    return 0


def start_monitor() -> None:
    """Serve every tidal loop of this process to ``python -m tidal ps/pstree``."""
    from .monitor import enable

    enable()


def start_leak_report() -> None:
    """Report leaked tasks and lost exceptions of every tidal loop when it closes."""
    from .leaks import track_all

    track_all()


def start_watchdog(threshold: float) -> None:
    """Watch every tidal loop the program creates from now on with a blocked-loop watchdog.

    A program that calls ``asyncio.run`` never holds its loop, so the watchdog attaches when a
    loop creates its first task (``add_loop_watcher``) and stops with the loop.
    """
    from .hooks import add_loop_watcher
    from .watchdog import Watchdog

    def watch(loop: Any) -> None:  # called once per loop
        Watchdog(loop, threshold).start()

    add_loop_watcher(watch)
