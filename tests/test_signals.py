"""Signal handlers (``add_signal_handler``/``remove_signal_handler``) and Ctrl-C, on asyncio's
loop and tidal's. Tidal-only tests (named so) cover where tidal restores more than asyncio.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import leakcheck
import tidal

TIMEOUT = 10.0  # seconds; bound on every wait in this module

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and /proc")


# -- leak check: open descriptors and child processes, per module -----------------------------


def _current_wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


@pytest.fixture(scope="module", autouse=True)
def no_leaks() -> Iterator[None]:
    wakeup = _current_wakeup_fd()
    dispositions = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
    with leakcheck.no_leaks():
        yield
    assert _current_wakeup_fd() == wakeup, "the signal wake-up fd was not restored"
    for sig, handler in dispositions.items():
        assert signal.getsignal(sig) == handler, f"{sig!r} disposition was not restored"


# -- delivery -------------------------------------------------------------------------------------


def test_handler_runs_as_a_loop_callback(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[Any, ...]:
        got: asyncio.Future[tuple[Any, ...]] = loop.create_future()

        def handler(*args: Any) -> None:
            got.set_result((*args, asyncio.get_running_loop() is loop))

        loop.add_signal_handler(signal.SIGUSR1, handler, "one", 2)
        os.kill(os.getpid(), signal.SIGUSR1)
        async with asyncio.timeout(TIMEOUT):
            result = await got
        assert loop.remove_signal_handler(signal.SIGUSR1)
        return result

    assert loop.run_until_complete(main()) == ("one", 2, True)


def test_signal_arriving_while_the_loop_sleeps_in_the_poller(
    loop: asyncio.AbstractEventLoop,
) -> None:
    caught = 0

    def on_alarm() -> None:
        nonlocal caught
        caught += 1
        loop.stop()

    loop.add_signal_handler(signal.SIGALRM, on_alarm)
    guard = loop.call_later(TIMEOUT, loop.stop)  # only a bound; the poll sleeps until then
    signal.setitimer(signal.ITIMER_REAL, 0.02)
    try:
        loop.run_forever()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        guard.cancel()
    assert caught == 1
    assert loop.remove_signal_handler(signal.SIGALRM)


def test_several_signals_and_replacing_a_handler(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        both = asyncio.Event()

        def record(name: str) -> None:
            seen.append(name)
            if len(seen) == 2:
                both.set()

        loop.add_signal_handler(signal.SIGUSR1, record, "first")
        loop.add_signal_handler(signal.SIGUSR1, record, "usr1")  # replaces the first
        loop.add_signal_handler(signal.SIGUSR2, record, "usr2")
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        async with asyncio.timeout(TIMEOUT):
            await both.wait()
        return sorted(seen)

    assert loop.run_until_complete(main()) == ["usr1", "usr2"]


def test_handler_exception_goes_to_the_exception_handler(loop: asyncio.AbstractEventLoop) -> None:
    reports: list[dict[str, Any]] = []
    reported = loop.create_future()

    def collect(_loop: Any, context: dict[str, Any]) -> None:
        reports.append(context)
        reported.set_result(None)

    loop.set_exception_handler(collect)

    def boom() -> None:
        raise ZeroDivisionError("in a signal handler")

    async def main() -> None:
        loop.add_signal_handler(signal.SIGUSR1, boom)
        os.kill(os.getpid(), signal.SIGUSR1)
        async with asyncio.timeout(TIMEOUT):
            await reported

    loop.run_until_complete(main())
    assert isinstance(reports[0]["exception"], ZeroDivisionError)
    assert reports[0]["message"].startswith("Exception in callback")


# -- validation and lifecycle ---------------------------------------------------------------


def test_bad_arguments(loop: asyncio.AbstractEventLoop) -> None:
    def handler() -> None:
        pass

    async def coroutine_function() -> None:
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler("boom", handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        loop.remove_signal_handler("boom")  # type: ignore[arg-type]
    for bad in (signal.NSIG + 1, 0, -1):
        with pytest.raises(ValueError):
            loop.add_signal_handler(bad, handler)
        with pytest.raises(ValueError):
            loop.remove_signal_handler(bad)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGKILL, handler)
    assert not loop.remove_signal_handler(signal.SIGKILL)
    with pytest.raises(TypeError, match="coroutines cannot be used"):
        loop.add_signal_handler(signal.SIGUSR1, coroutine_function)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # nothing half-installed


def test_remove_restores_sigint_default(loop: asyncio.AbstractEventLoop) -> None:
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert loop.remove_signal_handler(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not loop.remove_signal_handler(signal.SIGINT)


def test_close_removes_handlers_and_the_wakeup_fd(loop: asyncio.AbstractEventLoop) -> None:
    assert signal.set_wakeup_fd(-1) == -1
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    assert _current_wakeup_fd() != -1  # the loop's is installed
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1


def test_closed_loop_refuses_handlers(loop: asyncio.AbstractEventLoop) -> None:
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_only_the_main_thread(loop_factory: Any) -> None:
    results: list[type[BaseException] | bool] = []

    def in_thread() -> None:
        other = loop_factory()
        try:
            try:
                other.add_signal_handler(signal.SIGUSR1, lambda: None)
            except BaseException as exc:
                results.append(type(exc))
            results.append(other.remove_signal_handler(signal.SIGUSR1))
        finally:
            other.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(TIMEOUT)
    assert results == [RuntimeError, False]


# -- tidal only ---------------------------------------------------------------------------------


def test_tidal_restores_what_was_there_before() -> None:
    """asyncio installs SIG_DFL and wake-up fd -1 on removal; tidal puts back the previous
    Python handler and the previous wake-up fd."""
    seen: list[int] = []

    def previous_handler(signum: int, frame: Any) -> None:
        seen.append(signum)

    theirs_r, theirs_w = socket.socketpair()
    theirs_w.setblocking(False)
    old_handler = signal.signal(signal.SIGUSR1, previous_handler)
    old_wakeup = signal.set_wakeup_fd(theirs_w.fileno())
    loop = tidal.new_event_loop()
    try:
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        assert _current_wakeup_fd() != theirs_w.fileno()
        assert loop.remove_signal_handler(signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) is previous_handler
        assert _current_wakeup_fd() == theirs_w.fileno()
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        loop.close()  # the close hook restores just the same
        assert signal.getsignal(signal.SIGUSR1) is previous_handler
        assert _current_wakeup_fd() == theirs_w.fileno()
    finally:
        loop.close()
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGUSR1, old_handler)
        theirs_r.close()
        theirs_w.close()


def test_tidal_opens_nothing_until_the_first_handler() -> None:
    """The signal socket pair exists only once a handler is added, and close() releases it."""
    baseline = leakcheck.open_fds()
    loop = tidal.new_event_loop()
    try:
        with_loop = leakcheck.open_fds()
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        assert len(leakcheck.open_fds()) == len(with_loop) + 2
        assert loop.remove_signal_handler(signal.SIGUSR1)
    finally:
        loop.close()
    assert leakcheck.open_fds() == baseline


def test_tidal_rejects_a_non_callable_at_once() -> None:
    """asyncio accepts it and fails when the signal arrives; tidal raises TypeError."""
    loop = tidal.new_event_loop()
    try:
        with pytest.raises(TypeError, match="callable"):
            loop.add_signal_handler(signal.SIGUSR1, "not callable")  # type: ignore[arg-type]
    finally:
        loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


# -- Ctrl-C in a real child process ----------------------------------------------------------

_CTRL_C_CHILD = """
import asyncio, signal, sys
import tidal

