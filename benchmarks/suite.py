"""The benchmarks: fixed amounts of event-loop work, timed on any loop.

Owns: every benchmark function and ``BENCHMARKS``, the registry the runner reads (name, full
size, smoke size, one-line description).
Not here: timing repetitions, statistics and reports (benchmarks/harness.py), the command line
(benchmarks/run.py).

Invariants (see harness.py): each function is ``func(loop_factory, size) -> seconds``; it makes
and closes its own loop, starts the clock once the loop is running and stops it when the work is
done, and raises ``BenchmarkError`` if the work came out wrong (a lost callback, a wrong sum).
Full sizes are chosen so that asyncio's loop takes about 0.05-0.3 s per run on CPython 3.11.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from typing import Any, Final

from .harness import Benchmark, BenchmarkError, LoopFactory, Unsupported, pinned_to_one_cpu


def _run(loop_factory: LoopFactory, main: Callable[[], Coroutine[Any, Any, float]]) -> float:
    """Run ``main()`` on a new loop from ``loop_factory``, close the loop, return its result."""
    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _check(what: str, got: object, expected: object) -> None:
    if got != expected:
        raise BenchmarkError(f"{what}: expected {expected!r}, got {got!r}")


# -- callbacks ---------------------------------------------------------------------------------


def call_soon_batched(loop_factory: LoopFactory, n: int) -> float:
    """Schedule ``n`` callbacks at once with call_soon; time until the last has run."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set_result(None)

        call_soon = loop.call_soon
        start = perf_counter()
        for _ in range(n):
            call_soon(tick)
        await done
        elapsed = perf_counter() - start
        _check("callbacks run", count, n)
        return elapsed

    return _run(loop_factory, main)


