"""A catalogue of real race patterns, each with its fix, to show what schedule fuzzing finds.

Owns: the four races of docs/testing.md ("A race caught by fuzzing") and
``python -m tidal.testing.races``, which reports how many seeds each race needs to fail.
Not here: the fuzzing itself (testing/loop.py). tests/testing/test_races.py holds the rules:
each racy version passes on asyncio's own loop and fails under tidal's fuzzing within 20
seeds; each fixed version passes 200 seeds.

Every racy version is correct on asyncio's default schedule: it only relies on an order asyncio
does not promise, which is what makes such bugs survive review and CI.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

Main = Callable[[], Coroutine[Any, Any, None]]


# -- 1. two tasks relying on the order of timers with equal deadlines --------------------------


async def equal_deadlines_racy() -> None:
    """A consumer sleeps as long as the producer and assumes the producer went first."""
    box: list[str] = []

    async def produce() -> None:
        await asyncio.sleep(0.01)
        box.append("config")

    async def consume() -> None:
        await asyncio.sleep(0.01)
        assert box, "consumer ran before producer: same deadline, unspecified order"

    await asyncio.gather(produce(), consume())


async def equal_deadlines_fixed() -> None:
    box: list[str] = []
    produced = asyncio.Event()

    async def produce() -> None:
        await asyncio.sleep(0.01)
        box.append("config")
        produced.set()

    async def consume() -> None:
        await asyncio.sleep(0.01)
        await produced.wait()
        assert box

    await asyncio.gather(produce(), consume())


# -- 2. check-then-act across an await ------------------------------------------------------


async def check_then_act_racy() -> None:
    """A cache fills a missing key across an await; a second caller arrives a turn later."""
    cache: dict[str, str] = {}
    loads: list[str] = []

    async def load(key: str) -> str:
        loads.append(key)
        await asyncio.sleep(0)  # the database round trip
        return key.upper()

    async def get(key: str) -> str:
        if key not in cache:  # check
            cache[key] = await load(key)  # act, one await later
        return cache[key]

    first = asyncio.create_task(get("user"))
    await asyncio.sleep(0)
    second = asyncio.create_task(get("user"))
    await asyncio.gather(first, second)
    assert loads == ["user"], f"loaded {len(loads)} times: check and act were split by an await"


async def check_then_act_fixed() -> None:
    cache: dict[str, asyncio.Task[str]] = {}
    loads: list[str] = []

    async def load(key: str) -> str:
        loads.append(key)
        await asyncio.sleep(0)
        return key.upper()

    async def get(key: str) -> str:
        if key not in cache:  # check and act in one step: cache the pending load itself
            cache[key] = asyncio.ensure_future(load(key))
        return await cache[key]

    first = asyncio.create_task(get("user"))
    await asyncio.sleep(0)
    second = asyncio.create_task(get("user"))
    await asyncio.gather(first, second)
    assert loads == ["user"]


# -- 3. a lost wake-up: Event.clear() after taking the work ----------------------------------


async def lost_wakeup_racy() -> None:
    """The consumer clears the event after taking the queue, so a set() in between is lost."""
    queue: list[int] = []
    more = asyncio.Event()
    taken: list[int] = []

    async def producer() -> None:
        queue.append(1)
        more.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        queue.append(2)
        more.set()

    async def consumer() -> None:
        while len(taken) < 2:
            await asyncio.wait_for(more.wait(), timeout=5)
            batch, queue[:] = queue[:], []
            await asyncio.sleep(0)  # process the batch
            taken.extend(batch)
            more.clear()  # too late: a set() since the batch was taken is wiped out

    try:
        await asyncio.gather(producer(), consumer())
    except TimeoutError:
        raise AssertionError(f"lost wake-up: consumer never saw item 2 (took {taken})") from None


async def lost_wakeup_fixed() -> None:
    queue: list[int] = []
    more = asyncio.Event()
    taken: list[int] = []

    async def producer() -> None:
        queue.append(1)
        more.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        queue.append(2)
        more.set()

    async def consumer() -> None:
        while len(taken) < 2:
            await asyncio.wait_for(more.wait(), timeout=5)
            more.clear()  # clear first, then take: a later set() is seen on the next wait
            batch, queue[:] = queue[:], []
            await asyncio.sleep(0)
            taken.extend(batch)

    await asyncio.gather(producer(), consumer())
    assert taken == [1, 2]


# -- 4. unsynchronised shared state across a to_thread ---------------------------------------


async def _two_thread_writers(journal: list[str], fixed: bool) -> None:
    """Two tasks each hand a blocking write to a thread, then record it in shared state."""
    loop = asyncio.get_running_loop()
    # One worker: the blocking writes happen in submission order, as with one disk or one
    # database connection.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    turn = asyncio.Event()

    def write(record: str) -> str:
        return record  # the blocking write itself

    async def save(record: str) -> None:
        done = await loop.run_in_executor(pool, write, record)
        if fixed and done == "commit":
            await turn.wait()  # the commit is recorded after the begin, whatever the schedule
        journal.append(done)  # shared state, updated by whichever task resumes first
        if done == "begin":
            turn.set()

    try:
        tasks = [asyncio.create_task(save("begin")), asyncio.create_task(save("commit"))]
        await asyncio.sleep(0)  # both jobs submitted
        # Hold the loop until both writes are done and their results queued for the loop (a
        # worker hands a result over before it takes the next job). Thread timing then plays
        # no part: the only order left open is the one in which the loop resumes the tasks.
        pool.submit(write, "barrier").result()
        await asyncio.gather(*tasks)
    finally:
        pool.shutdown(wait=True)


async def thread_state_racy() -> None:
    journal: list[str] = []
    await _two_thread_writers(journal, fixed=False)
    assert journal == ["begin", "commit"], f"journal out of order: {journal}"


async def thread_state_fixed() -> None:
    journal: list[str] = []
    await _two_thread_writers(journal, fixed=True)
    assert journal == ["begin", "commit"], f"journal out of order: {journal}"


@dataclass(frozen=True)
class Race:
    """One pattern: the version with the race and the corrected one."""

    name: str
    title: str
    racy: Main
    fixed: Main


CATALOGUE: tuple[Race, ...] = (
    Race(
        "equal_deadlines",
        "two tasks relying on equal-deadline timer order",
        equal_deadlines_racy,
        equal_deadlines_fixed,
    ),
    Race(
        "check_then_act",
        "check-then-act across an await",
        check_then_act_racy,
        check_then_act_fixed,
    ),
    Race("lost_wakeup", "a lost wake-up with Event.clear()", lost_wakeup_racy, lost_wakeup_fixed),
    Race(
        "thread_state",
        "unsynchronised shared state across a to_thread",
        thread_state_racy,
        thread_state_fixed,
    ),
)


def seeds_to_fail(main: Main, limit: int) -> int | None:
    """How many seeds (from 0) fuzzing needs before ``main`` fails; None if none of ``limit``."""
    from . import FuzzFailure, fuzz

    try:
        fuzz(main, seeds=range(limit))
    except FuzzFailure as failure:
        return failure.seed + 1
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tidal.testing.races",
        description="Run the race catalogue: asyncio's schedule, then tidal's fuzzing.",
    )
    parser.add_argument("--limit", type=int, default=20, help="seeds to try per racy version")
    parser.add_argument("--fixed", type=int, default=200, help="seeds for each fixed version")
    args = parser.parse_args(argv)
    from . import FuzzFailure, fuzz

    status = 0
    for race in CATALOGUE:
        asyncio.run(race.racy())  # passes on asyncio's default schedule (or raises here)
        needed = seeds_to_fail(race.racy, args.limit)
        try:
            fixed = f"fixed version passed {fuzz(race.fixed, seeds=range(args.fixed))} seeds"
        except FuzzFailure as failure:
            fixed, status = f"FIXED VERSION FAILED: {failure}", 1
        found = f"failed at seed {needed - 1} ({needed} seeds)" if needed else "NOT FOUND"
        status |= needed is None
        print(f"{race.name:<16} {race.title}: passes on asyncio; fuzzed: {found}; {fixed}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
