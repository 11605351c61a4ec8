"""Real-server benchmark: aiohttp and uvicorn + httptools on each loop, driven by wrk.

Owns: the command line that starts one server process per app and loop variant (asyncio's
loop, uvloop, tidal pure and tidal compiled), drives each with Debian's ``wrk`` from another
process at fixed connection counts in interleaved rounds, and reports per app and connection
count the medians of requests/s, p99 latency and the server's CPU time per request, each with
its ratio to asyncio's loop; the README's "Server benchmarks" block (``--update-readme``).
Not here: the apps (benchmarks/server_apps.py), wrk, process and README plumbing
(benchmarks/httpload.py).

Method: the servers are pinned to one CPU and wrk to the other (``--server-cpu``/``--wrk-cpu``);
every round runs every (app, connections, loop) once, the loops in a rotated order, so a drift
of the machine hits all of them alike. CPU per request is the server process's utime + stime
(``/proc/<pid>/stat``) over the run, divided by the requests wrk completed.

Usage: ``python benchmarks/servers.py [-r ROUNDS] [-d SECONDS] [-c 10,100]
[--loops asyncio,uvloop,tidal-pure,tidal-compiled] [--apps aiohttp,uvicorn] [--smoke]
[--update-readme] [--json]``. Without wrk it prints why and exits 0 (skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import httpload
from benchmarks.httpload import LoadError, ServerProcess, fmt_ratio, median

APPS: Final = ("aiohttp", "uvicorn")
APP_LABELS: Final = {"aiohttp": "aiohttp", "uvicorn": "uvicorn + httptools (bare ASGI app)"}
VARIANTS: Final = ("asyncio", "uvloop", "tidal-pure", "tidal-compiled")
BASELINE: Final = "asyncio"
RESULTS_DIR: Final = httpload.REPO_ROOT / "benchmarks" / "results"


def available_variants(requested: list[str] | None) -> tuple[list[str], list[str]]:
    """The loop variants to run and notes on those left out (not installed, no compiled build).

    An explicitly requested variant that cannot run is an error (SystemExit with the reason).
    """
    notes: list[str] = []
    chosen: list[str] = []
    for variant in requested or list(VARIANTS):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown loop {variant!r}; choose from {', '.join(VARIANTS)}")
        reason = None
        if variant == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                reason = "uvloop is not installed (pip install -e '.[bench]')"
        elif variant == "tidal-compiled" and not httpload.tidal_compiled_available():
            reason = "tidal's compiled build is not installed here (tidal.COMPILED is not True)"
        if reason is None:
            chosen.append(variant)
        elif requested:
            raise SystemExit(f"loop {variant} cannot run: {reason}")
        else:
            notes.append(f"{variant} left out: {reason}")
    return chosen, notes


def server_command(app: str, variant: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.server_apps",
        "--app",
        app,
        "--loop",
        httpload.loop_name(variant),
        "--port",
        str(port),
    ]


class Samples:
    """Per (app, connections, variant): lists of req/s, p99 ms and CPU microseconds/request."""

    def __init__(self) -> None:
        self.rps: dict[tuple[str, int, str], list[float]] = defaultdict(list)
        self.p99: dict[tuple[str, int, str], list[float]] = defaultdict(list)
        self.cpu_us: dict[tuple[str, int, str], list[float]] = defaultdict(list)
        self.errors: list[str] = []

    def add(self, key: tuple[str, int, str], rps: float, p99_ms: float, cpu_us: float) -> None:
        self.rps[key].append(rps)
        self.p99[key].append(p99_ms)
        self.cpu_us[key].append(cpu_us)


def measure(
    server: ServerProcess, connections: int, seconds: float, wrk_cpu: int | None
) -> tuple[float, float, float]:
    """One wrk run against ``server``: (req/s, p99 ms, server CPU microseconds per request)."""
    before = server.cpu_seconds()
    result = httpload.run_wrk(server.url, connections=connections, seconds=seconds, cpu=wrk_cpu)
    used = server.cpu_seconds() - before
    return result.rps, result.p99_ms, used / result.requests * 1e6


def run(args: argparse.Namespace, variants: list[str]) -> Samples:
    samples = Samples()
    two_cpus = httpload.cpu_count() >= 2
    server_cpu = args.server_cpu if two_cpus else None
    wrk_cpu = args.wrk_cpu if two_cpus else None
    servers: dict[tuple[str, str], ServerProcess] = {}
    try:
        for app in args.apps:
            for variant in variants:
                port = httpload.free_port()
                servers[app, variant] = ServerProcess(
                    f"{app} on {variant}",
                    variant,
                    server_command(app, variant, port),
                    port,
                    cpu=server_cpu,
                )
        for server in servers.values():
            server.wait_ready()
            if not args.smoke:  # warm-up: imports, caches, the allocator's first state
                httpload.run_wrk(
                    server.url, connections=max(args.connections), seconds=1, cpu=wrk_cpu
                )
        for round_ in range(args.rounds):
            for app in args.apps:
                for connections in args.connections:
                    for variant in httpload.rotated(variants, round_):
                        key = (app, connections, variant)
                        try:
                            samples.add(
                                key,
                                *measure(
                                    servers[app, variant], connections, args.duration, wrk_cpu
                                ),
                            )
                        except LoadError as exc:
                            samples.errors.append(f"{app} {connections} {variant}: {exc}")
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return samples


def table(samples: Samples, app: str, connections: list[int], variants: list[str]) -> str:
    lines = [
        "| connections | loop | req/s | x asyncio | p99 | x asyncio | CPU per request "
        "| x asyncio |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for conns in connections:
        base = (app, conns, BASELINE)
        base_rps = median(samples.rps[base])
        base_p99 = median(samples.p99[base])
        base_cpu = median(samples.cpu_us[base])
        for variant in variants:
            key = (app, conns, variant)
            rps, p99, cpu = (
                median(samples.rps[key]),
                median(samples.p99[key]),
                median(samples.cpu_us[key]),
            )
            if rps is None or p99 is None or cpu is None:
                lines.append(f"| {conns} | {variant} | error | | | | | |")
                continue
            r_rps = rps / base_rps if base_rps else None
            r_p99 = p99 / base_p99 if base_p99 else None
            r_cpu = cpu / base_cpu if base_cpu else None
            lines.append(
                f"| {conns} | {variant} | {rps:,.0f} | **{fmt_ratio(r_rps)}** | {p99:.2f} ms | "
                f"{fmt_ratio(r_p99)} | {cpu:.0f} us | {fmt_ratio(r_cpu)} |"
            )
    return "\n".join(lines)


def report(args: argparse.Namespace, samples: Samples, variants: list[str]) -> str:
    parts = []
    for app in args.apps:
        parts += [f"**{APP_LABELS[app]}**", "", table(samples, app, args.connections, variants), ""]
    return "\n".join(parts)


def versions() -> str:
    import importlib.metadata as md

    found = []
    for name in ("tidal", "uvloop", "aiohttp", "uvicorn", "httptools"):
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            continue
    return ", ".join(found)


def readme_body(args: argparse.Namespace, samples: Samples, variants: list[str]) -> str:
    commit = httpload.git_commit()
    head = (
        f"Python {sys.version.split()[0]}, median of {args.rounds} interleaved {args.duration:g} s "
        f"runs per cell; {versions()}; commit {commit}; {httpload.today()}."
    )
    return "\n".join(
        [f"### Python {sys.version_info.major}.{sys.version_info.minor}", "",
         textwrap.fill(head, 100), "", report(args, samples, variants)]
    )  # fmt: skip


README_INTRO: Final = """\
Real servers, each in its own process pinned to one CPU, driven by Debian's `wrk` pinned to the
other CPU (keep-alive connections, `GET /` answering 13 bytes of text): an aiohttp app, and a
bare ASGI app on uvicorn with httptools. req/s: x asyncio's, higher is better; p99 latency and
the server's CPU time per request (utime + stime from `/proc/<pid>/stat`): x asyncio's, lower is
better. The machine has 2 cores shared with other work: when req/s x CPU per request is well
below 1, the server was waiting for its CPU, and req/s and p99 then say more about the machine's
load than about the loop; CPU per request is the steadier figure. Reproduce with `python
benchmarks/servers.py -r 5 -d 3 --update-readme` (`benchmarks/servers.py --help`); `tidal-pure`
runs with `TIDAL_PURE=1`, `tidal-compiled` is listed once a compiled build is installed
(`tidal.COMPILED`)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="aiohttp and uvicorn+httptools servers on each loop, driven by wrk."
    )
    parser.add_argument("-l", "--loops", help=f"comma-separated, from {','.join(VARIANTS)}")
    parser.add_argument("--apps", default=",".join(APPS), help="comma-separated: aiohttp,uvicorn")
    parser.add_argument("-c", "--connections", default="10,100", help="comma-separated counts")
    parser.add_argument("-d", "--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("-r", "--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--smoke", action="store_true", help="1 s runs, one round (CI)")
    parser.add_argument("--server-cpu", type=int, default=1, help="CPU the servers run on")
    parser.add_argument("--wrk-cpu", type=int, default=0, help="CPU wrk runs on")
    parser.add_argument("--update-readme", action="store_true", help="rewrite README's block")
    parser.add_argument("--json", action="store_true", help="write benchmarks/results/...json")
    args = parser.parse_args(argv)
    args.apps = [a for a in args.apps.split(",") if a]
    if bad := [a for a in args.apps if a not in APPS]:
        parser.error(f"unknown app(s) {bad}; choose from {', '.join(APPS)}")
    args.connections = [int(c) for c in args.connections.split(",")]
    if args.smoke:
        args.duration, args.rounds = 1.0, 1
    if httpload.find_wrk() is None:
        print("servers.py: skipped: wrk is not installed (apt-get install -y wrk)")
        return 0
    requested = args.loops.split(",") if args.loops else None
    variants, notes = available_variants(requested)
    if BASELINE not in variants:
        parser.error(f"--loops must include the baseline, {BASELINE}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    started = time.monotonic()
    try:
        samples = run(args, variants)
    except LoadError as exc:
        print(f"servers.py: {exc}", file=sys.stderr)
        return 1
    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds of {args.duration:g} s runs")
    print(report(args, samples, variants))
    for error in samples.errors:
        print(f"error: {error}", file=sys.stderr)
    if args.json:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"servers-{httpload.python_tag()}-{httpload.today()}.json"
        data: dict[str, Any] = {
            "command": " ".join(sys.argv),
            "python": sys.version,
            "versions": versions(),
            "commit": httpload.git_commit(),
            "samples": {
                "|".join(map(str, key)): {
                    "rps": samples.rps[key],
                    "p99_ms": samples.p99[key],
                    "cpu_us_per_request": samples.cpu_us[key],
                }
                for key in samples.rps
            },
            "errors": samples.errors,
        }
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {os.path.relpath(path)}")
    if args.update_readme and not args.smoke:
        tag = f"{sys.version_info.major}.{sys.version_info.minor}"
        httpload.update_readme_block(
            "servers",
            "## Server benchmarks",
            README_INTRO,
            tag,
            readme_body(args, samples, variants),
        )
        print("README.md: Server benchmarks updated")
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 1 if samples.errors else 0


if __name__ == "__main__":
    sys.exit(main())
