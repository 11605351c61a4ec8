"""Command line of the benchmark suite: ``python benchmarks/run.py --help``.

Owns: argument parsing and wiring the harness to the suite: which benchmarks and loops run, where
the table, JSON and README section go, and the exit status (1 if any benchmark raised).
Not here: the benchmarks (suite.py), timing and reporting (harness.py).

Works both as a script (``python benchmarks/run.py``) and as a module
(``python -m benchmarks.run``) from the repository root.
"""

from __future__ import annotations

import argparse
import fnmatch
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness, suite  # after the path fix above
from benchmarks.suite import BENCHMARKS

DEFAULT_LOOPS = ("asyncio", "uvloop", "tidal")
SMOKE_BUDGET_S = 60.0  # CI's limit for --smoke; exceeding it is an error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description=(
            "Time event-loop work on several loops and report speed relative to asyncio's loop "
            "(median of interleaved runs; higher is faster)."
        ),
        epilog=(
            "Examples: run.py (all benchmarks, asyncio/uvloop/tidal); run.py --smoke (CI); "
            "run.py -b 'async_tree*' -r 11; run.py --json --update-readme; "
            "run.py --loops asyncio,tidal,tidal-hooks=mypkg.loops:new_loop"
        ),
    )
    parser.add_argument(
        "-b",
        "--bench",
        action="append",
        metavar="PATTERN",
        help="run only benchmarks whose name matches this glob (repeatable; default: all)",
    )
    parser.add_argument(
        "-l",
        "--loops",
        metavar="LIST",
        help=(
            "comma-separated loop variants, each a registered name or NAME=module:attribute "
            f"(a zero-argument loop factory); default: {','.join(DEFAULT_LOOPS)}, "
            "leaving out those not installed"
        ),
    )
    parser.add_argument(
        "--baseline", default="asyncio", help="the loop ratios are relative to (default: asyncio)"
    )
    parser.add_argument(
        "-r", "--repeat", type=int, default=7, help="measured runs per benchmark and loop (7)"
    )
    parser.add_argument(
        "-w", "--warmup", type=int, default=1, help="unmeasured runs first, per benchmark and loop"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every benchmark's size (default 1.0)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run every benchmark once at a tiny size on every loop: proves they run (CI)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="PATH",
        help="write results as JSON (default path: benchmarks/results/<python>-<date>.json)",
    )
    parser.add_argument(
        "--update-readme",
        action="store_true",
        help="rewrite README.md's section between <!-- bench:start --> and <!-- bench:end -->",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help=(
            "instead of timing, run each selected benchmark once per loop under cProfile at its "
            "full size; write DIR/<benchmark>-<loop>.prof and print the top functions"
        ),
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="turn the cyclic GC off during each run (to see how much of a time is the GC's)",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help=(
            "what a run's time is: wall-clock (default), or the CPU time of the process "
            "(time.process_time: every thread's CPU, no time spent waiting for a CPU or for a "
            "timer to fall due); cpu gives steadier ratios on a shared, busy machine"
        ),
    )
    parser.add_argument("--list", action="store_true", help="list benchmarks and loops, then exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-benchmark progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for bench in BENCHMARKS:
            print(f"{bench.name:<28} {bench.description}")
        print()
        for variant in harness.LOOPS.values():
            print(f"loop {variant.name:<10} {variant.description}")
        for name, why in harness.UNAVAILABLE.items():
            print(f"loop {name:<10} unavailable: {why}")
        return 0

    if args.update_readme and (args.smoke or args.no_gc or args.profile or args.bench):
        print(
            "error: --update-readme publishes a full run of every benchmark with the GC on; "
            "drop --smoke, --no-gc, --profile and --bench",
            file=sys.stderr,
        )
        return 2

    benchmarks = BENCHMARKS
    if args.bench:
        benchmarks = [b for b in BENCHMARKS if any(fnmatch.fnmatch(b.name, p) for p in args.bench)]
        if not benchmarks:
            print(f"no benchmark matches {args.bench}; see --list", file=sys.stderr)
            return 2

    if args.loops:
        specs = [s.strip() for s in args.loops.split(",") if s.strip()]
    else:
        specs = [name for name in DEFAULT_LOOPS if name in harness.LOOPS]
        for name in DEFAULT_LOOPS:
            if name in harness.UNAVAILABLE:
                print(f"note: skipping {name}: {harness.UNAVAILABLE[name]}", file=sys.stderr)
    try:
        loops = [harness.resolve_loop(spec) for spec in specs]
    except (KeyError, ImportError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2

    if args.profile:
        for bench in benchmarks:
            size = harness.size_for(bench, smoke=args.smoke, scale=args.scale)
            for variant in loops:
                try:
                    path, text = harness.profile_benchmark(
                        bench, variant, size, Path(args.profile), collect_garbage=not args.no_gc
                    )
                except harness.Unsupported as exc:
                    print(f"== {bench.name} on {variant.name}: n/a ({exc})")
                    continue
                print(f"== {bench.name} on {variant.name} (size {size}): {path}\n{text}")
        return 0

    if args.clock == "cpu":
        suite.perf_counter = time.process_time  # every benchmark reads its clock from there

    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    try:
        result = harness.run_suite(
            benchmarks,
            loops,
            baseline=args.baseline,
            repeat=args.repeat,
            warmup=args.warmup,
            smoke=args.smoke,
            scale=args.scale,
            command=command.strip(),
            progress=progress,
            collect_garbage=not args.no_gc,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    took = time.perf_counter() - started

    env = harness.environment()
    env["clock"] = args.clock
    env["tidal_compiled"] = bool(getattr(sys.modules.get("tidal"), "COMPILED", False))
    print(harness.markdown_table(result))
    print(
        f"\n{env['implementation']} {env['python']}, {len(benchmarks)} benchmarks x "
        f"{len(loops)} loops in {took:.1f} s"
        + (" (GC off during runs)" if args.no_gc else "")
        + (" (CPU time)" if args.clock == "cpu" else "")
        + (" (smoke: sizes are tiny, ratios mean nothing)" if args.smoke else "")
    )
    if args.json is not None:
        path = Path(args.json) if args.json else harness.default_json_path(env)
        print(f"wrote {harness.write_json(result, env, path)}")
    if args.update_readme:
        harness.update_readme(harness.readme_section(result, env))
        print(f"updated {harness.README_PATH}")

    status = 0
    for bench_name, loop_name, note in result.failed:
        print(f"FAILED {bench_name} on {loop_name}: {note}", file=sys.stderr)
        status = 1
    if args.smoke and took > SMOKE_BUDGET_S:
        print(f"FAILED: --smoke took {took:.1f} s, over its {SMOKE_BUDGET_S:.0f} s budget")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
