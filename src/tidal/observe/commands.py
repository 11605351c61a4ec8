"""The observability subcommands of ``python -m tidal``: ps, pstree, trace, and run options.

Owns: what ``python -m tidal ps PID``, ``pstree PID`` and ``trace script.py -o out.html`` do,
and the observability options of a plain run (``--monitor``, the leak report at exit).
Not here: the dispatch itself (cli.py), snapshots (tree.py), the monitor protocol (monitor.py),
recording (timeline.py).

    python -m tidal ps PID [--json]          tasks of a process that enabled the monitor, a table
    python -m tidal pstree PID               the same as a tree of awaits
    python -m tidal trace [-o OUT] [--capacity N] script.py [args...]
    python -m tidal trace script.py [args...] -o OUT
        trace's own options are recognised anywhere up to a "--"; put the script's arguments
        after "--" if they could be mistaken for them. OUT ending in .html gives the HTML
        page, anything else Chrome/Perfetto trace JSON. "-m module" works in place of a script.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from collections.abc import Callable

TRACE_USAGE = """\
usage: python -m tidal trace [-o OUT.html|OUT.json] [--capacity N] script.py [args...]
       python -m tidal trace [options] -m module [args...]
Record a timeline of every task, callback, timer, I/O wait and executor job of the program.
Options are recognised anywhere before a "--"; after "--" everything goes to the script.
"""

PS_USAGE = "usage: python -m tidal {ps|pstree} PID [--json]\n"


def _pid(args: list[str], command: str) -> tuple[int, bool] | None:
    as_json = "--json" in args
    rest = [a for a in args if a != "--json"]
    if len(rest) != 1 or not rest[0].isdigit():
        sys.stderr.write(PS_USAGE.replace("{ps|pstree}", command))
        return None
    return int(rest[0]), as_json


def ps_main(args: list[str], *, tree: bool = False) -> int:
    """``python -m tidal ps PID`` (``tree=False``) or ``pstree PID``."""
    from .monitor import MonitorError, fetch_snapshots
    from .tree import format_table, format_tree

    parsed = _pid(args, "pstree" if tree else "ps")
    if parsed is None:
        return 2
    pid, as_json = parsed
    try:
        snapshots = fetch_snapshots(pid)
    except MonitorError as exc:
        sys.stderr.write(f"python -m tidal: {exc}\n")
        return 1
    if as_json:
        sys.stdout.write(json.dumps([snap.to_dict() for snap in snapshots], indent=1) + "\n")
        return 0
    if not snapshots:
        sys.stdout.write(f"pid {pid}: no event loop is being monitored (none has run a task yet)\n")
        return 0
    render = format_tree if tree else format_table
    sys.stdout.write("\n".join(render(snap) for snap in snapshots))
    return 0


def _trace_options(args: list[str]) -> tuple[str, int, list[str]] | str:
    """Split trace's options from the target; return (output, capacity, target) or an error."""
    from .timeline import DEFAULT_CAPACITY

    output = "tidal-trace.html"
    capacity = DEFAULT_CAPACITY
    target: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            target.extend(args[index + 1 :])
            break
        if arg in {"-o", "--output", "--capacity"}:
            if index + 1 >= len(args):
                return f"{arg} needs a value"
            value = args[index + 1]
            if arg == "--capacity":
                if not value.isdigit() or int(value) < 1:
                    return f"--capacity takes a positive number of events, got {value!r}"
                capacity = int(value)
            else:
                output = value
            index += 2
            continue
        if arg.startswith("--output="):
            output = arg.split("=", 1)[1]
        elif arg in {"-h", "--help"} and not target:
            return ""
        else:
            target.append(arg)
        index += 1
    if not target or (target[0] == "-m" and len(target) < 2):
        return "a script (or -m module) to run is required"
    return output, capacity, target


def run_target(target: list[str]) -> None:
    """Run ``script.py args`` or ``-m module args`` as __main__, as ``python`` would."""
    if target[0] == "-m":
        sys.argv = target[1:]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
        return
    sys.argv = list(target)
    sys.path.insert(0, os.path.dirname(os.path.abspath(target[0])))
    runpy.run_path(target[0], run_name="__main__")


def trace_main(args: list[str]) -> int:
    """``python -m tidal trace ...``: run the program under ``tidal.trace.record``."""
    from ..policy import install
    from .timeline import record

    parsed = _trace_options(args)
    if isinstance(parsed, str):
        if parsed:
            sys.stderr.write(f"python -m tidal trace: {parsed}\n\n")
        sys.stderr.write(TRACE_USAGE)
        return 0 if not parsed else 2
    output, capacity, target = parsed
    output = os.path.abspath(output)  # the script may chdir
    install()
    status = 0
    with record(capacity=capacity) as session:
        try:
            run_target(target)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            recording = session.stop()
            title = f"tidal timeline: {' '.join(target)}"
            recording.save(output, title)
            sys.stderr.write(
                f"tidal: timeline of {len(recording.task_lanes())} tasks over "
                f"{recording.duration:.3f} s written to {output}\n"
            )
    return status


def run_options(args: list[str]) -> tuple[list[str], list[Callable[[], None]]]:
    """Handle the observability options of a plain run; return the remaining args and the
    set-up steps to perform once tidal is installed.

    ``--monitor`` (or ``TIDAL_MONITOR=1``) turns the monitor on. The leak report at exit is on
    unless ``--no-leak-report`` is given or ``TIDAL_LEAK_REPORT=0``.
    """
    setups: list[Callable[[], None]] = []
    monitor = os.environ.get("TIDAL_MONITOR", "") not in {"", "0"}
    leaks = os.environ.get("TIDAL_LEAK_REPORT", "1") != "0"
    while args and args[0] in {"--monitor", "--no-leak-report"}:
        if args[0] == "--monitor":
            monitor = True
        else:
            leaks = False
        args = args[1:]
    if monitor:

        def start_monitor() -> None:
            from .monitor import enable

            enable()

        setups.append(start_monitor)
    if leaks:

        def start_leak_report() -> None:
            from .leaks import track_all

            track_all()

        setups.append(start_leak_report)
    return args, setups
