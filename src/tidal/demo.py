"""The seed's examples, run on tidal and on asyncio's loop, with their output and timings.

Owns: the examples from the study notes tidal grew from (shared/seed), kept as close to the
notes as a runnable file allows, and ``python -m tidal demo``.
Not here: the loop (loop.py). The tests (tests/test_demo.py) run the same examples, scaled down.

Two changes from the notes, both forced by this machine rather than by tidal: delays are
multiplied by ``scale`` (1.0 reproduces the notes' seconds), and the "HTTP GET to baidu.com" in
the Future example goes to a tiny HTTP server on 127.0.0.1, because there is no outside network.
That server answers after half a (scaled) second, standing in for the network round trip that
put the thread's line after the ticker's third in the notes. The blocking call still happens in
a pool thread, which is what the example is about.

The notes run some examples as ``await main()`` in a notebook cell; ``run_cell`` does what
IPython does for such a cell: compile with top-level await allowed and drive the resulting
coroutine on the loop.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import http.server
import io
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@dataclass(frozen=True)
class Example:
    """One example of the notes: its title, what it shows, and how to run it."""

    name: str
    title: str
    expected_seconds: float  # at scale 1.0, as the notes state or imply
    run: Callable[[LoopFactory, float], None]


# -- 1. coroutines awaited one after the other: 1 s + 2 s = 3 s -----------------------------


def sequential(loop_factory: LoopFactory, scale: float) -> None:
    async def say_after(delay: float, what: str) -> None:
        await asyncio.sleep(delay * scale)
        print(what)

    async def main() -> None:
        print(f"started at {time.strftime('%X')}")
        await say_after(1, "hello zhangsan")
        await say_after(2, "hello lisi")
        print(f"finished at {time.strftime('%X')}")

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


# -- 2. the same work as two tasks: 2 s; run as a notebook cell ("await main()") ----------------

CONCURRENT_CELL = """
async def say_after(delay, what):
    await asyncio.sleep(delay * scale)
    print(what)

async def main():
    print(f"started at {time.strftime('%X')}")

    task1 = asyncio.create_task(say_after(1, 'hello zhangsan'))
    task2 = asyncio.create_task(say_after(2, 'hello lisi'))

    await asyncio.gather(task1, task2)

    print(f"finished at {time.strftime('%X')}")

await main()
"""


def run_cell(source: str, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> Any:
    """Run notebook-cell source that may use top-level ``await``, as IPython does."""
    code = compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if asyncio.iscoroutine(result):
        return loop.run_until_complete(result)
    return result


def concurrent_cell(loop_factory: LoopFactory, scale: float) -> None:
    loop = loop_factory()
    try:
        run_cell(CONCURRENT_CELL, {"asyncio": asyncio, "time": time, "scale": scale}, loop)
    finally:
        loop.close()


# -- 3. a blocking call in a thread pool while another task keeps ticking -----------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        # Stand-in for the notes' round trip to baidu.com: without it the thread's second line
        # lands at the same instant as the ticker's third, and their order becomes a coin toss.
        time.sleep(getattr(self.server, "latency", 0.0))
        body = b"<html>tidal</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the example's output to what the notes print


@contextlib.contextmanager
def local_http_server(latency: float = 0.0) -> Iterator[str]:
    """Serve one small page on 127.0.0.1, answering each request after ``latency`` seconds."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.latency = 0.0  # type: ignore[attr-defined]  # read by _Handler
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        # Warm urllib up: its first request in a process costs ~20 ms more (3.12+), which would
        # otherwise eat into the latency below and make the example's timing depend on it.
        with urllib.request.urlopen(url, timeout=10) as res:
            res.read()
        server.latency = latency  # type: ignore[attr-defined]
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Response:
    """Prints like requests' Response, as the notes show it: <Response [200]>."""

    def __init__(self, status: int) -> None:
        self.status = status

    def __repr__(self) -> str:
        return f"<Response [{self.status}]>"


def executor_future(loop_factory: LoopFactory, scale: float) -> None:
    with local_http_server(latency=0.5 * scale) as url:

        def fetch_data() -> None:
            print(f"当前线程{threading.current_thread()}")
            with urllib.request.urlopen(url, timeout=10) as res:
                response = _Response(res.status)
            time.sleep(3 * scale)
            print(f"百度的网页{response}")

        def fetch_data_callback() -> None:
            print("done")

        async def afetch_data() -> None:
            pool = futures.ThreadPoolExecutor(max_workers=1)
            pool.submit(fetch_data)
            loop = asyncio.get_event_loop()
            print("已经开始执行子线程任务了")
            future = loop.run_in_executor(pool, fetch_data_callback)
            await future
            pool.shutdown()

        async def aother_task() -> None:
            for i in range(10):
                await asyncio.sleep(1 * scale)
                print(f"aother_task 开始工作{i}")

        async def main() -> None:
            task2 = asyncio.create_task(aother_task())
            task1 = asyncio.create_task(afetch_data())
            await asyncio.gather(task2, task1)

        loop = loop_factory()
        try:
            run_cell("await main()", {"main": main}, loop)
        finally:
            loop.close()


# -- 4. a task runs to completion although nobody awaits it -------------------------------------


def never_awaited_task(loop_factory: LoopFactory, scale: float) -> None:
    async def coroutine1() -> None:
        print("Coroutine 1 started")
        await asyncio.sleep(1 * scale)
        print("Coroutine 1 completed")

    async def coroutine2() -> None:
        print("Coroutine 2 started")
        await asyncio.sleep(2 * scale)
        print("Coroutine 2 completed")

    async def main() -> None:
        print("Main started")
        task1 = asyncio.create_task(coroutine1())
        task2 = asyncio.create_task(coroutine2())
        print("开始等待结果")
        await task2
        print("task2 结束")
        print("Main completed")
        del task1

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


