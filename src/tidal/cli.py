"""The command line: ``python -m tidal`` and the ``tidal`` script.

Owns: the arguments of every subcommand (argparse, so each has ``--help``), ``--version``, the
wording and exit status of command-line errors, and running a program as ``python`` would: the
same ``sys.argv``, ``__main__``, errors and tracebacks, with tidal installed as asyncio's loop.
Not here: what the subcommands do (demo.py, observe/commands.py, kernelspec.py).

    python -m tidal [options] script.py [args...]   run a script on tidal
    python -m tidal [options] -m module [args...]   the same for a module
    python -m tidal demo | ps | pstree | trace | install-kernel ...   (each has --help)

Matching ``python``: options come before the script, and everything after it is the script's;
a missing script is "can't open file ..." with exit status 2, a missing module "No module named
..." with 1, both one line on stderr; a bad option is argparse's usage line and error, status 2.
An uncaught exception prints the traceback ``python script.py`` would print: the launcher's
frames (runpy, this module) are left out, as ``python`` leaves out its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import runpy
import shutil
import sys
import textwrap
import types
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

PROG: Final = "python -m tidal"
DEFAULT_TRACE_FILE: Final = "tidal-trace.html"
TRACE_SUFFIXES: Final = frozenset({".html", ".htm", ".json"})  # what Recording.save writes

ENVIRONMENT: Final = """\
environment variables:
  TIDAL_MONITOR=1          same as --monitor
  TIDAL_LEAK_REPORT=1      same as --leak-report (0: off, the default)
  TIDAL_WATCHDOG=SECONDS   same as --watchdog=SECONDS (0 or empty: off)
  TIDAL_MONITOR_DIR=DIR    where monitor sockets live (default: $TMPDIR/tidal-UID)
"""

COMMANDS: Final = """\
commands (python -m tidal COMMAND --help for each):
  demo                     the seed's examples on tidal and on asyncio's loop, with timings
  ps PID                   the tasks of a process run with --monitor, a table
  pstree PID               the same, as a tree of who awaits whom
  trace                    run a program and record a timeline of its tasks (default file:
                           tidal-trace.html)
  install-kernel           install a Jupyter kernel whose event loop is tidal's
"""


def version_text() -> str:
    """tidal's version, its build (pure Python or compiled), and the Python running it."""
    import tidal

    build = "compiled" if getattr(tidal, "COMPILED", False) else "pure Python"
    return (
        f"tidal {tidal.__version__} ({build} build) on {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (argparse exits by itself on bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]](args[1:])
    return _run_command(args)


# -- running a program -----------------------------------------------------------------------


def _run_parser() -> argparse.ArgumentParser:
    prog = _prog()
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} [options] script.py [args ...]\n"
        f"       {prog} [options] -m module [args ...]\n"
        f"       {prog} COMMAND [options ...]",
        description=_wrap(
            "Run a Python program with tidal as asyncio's event loop: asyncio.run(), "
            "asyncio.new_event_loop() and asyncio.Runner() hand out tidal loops."
        ),
        epilog=COMMANDS + "\n" + ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=version_text(),
        help="print tidal's version and build (pure Python or compiled), the Python, and exit",
    )
    parser.add_argument(
        "-m", metavar="module", dest="module", help="run a library module as a script"
    )
    parser.add_argument(
        "--monitor",
        action="store_true",
        default=_env_flag("TIDAL_MONITOR", default=False),
        help="let 'python -m tidal ps/pstree PID' inspect this process",
    )
    # Off by default: tracking every task's creation site costs ~80% of a task's cost
    # (valgrind, create_task + gather on 3.11), far over the 5% a default may cost.
    parser.add_argument(
        "--leak-report",
        dest="leak_report",
        action="store_true",
        default=_env_flag("TIDAL_LEAK_REPORT", default=False),
        help="report leaked tasks and lost exceptions when a loop closes (costs time per task)",
    )
    parser.add_argument(
        "--no-leak-report",
        dest="leak_report",
        action="store_false",
        help="no leak report (the default; overrides TIDAL_LEAK_REPORT=1)",
    )
    parser.add_argument(
        "--watchdog",
        nargs="?",
        metavar="SECONDS",
        type=_seconds,
        const=_default_watchdog_threshold(),
        default=None,
        help="report on stderr, with the line that blocks, each time a loop stays busy "
        "longer than SECONDS (default %(const)s; also --watchdog=SECONDS)",
    )
    parser.add_argument("script", nargs="?", help="the program to run (a file, directory or zip)")
    parser.add_argument("args", nargs="*", help="its arguments (sys.argv[1:])")
    return parser