def call_soon_chained(loop_factory: LoopFactory, n: int) -> float:
    """One callback per loop turn: each callback schedules the next, ``n`` in all."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        call_soon = loop.call_soon
        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set_result(None)
            else:
                call_soon(tick)

        start = perf_counter()
        call_soon(tick)
        await done
        elapsed = perf_counter() - start
        _check("callbacks run", count, n)
        return elapsed

    return _run(loop_factory, main)


# -- tasks and futures -------------------------------------------------------------------------

SLEEP0_TASKS: Final = 100  # tasks switching concurrently in sleep0_switches


def sleep0_switches(loop_factory: LoopFactory, n: int) -> float:
    """100 tasks each doing ``n`` // 100 ``await asyncio.sleep(0)``: ``n`` task switches."""
    per_task = max(1, n // SLEEP0_TASKS)

    async def worker() -> int:
        for _ in range(per_task):
            await asyncio.sleep(0)
        return per_task

    async def main() -> float:
        start = perf_counter()
        results = await asyncio.gather(*[worker() for _ in range(SLEEP0_TASKS)])
        elapsed = perf_counter() - start
        _check("switches", sum(results), per_task * SLEEP0_TASKS)
        return elapsed

    return _run(loop_factory, main)


GATHER_BATCH: Final = 100  # tasks per gather in create_task_gather


def create_task_gather(loop_factory: LoopFactory, n: int) -> float:
    """``n`` tasks of a trivial coroutine, created with create_task, gathered 100 at a time."""
    rounds = max(1, n // GATHER_BATCH)

    async def leaf(i: int) -> int:
        return i

    async def main() -> float:
        loop = asyncio.get_running_loop()
        create_task = loop.create_task
        total = 0
        start = perf_counter()
        for _ in range(rounds):
            results = await asyncio.gather(*[create_task(leaf(i)) for i in range(GATHER_BATCH)])
            total += sum(results)
        elapsed = perf_counter() - start
        _check("sum of results", total, rounds * sum(range(GATHER_BATCH)))
        return elapsed

    return _run(loop_factory, main)


def future_callback_roundtrip(loop_factory: LoopFactory, n: int) -> float:
    """A task awaits a new future ``n`` times; a call_soon callback resolves each one."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        create_future = loop.create_future
        call_soon = loop.call_soon
        total = 0
        start = perf_counter()
        for i in range(n):
            fut = create_future()
            call_soon(fut.set_result, i)
            total += await fut
        elapsed = perf_counter() - start
        _check("sum of results", total, n * (n - 1) // 2)
        return elapsed

    return _run(loop_factory, main)


def future_pingpong(loop_factory: LoopFactory, n: int) -> float:
    """Two tasks hand a token back and forth through futures, ``n`` round trips."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        ping: asyncio.Future[int] = loop.create_future()
        pong: asyncio.Future[int] = loop.create_future()

        async def ponger() -> int:
            nonlocal ping, pong
            returned = 0
            for _ in range(n):
                value = await ping
                ping = loop.create_future()
                pong.set_result(value + 1)
                returned += 1
            return returned

        async def pinger() -> int:
            nonlocal ping, pong
            value = 0
            for _ in range(n):
                ping.set_result(value)
                value = await pong
                pong = loop.create_future()
            return value

        start = perf_counter()
        returned, last = await asyncio.gather(ponger(), pinger())
        elapsed = perf_counter() - start
        _check("round trips", (returned, last), (n, n))
        return elapsed

    return _run(loop_factory, main)


# -- timers ------------------------------------------------------------------------------------

FANOUT_DISTINCT_DELAYS: Final = 997  # delays 0 .. 9.96 ms in steps of 10 us


def timer_fanout(loop_factory: LoopFactory, n: int) -> float:
    """``n`` call_later timers with up to 997 distinct delays (0-10 ms); time until all fired."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        call_later = loop.call_later
        fired = 0

        def ring() -> None:
            nonlocal fired
            fired += 1
            if fired == n:
                done.set_result(None)

        start = perf_counter()
        for i in range(n):
            call_later((i % FANOUT_DISTINCT_DELAYS) * 1e-5, ring)
        await done
        elapsed = perf_counter() - start
        _check("timers fired", fired, n)
        return elapsed

    return _run(loop_factory, main)


CANCEL_BATCH: Final = 64  # timers set and cancelled between two loop turns


def timer_cancel(loop_factory: LoopFactory, n: int) -> float:
    """``n`` times call_later(60 s) then cancel (a timeout that never fires), with a loop turn
    every 64 so the loop drops or compacts the cancelled entries."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        call_later = loop.call_later
        fired = 0

        def ring() -> None:
            nonlocal fired
            fired += 1

        start = perf_counter()
        for i in range(n):
            call_later(60.0, ring).cancel()
            if i % CANCEL_BATCH == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0)
        elapsed = perf_counter() - start
        _check("cancelled timers that fired", fired, 0)
        return elapsed

    return _run(loop_factory, main)


def wait_for_fast(loop_factory: LoopFactory, n: int) -> float:
    """``n`` times ``await asyncio.wait_for(coro, 10)`` on a coroutine that returns at once."""

    async def quick(i: int) -> int:
        return i

    async def main() -> float:
        total = 0
        start = perf_counter()
        for i in range(n):
            total += await asyncio.wait_for(quick(i), 10.0)
        elapsed = perf_counter() - start
        _check("sum of results", total, n * (n - 1) // 2)
        return elapsed

    return _run(loop_factory, main)


# -- async trees (the shapes of pyperformance's async_tree, written anew) ----------------------

TREE_DEPTH: Final = 5  # levels of gathering coroutines above the leaves
TREE_BRANCHES: Final = 5  # children per node: 5**5 = 3125 leaves, 781 inner nodes
TREE_IO_DELAY: Final = 0.0005  # seconds a leaf "waits for I/O" (an asyncio.sleep)
TREE_MEMO_KEYS: Final = 64  # distinct results the memoization tree's leaves share
TREE_CPU_ITERATIONS: Final = 400  # loop iterations of a CPU-bound leaf (about 10-20 us)


def _cpu_work(seed: int) -> int:
    acc = seed
    for k in range(TREE_CPU_ITERATIONS):
        acc = (acc * 31 + k) % 1_000_003
    return acc


def _make_leaf(shape: str, loop: asyncio.AbstractEventLoop) -> Callable[[int], Awaitable[int]]:
    """Return the leaf coroutine function of a tree shape; every leaf returns 1."""
    if shape == "none":

        async def leaf(index: int) -> int:
            return 1

    elif shape == "io":

        async def leaf(index: int) -> int:
            await asyncio.sleep(TREE_IO_DELAY)
            return 1

    elif shape == "memoization":
        # The first leaf to ask for a key starts the "I/O" (a future a timer completes); later
        # leaves with the same key await the same future, done or not.
        cache: dict[int, asyncio.Future[int]] = {}

        async def leaf(index: int) -> int:
            key = index % TREE_MEMO_KEYS
            fut = cache.get(key)
            if fut is None:
                fut = cache[key] = loop.create_future()
                loop.call_later(TREE_IO_DELAY, fut.set_result, 1)
            return await fut

    elif shape == "cpu_io_mixed":
        # Even leaves compute, odd leaves wait for I/O.
        async def leaf(index: int) -> int:
            if index % 2:
                await asyncio.sleep(TREE_IO_DELAY)
            else:
                _cpu_work(index)
            return 1

    else:
        raise ValueError(f"unknown tree shape {shape!r}")
    return leaf


async def _probe() -> None:
    return None


def _install_eager_factory(loop: asyncio.AbstractEventLoop) -> None:
    """Install the eager task factory that belongs with ``loop`` (tidal's own for tidal).

    Raises:
        Unsupported: no eager factory on this Python (asyncio's needs 3.12+), or the loop
            rejects it (uvloop 0.23 on 3.13 fails with TypeError on ``eager_start``).
    """
    import tidal

    factory: Any  # typeshed types task factories narrowly; both candidates fit at run time
    if isinstance(loop, tidal.EventLoop):
        factory = tidal.eager_task_factory
    else:
        factory = getattr(asyncio, "eager_task_factory", None)
        if factory is None:
            raise Unsupported("asyncio.eager_task_factory needs Python 3.12+")
    loop.set_task_factory(factory)
    probe = _probe()
    try:
        task = loop.create_task(probe)
    except TypeError as exc:
        probe.close()
        loop.set_task_factory(None)
        raise Unsupported(f"{type(loop).__module__} rejects the eager task factory: {exc}") from exc
    if not task.done():
        raise BenchmarkError("the eager task factory did not run the first step eagerly")


def make_tree_benchmark(shape: str, *, taskgroup: bool = False, eager: bool = False) -> Any:
    """Build a benchmark that runs ``size`` trees of the given shape.

    Every inner node runs its children concurrently (``asyncio.gather`` of coroutines, or a
    ``TaskGroup`` when ``taskgroup``) and sums their results; ``eager`` installs the loop's eager
    task factory first.
    """

    def tree_bench(loop_factory: LoopFactory, n: int) -> float:
        async def main() -> float:
            loop = asyncio.get_running_loop()
            if eager:
                _install_eager_factory(loop)
            counter = 0

            async def node(level: int, leaf: Callable[[int], Awaitable[int]]) -> int:
                nonlocal counter
                if level == 0:
                    counter += 1
                    return await leaf(counter)
                if taskgroup:
                    async with asyncio.TaskGroup() as group:
                        tasks = [
                            group.create_task(node(level - 1, leaf)) for _ in range(TREE_BRANCHES)
                        ]
                    return sum(task.result() for task in tasks)
                results = await asyncio.gather(
                    *[node(level - 1, leaf) for _ in range(TREE_BRANCHES)]
                )
                return sum(results)

            total = 0
            start = perf_counter()
            for _ in range(n):
                total += await node(TREE_DEPTH, _make_leaf(shape, loop))
            elapsed = perf_counter() - start
            _check("leaves", total, n * TREE_BRANCHES**TREE_DEPTH)
            return elapsed

        return _run(loop_factory, main)

    tree_bench.__name__ = f"async_tree_{shape}"
    return tree_bench


# -- threads -----------------------------------------------------------------------------------


def call_soon_threadsafe_flood(loop_factory: LoopFactory, n: int) -> float:
    """Another thread calls call_soon_threadsafe ``n`` times; time until all callbacks ran.

    Both threads are pinned to one CPU (see ``harness.pinned_to_one_cpu``).
    """

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set_result(None)

        def produce() -> None:
            call_soon_threadsafe = loop.call_soon_threadsafe
            for _ in range(n):
                call_soon_threadsafe(tick)

        producer = threading.Thread(target=produce, name="bench-producer")
        start = perf_counter()
        producer.start()
        await done
        elapsed = perf_counter() - start
        producer.join()
        _check("callbacks run", count, n)
        return elapsed

    with pinned_to_one_cpu():
        return _run(loop_factory, main)


EXECUTOR_BATCH: Final = 50  # jobs submitted at once in run_in_executor_batches
EXECUTOR_WORKERS: Final = 4


def _job(i: int) -> int:
    return i


def run_in_executor_batches(loop_factory: LoopFactory, n: int) -> float:
    """``n`` trivial jobs through run_in_executor(None, ...), 50 at a time, on 4 worker threads.

    The pool is started (one warm-up batch) before the clock starts; threads pinned to one CPU.
    """
    rounds = max(1, n // EXECUTOR_BATCH)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=EXECUTOR_WORKERS)
        )
        await asyncio.gather(*[loop.run_in_executor(None, _job, i) for i in range(EXECUTOR_BATCH)])
        total = 0
        start = perf_counter()
        for _ in range(rounds):
            results = await asyncio.gather(
                *[loop.run_in_executor(None, _job, i) for i in range(EXECUTOR_BATCH)]
            )
            total += sum(results)
        elapsed = perf_counter() - start
        await loop.shutdown_default_executor()
        _check("sum of results", total, rounds * sum(range(EXECUTOR_BATCH)))
        return elapsed

    with pinned_to_one_cpu():
        return _run(loop_factory, main)


# -- loop life cycle ---------------------------------------------------------------------------


def loop_create_close(loop_factory: LoopFactory, n: int) -> float:
    """``n`` times: make a loop, run_until_complete a trivial coroutine, close the loop."""

    async def trivial() -> int:
        return 1

    total = 0
    start = perf_counter()
    for _ in range(n):
        loop = loop_factory()
        try:
            total += loop.run_until_complete(trivial())
        finally:
            loop.close()
    elapsed = perf_counter() - start
    _check("runs", total, n)
    return elapsed


# -- the registry ------------------------------------------------------------------------------


def _describe(func: Callable[..., Any]) -> str:
    """A function's docstring, first paragraph, on one line."""
    paragraph = (func.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def _bench(func: Callable[[LoopFactory, int], float], size: int, smoke_size: int) -> Benchmark:
    return Benchmark(func.__name__, func, size, smoke_size, _describe(func))


def _tree(name: str, shape: str, trees: int, description: str, **kw: bool) -> Benchmark:
    return Benchmark(name, make_tree_benchmark(shape, **kw), trees, 1, description)


BENCHMARKS: Final[list[Benchmark]] = [
    _bench(call_soon_batched, 130_000, 200),
    _bench(call_soon_chained, 80_000, 200),
    _bench(sleep0_switches, 120_000, 200),
    _bench(create_task_gather, 40_000, 200),
    _bench(future_callback_roundtrip, 30_000, 100),
    _bench(future_pingpong, 30_000, 100),
    _bench(timer_fanout, 50_000, 200),
    _bench(timer_cancel, 100_000, 500),
    _bench(wait_for_fast, 12_000, 50),
    _tree("async_tree_none", "none", 6, "Tree of gathering coroutines; leaves return at once."),
    _tree("async_tree_io", "io", 3, "Tree whose leaves sleep 0.5 ms (timers)."),
    _tree(
        "async_tree_memoization",
        "memoization",
        4,
        "Tree whose leaves share 64 cached futures, each completed by a timer.",
    ),
    _tree(
        "async_tree_cpu_io_mixed",
        "cpu_io_mixed",
        2,
        "Tree whose even leaves compute (400 iterations) and odd leaves sleep 0.5 ms.",
    ),
    _tree(
        "async_tree_tg",
        "none",
        6,
        "async_tree_none with TaskGroup instead of gather.",
        taskgroup=True,
    ),
    _tree(
        "async_tree_eager",
        "none",
        12,
        "async_tree_none with the loop's eager task factory.",
        eager=True,
    ),
    _tree(
        "async_tree_eager_io",
        "io",
        3,
        "async_tree_io with the loop's eager task factory.",
        eager=True,
    ),
    _tree(
        "async_tree_eager_tg",
        "none",
        12,
        "async_tree_tg with the loop's eager task factory.",
        eager=True,
        taskgroup=True,
    ),
    _bench(call_soon_threadsafe_flood, 40_000, 200),
    _bench(run_in_executor_batches, 8_000, 100),
    _bench(loop_create_close, 4_000, 10),
]