# -- 5. awaitables: coroutine, Task, Future, and any object with __await__ ---------------------


def awaitables(loop_factory: LoopFactory, scale: float) -> None:
    async def async_function() -> int:
        return 1

    async def await_function() -> None:
        result = await async_function()
        print(result)

    class Ready:
        """Awaitable by duck typing: it only has __await__, like Future."""

        def __await__(self) -> Any:
            yield from asyncio.sleep(0).__await__()
            return "ready"

    async def main() -> None:
        await await_function()
        coro = async_function()
        print(type(coro))
        coro.close()  # the notes show the "never awaited" warning here; we close it instead
        task = asyncio.ensure_future(async_function())
        print(f"Task: {isinstance(task, asyncio.Task)}", await task)
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.5 * scale, fut.set_result, "future result")
        print(await fut)
        print(await Ready())

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


# -- 6. scheduling from other threads (the docs section the notes point to) ------------------


def from_other_threads(loop_factory: LoopFactory, scale: float) -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0.5 * scale)
        return a + b

    async def main() -> None:
        loop = asyncio.get_running_loop()
        called = asyncio.Event()

        def worker() -> None:
            future = asyncio.run_coroutine_threadsafe(add(1, 2), loop)
            print(f"run_coroutine_threadsafe -> {future.result(timeout=10)}")
            loop.call_soon_threadsafe(called.set)

        thread = threading.Thread(target=worker)
        thread.start()
        await called.wait()
        print("call_soon_threadsafe woke the loop")
        await asyncio.to_thread(thread.join)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


EXAMPLES: tuple[Example, ...] = (
    Example("sequential", "two coroutines awaited in turn (1 s + 2 s)", 3.0, sequential),
    Example("concurrent", "two tasks and gather, as a notebook cell", 2.0, concurrent_cell),
    Example("executor", "a blocking call in a pool; the loop keeps ticking", 10.0, executor_future),
    Example(
        "never_awaited", "a task finishes though only another is awaited", 2.0, never_awaited_task
    ),
    Example("awaitables", "coroutine, Task, Future and a duck-typed awaitable", 0.5, awaitables),
    Example(
        "threads", "run_coroutine_threadsafe and call_soon_threadsafe", 0.5, from_other_threads
    ),
)


@dataclass(frozen=True)
class Outcome:
    lines: list[str]  # what the example printed, clock times masked as HH:MM:SS
    timed_lines: list[tuple[float, str]]  # (seconds since start, line) as printed
    seconds: float


class _TimedWriter(io.TextIOBase):
    """A stdout stand-in that records when each line was printed."""

    def __init__(self, start: float) -> None:
        self._start = start
        self._partial = ""
        self._lock = threading.Lock()
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *complete, self._partial = self._partial.split("\n")
            now = time.perf_counter() - self._start
            self.lines.extend((now, line) for line in complete)
        return len(text)


_CLOCK = re.compile(r"\d\d:\d\d:\d\d")
_THREAD_ID = re.compile(r"ThreadPoolExecutor-\d+_\d+, started( daemon)? \d+")


def normalise(line: str) -> str:
    """Mask what legitimately differs between two runs: clock times and thread ids."""
    return _THREAD_ID.sub("ThreadPoolExecutor-N, started ID", _CLOCK.sub("HH:MM:SS", line))


def run_example(example: Example, loop_factory: LoopFactory, scale: float) -> Outcome:
    """Run one example, capturing its output with timestamps."""
    start = time.perf_counter()
    writer = _TimedWriter(start)
    with contextlib.redirect_stdout(writer):
        example.run(loop_factory, scale)
    seconds = time.perf_counter() - start
    return Outcome([normalise(line) for _, line in writer.lines], writer.lines, seconds)


def _loop_factories(which: str) -> list[tuple[str, LoopFactory]]:
    from . import new_event_loop

    both = [("tidal", new_event_loop), ("asyncio", asyncio.new_event_loop)]
    return [(name, f) for name, f in both if which in (name, "both")]


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def main(argv: list[str] | None = None, *, prog: str = "python -m tidal demo") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--scale",
        type=_scale,
        default=1.0,
        help="multiply every delay by this positive number (default 1.0: the notes' seconds)",
    )
    parser.add_argument(
        "--loop",
        choices=["tidal", "asyncio", "both"],
        default="both",
        help="which loop to run the examples on (default both, and compare)",
    )
    names = [example.name for example in EXAMPLES]
    parser.add_argument(
        "--only", choices=names, metavar="NAME", help=f"run one example: {', '.join(names)}"
    )
    args = parser.parse_args(argv)
    mismatches = 0
    for example in EXAMPLES:
        if args.only and example.name != args.only:
            continue
        print(
            f"== {example.name}: {example.title} "
            f"(notes: {example.expected_seconds * args.scale:.2f} s)"
        )
        outcomes = {}
        for name, factory in _loop_factories(args.loop):
            outcome = run_example(example, factory, args.scale)
            outcomes[name] = outcome
            print(f"-- on {name}: {outcome.seconds:.3f} s")
            for at, line in outcome.timed_lines:
                print(f"   [{at:6.3f}s] {line}")
        if len(outcomes) == 2:
            same = outcomes["tidal"].lines == outcomes["asyncio"].lines
            mismatches += not same
            ratio = outcomes["tidal"].seconds / outcomes["asyncio"].seconds
            print(
                f"-- same output on both loops: {'yes' if same else 'NO'}; "
                f"time tidal/asyncio = {ratio:.3f}"
            )
        print()
    sys.stdout.flush()
    return 1 if mismatches else 0