def _run_command(args: list[str]) -> int:
    parser = _run_parser()
    options, target = _split_target(args, valued=(), optional_number=("--watchdog",))
    ns = parser.parse_args(options)
    if ns.watchdog is None:
        ns.watchdog = _env_watchdog(parser)
    if not target:
        parser.error("a script or -m module to run is required")
    from .observe import commands
    from .policy import install

    install()  # first: finding a module imports its packages, as python -m does
    program = _program(parser, target)
    if ns.monitor:
        commands.start_monitor()
    if ns.leak_report:
        commands.start_leak_report()
    if ns.watchdog:
        commands.start_watchdog(ns.watchdog)
    program()
    return 0


def _split_target(
    args: list[str], *, valued: Sequence[str], optional_number: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Split ``args`` into tidal's options and the program (``[script, *args]`` or
    ``["-m", module, *args]``), as ``python`` does: the first argument that is not an option
    starts the program. ``valued`` options take the next argument as their value;
    ``optional_number`` ones take it only if it is a number."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return args[:index], args[index + 1 :]
        if arg == "-m":
            return args[:index], args[index:]
        if arg.startswith("-m") and not arg.startswith("--"):  # -mmodule, as python accepts
            return args[:index], ["-m", arg[2:], *args[index + 1 :]]
        if not arg.startswith("-") or arg == "-":
            return args[:index], args[index:]
        value_follows = arg in valued or (
            arg in optional_number and index + 1 < len(args) and _is_number(args[index + 1])
        )
        index += 2 if value_follows else 1
    return args, []


def _program(parser: argparse.ArgumentParser, target: list[str]) -> Callable[[], None]:
    """Check that ``target`` can run, as ``python`` checks before running anything, and return
    a function that runs it as ``__main__``. A failed check exits with python's message."""
    if target[0] == "-m":
        if len(target) < 2:
            parser.error("argument -m: expected one argument")
        module, module_args = target[1], target[2:]
        _check_module(module)
        return lambda: run_module(module, module_args)
    script, script_args = target[0], target[1:]
    path = os.path.abspath(script)
    _check_script(path)
    return lambda: run_script(path, [script, *script_args])


class _CannotRun(Exception):
    """What runpy's checks raise when asked (the error class ``python -m`` passes them)."""


def _check_module(name: str) -> None:
    # runpy's own lookup, with the messages python -m prints ("No module named x", "'p' is a
    # package and cannot be directly executed"); it imports the parent packages, as python does.
    find: Any = runpy._get_module_details  # type: ignore[attr-defined]
    try:
        find(name, _CannotRun)
    except _CannotRun as exc:
        _fail(str(exc), status=1)


def _check_script(path: str) -> None:
    import pkgutil

    if os.path.isdir(path) or (os.path.isfile(path) and _is_zip(path)):
        importer = pkgutil.get_importer(path)
        if importer is None or importer.find_spec("__main__") is None:
            _fail(f"can't find '__main__' module in {path!r}", status=1)
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        _fail(f"can't open file {path!r}: [Errno {exc.errno}] {exc.strerror}", status=2)


def _is_zip(path: str) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


# -- tracebacks ------------------------------------------------------------------------------


def run_script(path: str, argv: list[str]) -> None:
    """Run the script (or directory, or zip) at ``path`` as ``__main__``, ``sys.argv = argv``."""
    sys.argv = list(argv)
    if os.path.isfile(path) and not _is_zip(path):
        sys.path.insert(0, os.path.dirname(path))  # a directory or zip is put there by runpy
    with _LauncherFramesHidden():
        runpy.run_path(path, run_name="__main__")


def run_module(module: str, args: list[str]) -> None:
    """Run ``module`` as ``__main__``; ``sys.argv[0]`` becomes its file, as with ``python -m``."""
    sys.argv = [module, *args]
    with _LauncherFramesHidden():
        runpy.run_module(module, run_name="__main__", alter_sys=True)


# The frame that hands over to runpy: it and everything above it (the interpreter's runpy,
# tidal/__main__.py or the console script, main(), a subcommand) belong to the launcher, and so
# do the runpy frames below it, down to the program's first line. Matched by directory and name
# rather than code object, so that a compiled build of this module matches too (Cython names
# its frames by qualified name: "tidal.cli.run_script").
_PACKAGE_DIR: Final = os.path.dirname(os.path.abspath(__file__))
_HANDOVER: Final = frozenset({run_script.__name__, run_module.__name__})
_RUNPY_FILES: Final = frozenset({os.path.abspath(runpy.__file__), "<frozen runpy>"})


def _is_handover(tb: types.TracebackType) -> bool:
    code = tb.tb_frame.f_code
    name = code.co_name.rpartition(".")[2]
    return name in _HANDOVER and os.path.dirname(code.co_filename) == _PACKAGE_DIR


