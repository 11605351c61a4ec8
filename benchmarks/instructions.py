"""Instruction counts: the benchmark suite measured in CPU instructions instead of seconds.

Owns: running one benchmark of ``suite.BENCHMARKS`` on one loop under valgrind's callgrind and
turning two such runs into instructions per unit of work, for ``python benchmarks/instructions.py``.
Not here: the benchmarks (suite.py), timing (harness.py, run.py).

Why: on a shared machine, seconds move with whatever else runs (a busy neighbour on the other
core doubled every time here); callgrind counts the instructions the process executes, the same
total for the same binary and inputs whatever the machine is doing. Counts are not time (a cache
miss costs no instruction), so they complement ``run.py`` and never replace it in the README.

Method: each (benchmark, loop) runs in a fresh interpreter under callgrind twice, at size N and
2N; the difference is the cost of N units of work, free of interpreter start-up, imports and
loop creation. ``PYTHONHASHSEED=0`` keeps set and dict orders, and so the work, identical.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make "benchmarks" importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness
from benchmarks.suite import BENCHMARKS

REPO_ROOT = Path(__file__).resolve().parent.parent
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")

# Runs one benchmark once, in the child interpreter that callgrind watches.
_CHILD = """
import sys
sys.path.insert(0, {root!r})
from benchmarks import harness
from benchmarks.suite import BENCHMARKS
bench = next(b for b in BENCHMARKS if b.name == {bench!r})
variant = harness.resolve_loop({loop!r})
bench.func(variant.factory, {size!r})
"""


# Loop names that stand for tidal's pure-Python build: the child imports tidal with TIDAL_PURE=1
# (one process can hold only one build of tidal).
PURE_SUFFIX = "-pure"


def count(bench: str, loop: str, size: int) -> int:
    """Instructions executed by a fresh interpreter running ``bench`` once on ``loop``."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    if loop.endswith(PURE_SUFFIX):
        loop = loop[: -len(PURE_SUFFIX)]
        env["TIDAL_PURE"] = "1"
    code = _CHILD.format(root=str(REPO_ROOT), bench=bench, loop=loop, size=size)
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{bench} on {loop} failed under callgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_unit(bench: str, loop: str, size: int) -> float:
    """Instructions per unit of ``bench``'s work on ``loop``: (I(2N) - I(N)) / N."""
    return (count(bench, loop, 2 * size) - count(bench, loop, size)) / size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/instructions.py",
        description=(
            "Count the CPU instructions each benchmark costs per unit of work on each loop "
            "(valgrind's callgrind), and report asyncio's count / the loop's (higher is better)."
        ),
    )
    parser.add_argument("-b", "--bench", action="append", metavar="PATTERN", help="glob")
    parser.add_argument(
        "-l",
        "--loops",
        default="asyncio,uvloop,tidal,tidal-pure",
        metavar="LIST",
        help="loop variants as in run.py; NAME-pure runs NAME with TIDAL_PURE=1",
    )
    parser.add_argument(
        "--scale", type=float, default=0.05, help="size N as a fraction of the full size (0.05)"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    benches = [
        b
        for b in BENCHMARKS
        if not args.bench or any(fnmatch.fnmatch(b.name, p) for p in args.bench)
    ]
    loops = [spec.strip() for spec in args.loops.split(",") if spec.strip()]
    names = [
        spec if spec.endswith(PURE_SUFFIX) else harness.resolve_loop(spec).name for spec in loops
    ]
    print("| benchmark | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    logs: dict[str, list[float]] = {name: [] for name in names}
    for bench in benches:
        size = max(1, int(bench.size * args.scale))
        counts: list[float | None] = []
        for spec in loops:
            try:
                counts.append(per_unit(bench.name, spec, size))
            except RuntimeError as exc:
                if "Unsupported" not in str(exc):
                    print(exc, file=sys.stderr)
                counts.append(None)
        base = counts[0]
        cells = []
        for name, value in zip(names, counts, strict=True):
            if value is None or base is None or value <= 0:
                cells.append("n/a")
                continue
            ratio = base / value
            logs[name].append(math.log(ratio))
            cells.append(f"{ratio:.2f}x ({value:,.0f})")
        print(f"| `{bench.name}` | " + " | ".join(cells) + " |", flush=True)
    means = [f"**{math.exp(sum(v) / len(v)):.2f}x**" if v else "n/a" for v in logs.values()]
    print("| **geometric mean** | " + " | ".join(means) + " |")
    print(f"\ninstructions per unit of work (valgrind callgrind), N = {args.scale} x full size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
