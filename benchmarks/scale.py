"""Serving on every core: one app on N worker processes, one loop each, driven by wrk.

Owns: the command line that serves the bare ASGI app of benchmarks/server_apps.py with
``uvicorn --workers N --loop <module:factory> --http httptools`` and with gunicorn and the
uvicorn worker classes of benchmarks/uvicorn_workers.py, at 1 and 2 workers, on asyncio's loop,
uvloop and tidal (pure, and compiled where installed); drives each with Debian's ``wrk`` in
interleaved rounds; reports medians of requests/s, p99 latency, the CPU time of all the server's
processes per request, and the scaling ratio (req/s with 2 workers / req/s with 1); the README's
"Scaling across cores" block (``--update-readme``).
Not here: wrk, process and README plumbing (benchmarks/httpload.py), the app
(benchmarks/server_apps.py).

Method: nothing is pinned: the workers may use every CPU, and wrk (one thread) runs on the same
machine, so on a 2-core machine two workers share the cores with the load generator and a
scaling ratio of 2.0 is out of reach for every loop; compare the loops' ratios with each other.
Before a server is measured, concurrent ``GET /loop`` requests must have reached every one of
its workers and each must report the expected loop.

Usage: ``python benchmarks/scale.py [-r ROUNDS] [-d SECONDS] [-c CONNECTIONS] [-w 1,2]
[--servers uvicorn,gunicorn] [--loops asyncio,uvloop,tidal-pure,tidal-compiled] [--smoke]
[--update-readme]``. Without wrk it prints why and exits 0 (skipped).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Final

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import httpload
from benchmarks.httpload import LoadError, ServerProcess, fmt_ratio, median
from benchmarks.server_apps import LOOP_SPECS
from benchmarks.servers import available_variants, versions

SERVERS: Final = ("uvicorn", "gunicorn")
BASELINE: Final = "asyncio"
APP: Final = "benchmarks.server_apps:asgi_app"

# gunicorn worker class per loop (benchmarks/uvicorn_workers.py: the recipe module).
GUNICORN_WORKERS: Final = {
    "asyncio": "benchmarks.uvicorn_workers.AsyncioUvicornWorker",
    "uvloop": "benchmarks.uvicorn_workers.UvloopUvicornWorker",
    "tidal": "benchmarks.uvicorn_workers.TidalUvicornWorker",
}


def server_command(server: str, variant: str, workers: int, port: int) -> list[str]:
    loop = httpload.loop_name(variant)
    bindir = Path(sys.executable).parent
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", APP, "--workers", str(workers),
            "--loop", LOOP_SPECS[loop], "--http", "httptools", "--lifespan", "off",
            "--no-access-log", "--log-level", "warning",
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
    return [
        str(bindir / "gunicorn"), APP, "--workers", str(workers),
        "--worker-class", GUNICORN_WORKERS[loop], "--no-control-socket",
        "--timeout", "120",  # the default 30 s heartbeat kills workers on a loaded machine
        "--log-level", "warning", "--bind", f"127.0.0.1:{port}",
    ]  # fmt: skip


def check_workers(server: ServerProcess, workers: int, timeout: float = 20.0) -> set[int]:
    """Make concurrent ``GET /loop`` requests until ``workers`` distinct pids answered.

    Every answer is checked to come from the server's loop variant. Raises LoadError if fewer
    workers answered within ``timeout`` seconds.
    """
    pids: set[int] = set()
    errors: list[BaseException] = []
    deadline = time.monotonic() + timeout

    def ask() -> None:
        try:
            description = httpload.get_json(server.url + "loop")
            httpload.check_loop(server.variant, description)
            pids.add(int(description["pid"]))
        except (OSError, LoadError) as exc:
            errors.append(exc)

    while len(pids) < workers and time.monotonic() < deadline:
        threads = [threading.Thread(target=ask) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise LoadError(f"{server.name}: {errors[0]}")
    if len(pids) < workers:
        raise LoadError(f"{server.name}: only {len(pids)} of {workers} workers answered")
    return pids


Key = tuple[str, str, int]  # (server, variant, workers)


class Samples:
    def __init__(self) -> None:
        self.rps: dict[Key, list[float]] = defaultdict(list)
        self.p99: dict[Key, list[float]] = defaultdict(list)
        self.cpu_us: dict[Key, list[float]] = defaultdict(list)
        self.errors: list[str] = []


def run(args: argparse.Namespace, variants: list[str]) -> Samples:
    samples = Samples()
    servers: dict[Key, ServerProcess] = {}
    try:
        for name in args.servers:
            for variant in variants:
                for workers in args.workers:
                    port = httpload.free_port()
                    servers[name, variant, workers] = ServerProcess(
                        f"{name} --workers {workers} on {variant}",
                        variant,
                        server_command(name, variant, workers, port),
                        port,
                    )
        for (_, _, workers), server in servers.items():
            server.wait_ready()
            check_workers(server, workers)
            if not args.smoke:
                httpload.run_wrk(server.url, connections=args.connections, seconds=1)
        keys = list(servers)
        for round_ in range(args.rounds):
            shift = round_ * len(keys) // args.rounds  # each round starts somewhere else
            for key in keys[shift:] + keys[:shift]:
                server = servers[key]
                try:
                    before = server.cpu_seconds(with_children=True)
                    result = httpload.run_wrk(
                        server.url, connections=args.connections, seconds=args.duration
                    )
                    used = server.cpu_seconds(with_children=True) - before
                except LoadError as exc:
                    samples.errors.append(f"{server.name}: {exc}")
                    continue
                samples.rps[key].append(result.rps)
                samples.p99[key].append(result.p99_ms)
                samples.cpu_us[key].append(used / result.requests * 1e6)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return samples


def table(args: argparse.Namespace, samples: Samples, variants: list[str]) -> str:
    one, many = min(args.workers), max(args.workers)
    header = ["server", "loop"]
    for workers in args.workers:
        header += [f"req/s, {workers}w", "x asyncio", f"p99, {workers}w"]
    header += [f"scaling {many}w/{one}w", f"CPU/request, {many}w"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * 2 + " ---: |" * (len(header) - 2)]
    for name in args.servers:
        for variant in variants:
            row = [name, variant]
            for workers in args.workers:
                rps = median(samples.rps[name, variant, workers])
                base = median(samples.rps[name, BASELINE, workers])
                p99 = median(samples.p99[name, variant, workers])
                if rps is None or p99 is None:
                    row += ["error", "", ""]
                    continue
                row += [f"{rps:,.0f}", fmt_ratio(rps / base if base else None), f"{p99:.1f} ms"]
            r1 = median(samples.rps[name, variant, one])
            rn = median(samples.rps[name, variant, many])
            cpu = median(samples.cpu_us[name, variant, many])
            row.append(f"**{fmt_ratio(rn / r1 if r1 and rn else None)}**")
            row.append("-" if cpu is None else f"{cpu:.0f} us")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


README_INTRO: Final = """\
One app (the bare ASGI app of `benchmarks/server_apps.py`, uvicorn's httptools parser) on 1 and
2 worker processes with one loop each: `uvicorn --workers N --loop tidal:new_event_loop`, and
gunicorn with the uvicorn worker subclasses of `benchmarks/uvicorn_workers.py` (see
`docs/recipes.md`), driven by `wrk` (one thread, keep-alive) on the same 2-core machine, nothing
pinned. Scaling = req/s with 2 workers / req/s with 1; the load generator shares the two cores,
so 2.0 is out of reach here; compare the loops with each other. CPU/request counts every process
of the server. `uvicorn --workers N` leaves Nagle's algorithm on for asyncio's loop (its
socket's `proto` is 0; see `docs/recipes.md`), so asyncio's uvicorn row at 2 workers measures
the client's delayed ACKs; tidal sets TCP_NODELAY there since commit 36dccab. The machine is
shared with other work: expect noise even on medians. Reproduce with `python benchmarks/scale.py
-r 5 -d 3 --update-readme`."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="1 and 2 worker processes per loop, via wrk.")
    parser.add_argument("-l", "--loops", help="comma-separated: asyncio,uvloop,tidal-pure,...")
    parser.add_argument("--servers", default=",".join(SERVERS), help="uvicorn,gunicorn")
    parser.add_argument("-w", "--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("-c", "--connections", type=int, default=100)
    parser.add_argument("-d", "--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("-r", "--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--smoke", action="store_true", help="1 s runs, one round (CI)")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    if bad := [s for s in args.servers if s not in SERVERS]:
        parser.error(f"unknown server(s) {bad}; choose from {', '.join(SERVERS)}")
    args.workers = sorted({int(w) for w in args.workers.split(",")})
    if args.smoke:
        args.duration, args.rounds = 1.0, 1
    if httpload.find_wrk() is None:
        print("scale.py: skipped: wrk is not installed (apt-get install -y wrk)")
        return 0
    variants, notes = available_variants(args.loops.split(",") if args.loops else None)
    if BASELINE not in variants:
        parser.error(f"--loops must include the baseline, {BASELINE}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    started = time.monotonic()
    try:
        samples = run(args, variants)
    except LoadError as exc:
        print(f"scale.py: {exc}", file=sys.stderr)
        return 1
    text = table(args, samples, variants)
    head = (
        f"Python {sys.version.split()[0]}, {args.connections} connections, median of "
        f"{args.rounds} interleaved {args.duration:g} s runs per cell; {versions()}; "
        f"commit {httpload.git_commit()}; {httpload.today()}."
    )
    print(head)
    print(text)
    for error in samples.errors:
        print(f"error: {error}", file=sys.stderr)
    if args.update_readme and not args.smoke:
        tag = f"{sys.version_info.major}.{sys.version_info.minor}"
        body = "\n".join([f"### Python {tag}", "", textwrap.fill(head, 100), "", text])
        httpload.update_readme_block("scale", "## Scaling across cores", README_INTRO, tag, body)
        print("README.md: Scaling across cores updated")
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 1 if samples.errors else 0


if __name__ == "__main__":
    sys.exit(main())
