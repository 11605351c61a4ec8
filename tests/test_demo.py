"""The seed's examples (tidal.demo) on asyncio's loop and on tidal's, with delays scaled down.

Each example must print the same thing on both loops, in the order the notes show, with the
timings the notes describe: 3 units for two coroutines awaited in turn, 2 units for the same work
as two tasks, a ticker that keeps going while a pool thread blocks, a task that finishes though
nobody awaits it. ``python -m tidal demo`` must agree with itself and exit 0.

Lines printed at the same instant by two threads have no defined order on any loop, so outputs
are compared per "instant": a run of lines each printed within ``SIMULTANEOUS`` of the previous
one is compared as a set, and everything else in printed order.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tidal import demo

Loop = asyncio.AbstractEventLoop
LoopFactory = Callable[[], Loop]

SCALE = 0.05  # one unit of the notes (1 s) becomes 50 ms
# The executor example races a pool thread against the ticker with half a unit to spare on each
# side (see tidal.demo); a longer unit keeps that margin above scheduling noise on a busy machine.
SCALES = {"executor": 0.1}
SIMULTANEOUS = 0.25  # units; lines closer than this are "the same instant"


def unit(name: str) -> float:
    """Seconds per unit of the notes for example ``name``."""
    return SCALES.get(name, SCALE)


EXAMPLES = {example.name: example for example in demo.EXAMPLES}

# What the notes print (asyncio-notes.zh.txt), after demo.normalise() masks clock times and
# thread ids. The executor example's HTTP GET goes to a local server (see tidal.demo).
TICKS = [f"aother_task 开始工作{i}" for i in range(10)]
NOTES_OUTPUT: dict[str, list[str]] = {
    "sequential": [
        "started at HH:MM:SS",
        "hello zhangsan",
        "hello lisi",
        "finished at HH:MM:SS",
    ],
    "concurrent": [
        "started at HH:MM:SS",
        "hello zhangsan",
        "hello lisi",
        "finished at HH:MM:SS",
    ],
    "executor": [
        "当前线程<Thread(ThreadPoolExecutor-N, started ID)>",
        "已经开始执行子线程任务了",
        *TICKS[:3],
        "百度的网页<Response [200]>",
        "done",
        *TICKS[3:],
    ],
    "never_awaited": [
        "Main started",
        "开始等待结果",
        "Coroutine 1 started",
        "Coroutine 2 started",
        "Coroutine 1 completed",
        "Coroutine 2 completed",
        "task2 结束",
        "Main completed",
    ],
}


def instants(outcome: demo.Outcome, name: str) -> list[int]:
    """Sizes of the runs of lines printed at the same instant, in order."""
    sizes: list[int] = []
    previous = None
    for at, _line in outcome.timed_lines:
        if previous is not None and at - previous < SIMULTANEOUS * unit(name):
            sizes[-1] += 1
        else:
            sizes.append(1)
        previous = at
    return sizes


def canonical(lines: list[str], sizes: list[int]) -> list[list[str]]:
    """``lines`` cut into runs of the given sizes, each run sorted."""
    assert sum(sizes) == len(lines)
    runs, start = [], 0
    for size in sizes:
        runs.append(sorted(lines[start : start + size]))
        start += size
    return runs


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, str], demo.Outcome]:
    """Every example run once on each loop (shared by the tests below to save time)."""
    import tidal

    factories: dict[str, LoopFactory] = {
        "asyncio": asyncio.new_event_loop,
        "tidal": tidal.new_event_loop,
    }
    return {
        (name, loop_name): demo.run_example(example, factory, unit(name))
        for name, example in EXAMPLES.items()
        for loop_name, factory in factories.items()
    }


def elapsed_between(outcome: demo.Outcome, first: str, last: str) -> float:
    times = {line: at for at, line in outcome.timed_lines}
    starts = [at for at, line in outcome.timed_lines if line.startswith(first)]
    ends = [at for at, line in outcome.timed_lines if line.startswith(last)]
    assert len(starts) == 1 and len(ends) == 1, times
    return ends[0] - starts[0]


# -- every example: same output on both loops, and the notes' output where they give one ----------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_prints_the_same_on_both_loops(
    outcomes: dict[tuple[str, str], demo.Outcome], name: str
) -> None:
    on_asyncio, on_tidal = outcomes[(name, "asyncio")], outcomes[(name, "tidal")]
    assert on_tidal.lines, "the example printed nothing"
    assert canonical(on_tidal.lines, instants(on_tidal, name)) == canonical(
        on_asyncio.lines, instants(on_tidal, name)
    )
    assert canonical(on_tidal.lines, instants(on_asyncio, name)) == canonical(
        on_asyncio.lines, instants(on_asyncio, name)
    )


@pytest.mark.slow
@pytest.mark.parametrize("loop_name", ["asyncio", "tidal"])
@pytest.mark.parametrize("name", sorted(NOTES_OUTPUT))
def test_example_prints_what_the_notes_show(
    outcomes: dict[tuple[str, str], demo.Outcome], name: str, loop_name: str
) -> None:
    outcome = outcomes[(name, loop_name)]
    sizes = instants(outcome, name)
    assert canonical(outcome.lines, sizes) == canonical(NOTES_OUTPUT[name], sizes)


# -- timings --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("loop_name", ["asyncio", "tidal"])
def test_sequential_takes_three_units_and_concurrent_two(
    outcomes: dict[tuple[str, str], demo.Outcome], loop_name: str
) -> None:
    sequential = elapsed_between(outcomes[("sequential", loop_name)], "started at", "finished at")
    concurrent = elapsed_between(outcomes[("concurrent", loop_name)], "started at", "finished at")
    assert 3 * SCALE * 0.98 <= sequential < 3 * SCALE * 1.5
    assert 2 * SCALE * 0.98 <= concurrent < 2 * SCALE * 1.5
    assert 1.35 <= sequential / concurrent <= 1.65


@pytest.mark.slow
@pytest.mark.parametrize("loop_name", ["asyncio", "tidal"])
def test_never_awaited_task_completes_on_time(
    outcomes: dict[tuple[str, str], demo.Outcome], loop_name: str
) -> None:
    outcome = outcomes[("never_awaited", loop_name)]
    assert "Coroutine 1 completed" in outcome.lines
    assert elapsed_between(outcome, "Main started", "Coroutine 1 completed") >= SCALE * 0.98
    assert elapsed_between(outcome, "Main started", "Main completed") >= 2 * SCALE * 0.98


@pytest.mark.slow
@pytest.mark.parametrize("loop_name", ["asyncio", "tidal"])
def test_executor_example_keeps_ticking_while_the_thread_blocks(
    outcomes: dict[tuple[str, str], demo.Outcome], loop_name: str
) -> None:
    outcome = outcomes[("executor", loop_name)]
    lines = outcome.lines
    thread_line = lines.index("百度的网页<Response [200]>")
    done = lines.index("done")
    ticks = [lines.index(tick) for tick in TICKS]
    assert ticks == sorted(ticks)
    assert all(t < thread_line for t in ticks[:3]), "ticks 0-2 come before the thread's line"
    assert done > thread_line, "the callback queued behind the thread runs after it"
    assert all(t > done for t in ticks[3:]), "ticks 3-9 come after done"
    # The ticker was never blocked: ten ticks about one unit apart (a loop blocked by the
    # thread's three-unit sleep would show a gap of three).
    one = unit("executor")
    tick_times = [at for at, line in outcome.timed_lines if line in TICKS]
    gaps = [b - a for a, b in itertools.pairwise(tick_times)]
    assert all(0.9 * one <= gap < 2 * one for gap in gaps), gaps


# -- the notebook-cell form -----------------------------------------------------------------------


def test_run_cell_runs_top_level_await(loop: Loop) -> None:
    namespace: dict[str, Any] = {"asyncio": asyncio}
    source = (
        "x = 20\n"
        "x += await asyncio.sleep(0, result=1)\n"
        "loop_type = type(asyncio.get_running_loop())\n"
        "await asyncio.sleep(0)\n"
    )
    demo.run_cell(source, namespace, loop)
    assert namespace["x"] == 21
    assert namespace["loop_type"] is type(loop)


def test_run_cell_without_await_runs_synchronously(loop: Loop) -> None:
    namespace: dict[str, Any] = {}
    assert demo.run_cell("y = 2 * 21", namespace, loop) is None
    assert namespace["y"] == 42


def test_run_cell_with_tasks_and_gather(loop: Loop) -> None:
    namespace: dict[str, Any] = {"asyncio": asyncio, "order": []}
    source = (
        "async def job(name, delay):\n"
        "    await asyncio.sleep(delay)\n"
        "    order.append(name)\n"
        "t1 = asyncio.create_task(job('b', 0.002))\n"
        "t2 = asyncio.create_task(job('a', 0))\n"
        "await asyncio.gather(t1, t2)\n"
    )
    demo.run_cell(source, namespace, loop)
    assert namespace["order"] == ["a", "b"]


def test_run_cell_raises_the_cells_error(loop: Loop) -> None:
    namespace: dict[str, Any] = {"asyncio": asyncio}
    with pytest.raises(ZeroDivisionError):
        demo.run_cell("await asyncio.sleep(0)\n1 / 0\n", namespace, loop)


def test_normalise_masks_clock_times_and_thread_ids() -> None:
    assert demo.normalise("started at 17:13:52") == "started at HH:MM:SS"
    line = "当前线程<Thread(ThreadPoolExecutor-23_0, started daemon 6305378304)>"
    assert demo.normalise(line) == "当前线程<Thread(ThreadPoolExecutor-N, started ID)>"


# -- python -m tidal demo -------------------------------------------------------------------------


@pytest.mark.slow
def test_python_m_tidal_demo_exits_zero(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        # 0.05 rather than 0.02: at 20 ms per unit, a pool thread that a busy machine starts
        # 10 ms late swaps two lines of the executor example on either loop (see tidal.demo).
        [sys.executable, "-m", "tidal", "demo", "--scale", "0.05"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in EXAMPLES:
        assert f"== {name}:" in result.stdout
    assert "same output on both loops: NO" not in result.stdout
    assert result.stdout.count("same output on both loops: yes") == len(EXAMPLES)
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_python_m_tidal_demo_one_example_on_one_loop(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidal",
            "demo",
            "--scale",
            "0.02",
            "--only",
            "sequential",
            "--loop",
            "tidal",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "-- on tidal" in result.stdout
    assert "-- on asyncio" not in result.stdout
    assert "hello lisi" in result.stdout
