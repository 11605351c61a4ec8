"""tidal.testing's loop: the virtual clock and its jump rule, advance(), seeded schedules.

Where virtual time claims "behaves as in real time", the same scenario runs on asyncio's own
loop in real (short) time and on tidal's virtual clock, and the recorded event logs must match.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import tidal
import tidal.testing
from tidal import demo
from tidal.core.scheduler import Scheduler
from tidal.testing import ControlledLoop

# -- the seed's examples -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "ends_at"), [("sequential", 3.0), ("concurrent", 2.0)])
def test_seed_examples_end_at_exact_virtual_times(name: str, ends_at: float) -> None:
    example = next(e for e in demo.EXAMPLES if e.name == name)
    loops: list[ControlledLoop] = []

    def factory() -> ControlledLoop:
        loops.append(tidal.testing.new_event_loop(virtual_time=True))
        return loops[-1]

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        example.run(factory, 1.0)  # the notes' own seconds: 3 s and 2 s
    wall = time.perf_counter() - started
    assert loops[0].time() == ends_at
    assert wall < 0.1, f"{name} took {wall:.3f} s of wall time"
    assert out.getvalue().splitlines()[1:3] == ["hello zhangsan", "hello lisi"]


def test_a_day_of_sleep_returns_at_once() -> None:
    async def main() -> float:
        await asyncio.sleep(86400)
        return asyncio.get_running_loop().time()

    started = time.perf_counter()
    assert tidal.testing.run(main(), virtual_time=True) == 86400.0
    assert time.perf_counter() - started < 0.1


# -- timeouts, chains and primitives behave as in real time ------------------------------------


async def _timeline(unit: float) -> list[str]:
    """Timeouts, wait_for, a call_later chain, Condition and Queue timeouts: what happened."""
    log: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(2 * unit):
            await asyncio.sleep(5 * unit)
    except TimeoutError:
        log.append("timeout fired")
    async with asyncio.timeout(5 * unit):
        await asyncio.sleep(unit)
        log.append("timeout not needed")
    try:
        await asyncio.wait_for(asyncio.sleep(3 * unit), timeout=unit)
    except TimeoutError:
        log.append("wait_for timed out")
    log.append(f"wait_for -> {await asyncio.wait_for(asyncio.sleep(unit, 'v'), 3 * unit)}")
    chain_done = loop.create_future()

    def tick(n: int) -> None:
        log.append(f"tick {n}")
        if n < 3:
            loop.call_later(unit, tick, n + 1)
        else:
            chain_done.set_result(None)

    loop.call_later(unit, tick, 1)
    loop.call_later(2.5 * unit, log.append, "between ticks 2 and 3")
    await chain_done
    condition = asyncio.Condition()
    async with condition:
        try:
            await asyncio.wait_for(condition.wait(), unit)
        except TimeoutError:
            log.append("condition timed out")
    queue: asyncio.Queue[int] = asyncio.Queue()
    loop.call_later(2 * unit, queue.put_nowait, 7)
    try:
        await asyncio.wait_for(queue.get(), unit)
    except TimeoutError:
        log.append("queue get timed out")
    log.append(f"queue got {await asyncio.wait_for(queue.get(), 5 * unit)}")
    return log


def test_timeouts_and_chains_match_real_time() -> None:
    real = asyncio.run(_timeline(0.02))
    virtual_loops: list[ControlledLoop] = []

    def factory() -> ControlledLoop:
        virtual_loops.append(tidal.testing.new_event_loop(virtual_time=True))
        return virtual_loops[-1]

    with asyncio.Runner(loop_factory=factory) as runner:
        virtual = runner.run(_timeline(60.0))  # minutes: still instant
        # 2 + 1 + 1 + 1 + 3 + 1 + 1 + 1 units; the last get returned at the put (2 units in).
        assert runner.get_loop().time() == 60.0 * 11
    assert virtual == real
    assert "tick 3" in virtual and "queue got 7" in virtual


def test_loopback_echo_inside_virtual_time() -> None:
    async def main() -> tuple[bytes, float]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        data = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(3600)  # both ends of any connection are ours: the clock may jump
        server.close()
        await server.wait_closed()
        return data, asyncio.get_running_loop().time()

    started = time.perf_counter()
    data, ends_at = tidal.testing.run(main(), virtual_time=True)
    assert data == b"ping"
    assert ends_at >= 3600.0
    assert time.perf_counter() - started < 1.0


# -- the jump rule: never while outside work could arrive first --------------------------------


def test_no_jump_while_an_executor_job_runs() -> None:
    async def main() -> tuple[str, float]:
        result = await asyncio.wait_for(asyncio.to_thread(time.sleep, 0.05), timeout=1)
        assert result is None
        return "done", asyncio.get_running_loop().time()

    outcome, now = tidal.testing.run(main(), virtual_time=True)
    # The clock followed real time while the thread ran: ~0.05 s, never the 1 s timeout.
    assert outcome == "done"
    assert 0.04 <= now < 1.0


def test_no_jump_while_a_child_process_runs() -> None:
    async def main() -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(0.1)"
        )
        return await asyncio.wait_for(proc.wait(), timeout=5)

    assert tidal.testing.run(main(), virtual_time=True) == 0


def test_no_jump_while_a_socket_talks_to_another_thread() -> None:
    # The peer is a server thread outside the loop: its reply may come at any moment.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(10)
            time.sleep(0.1)
            conn.sendall(b"late")

    thread = threading.Thread(target=serve)
    thread.start()

    async def main() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        try:
            return await asyncio.wait_for(reader.read(10), timeout=2)
        finally:
            writer.close()
            await writer.wait_closed()

    try:
        assert tidal.testing.run(main(), virtual_time=True) == b"late"
    finally:
        thread.join()
        listener.close()


def test_call_soon_threadsafe_from_a_job_is_waited_for() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        arrived = loop.create_future()

        def job() -> None:
            time.sleep(0.02)
            loop.call_soon_threadsafe(arrived.set_result, "from thread")

        job_done = loop.run_in_executor(None, job)
        value = await asyncio.wait_for(arrived, timeout=60)
        await job_done
        return str(value)

    assert tidal.testing.run(main(), virtual_time=True) == "from thread"


# -- autojump and advance() ---------------------------------------------------------------------


def test_autojump_waits_real_idle_time_first() -> None:
    async def main() -> float:
        await asyncio.sleep(10)
        await asyncio.sleep(10)
        return asyncio.get_running_loop().time()

    started = time.perf_counter()
    assert tidal.testing.run(main(), virtual_time=True, autojump=0.03) == 20.0
    assert time.perf_counter() - started >= 0.06


def test_advance_moves_the_clock_by_hand() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, ControlledLoop)
        log: list[str] = []
        loop.call_later(5, log.append, "5 s timer")
        await asyncio.sleep(0)
        loop.advance(4.999)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        log.append(f"at {loop.time():.3f}")
        loop.advance(0.001)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return log

    log = tidal.testing.run(main(), virtual_time=True, autojump=None)
    assert log == ["at 4.999", "5 s timer"]


def test_advance_from_another_thread_wakes_the_loop() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, ControlledLoop)
        timer = threading.Timer(0.02, loop.advance, args=(30,))
        timer.start()
        await asyncio.sleep(30)  # without autojump, only advance() can end this
        timer.join()
        return loop.time()

    assert tidal.testing.run(main(), virtual_time=True, autojump=None) == 30.0


def test_advance_needs_virtual_time_and_moves_forward_only() -> None:
    loop = tidal.testing.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="virtual_time=True"):
            loop.advance(1)
    finally:
        loop.close()
    loop = tidal.testing.new_event_loop(virtual_time=True)
    try:
        with pytest.raises(ValueError, match="only moves forward"):
            loop.advance(-1)
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"virtual_time": 1}, TypeError, "virtual_time must be True or False"),
        ({"virtual_time": True, "autojump": "0"}, TypeError, "autojump must be a number"),
        ({"virtual_time": True, "autojump": -1}, ValueError, "autojump must be >= 0"),
        ({"autojump": 1.0}, ValueError, "autojump needs virtual_time=True"),
        ({"autojump": None}, ValueError, "autojump=None needs virtual_time=True"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
    ],
)
def test_bad_options_say_what_to_do(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        tidal.testing.new_event_loop(**options)
    with pytest.raises(error, match=match):
        tidal.testing.loop_factory(**options)


# -- off means off -----------------------------------------------------------------------------


def test_the_plain_loop_carries_nothing_of_this() -> None:
    assert tidal.EventLoop.time is Scheduler.time
    assert tidal.EventLoop.call_soon is Scheduler.call_soon
    loop = tidal.testing.new_event_loop()
    try:
        assert "time" not in vars(loop) and "call_soon" not in vars(loop)
        assert type(loop._poller).__name__ != "ControlledPoller"
    finally:
        loop.close()


def test_loop_factory_serves_runner_and_anyio() -> None:
    anyio = pytest.importorskip("anyio")

    async def main() -> float:
        await asyncio.sleep(120)
        return asyncio.get_running_loop().time()

    factory = tidal.testing.loop_factory(virtual_time=True)
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(main()) == 120.0
    options = {"loop_factory": factory}
    assert anyio.run(main, backend="asyncio", backend_options=options) == 120.0


# -- seeded schedules ---------------------------------------------------------------------------


async def _schedule_trace() -> list[str]:
    """Tasks with equal-deadline sleeps and plain switches: the order they interleave in."""
    trace: list[str] = []

    async def worker(name: str) -> None:
        for step in range(3):
            await asyncio.sleep(0.001 if step == 1 else 0)
            trace.append(f"{name}{step}")

    await asyncio.gather(*(worker(n) for n in "abcd"))
    return trace


def _trace(seed: int | None) -> list[str]:
    return tidal.testing.run(_schedule_trace(), virtual_time=True, seed=seed)


def test_same_seed_same_schedule_and_seeds_differ() -> None:
    unperturbed = asyncio.run(_schedule_trace())
    assert _trace(None) == unperturbed
    traces = {seed: _trace(seed) for seed in range(10)}
    assert all(_trace(seed) == trace for seed, trace in traces.items())
    assert len({tuple(t) for t in traces.values()}) > 3
    assert any(trace != unperturbed for trace in traces.values())


def test_call_soon_stays_fifo_under_a_seed() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        seen: list[int] = []
        for i in range(200):
            loop.call_soon(seen.append, i)
            if i % 7 == 0:
                await asyncio.sleep(0)  # task wake-ups in between may move; callbacks may not
        await asyncio.sleep(0)
        return seen

    for seed in range(5):
        assert tidal.testing.run(main(), seed=seed) == list(range(200))


def test_io_events_of_one_poll_come_in_seeded_order() -> None:
    def order(seed: int) -> list[int]:
        loop = tidal.testing.new_event_loop(seed=seed)
        pairs = [socket.socketpair() for _ in range(6)]
        seen: list[int] = []
        try:
            for index, (a, b) in enumerate(pairs):
                b.send(b"x")
                loop.add_reader(a, seen.append, index)
            loop.run_until_complete(asyncio.sleep(0))
            for a, _ in pairs:
                loop.remove_reader(a)
        finally:
            loop.close()
            for a, b in pairs:
                a.close()
                b.close()
        return seen[:6]

    orders = {seed: order(seed) for seed in range(8)}
    assert all(sorted(o) == list(range(6)) for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) > 1
    assert order(3) == orders[3]


@pytest.mark.slow
def test_timers_due_in_one_turn_are_shuffled_without_virtual_time() -> None:
    def order(seed: int) -> list[int]:
        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            seen: list[int] = []
            for i in range(6):
                loop.call_later(0.001 * i / 6, seen.append, i)  # all due within one turn
            time.sleep(0.01)  # hold the loop: every timer is due at the next turn
            await asyncio.sleep(0.02)
            return seen

        return tidal.testing.run(main(), seed=seed)

    orders = [order(seed) for seed in range(8)]
    assert all(sorted(o) == list(range(6)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1


def test_fuzz_reports_the_seed_and_how_to_replay_it() -> None:
    async def flaky() -> None:
        first: list[str] = []

        async def mark(name: str) -> None:
            await asyncio.sleep(1)
            first.append(name)

        await asyncio.gather(mark("a"), mark("b"))
        assert first[0] == "a"

    with pytest.raises(tidal.testing.FuzzFailure) as caught:
        tidal.testing.fuzz(flaky, seeds=range(20))
    seed = caught.value.seed
    assert f".<locals>.flaky(), seed={seed}, virtual_time=True)" in str(caught.value)
    with pytest.raises(AssertionError):
        tidal.testing.run(flaky(), virtual_time=True, seed=seed)  # the replay fails again
    assert isinstance(caught.value.__cause__, AssertionError)


def test_run_refuses_a_running_loop() -> None:
    async def main() -> None:
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="await the coroutine"):
            tidal.testing.run(coro)

    asyncio.run(main())


Main = Callable[[], Coroutine[Any, Any, None]]