def program_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` from the program's first frame on: what ``python script.py`` would show.

    None if nothing of the program is in it (a SyntaxError, which python prints without a
    traceback); ``tb`` unchanged if it does not pass through the handover at all.
    """
    node = tb
    while node is not None and not _is_handover(node):
        node = node.tb_next
    if node is None:
        return tb
    node = node.tb_next
    while node is not None and node.tb_frame.f_code.co_filename in _RUNPY_FILES:
        node = node.tb_next
    return node


_INSTRUMENTATION_DIR: Final = os.path.join(_PACKAGE_DIR, "observe")


def _without_instrumentation(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the frames of tidal's instrumentation (the leak report's executor-job
    wrapper, hooks), which only pass calls through and which asyncio has no counterpart of.
    A traceback made of nothing else is left whole."""
    while tb is not None and tb.tb_next is not None and _is_instrumentation(tb):
        tb = tb.tb_next
    node = tb
    while node is not None and node.tb_next is not None:
        following = node.tb_next
        if _is_instrumentation(following):
            node.tb_next = following.tb_next
        else:
            node = following
    return tb


def _is_instrumentation(tb: types.TracebackType) -> bool:
    return os.path.dirname(tb.tb_frame.f_code.co_filename) == _INSTRUMENTATION_DIR


def _shorten_chain(error: BaseException, seen: set[int]) -> None:
    """Apply ``_without_instrumentation`` to ``error``, its causes, contexts and group members."""
    if id(error) in seen:
        return
    seen.add(id(error))
    error.__traceback__ = _without_instrumentation(error.__traceback__)
    for linked in (error.__cause__, error.__context__):
        if linked is not None:
            _shorten_chain(linked, seen)
    if isinstance(error, BaseExceptionGroup):
        for member in error.exceptions:
            _shorten_chain(member, seen)


class _LauncherFramesHidden:
    """While the program runs, uncaught exceptions print without the launcher's frames (nor
    those of tidal's instrumentation).

    The interpreter prints an uncaught exception through ``sys.excepthook`` once the launcher
    has unwound, and picks the exit status itself (1, or death by SIGINT after a
    KeyboardInterrupt); only the traceback handed on to the hook is shortened. A hook the
    program installs replaces this one and sees every frame.
    """

    def __init__(self) -> None:
        self._previous = sys.excepthook

    def __enter__(self) -> None:
        self._previous = sys.excepthook
        sys.excepthook = self._hook

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        # An exception on its way out is printed by the hook: leave it in place for that.
        escaping = kind is not None and not issubclass(kind, SystemExit)
        if not escaping and sys.excepthook == self._hook:
            sys.excepthook = self._previous

    def _hook(
        self, kind: type[BaseException], value: BaseException, tb: types.TracebackType | None
    ) -> None:
        if sys.excepthook == self._hook:
            sys.excepthook = self._previous
        value.__traceback__ = program_traceback(tb)
        _shorten_chain(value, set())
        self._previous(kind, value, value.__traceback__)


# -- subcommands -----------------------------------------------------------------------------


def _demo(args: list[str]) -> int:
    from .demo import main as demo_main

    return demo_main(args, prog=f"{_prog()} demo")


def _ps_parser(command: str) -> argparse.ArgumentParser:
    shape = "as a table" if command == "ps" else "as a tree of who awaits whom"
    parser = argparse.ArgumentParser(
        prog=f"{_prog()} {command}",
        description=_wrap(
            f"Show the tasks of another process {shape}. That process must run with the "
            f"monitor on: '{_prog()} --monitor script.py', TIDAL_MONITOR=1, or "
            "tidal.observe.monitor.enable() in the program."
        ),
        epilog="environment variables:\n"
        "  TIDAL_MONITOR_DIR=DIR  where monitor sockets live (default: $TMPDIR/tidal-UID)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pid", type=_pid, metavar="PID", help="the process to inspect")
    parser.add_argument("--json", action="store_true", help="print the snapshots as JSON")
    return parser


def _ps(args: list[str]) -> int:
    from .observe import commands

    ns = _ps_parser("ps").parse_args(args)
    return commands.ps(ns.pid, tree=False, as_json=ns.json, prog=_prog())


def _pstree(args: list[str]) -> int:
    from .observe import commands

    ns = _ps_parser("pstree").parse_args(args)
    return commands.ps(ns.pid, tree=True, as_json=ns.json, prog=_prog())


def _trace_parser() -> argparse.ArgumentParser:
    from .observe.timeline import DEFAULT_CAPACITY

    prog = f"{_prog()} trace"
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} [-o OUT] [--capacity N] script.py [args ...]\n"
        f"       {prog} [-o OUT] [--capacity N] -m module [args ...]",
        description=_wrap(
            "Run a program on tidal and record a timeline of every task, callback, timer, I/O "
            "wait and executor job: an HTML page to open in a browser, or Chrome/Perfetto "
            "trace JSON (ui.perfetto.dev, chrome://tracing). The file is written when the "
            "program ends, also when it fails or exits."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        default=DEFAULT_TRACE_FILE,
        help="where to write: OUT.html (the page) or OUT.json (trace JSON); "
        "default %(default)s in the current directory",
    )
    parser.add_argument(
        "--capacity",
        type=_positive_int,
        metavar="N",
        default=DEFAULT_CAPACITY,
        help="events kept per loop; the oldest are dropped first (default %(default)s)",
    )
    parser.add_argument("-m", metavar="module", dest="module", help="run a library module")
    parser.add_argument("script", nargs="?", help="the program to run")
    parser.add_argument("args", nargs="*", help="its arguments")
    return parser


def _trace(args: list[str]) -> int:
    parser = _trace_parser()
    options, target = _split_target(args, valued=("-o", "--output", "--capacity"))
    ns = parser.parse_args(options)
    output = os.path.abspath(ns.output)  # the program may chdir
    _check_output(parser, output)
    if not target:
        parser.error("a script or -m module to run is required")
    from .observe import commands
    from .policy import install

    install()
    program = _program(parser, target)
    title = f"tidal timeline: {' '.join(target)}"
    return commands.trace(program, output=output, capacity=ns.capacity, title=title)


def _check_output(parser: argparse.ArgumentParser, output: str) -> None:
    """Refuse an output the recording could not be saved to, before the program runs."""
    suffix = os.path.splitext(output)[1].lower()
    if suffix not in TRACE_SUFFIXES:
        parser.error(
            f"argument -o/--output: unknown format {suffix or '(no extension)'!r} for "
            f"{output!r}; use .html for the timeline page or .json for Chrome/Perfetto JSON"
        )
    directory = os.path.dirname(output)
    if not os.path.isdir(directory):
        parser.error(f"argument -o/--output: directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK) or (
        os.path.exists(output) and not os.access(output, os.W_OK)
    ):
        parser.error(f"argument -o/--output: cannot write {output!r} (permission denied)")


def _install_kernel_parser() -> argparse.ArgumentParser:
    from .kernelspec import DEFAULT_DISPLAY_NAME, DEFAULT_NAME

    parser = argparse.ArgumentParser(
        prog=f"{_prog()} install-kernel",
        description="Install a Jupyter kernel spec whose kernel (ipykernel, from this Python) "
        "runs on a tidal event loop, so a notebook's top-level 'await' runs on tidal. Where it "
        "goes follows 'python -m ipykernel install': system-wide unless --user, --sys-prefix "
        "or --prefix says otherwise.",
    )
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help="the kernel's name (default %(default)s)"
    )
    parser.add_argument(
        "--display-name",
        default=DEFAULT_DISPLAY_NAME,
        help="the name notebooks show (default %(default)r)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user only")
    where.add_argument(
        "--sys-prefix", action="store_true", help=f"install into {sys.prefix} (this venv)"
    )
    where.add_argument("--prefix", metavar="PREFIX", help="install into PREFIX/share/jupyter")
    return parser


def _install_kernel(args: list[str]) -> int:
    from . import kernelspec

    ns = _install_kernel_parser().parse_args(args)
    prefix = sys.prefix if ns.sys_prefix else ns.prefix
    try:
        path = kernelspec.install(
            name=ns.name, display_name=ns.display_name, user=ns.user, prefix=prefix
        )
    except kernelspec.KernelSpecError as exc:
        _fail(str(exc), status=1)
    sys.stdout.write(f"Installed kernelspec {ns.name} in {path}\n")
    return 0


SUBCOMMANDS: Final[dict[str, Callable[[list[str]], int]]] = {
    "demo": _demo,
    "ps": _ps,
    "pstree": _pstree,
    "trace": _trace,
    "install-kernel": _install_kernel,
}


# -- values ----------------------------------------------------------------------------------


def _fail(message: str, *, status: int) -> NoReturn:
    sys.stderr.write(f"{_prog()}: {message}\n")
    raise SystemExit(status)


def _prog() -> str:
    """How the user called us: "tidal" (the console script) or "python -m tidal"."""
    return "tidal" if sys.argv and os.path.basename(sys.argv[0]) == "tidal" else PROG


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=min(shutil.get_terminal_size().columns, 100) - 2)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}")
    return value


def _env_flag(name: str, *, default: bool) -> bool:
    value = os.environ.get(name, "")
    if value == "":
        return default
    return value != "0"


def _default_watchdog_threshold() -> float:
    from .observe.watchdog import DEFAULT_THRESHOLD

    return DEFAULT_THRESHOLD


def _env_watchdog(parser: argparse.ArgumentParser) -> float | None:
    value = os.environ.get("TIDAL_WATCHDOG", "").strip()
    if value in {"", "0"}:
        return None
    try:
        return _seconds(value)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"TIDAL_WATCHDOG {exc}")
