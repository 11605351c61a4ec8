"""Soak: hours-style mixed load on one loop, sampled every second, nothing may be lost.

Owns: the soak workload, its per-second samples, the pass rule and the RSS/fd plot.
Not here: loop factories, child processes, gauges, tables (common.py).

The workload, all at once on one loop for ``--duration`` seconds:

- an echo server and ``--clients`` clients; each message is 16 B - 64 KiB of random bytes
  behind a length prefix, and the client checks the echo's length and CRC-32 against what it
  sent; clients reconnect every 50 messages (connection churn);
- task churn: batches of 200 tasks, a third finishing at once, a third after a short sleep,
  a third cancelled mid-sleep; each result and each CancelledError is checked;
- timers: batches of 100 ``call_later`` (0-20 ms), 30 % of them cancelled; every other one
  must fire, exactly once;
- a foreign thread sending ``call_soon_threadsafe`` callbacks, every one of which must run;
- executor jobs (SHA-256 of a buffer in the default executor), every result checked.

Every second the child samples RSS, open fds, live tasks and threads. Pass (per loop): nothing
lost or corrupted, and after the warm-up (the first fifth of the run, at least 5 s) RSS grows
by at most ``RSS_TOLERANCE`` (the larger of 4 MiB and 5 %; medians of the first and last fifth
of the post-warm-up samples) and open fds by at most ``FD_TOLERANCE``; after shutdown the
process holds exactly the fds and child processes it held before the soak.

Usage::

    python reliability/soak.py                        # 10 minutes per loop, one after another
    python reliability/soak.py --duration 30          # the CI size
    python reliability/soak.py --parallel --plot docs/reliability-soak.png
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import random
import statistics
import struct
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reliability import common

RSS_TOLERANCE_BYTES = 4 * common.MIB
RSS_TOLERANCE_FRACTION = 0.05
FD_TOLERANCE = 4
HEADER = struct.Struct("!I")


class Counters:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            header = await reader.readexactly(HEADER.size)
            body = await reader.readexactly(HEADER.unpack(header)[0])
            writer.write(header + body)
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass  # the client reconnects: EOF between messages
    finally:
        writer.close()


async def _client(
    port: int, stop: asyncio.Event, counters: Counters, rng: random.Random, pool: bytes
) -> None:
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(50):
                if stop.is_set():
                    break
                size = rng.choice((16, 512, 4096, 65536)) - rng.randrange(16)
                start = rng.randrange(len(pool) - size)
                payload = pool[start : start + size]
                writer.write(HEADER.pack(size) + payload)
                counters.add("messages sent")
                await writer.drain()
                header = await reader.readexactly(HEADER.size)
                echoed = await reader.readexactly(HEADER.unpack(header)[0])
                if len(echoed) == size and zlib.crc32(echoed) == zlib.crc32(payload):
                    counters.add("messages verified")
                    counters.add("bytes verified", size)
                else:
                    counters.add("messages corrupted")
        finally:
            writer.close()
            await writer.wait_closed()
        counters.add("connections")


async def _churn(stop: asyncio.Event, counters: Counters, rng: random.Random) -> None:
    async def finish(i: int) -> int:
        return i

    async def nap(i: int) -> int:
        await asyncio.sleep(rng.random() * 0.005)
        return i

    async def doomed(i: int) -> int:
        await asyncio.sleep(3600)
        return i

    kinds = (finish, nap, doomed)
    while not stop.is_set():
        tasks = [asyncio.create_task(kinds[i % 3](i)) for i in range(200)]
        counters.add("tasks created", len(tasks))
        await asyncio.sleep(0)
        for i in range(2, 200, 3):
            tasks[i].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 3 == 2:
                good = isinstance(result, asyncio.CancelledError)
                counters.add("tasks cancelled" if good else "tasks wrong")
            else:
                counters.add("tasks finished" if result == i else "tasks wrong")


async def _timers(stop: asyncio.Event, counters: Counters, rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        fired: list[int] = []
        handles = [loop.call_later(rng.random() * 0.02, fired.append, i) for i in range(100)]
        cancelled = set(rng.sample(range(100), 30))
        for i in cancelled:
            handles[i].cancel()
        await asyncio.sleep(0.05)
        expected = set(range(100)) - cancelled
        counters.add("timers scheduled", 100)
        counters.add("timers cancelled", len(cancelled))
        counters.add("timers fired", len(fired))
        if sorted(fired) != sorted(expected):
            counters.add("timers lost or extra", len(expected.symmetric_difference(fired)))


def _thread_sender(
    loop: asyncio.AbstractEventLoop, stop: threading.Event, counters: Counters, box: list[int]
) -> None:
    def received() -> None:
        box[0] += 1

    while not stop.is_set():
        for _ in range(100):
            loop.call_soon_threadsafe(received)
        counters.add("thread callbacks sent", 100)
        stop.wait(0.01)


async def _executor(stop: asyncio.Event, counters: Counters, pool: bytes) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        chunks = [pool[i * 4096 : (i + 1) * 4096] for i in range(8)]
        digests = await asyncio.gather(
            *(loop.run_in_executor(None, lambda c=c: hashlib.sha256(c).digest()) for c in chunks)
        )
        for chunk, digest in zip(chunks, digests, strict=True):
            ok = digest == hashlib.sha256(chunk).digest()
            counters.add("executor jobs" if ok else "executor jobs wrong")
        await asyncio.sleep(0.005)


async def _sampler(stop: asyncio.Event, started: float, samples: list[list[float]]) -> None:
    while not stop.is_set():
        samples.append(
            [
                round(time.monotonic() - started, 2),
                common.rss_bytes(),
                common.open_fds(),
                len(asyncio.all_tasks()),
                common.thread_count(),
            ]
        )
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


async def soak(duration: float, clients: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    pool = rng.randbytes(256 * 1024)
    counters = Counters()
    samples: list[list[float]] = []
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    loop.set_exception_handler(lambda _l, ctx: errors.append(str(ctx.get("message"))[:200]))
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    thread_stop = threading.Event()
    box = [0]
    sender = threading.Thread(target=_thread_sender, args=(loop, thread_stop, counters, box))
    started = time.monotonic()
    sender.start()
    workers = [
        asyncio.create_task(_client(port, stop, counters, random.Random(seed + i), pool))
        for i in range(clients)
    ]
    workers += [
        asyncio.create_task(_churn(stop, counters, random.Random(seed - 1))),
        asyncio.create_task(_timers(stop, counters, random.Random(seed - 2))),
        asyncio.create_task(_executor(stop, counters, pool)),
    ]
    sampler = asyncio.create_task(_sampler(stop, started, samples))
    await asyncio.sleep(duration)
    stop.set()
    thread_stop.set()
    await asyncio.to_thread(sender.join)
    outcomes = await asyncio.gather(*workers, sampler, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            errors.append(f"{type(outcome).__name__}: {outcome}"[:200])
    # Every callback the thread sent is queued by now; one more turn runs the last of them.
    deadline = time.monotonic() + 5
    while box[0] < counters.values.get("thread callbacks sent", 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    counters.add("thread callbacks run", box[0])
    server.close()
    await server.wait_closed()
    return {"counters": counters.values, "samples": samples, "errors": errors}


def child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    fds_before = common.open_fds()
    children_before = common.child_processes()
    loop = common.LOOPS[name]()
    try:
        report = loop.run_until_complete(soak(args.duration, args.clients, args.seed))
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    gc.collect()
    report["fds before"] = fds_before
    report["fds after"] = common.open_fds()
    report["children leaked"] = len(common.child_processes()) - len(children_before)
    return report


# -- judging and reporting ------------------------------------------------------------------------


def judge(report: dict[str, Any], duration: float) -> dict[str, Any]:
    counters = report["counters"]
    lost = {
        "messages": counters.get("messages sent", 0) - counters.get("messages verified", 0),
        "corrupted": counters.get("messages corrupted", 0),
        "tasks": counters.get("tasks wrong", 0),
        "timers": counters.get("timers lost or extra", 0),
        "thread callbacks": counters.get("thread callbacks sent", 0)
        - counters.get("thread callbacks run", 0),
        "executor jobs": counters.get("executor jobs wrong", 0),
    }
    warmup = max(5.0, duration / 5)
    after = [s for s in report["samples"] if s[0] >= warmup] or report["samples"]
    fifth = max(1, len(after) // 5)
    rss_start = statistics.median(s[1] for s in after[:fifth])
    rss_end = statistics.median(s[1] for s in after[-fifth:])
    fds_start = statistics.median(s[2] for s in after[:fifth])
    fds_end = statistics.median(s[2] for s in after[-fifth:])
    rss_growth = rss_end - rss_start
    rss_limit = max(RSS_TOLERANCE_BYTES, RSS_TOLERANCE_FRACTION * rss_start)
    fd_leak = report["fds after"] - report["fds before"]
    failures = [f"{k} lost: {v}" for k, v in lost.items() if v]
    if report["errors"]:
        failures.append(f"{len(report['errors'])} errors, first: {report['errors'][0]}")
    if rss_growth > rss_limit:
        failures.append(f"RSS grew {common.mib(rss_growth)} MiB > {common.mib(rss_limit)} MiB")
    if fds_end - fds_start > FD_TOLERANCE:
        failures.append(f"open fds grew by {fds_end - fds_start:g} > {FD_TOLERANCE}")
    if fd_leak:
        failures.append(f"{fd_leak} fds leaked after shutdown")
    if report["children leaked"]:
        failures.append(f"{report['children leaked']} child processes leaked")
    return {
        "lost": sum(lost.values()),
        "rss start": rss_start,
        "rss growth": rss_growth,
        "fds drift": fds_end - fds_start,
        "fd leak": fd_leak,
        "failures": failures,
        "max tasks": max(s[3] for s in report["samples"]),
        "max threads": max(s[4] for s in report["samples"]),
    }


def plot(reports: dict[str, dict[str, Any]], path: Path, duration: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rss, ax_fds) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, report in reports.items():
        if "samples" not in report:
            continue
        t = [s[0] for s in report["samples"]]
        ax_rss.plot(t, [s[1] / common.MIB for s in report["samples"]], label=name)
        ax_fds.plot(t, [s[2] for s in report["samples"]], label=name)
    warmup = max(5.0, duration / 5)
    for ax in (ax_rss, ax_fds):
        ax.axvline(warmup, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    ax_rss.set_ylabel("RSS (MiB)")
    ax_fds.set_ylabel("open fds")
    ax_fds.set_xlabel("seconds (dotted: end of warm-up)")
    ax_rss.legend(loc="lower right")
    ax_rss.set_title(f"soak, {duration:.0f} s per loop: RSS and open fds sampled every second")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds per loop")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--loops", default="asyncio,uvloop,tidal")
    parser.add_argument("--parallel", action="store_true", help="all loops at once")
    parser.add_argument("--plot", type=Path, help="write a PNG of RSS and fds over time")
    parser.add_argument("--json", type=Path, help="write every sample here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        common.emit(child(args.child, args))
        return 0
    loops = common.available_loops(args.loops.split(","))
    forwarded = ["--duration", str(args.duration), "--clients", str(args.clients)]
    forwarded += ["--seed", str(args.seed)]
    reports = common.run_children(
        Path(__file__), loops, forwarded, parallel=args.parallel, timeout=args.duration + 300
    )
    rows = []
    failed = False
    for name in loops:
        report = reports[name]
        if "error" in report:
            failed = failed or name == "tidal"
            rows.append([name, "CRASHED", "-", "-", "-", "-", "-", "-", report["error"][-200:]])
            continue
        verdict = judge(report, args.duration)
        c = report["counters"]
        failed = failed or (name == "tidal" and bool(verdict["failures"]))
        rows.append(
            [
                name,
                f"{c.get('messages verified', 0):,} / "
                f"{c.get('bytes verified', 0) / common.MIB:,.0f}",
                f"{c.get('tasks created', 0):,}",
                f"{c.get('timers fired', 0):,}",
                f"{c.get('thread callbacks run', 0):,} / {c.get('executor jobs', 0):,}",
                verdict["lost"],
                f"{common.mib(verdict['rss start'])} / {verdict['rss growth'] / common.MIB:+.1f}",
                f"{verdict['fds drift']:+g} / {verdict['fd leak']}",
                "pass" if not verdict["failures"] else "; ".join(verdict["failures"]),
            ]
        )
    print(
        f"soak: {args.duration:g} s per loop, {args.clients} echo clients"
        f"{', loops in parallel' if args.parallel else ''}; warm-up {max(5.0, args.duration / 5):g}"
        f" s; RSS tolerance max(4 MiB, 5 %), fd tolerance {FD_TOLERANCE}"
    )
    print(
        common.table(
            [
                "loop",
                "messages / MiB verified",
                "tasks",
                "timers fired",
                "thread cbs / executor jobs",
                "lost",
                "RSS MiB / growth",
                "fds drift / leaked",
                "verdict",
            ],
            rows,
        )
    )
    if args.plot:
        plot(reports, args.plot, args.duration)
        print(f"plot: {args.plot}")
    if args.json:
        import json

        args.json.write_text(json.dumps(reports))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
