"""Entry points: tidal.run, tidal.Runner, asyncio.Runner with a loop factory, tidal.install,
and ``python -m tidal`` running a script or a module with tidal installed.

Lifecycle tests go through ``asyncio.Runner(loop_factory=...)`` for both loops, so they compare
what asyncio's runner does on each; the ``tidal.*`` entry points are tested directly.
"""

from __future__ import annotations

import asyncio
import contextvars
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import pytest

import tidal

Loop = asyncio.AbstractEventLoop
LoopFactory = Callable[[], Loop]

SUBPROCESS_TIMEOUT = 60.0  # seconds


async def running_loop_type() -> type[Loop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


# -- tidal.run and tidal.Runner -------------------------------------------------------------------


def test_tidal_run_returns_the_result_on_a_tidal_loop() -> None:
    assert tidal.run(running_loop_type()) is tidal.EventLoop


def test_tidal_run_raises_the_coroutines_error() -> None:
    async def fails() -> None:
        raise ValueError("from main")

    with pytest.raises(ValueError, match="from main"):
        tidal.run(fails())


def test_tidal_run_debug_flag() -> None:
    async def debug() -> bool:
        return asyncio.get_running_loop().get_debug()

    assert tidal.run(debug(), debug=True) is True
    assert tidal.run(debug(), debug=False) is False


def test_tidal_run_inside_a_running_loop_raises(loop: Loop) -> None:
    async def main() -> None:
        coro = running_loop_type()
        with pytest.raises(RuntimeError, match="running event loop"):
            tidal.run(coro)
        coro.close()

    loop.run_until_complete(main())


def test_tidal_run_with_a_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "given")

    async def read() -> str:
        return var.get()

    assert tidal.run(read(), context=ctx) == "given"


def test_tidal_runner_defaults_to_tidal_loops() -> None:
    with tidal.Runner() as runner:
        assert isinstance(runner.get_loop(), tidal.EventLoop)
        assert runner.run(running_loop_type()) is tidal.EventLoop
        assert runner.run(running_loop_type()) is tidal.EventLoop  # the same loop, reused


def test_tidal_runner_accepts_another_factory() -> None:
    with tidal.Runner(loop_factory=asyncio.new_event_loop) as runner:
        assert not isinstance(runner.get_loop(), tidal.EventLoop)


def test_new_event_loop_returns_a_fresh_unset_tidal_loop() -> None:
    first, second = tidal.new_event_loop(), tidal.new_event_loop()
    try:
        assert isinstance(first, tidal.EventLoop) and isinstance(first, asyncio.AbstractEventLoop)
        assert first is not second
        assert not first.is_running() and not first.is_closed()
    finally:
        first.close()
        second.close()


# -- asyncio.Runner over both loops ---------------------------------------------------------------


def test_runner_runs_on_the_factorys_loop(loop_factory: LoopFactory) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        loop = runner.get_loop()
        assert runner.run(running_loop_type()) is type(loop)
    assert loop.is_closed()


def test_runner_rejects_a_non_coroutine(loop_factory: LoopFactory) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner, pytest.raises(ValueError):
        runner.run(42)  # type: ignore[arg-type]


def test_runner_finalizes_async_generators_and_the_executor(loop_factory: LoopFactory) -> None:
    events: list[str] = []

    async def agen() -> AsyncGenerator[int, None]:
        try:
            yield 1
            yield 2
        finally:
            events.append("generator closed")

    kept: list[AsyncGenerator[int, None]] = []

    async def main() -> None:
        gen = agen()
        kept.append(gen)
        await gen.__anext__()
        await asyncio.get_running_loop().run_in_executor(None, events.append, "pool job")

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
        loop = runner.get_loop()
    assert events == ["pool job", "generator closed"]
    assert loop.is_closed()
    with pytest.raises(RuntimeError):
        loop.run_in_executor(None, print)


