"""``python -m tidal`` (tidal.cli) as a user meets it: real subprocesses, compared with ``python``.

Help and --version of every subcommand; errors worded, exit-coded and as short as python's own;
tracebacks with the same frames as ``python script.py`` on asyncio's loop; the watchdog turned
on from the command line. The subprocesses of one test run side by side to keep the suite fast.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tidal

TIMEOUT = 60  # seconds; every subprocess is bounded

Command = list[str]


def run_all(
    commands: list[Command], *, cwd: Path, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``commands`` side by side; return their results in order."""
    procs = [
        subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def tidal_cmd(*args: str) -> Command:
    return [sys.executable, "-m", "tidal", *args]


# -- --help and --version ------------------------------------------------------------------------

HELP_MUST_SHOW: dict[str, list[str]] = {
    "": [
        "script.py",
        "-m module",
        "--monitor",
        "--leak-report",
        "--no-leak-report",
        "--watchdog",
        "--version",
        "TIDAL_MONITOR=1",
        "TIDAL_LEAK_REPORT=1",
        "TIDAL_WATCHDOG=SECONDS",
        "TIDAL_MONITOR_DIR",
        "tidal-trace.html",
        *("demo", "ps PID", "pstree PID", "trace", "install-kernel"),
    ],
    "demo": ["--scale", "--loop", "--only", "sequential", "concurrent"],
    "ps": ["PID", "--json", "--monitor", "TIDAL_MONITOR=1", "TIDAL_MONITOR_DIR"],
    "pstree": ["PID", "--json", "tree", "TIDAL_MONITOR_DIR"],
    "trace": ["-o OUT", "--output", "--capacity", "tidal-trace.html", ".json", "-m module"],
    "install-kernel": ["--name", "--display-name", "--user", "--sys-prefix", "--prefix"],
}


@pytest.mark.slow
def test_every_subcommand_has_help_that_shows_its_options(tmp_path: Path) -> None:
    commands = [tidal_cmd(*([name] if name else []), "--help") for name in HELP_MUST_SHOW]
    for name, result in zip(HELP_MUST_SHOW, run_all(commands, cwd=tmp_path), strict=True):
        assert result.returncode == 0, (name, result.stderr)
        assert result.stderr == ""
        assert result.stdout.startswith(f"usage: python -m tidal {name}".rstrip())
        missing = [word for word in HELP_MUST_SHOW[name] if word not in result.stdout]
        assert missing == [], f"'{name} --help' does not mention {missing}"


@pytest.mark.slow
def test_version_names_tidal_the_build_and_the_python(tmp_path: Path) -> None:
    (result,) = run_all([tidal_cmd("--version")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    build = "compiled" if getattr(tidal, "COMPILED", False) else "pure Python"
    python = f"{sys.implementation.name.replace('cpython', 'CPython')} {sys.version.split()[0]}"
    assert result.stdout.startswith(f"tidal {tidal.__version__} ({build} build) on {python}")


@pytest.mark.slow
def test_the_tidal_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "tidal"
    if not script.exists():
        pytest.skip("the tidal console script is not installed next to this Python")
    help_, error = run_all([[str(script), "--help"], [str(script), "--bogus"]], cwd=tmp_path)
    assert help_.returncode == 0 and help_.stdout.startswith("usage: tidal [options] script.py")
    assert error.returncode == 2 and "tidal: error: unrecognized arguments: --bogus" in error.stderr


# -- errors ----------------------------------------------------------------------------------------


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines, "no error message"
    return lines[-1]


@pytest.mark.slow
def test_errors_of_a_missing_program_match_python(tmp_path: Path) -> None:
    (tmp_path / "pkg_without_main").mkdir()
    (tmp_path / "pkg_without_main" / "__init__.py").write_text("")
    (tmp_path / "dir_without_main").mkdir()
    cases: list[Command] = [
        ["nosuch.py"],
        ["-m", "tidal_no_such_module"],
        ["-m", "pkg_without_main"],
        ["dir_without_main"],
    ]
    python = run_all([[sys.executable, *case] for case in cases], cwd=tmp_path)
    ours = run_all([tidal_cmd(*case) for case in cases], cwd=tmp_path)
    for case, theirs, mine in zip(cases, python, ours, strict=True):
        assert mine.returncode == theirs.returncode, case
        assert mine.stdout == theirs.stdout == ""
        # python prefixes its message with its own path; we prefix ours with "python -m tidal".
        expected = theirs.stderr.replace(f"{sys.executable}: ", "python -m tidal: ")
        assert mine.stderr == expected, case
        assert len(mine.stderr.splitlines()) == 1


@pytest.mark.slow
def test_bad_arguments_are_one_line_errors_with_status_2(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "script.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    cases: dict[str, tuple[Command, str]] = {
        "unknown option": (["--bogus", str(script)], "unrecognized arguments: --bogus"),
        "ps abc": (["ps", "abc"], "argument PID: not a process id: 'abc'"),
        "pstree -1": (["pstree", "-1"], "argument PID: not a process id: '-1'"),
        "demo --only": (["demo", "--only", "nosuch"], "argument --only: invalid choice"),
        "demo --scale": (["demo", "--scale", "-1"], "must be a positive number, got '-1'"),
        "demo --scale x": (["demo", "--scale", "x"], "argument --scale: not a number: 'x'"),
        "trace svg": (["trace", "-o", "x.svg", str(script)], "unknown format '.svg'"),
        "trace dir": (
            ["trace", "-o", "/no/such/dir/x.html", str(script)],
            "directory '/no/such/dir' does not exist",
        ),
        "trace capacity": (["trace", "--capacity", "0", str(script)], "must be at least 1"),
        "watchdog": (["--watchdog=-1", str(script)], "must be a positive number of seconds"),
        "no program": (["--monitor"], "a script or -m module to run is required"),
        "-m alone": (["-m"], "argument -m: expected one argument"),
    }
    results = run_all([tidal_cmd(*argv) for argv, _ in cases.values()], cwd=tmp_path)
    for (name, (_, message)), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 2, (name, result.stderr)
        last = _one_line_error(result)
        assert message in last, (name, last)
        assert re.match(r"python -m tidal( \w+)?: error: ", last), (name, last)
        assert result.stderr.startswith("usage: "), name
    assert not marker.exists(), "a bad command line must not run the program"

    env = {**os.environ, "TIDAL_WATCHDOG": "soon"}
    (bad_env,) = run_all([tidal_cmd(str(script))], cwd=tmp_path, env=env)
    assert bad_env.returncode == 2
    assert "TIDAL_WATCHDOG not a number of seconds: 'soon'" in _one_line_error(bad_env)
    assert not marker.exists()


# -- tracebacks ----------------------------------------------------------------------------------

TWO_LEVELS = """
import asyncio

async def inner():
    raise ValueError("boom")

async def main():
    await asyncio.create_task(inner())

asyncio.run(main())
"""

TASK_GROUP = """
import asyncio

async def inner():
    await asyncio.sleep(0)
    raise ValueError("boom")

async def main():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(inner())

asyncio.run(main())
"""

THREAD_AND_GATHER = """
import asyncio

async def inner():
    await asyncio.sleep(0.01)
    raise ValueError("boom")

async def main():
    await asyncio.gather(inner(), asyncio.to_thread(int, "x"))

asyncio.run(main())
"""

SYNTAX_ERROR = "x = (\n"

FRAME = re.compile(r'^\s*(?:\| )?\s*File "([^"]+)", line \d+, in (\S+)$', re.MULTILINE)


def _frames(stderr: str) -> list[tuple[str, str]]:
    """(file, function) of every frame of a printed traceback, asyncio's and tidal's loop
    methods named alike (base_events.py and tidal's loop.py play the same part). A compiled
    build names its frames by qualified name ("tidal.loop.EventLoop.run_until_complete")."""
    frames = []
    for filename, function in FRAME.findall(stderr):
        name = os.path.basename(filename)
        if name == "base_events.py" or filename.endswith(os.path.join("tidal", "loop.py")):
            name = "<the loop>"
        frames.append((name, function.rpartition(".")[2]))
    return frames


@pytest.mark.slow
def test_tracebacks_show_the_frames_python_shows_on_asyncio(tmp_path: Path) -> None:
    programs = {
        "two_levels.py": TWO_LEVELS,
        "task_group.py": TASK_GROUP,
        "thread_and_gather.py": THREAD_AND_GATHER,
        "syntax_error.py": SYNTAX_ERROR,
    }
    for name, source in programs.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    commands = [[sys.executable, name] for name in programs]
    commands += [tidal_cmd(name) for name in programs]
    results = run_all(commands, cwd=tmp_path)
    python, ours = results[: len(programs)], results[len(programs) :]
    for name, theirs, mine in zip(programs, python, ours, strict=True):
        assert mine.returncode == theirs.returncode == 1, (name, mine.stderr)
        assert _frames(mine.stderr) == _frames(theirs.stderr), (name, mine.stderr)
        assert mine.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1]
        assert "runpy" not in mine.stderr and "cli.py" not in mine.stderr
    two_levels = _frames(ours[0].stderr)
    assert len(two_levels) == 6, ours[0].stderr  # <module>, run, run, the loop, main, inner
    assert two_levels[0] == ("two_levels.py", "<module>")
    assert "Traceback" not in ours[3].stderr  # as python: a SyntaxError has no frames to show


@pytest.mark.slow
def test_a_keyboard_interrupt_ends_the_program_as_python_does(tmp_path: Path) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os, signal

            async def main():
                asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
                await asyncio.sleep(30)

            asyncio.run(main())
            """
        )
    )
    theirs, mine = run_all([[sys.executable, str(script)], tidal_cmd(str(script))], cwd=tmp_path)
    assert mine.returncode == theirs.returncode == -2  # killed by SIGINT, as python exits
    assert _frames(mine.stderr) == _frames(theirs.stderr)
    assert mine.stderr.splitlines()[-1] == "KeyboardInterrupt"


# -- the watchdog ----------------------------------------------------------------------------------

BLOCKING = """
import asyncio, time

async def main():
    await asyncio.sleep(0.05)
    time.sleep(0.6)  # blocks the loop
    await asyncio.sleep(0.05)

asyncio.run(main())
"""


@pytest.mark.slow
def test_watchdog_from_the_command_line_and_the_environment(tmp_path: Path) -> None:
    script = tmp_path / "blocking.py"
    script.write_text(textwrap.dedent(BLOCKING))
    watched_env = {**os.environ, "TIDAL_WATCHDOG": "0.2"}
    plain_env = {k: v for k, v in os.environ.items() if k != "TIDAL_WATCHDOG"}
    option, option_spaced, default, from_env, off = (
        *run_all(
            [
                tidal_cmd("--watchdog=0.2", str(script)),
                tidal_cmd("--watchdog", "0.2", str(script)),
                tidal_cmd("--watchdog", str(script)),
                tidal_cmd(str(script)),
            ],
            cwd=tmp_path,
            env=plain_env,
        )[:3],
        *run_all([tidal_cmd(str(script))], cwd=tmp_path, env=watched_env),
        *run_all([tidal_cmd(str(script))], cwd=tmp_path, env=plain_env),
    )
    for name, result, threshold in [
        ("--watchdog=0.2", option, "0.200"),
        ("--watchdog 0.2", option_spaced, "0.200"),
        ("--watchdog", default, "0.100"),
        ("TIDAL_WATCHDOG=0.2", from_env, "0.200"),
    ]:
        assert result.returncode == 0, (name, result.stderr)
        assert "tidal watchdog: the event loop has been blocked for" in result.stderr, name
        assert f"(threshold {threshold} s), inside task 'Task-1'" in result.stderr, name
        assert "time.sleep(0.6)  # blocks the loop" in result.stderr, name
        assert "blocking.py" in result.stderr and "runpy" not in result.stderr, name
        assert "the event loop was blocked for" in result.stderr, name  # and when it came back
    assert off.returncode == 0 and "watchdog" not in off.stderr
