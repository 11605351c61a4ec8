"""Subprocesses on asyncio's loop and tidal's: ``subprocess_exec``/``subprocess_shell``, asyncio's
``create_subprocess_*`` and ``Process`` on top of them, and reaping (no zombies, ever).

Tidal-only tests (named so) cover the reaping strategies and the places where tidal
deliberately does better than asyncio.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import Iterator
from typing import Any

import pytest

import leakcheck
import tidal
import tidal.subprocess as tidal_subprocess

TIMEOUT = 10.0  # seconds; bound on every test's coroutine
PY = [sys.executable, "-S", "-c"]  # -S: no site import, so children start faster
CAT = shutil.which("cat") or "cat"
SLEEP = [shutil.which("sleep") or "sleep", "30"]  # always killed long before it ends

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc to count children")


# -- leak check: open descriptors and child processes, per module -----------------------------


@pytest.fixture(scope="module", autouse=True)
def no_leaks() -> Iterator[None]:
    with leakcheck.no_leaks():
        yield


@pytest.fixture
def no_new_children() -> Iterator[None]:
    """Fail a test that returns with a child of its own still alive or a zombie."""
    before = leakcheck.child_pids()
    yield
    assert leakcheck.child_pids() <= before, "the test left a child process behind"


class Recorder(asyncio.SubprocessProtocol):
    """Records every SubprocessProtocol event; ``lost`` resolves on connection_lost."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.events: list[Any] = []
        self.data: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: Any) -> None:
        self.events.append("made")

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.data[fd] += data
        if ("data", fd) not in self.events:
            self.events.append(("data", fd))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.events.append(("pipe_lost", fd))

    def process_exited(self) -> None:
        self.events.append("exited")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(None)


# -- asyncio.create_subprocess_* and Process -------------------------------------------------


@pytest.mark.usefixtures("no_new_children")
def test_communicate_roundtrip(loop: asyncio.AbstractEventLoop) -> None:
    payload = os.urandom(1024 * 1024)  # larger than a pipe: stdin flow control takes part

    async def main() -> None:
        async with asyncio.timeout(TIMEOUT):
            proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
            assert proc.returncode is None and proc.pid > 0
            out, err = await proc.communicate(payload)
            assert out == payload and err is None
            assert proc.returncode == 0
            assert await proc.wait() == 0

    loop.run_until_complete(main())


@pytest.mark.usefixtures("no_new_children")
def test_streams_by_hand(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> None:
        async with asyncio.timeout(TIMEOUT):
            proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"line one\n")
            await proc.stdin.drain()
            assert await proc.stdout.readline() == b"line one\n"
            proc.stdin.write(b"line two\n")
            proc.stdin.close()
            await proc.stdin.wait_closed()
            assert await proc.stdout.read() == b"line two\n"
            assert await proc.wait() == 0

    loop.run_until_complete(main())


