"""The ``python -m tidal`` command line.

Owns: argument dispatch for ``python -m tidal``.
Not here: what the subcommands do (demo.py, and the observability tools).

    python -m tidal script.py [args...]   run a script with tidal installed as asyncio's loop
    python -m tidal -m module [args...]   the same for a module
    python -m tidal demo [--scale S]      the seed's examples on tidal and asyncio, with timings
    python -m tidal ps|pstree PID         tasks of a running process (observe/commands.py)
    python -m tidal trace script.py -o timeline.html
"""

from __future__ import annotations

import runpy
import sys

USAGE = """\
usage: python -m tidal script.py [args...]    run a script with tidal as asyncio's loop
       python -m tidal -m module [args...]    run a module with tidal as asyncio's loop
       python -m tidal demo [--scale S] [--loop tidal|asyncio|both]
                                              the seed's examples, with their timings
       python -m tidal [--monitor] [--no-leak-report] script.py [args...]
                                              --monitor: let ps/pstree inspect the process
       python -m tidal ps PID [--json]        the tasks of a process run with --monitor
       python -m tidal pstree PID [--json]    the same, as a tree of who awaits whom
       python -m tidal trace [-o OUT] script.py [args...]
                                              record a timeline (OUT: .html or trace .json)
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command = args[0]
    if command == "demo":
        from .demo import main as demo_main

        return demo_main(args[1:])
    if command in {"ps", "pstree", "trace"}:
        from .observe import commands

        if command == "trace":
            return commands.trace_main(args[1:])
        return commands.ps_main(args[1:], tree=command == "pstree")
    from .observe.commands import run_options
    from .policy import install

    args, observe_setups = run_options(args)
    if not args:
        sys.stderr.write("python -m tidal: a script (or -m module) to run is required\n\n" + USAGE)
        return 2
    command = args[0]
    install()
    for setup in observe_setups:
        setup()
    if command == "-m":
        if len(args) < 2:
            sys.stderr.write("python -m tidal -m: a module name is required\n\n" + USAGE)
            return 2
        sys.argv = args[1:]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return 0
    sys.argv = args
    sys.path.insert(0, _script_dir(command))
    runpy.run_path(command, run_name="__main__")
    return 0


def _script_dir(path: str) -> str:
    import os

    return os.path.dirname(os.path.abspath(path))