def test_runner_cancels_leftover_tasks_on_close(loop_factory: LoopFactory) -> None:
    events: list[str] = []

    async def leftover() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("leftover cancelled")
            raise

    async def main() -> None:
        asyncio.create_task(leftover())  # noqa: RUF006  # the runner must find it
        await asyncio.sleep(0)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert events == ["leftover cancelled"]


def test_asyncio_run_with_a_loop_factory(loop_factory: LoopFactory) -> None:
    if sys.version_info < (3, 12):
        pytest.skip("asyncio.run(loop_factory=) is new in 3.12")
    made: list[Loop] = []

    def factory() -> Loop:
        made.append(loop_factory())
        return made[-1]

    assert asyncio.run(running_loop_type(), loop_factory=factory) is type(made[0])  # type: ignore[call-arg]
    assert made[0].is_closed()


@pytest.mark.timeout(10)
def test_sigint_cancels_the_main_task_then_raises_keyboard_interrupt(
    loop_factory: LoopFactory,
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else in this process")
    events: list[str] = []
    main_thread_id = threading.get_ident()

    def interrupter(entered: threading.Event) -> None:
        entered.wait(5)
        time.sleep(0.05)  # let the loop block in its poller: the signal must still get in
        signal.pthread_kill(main_thread_id, signal.SIGINT)

    async def main() -> None:
        entered = threading.Event()
        thread = threading.Thread(target=interrupter, args=(entered,))
        thread.start()
        asyncio.get_running_loop().call_soon(entered.set)
        try:
            await asyncio.get_running_loop().create_future()  # no timers: sleeps in the poller
        except asyncio.CancelledError:
            events.append("main cancelled")
            raise
        finally:
            thread.join(5)

    with pytest.raises(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert events == ["main cancelled"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- tidal.install --------------------------------------------------------------------------------


@pytest.fixture
def restore_policy() -> Any:
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


def test_install_makes_asyncio_hand_out_tidal_loops(restore_policy: Any) -> None:
    tidal.install()
    assert isinstance(asyncio.get_event_loop_policy(), tidal.EventLoopPolicy)
    assert asyncio.run(running_loop_type()) is tidal.EventLoop
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, tidal.EventLoop)
    finally:
        loop.close()


# -- python -m tidal ------------------------------------------------------------------------------


def run_tidal_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidal", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(asyncio.sleep(0, result="slept"))
        print(type(loop).__module__, type(loop).__name__, await task)

    print("argv", sys.argv[1:])
    print("name", __name__)
    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_python_m_tidal_runs_a_script_on_tidal(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT, encoding="utf-8")
    result = run_tidal_cli(str(script), "one", "two", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "argv ['one', 'two']",
        "name __main__",
        "tidal.loop EventLoop slept",
    ]


@pytest.mark.slow
def test_python_m_tidal_runs_a_module_on_tidal(tmp_path: Path) -> None:
    (tmp_path / "tidal_cli_probe.py").write_text(SCRIPT, encoding="utf-8")
    result = run_tidal_cli("-m", "tidal_cli_probe", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "tidal.loop EventLoop slept"
    assert result.stdout.splitlines()[0] == "argv ['x']"


@pytest.mark.slow
def test_python_m_tidal_script_errors_propagate(tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text(
        "import asyncio\nasync def main():\n    raise SystemExit(3)\nasyncio.run(main())\n",
        encoding="utf-8",
    )
    result = run_tidal_cli(str(script), cwd=tmp_path)
    assert result.returncode == 3


@pytest.mark.slow
def test_python_m_tidal_usage(tmp_path: Path) -> None:
    no_args = run_tidal_cli(cwd=tmp_path)
    assert no_args.returncode == 2
    assert "usage" in no_args.stderr
    helped = run_tidal_cli("--help", cwd=tmp_path)
    assert helped.returncode == 0
    assert "python -m tidal [options] script.py" in helped.stdout