@pytest.mark.usefixtures("no_new_children")
def test_shell_exit_code_stdout_and_stderr(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> None:
        async with asyncio.timeout(TIMEOUT):
            proc = await asyncio.create_subprocess_shell(
                "echo out; echo err >&2; exit 7", stdout=PIPE, stderr=PIPE
            )
            assert await proc.communicate() == (b"out\n", b"err\n")
            assert proc.returncode == 7
            merged = await asyncio.create_subprocess_shell(
                "echo out; echo err >&2", stdout=PIPE, stderr=STDOUT
            )
            assert merged.stderr is None
            assert await merged.communicate() == (b"out\nerr\n", None)  # type: ignore[comparison-overlap]  # typeshed: never None

    loop.run_until_complete(main())


@pytest.mark.usefixtures("no_new_children")
def test_kill_terminate_and_send_signal(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> list[int]:
        async with asyncio.timeout(TIMEOUT):
            procs = [await asyncio.create_subprocess_exec(*SLEEP) for _ in range(3)]
            procs[0].kill()
            procs[1].terminate()
            procs[2].send_signal(signal.SIGUSR1)
            return [await p.wait() for p in procs]

    codes = loop.run_until_complete(main())
    assert codes == [-signal.SIGKILL, -signal.SIGTERM, -signal.SIGUSR1]


@pytest.mark.usefixtures("no_new_children")
def test_concurrent_waits_and_many_children(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[list[int], list[int]]:
        async with asyncio.timeout(TIMEOUT):
            procs = [
                await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}") for i in range(20)
            ]
            codes = await asyncio.gather(*(p.wait() for p in procs))
            waits = await asyncio.gather(*(procs[5].wait() for _ in range(10)))
            return codes, waits

    codes, waits = loop.run_until_complete(main())
    assert codes == list(range(20))
    assert waits == [5] * 10


@pytest.mark.usefixtures("no_new_children")
def test_stdin_broken_pipe_raises_from_drain(loop: asyncio.AbstractEventLoop) -> None:
    rfd, wfd = os.pipe()

    async def main() -> None:
        async with asyncio.timeout(TIMEOUT):
            proc = await asyncio.create_subprocess_exec(
                *PY, f"import os; os.read({rfd}, 1)", stdin=PIPE, pass_fds=(rfd,)
            )
            assert proc.stdin is not None
            proc.stdin.write(b"x" * (1024 * 1024))  # fills the pipe, the rest is buffered
            os.write(wfd, b"go")  # now the child exits without reading its stdin
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                await proc.stdin.drain()
            assert await proc.wait() == 0

    try:
        loop.run_until_complete(main())
    finally:
        os.close(rfd)
        os.close(wfd)


@pytest.mark.usefixtures("no_new_children")
def test_communicate_ignores_broken_pipe(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> None:
        async with asyncio.timeout(TIMEOUT):
            proc = await asyncio.create_subprocess_exec("true", stdin=PIPE)
            assert await proc.communicate(b"x" * (1024 * 1024)) == (None, None)  # type: ignore[comparison-overlap]  # typeshed: never None
            assert proc.returncode == 0

    loop.run_until_complete(main())


@pytest.mark.usefixtures("no_new_children")
def test_output_is_not_lost_when_the_child_exits_first(loop: asyncio.AbstractEventLoop) -> None:
    code = "import sys; sys.stdout.buffer.write(b'z' * 300000); sys.exit(3)"

    async def main() -> None:
        async with asyncio.timeout(TIMEOUT):
            proc = await asyncio.create_subprocess_exec(*PY, code, stdout=PIPE, limit=1024)
            assert proc.stdout is not None
            chunks = []
            while chunk := await proc.stdout.read(65536):
                chunks.append(chunk)
                await asyncio.sleep(0)  # a slow consumer: the reader pauses the pipe
            assert len(b"".join(chunks)) == 300000
            assert await proc.wait() == 3

    loop.run_until_complete(main())


@pytest.mark.usefixtures("no_new_children")
def test_cancel_during_creation_kills_and_reaps(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> None:
        async with asyncio.timeout(TIMEOUT):
            task = asyncio.create_task(asyncio.create_subprocess_exec(*SLEEP))
            await asyncio.sleep(0)  # the child is spawned; its pipes are being connected
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    loop.run_until_complete(main())


def test_invalid_arguments(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> None:
        for kwargs in ({"text": True}, {"encoding": "utf-8"}, {"errors": "strict"}):
            with pytest.raises(ValueError):
                await asyncio.create_subprocess_exec("true", **kwargs)
            with pytest.raises(ValueError):
                await asyncio.create_subprocess_shell("true", **kwargs)
        for bad in ({"universal_newlines": True}, {"bufsize": 1}, {"shell": True}):
            with pytest.raises(ValueError):
                await loop.subprocess_exec(asyncio.SubprocessProtocol, "true", **bad)
        with pytest.raises(ValueError):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, "true", shell=False)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, ["true"])  # type: ignore[arg-type]
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/program")

    loop.run_until_complete(main())


# -- loop.subprocess_exec and the transport --------------------------------------------------


@pytest.mark.usefixtures("no_new_children")
def test_protocol_events_and_transport_api(loop: asyncio.AbstractEventLoop) -> None:
    code = "import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(4)"

    async def main() -> tuple[Recorder, Any]:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.subprocess_exec(
                lambda: Recorder(loop), *PY, code, stdin=None
            )
            try:
                assert isinstance(transport, asyncio.SubprocessTransport)
                assert proto.events[0] == "made"  # events may follow before we resume
                assert transport.get_pipe_transport(0) is None
                assert isinstance(transport.get_pipe_transport(1), asyncio.ReadTransport)
                assert transport.get_protocol() is proto
                popen = transport.get_extra_info("subprocess")
                assert isinstance(popen, subprocess.Popen)
                assert transport.get_pid() == popen.pid
                await proto.lost
            finally:
                transport.close()
            assert transport.get_returncode() == 4 and popen.returncode == 4
            # Finished: asyncio's contract is ProcessLookupError from here on.
            for method in (transport.kill, transport.terminate):
                with pytest.raises(ProcessLookupError):
                    method()
            assert transport.is_closing()
            return proto, transport

    proto, _ = loop.run_until_complete(main())
    assert proto.events[0] == "made" and proto.events[-1] == "lost"
    middle = proto.events[1:-1]
    assert sorted(map(str, middle)) == sorted(
        map(str, [("data", 1), ("data", 2), ("pipe_lost", 1), ("pipe_lost", 2), "exited"])
    )
    for fd in (1, 2):
        assert middle.index(("data", fd)) < middle.index(("pipe_lost", fd))
    assert proto.data == {1: bytearray(b"out"), 2: bytearray(b"err")}


@pytest.mark.usefixtures("no_new_children")
def test_close_kills_a_running_child(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> int | None:
        async with asyncio.timeout(TIMEOUT):
            transport, proto = await loop.subprocess_exec(lambda: Recorder(loop), *SLEEP)
            assert transport.get_returncode() is None
            transport.close()
            await proto.lost
            return transport.get_returncode()

    assert loop.run_until_complete(main()) == -signal.SIGKILL


@pytest.mark.usefixtures("no_new_children")
def test_debug_mode_runs_the_same(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_debug(True)

    async def main() -> tuple[bytes, int]:
        async with asyncio.timeout(TIMEOUT):
            proc = await asyncio.create_subprocess_shell("echo debug", stdout=PIPE)
            out, _ = await proc.communicate()
            return out, await proc.wait()

    assert loop.run_until_complete(main()) == (b"debug\n", 0)


# -- tidal only: how children are watched and reaped -------------------------------------------


def _run_on_tidal(coro_fn: Any) -> Any:
    loop = tidal.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn(loop))
    finally:
        loop.close()


def _fd_targets() -> list[str]:
    targets = []
    for fd in leakcheck.open_fds():
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass  # closed meanwhile by another thread
    return targets


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open")
@pytest.mark.usefixtures("no_new_children")
def test_tidal_watches_children_with_a_pidfd() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> int:
        proc = await asyncio.create_subprocess_exec(*SLEEP)
        assert any("pidfd" in target for target in _fd_targets())
        assert not any(t.name == f"tidal-waitpid-{proc.pid}" for t in threading.enumerate())
        proc.kill()
        return await proc.wait()

    assert _run_on_tidal(main) == -signal.SIGKILL
    assert not any("pidfd" in target for target in _fd_targets())


@pytest.mark.usefixtures("no_new_children")
def test_tidal_thread_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tidal_subprocess, "use_pidfd", False)

    async def main(loop: asyncio.AbstractEventLoop) -> tuple[bytes | None, int, int]:
        proc = await asyncio.create_subprocess_exec(*SLEEP)
        assert any(t.name == f"tidal-waitpid-{proc.pid}" for t in threading.enumerate())
        assert not any("pidfd" in target for target in _fd_targets())
        proc.kill()
        killed = await proc.wait()
        cat = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
        out, _ = await cat.communicate(b"via a thread")
        return out, killed, await cat.wait()

    assert _run_on_tidal(main) == (b"via a thread", -signal.SIGKILL, 0)


@pytest.mark.usefixtures("no_new_children")
def test_tidal_uses_the_status_popen_stole() -> None:
    """Popen.wait() on the object from get_extra_info reaps the child first; tidal reports its
    real exit code where asyncio's watchers report 255."""

    async def main(loop: asyncio.AbstractEventLoop) -> int:
        proc = await asyncio.create_subprocess_exec("sh", "-c", "exit 3")
        popen = proc._transport.get_extra_info("subprocess")  # type: ignore[attr-defined]
        assert popen.wait() == 3  # blocking, on purpose: the exit status is consumed here
        return await proc.wait()

    assert _run_on_tidal(main) == 3


@pytest.mark.parametrize("pidfd", [True, False])
@pytest.mark.usefixtures("no_new_children")
def test_tidal_reaps_children_after_the_loop_closed(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop closed with a child still running hands it to a reaper: no zombie later."""
    if pidfd and not hasattr(os, "pidfd_open"):
        pytest.skip("needs os.pidfd_open")
    monkeypatch.setattr(tidal_subprocess, "use_pidfd", pidfd)
    rfd, wfd = os.pipe()

    async def start(loop: asyncio.AbstractEventLoop) -> Any:
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol,
            *PY,
            f"import os; os.read({rfd}, 1)",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(rfd,),
        )
        return transport

    try:
        transport = _run_on_tidal(start)  # the loop is closed when this returns
        popen = transport.get_extra_info("subprocess")
        assert popen.pid in leakcheck.child_pids()
        os.write(wfd, b"x")  # now the child exits, with nobody's loop running
        deadline = time.monotonic() + TIMEOUT
        while popen.returncode is None and time.monotonic() < deadline:
            time.sleep(0.005)  # waiting on another thread's reap: nothing to await here
        assert popen.returncode == 0
        transport.close()  # exited already: close() must not try to kill anything
    finally:
        os.close(rfd)
        os.close(wfd)


@pytest.mark.usefixtures("no_new_children")
def test_tidal_pipe_connect_failure_kills_reaps_and_raises() -> None:
    """If a pipe cannot be connected, the error reaches the caller with the child killed and
    reaped (asyncio's _wait() never returns here, so its create_subprocess_exec hangs)."""

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        async def failing(*args: Any, **kwargs: Any) -> Any:
            raise OSError("no pipe for you")

        loop.connect_read_pipe = failing  # type: ignore[method-assign]
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(OSError, match="no pipe for you"):
                await asyncio.create_subprocess_exec(*SLEEP, stdin=PIPE, stdout=PIPE)

    _run_on_tidal(main)


@pytest.mark.parametrize("pidfd", [True, False])
@pytest.mark.usefixtures("no_new_children")
def test_tidal_status_stolen_by_waitpid_reports_255(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if pidfd and not hasattr(os, "pidfd_open"):
        pytest.skip("needs os.pidfd_open")
    monkeypatch.setattr(tidal_subprocess, "use_pidfd", pidfd)

    async def main(loop: asyncio.AbstractEventLoop) -> int:
        # The child outlives the spawn by a margin, so tidal cannot have reaped it before the
        # blocking waitpid below (which holds the loop thread until the child exits).
        proc = await asyncio.create_subprocess_exec("sh", "-c", "sleep 0.5; exit 3")
        os.waitpid(proc.pid, 0)  # someone else's waitpid: the status is gone for good
        return await proc.wait()

    assert _run_on_tidal(main) == 255
    assert "exit status already read" in caplog.text


@pytest.mark.usefixtures("no_new_children")
def test_tidal_transport_repr() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> tuple[str, str]:
        transport, proto = await loop.subprocess_exec(lambda: Recorder(loop), *SLEEP)
        running = repr(transport)
        transport.kill()
        await proto.lost
        transport.close()
        return running, repr(transport)

    running, done = _run_on_tidal(main)
    assert "running" in running and "stdin=<WritePipeTransport" in running
    assert "closed" in done and f"returncode={-signal.SIGKILL}" in done


@pytest.mark.usefixtures("no_new_children")
def test_tidal_closed_loop_spawns_nothing() -> None:
    """asyncio spawns the child before it notices the closed loop, and never reaps it."""
    loop = tidal.new_event_loop()
    loop.close()
    coro = loop.subprocess_exec(asyncio.SubprocessProtocol, *SLEEP)
    with pytest.raises(RuntimeError, match="closed"):
        coro.send(None)


@pytest.mark.usefixtures("no_new_children")
def test_tidal_policy_needs_no_child_watcher() -> None:
    """Under tidal.install(), asyncio.run + create_subprocess_exec works on 3.11-3.13 and never
    creates one of asyncio's child watchers (which 3.12 deprecates)."""
    tidal.install()
    try:

        async def main() -> tuple[bytes, type]:
            proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
            out, _ = await proc.communicate(b"policy")
            return out, type(asyncio.get_running_loop())

        assert asyncio.run(main()) == (b"policy", tidal.EventLoop)
        assert getattr(asyncio.get_event_loop_policy(), "_watcher", None) is None
    finally:
        asyncio.set_event_loop_policy(None)