async def main():
    loop = asyncio.get_running_loop()
    if sys.argv[2] == "with-handler":
        loop.add_signal_handler(signal.SIGTERM, lambda: None)  # our wake-up fd installed
    forever = loop.create_future()  # no timers anywhere: the loop sleeps in the poller
    print("ready", flush=True)
    try:
        await forever
    except asyncio.CancelledError:
        print("cancelled", flush=True)
        raise

(tidal.run if sys.argv[1] == "tidal" else asyncio.run)(main())
"""


def _wait_until_sleeping_in_poll(pid: int) -> None:
    """Wait until the child's only thread is blocked in epoll_wait (bounded)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/wchan") as f:
            if "epoll" in f.read():
                return
        time.sleep(0.001)  # polling another process's state: there is nothing to await
    raise AssertionError("the child never blocked in epoll_wait")


@pytest.mark.parametrize("variant", ["plain", "with-handler"])
def test_ctrl_c_cancels_main_then_raises_keyboard_interrupt(loop_name: str, variant: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_CHILD, loop_name, variant],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        _wait_until_sleeping_in_poll(child.pid)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert out == b"cancelled\n"
    assert err.strip().endswith(b"KeyboardInterrupt"), err
    assert child.returncode == -signal.SIGINT  # Python re-raises SIGINT to report it


def test_tidal_close_outside_the_main_thread_keeps_the_wakeup_socket_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop closed from another thread cannot touch signal state; it keeps its socket pair
    open (so the wake-up fd number is never reused) and says so in the log."""
    import tidal.signals as tidal_signals

    loop = tidal.new_event_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    ours = _current_wakeup_fd()
    closer = threading.Thread(target=loop.close)
    closer.start()
    closer.join(TIMEOUT)
    try:
        assert loop.is_closed()
        assert "closed outside the main thread" in caplog.text
        assert _current_wakeup_fd() == ours  # still installed, and its socket still open
        assert os.fstat(ours)
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        for sock in tidal_signals._stranded_sockets:
            sock.close()
        tidal_signals._stranded_sockets.clear()
