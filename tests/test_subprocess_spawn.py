"""Spawning a child keeps asyncio's semantics without blocking the loop thread (issue 10, A7).

``subprocess.Popen`` blocks until the child has exec'ed, reading an exec-status pipe. On
asyncio's loop that read happens on the loop thread; tidal spawns from a helper thread. The
parity tests check that nothing a caller sees changed: exec errors are raised from
``create_subprocess_exec`` with the same type and errno, and a caller cancelled during the spawn
leaves no child behind. The tidal-only tests check the loop thread never reads the exec-status
pipe (a profiler on the loop thread, and blockbuster when it is installed).
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import leakcheck
import tidal

Loop = asyncio.AbstractEventLoop
TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def no_new_children() -> Iterator[None]:
    """Every child a test starts has been reaped when it ends."""
    before = leakcheck.child_pids()
    yield
    assert leakcheck.child_pids() <= before


def exec_error(loop: Loop, program: str, **kwargs: Any) -> tuple[type[BaseException], Any]:
    async def main() -> tuple[type[BaseException], Any]:
        try:
            await asyncio.create_subprocess_exec(program, **kwargs)
        except OSError as exc:
            return type(exc), exc.errno
        raise AssertionError("the spawn did not fail")

    return loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))


def test_exec_errors_are_raised_from_create_subprocess_exec(loop: Loop, tmp_path: Path) -> None:
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    assert exec_error(loop, "/nonexistent/program") == (FileNotFoundError, errno.ENOENT)
    assert exec_error(loop, str(not_executable)) == (PermissionError, errno.EACCES)
    bad_cwd = exec_error(loop, sys.executable, cwd=str(tmp_path / "missing"))
    assert bad_cwd == (FileNotFoundError, errno.ENOENT)


def test_a_failing_preexec_fn_is_reported_as_on_asyncio(loop: Loop) -> None:
    def fail() -> None:
        raise ValueError("in the child")

    async def main() -> str:
        with pytest.raises(subprocess.SubprocessError) as caught:
            await asyncio.create_subprocess_exec(sys.executable, "-c", "pass", preexec_fn=fail)
        return str(caught.value)

    assert loop.run_until_complete(main()) == "Exception occurred in preexec_fn."


@pytest.mark.parametrize("turns", [0, 1, 3])
def test_cancelled_while_spawning_leaves_no_child(loop: Loop, turns: int) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "import time; time.sleep(30)",
                stdout=asyncio.subprocess.PIPE,
            )
        )
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    fds = leakcheck.open_fds()
    loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    assert leakcheck.open_fds() <= fds


def test_a_spawned_child_runs_and_talks(loop: Loop) -> None:
    async def main() -> tuple[bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(b"hello")
        return out, await proc.wait()

    assert loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT)) == (b"HELLO", 0)


# -- beyond asyncio: the loop thread never blocks in the spawn --------------------------------


@pytest.fixture(params=["tidal", "tidal-py"])
def tidal_loop(request: pytest.FixtureRequest) -> Iterator[tidal.EventLoop]:
    new_loop = tidal.new_event_loop(tasks="python" if request.param == "tidal-py" else None)
    try:
        yield new_loop
    finally:
        new_loop.close()


def test_the_loop_thread_never_reads_the_exec_status_pipe(
    tidal_loop: tidal.EventLoop, tmp_path: Path
) -> None:
    """A profiler on the loop thread sees every call to os.read made there; Popen's
    exec-status read must not be among them, for a spawn that works and one that fails."""
    reads: list[str] = []
    loop_thread = threading.get_ident()
    popen_threads: list[int] = []

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and arg is os.read:
            reads.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "subprocess.Popen" and recording:
            popen_threads.append(threading.get_ident())

    recording = True
    sys.addaudithook(audit)

    async def main() -> int:
        sys.setprofile(profile)
        try:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
            with pytest.raises(FileNotFoundError):
                await asyncio.create_subprocess_exec(str(tmp_path / "missing"))
        finally:
            sys.setprofile(None)
        return await proc.wait()

    try:
        assert tidal_loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT)) == 0
    finally:
        recording = False  # audit hooks cannot be removed; this one goes quiet
    assert [r for r in reads if "subprocess" in r] == []
    assert len(popen_threads) == 2
    assert loop_thread not in popen_threads


def test_blockbuster_finds_no_blocking_call_in_a_spawn(tidal_loop: tidal.EventLoop) -> None:
    blockbuster = pytest.importorskip("blockbuster")

    async def main() -> tuple[bytes, int]:
        with blockbuster.blockbuster_ctx():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "print('ok')", stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
            return out, await proc.wait()

    assert tidal_loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT)) == (b"ok\n", 0)


def test_with_a_preexec_fn_the_child_is_forked_from_the_loop_thread(
    tidal_loop: tidal.EventLoop,
) -> None:
    """Linux's PR_SET_PDEATHSIG (which a preexec_fn may set) fires when the forking *thread*
    exits; with a preexec_fn, tidal spawns from the loop thread, as asyncio does, so it cannot
    fire early. The preexec_fn still runs in the child (it writes to an inherited pipe)."""
    read_end, write_end = os.pipe()

    def in_the_child() -> None:
        os.write(write_end, b"x")

    spawning_threads: list[int] = []

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "subprocess.Popen" and recording:
            spawning_threads.append(threading.get_ident())

    recording = True
    sys.addaudithook(audit)

    async def main() -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "pass", preexec_fn=in_the_child, pass_fds=(write_end,)
        )
        return await proc.wait()

    try:
        assert tidal_loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT)) == 0
    finally:
        recording = False
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            assert reader.read() == b"x"
    assert spawning_threads == [threading.get_ident()]
