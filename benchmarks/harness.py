"""Benchmark harness: loop variants, interleaved timing runs, statistics and reports.

Owns: the registry of loop variants (``LOOPS``), the ``Benchmark`` record, running a suite with
the loops interleaved across repetitions, medians, speed ratios and their geometric mean, the
Markdown table, the JSON results file and the generated section of the top-level README.
Not here: the benchmarks themselves (benchmarks/suite.py), the command line (benchmarks/run.py).

Invariants:
- A benchmark function takes a loop factory and a size and returns the seconds its fixed amount
  of work took. It creates and closes its own loop(s), times only the work (not loop set-up),
  and raises ``BenchmarkError`` if the work did not complete as expected, so a run that returns
  a number did the work it claims.
- A benchmark that a loop cannot run by design (asyncio's eager task factory before 3.12) raises
  ``Unsupported``; that cell reads "n/a" and is left out of the geometric mean.
- Ratios are speed(loop) / speed(baseline) = median_time(baseline) / median_time(loop): above 1
  means faster than the baseline.
- Repetitions interleave the loops (asyncio, uvloop, tidal, asyncio, ...) so that slow drifts of
  the machine (frequency scaling, other processes) hit every loop alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import datetime
import gc
import importlib
import importlib.metadata
import io
import json
import os
import platform
import pstats
import re
import statistics
import subprocess
import textwrap
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
BenchFunction = Callable[[LoopFactory, int], float]

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_DIR: Final = REPO_ROOT / "benchmarks" / "results"
README_PATH: Final = REPO_ROOT / "README.md"
README_START: Final = "<!-- bench:start -->"
README_END: Final = "<!-- bench:end -->"


class BenchmarkError(RuntimeError):
    """The benchmark's work did not complete as expected (wrong count, missing result)."""


class Unsupported(Exception):
    """This loop (or this Python) cannot run the benchmark by design; the cell reads n/a."""


# -- loop variants ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopVariant:
    """A loop under test: a name for tables and JSON, and a factory returning a new loop."""

    name: str
    factory: LoopFactory
    description: str


# Loop variants by name, in the order tables show them. Add one with ``register_loop`` (a later
# issue adds tidal with instrumentation hooks on), or from the command line with
# ``--loops NAME=module:attribute``.
LOOPS: dict[str, LoopVariant] = {}

# Variants that could not be registered (a missing optional package), with the reason.
UNAVAILABLE: dict[str, str] = {}


def register_loop(name: str, factory: LoopFactory, description: str = "") -> LoopVariant:
    """Add (or replace) the loop variant ``name``; return it.

    Raises:
        ValueError: ``name`` is empty or contains characters unfit for a table or a file name.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise ValueError(f"loop variant name {name!r}: use letters, digits and _ . + - only")
    variant = LoopVariant(name, factory, description or name)
    LOOPS[name] = variant
    UNAVAILABLE.pop(name, None)
    return variant


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _register_builtin_loops() -> None:
    register_loop("asyncio", asyncio.new_event_loop, "asyncio's default loop (the baseline)")
    try:
        import uvloop
    except ImportError as exc:
        UNAVAILABLE["uvloop"] = f"uvloop is not installed ({exc}); pip install -e '.[bench]'"
    else:
        register_loop("uvloop", uvloop.new_event_loop, f"uvloop {_version('uvloop')}")
    import tidal

    register_loop("tidal", tidal.new_event_loop, f"tidal {_version('tidal')}")


_register_builtin_loops()


def resolve_loop(spec: str) -> LoopVariant:
    """Return the variant named by ``spec``: a registered name, or ``NAME=module:attribute``.

    ``NAME=module:attribute`` imports ``module``, takes ``attribute`` (a zero-argument callable
    returning a new loop) and registers it as ``NAME``.

    Raises:
        KeyError: ``spec`` names no registered or importable variant.
    """
    if "=" in spec:
        name, target = spec.split("=", 1)
        module_name, _, attribute = target.partition(":")
        if not module_name or not attribute:
            raise KeyError(f"loop spec {spec!r}: expected NAME=module:attribute")
        factory = getattr(importlib.import_module(module_name), attribute)
        if not callable(factory):
            raise KeyError(f"loop spec {spec!r}: {target} is not callable")
        return register_loop(name, factory, target)
    if spec in LOOPS:
        return LOOPS[spec]
    if spec in UNAVAILABLE:
        raise KeyError(f"loop {spec!r} is unavailable: {UNAVAILABLE[spec]}")
    raise KeyError(f"unknown loop {spec!r}; known: {', '.join(LOOPS)} (or NAME=module:attribute)")


# -- benchmarks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: ``func(loop_factory, size)`` returns the seconds ``size`` units took."""

    name: str
    func: BenchFunction
    size: int  # full-run size, chosen so that asyncio's loop takes about 0.05-0.3 s
    smoke_size: int  # tiny size for --smoke: proves the benchmark runs, measures nothing
    description: str


@contextlib.contextmanager
def pinned_to_one_cpu() -> Iterator[int | None]:
    """Pin the calling thread, and every thread it starts meanwhile, to one CPU.

    Thread benchmarks hand the GIL between threads; on two cores the hand-off time depends on
    whether the threads share a core, and results come out bimodal. On one core they do not.
    Yields the CPU number, or None where the OS has no affinity API.
    """
    getaffinity = getattr(os, "sched_getaffinity", None)
    setaffinity = getattr(os, "sched_setaffinity", None)
    if getaffinity is None or setaffinity is None:
        yield None
        return
    previous = getaffinity(0)
    cpu = min(previous)
    setaffinity(0, {cpu})  # pid 0: the calling thread; threads started later inherit it
    try:
        yield cpu
    finally:
        setaffinity(0, previous)


# -- running -----------------------------------------------------------------------------------


@dataclass
class Cell:
    """The runs of one benchmark on one loop."""

    samples: list[float] = field(default_factory=list)  # seconds, measured runs only
    status: str = "ok"  # "ok", "n/a" (Unsupported) or "error"
    note: str = ""  # the reason for n/a or the error's summary

    @property
    def median(self) -> float | None:
        if self.status != "ok" or not self.samples:
            return None
        return statistics.median(self.samples)


@dataclass
class SuiteResult:
    """Everything one run of the suite measured, with the settings that shaped it."""

    loops: list[str]
    baseline: str
    benchmarks: list[Benchmark]
    cells: dict[str, dict[str, Cell]]  # benchmark name -> loop name -> cell
    repeat: int
    warmup: int
    smoke: bool
    scale: float
    command: str
    collect_garbage: bool = True

    def ratio(self, bench: str, loop: str) -> float | None:
        """speed(loop) / speed(baseline) for ``bench``, or None if either has no median."""
        base = self.cells[bench][self.baseline].median
        mine = self.cells[bench][loop].median
        if base is None or mine is None or mine <= 0:
            return None
        return base / mine

    def geomean(self, loop: str) -> tuple[float | None, int]:
        """Geometric mean of ``loop``'s ratios, and how many benchmarks it covers."""
        ratios = [r for b in self.benchmarks if (r := self.ratio(b.name, loop)) is not None]
        if not ratios:
            return None, 0
        return statistics.geometric_mean(ratios), len(ratios)

    @property
    def failed(self) -> list[tuple[str, str, str]]:
        """(benchmark, loop, note) for every cell that raised."""
        return [
            (bench, loop, cell.note)
            for bench, row in self.cells.items()
            for loop, cell in row.items()
            if cell.status == "error"
        ]


def size_for(bench: Benchmark, *, smoke: bool, scale: float) -> int:
    """The size a run uses: the smoke size, or the full size times ``scale`` (at least 1)."""
    if smoke:
        return bench.smoke_size
    return max(1, round(bench.size * scale))


def run_suite(
    benchmarks: Sequence[Benchmark],
    loops: Sequence[LoopVariant],
    *,
    baseline: str = "asyncio",
    repeat: int = 7,
    warmup: int = 1,
    smoke: bool = False,
    scale: float = 1.0,
    command: str = "",
    progress: Callable[[str], None] | None = None,
    collect_garbage: bool = True,
) -> SuiteResult:
    """Run every benchmark on every loop, loops interleaved within each repetition.

    In smoke mode each benchmark runs once per loop at its smoke size, with no warm-up.

    Args:
        benchmarks: what to run, in order.
        loops: the variants to run on; ``baseline`` must be among them.
        baseline: the loop the ratios are relative to.
        repeat: measured runs per benchmark and loop (the median is reported).
        warmup: unmeasured runs first, per benchmark and loop.
        smoke: tiny sizes, one run, no warm-up.
        scale: multiplies every full size (e.g. 0.5 for a quicker, noisier run).
        command: the command line, recorded in the results.
        progress: called with one line per benchmark as it finishes.
        collect_garbage: False turns the cyclic GC off during each run, to tell the time the
            collector takes apart from the loop's own (real programs run with it on).

    Raises:
        ValueError: ``baseline`` is not among ``loops``, or ``repeat`` is below 1.
    """
    names = [loop.name for loop in loops]
    if baseline not in names:
        raise ValueError(f"baseline loop {baseline!r} must be among the loops run: {names}")
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    if smoke:
        repeat, warmup = 1, 0
    cells: dict[str, dict[str, Cell]] = {}
    for bench in benchmarks:
        size = size_for(bench, smoke=smoke, scale=scale)
        row = {name: Cell() for name in names}
        cells[bench.name] = row
        for rep in range(warmup + repeat):
            for loop in loops:
                cell = row[loop.name]
                if cell.status != "ok":
                    continue
                gc.collect()
                if not collect_garbage:
                    gc.disable()
                try:
                    elapsed = bench.func(loop.factory, size)
                except Unsupported as exc:
                    cell.status, cell.note = "n/a", str(exc)
                    continue
                except Exception as exc:
                    cell.status = "error"
                    cell.note = "".join(traceback.format_exception_only(exc)).strip()
                    if progress is not None:
                        progress(f"  {bench.name} on {loop.name} failed:\n{traceback.format_exc()}")
                    continue
                finally:
                    gc.enable()
                if rep >= warmup:
                    cell.samples.append(elapsed)
        if progress is not None:
            progress(f"{bench.name:<28} " + "  ".join(_short(n, row[n]) for n in names))
    return SuiteResult(
        loops=names,
        baseline=baseline,
        benchmarks=list(benchmarks),
        cells=cells,
        repeat=repeat,
        warmup=warmup,
        smoke=smoke,
        scale=scale,
        command=command,
        collect_garbage=collect_garbage,
    )


def _short(name: str, cell: Cell) -> str:
    median = cell.median
    return f"{name} {median * 1e3:8.2f} ms" if median is not None else f"{name} {cell.status:>11}"


def profile_benchmark(
    bench: Benchmark,
    loop: LoopVariant,
    size: int,
    out_dir: Path,
    *,
    top: int = 25,
    collect_garbage: bool = True,
) -> tuple[Path, str]:
    """Run ``bench`` once on ``loop`` under cProfile; save the stats, return them as text.

    The stats file is ``out_dir/<benchmark>-<loop>.prof`` (open it with ``python -m pstats``).
    The text lists the ``top`` functions by own time, then by cumulative time. cProfile sees
    Python functions only: asyncio's C Task and Future are invisible to it, and it inflates the
    cost of many small Python calls, so use it to see where time goes, not to compare loops.
    With the GC on, each collection's time lands on whichever function allocated the object
    that triggered it; ``collect_garbage=False`` keeps per-call costs clean.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{bench.name}-{loop.name}.prof"
    profiler = cProfile.Profile()
    gc.collect()
    if not collect_garbage:
        gc.disable()
    profiler.enable()
    try:
        bench.func(loop.factory, size)
    finally:
        profiler.disable()
        gc.enable()
    profiler.dump_stats(path)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return path, text.getvalue()


# -- reports -----------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """Facts about the machine and software a result depends on."""
    versions = {name: _version(name) for name in ("tidal", "uvloop")}
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no", "src"):
        commit += "+uncommitted"  # src/ differs from the commit: say so rather than mislead
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(affinity(0)) if affinity is not None else os.cpu_count(),
        "versions": versions,
        "git_commit": commit or "unknown",
    }


def _git(*args: str) -> str:
    """Output of a read-only git command in the repository, or "" if git is unavailable."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def format_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def markdown_table(result: SuiteResult) -> str:
    """The results as a Markdown table: baseline time, then each loop's ratio and time."""
    header = ["benchmark"] + [
        f"{name} (time)" if name == result.baseline else f"{name} (x {result.baseline})"
        for name in result.loops
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * len(result.loops)) + " |",
    ]
    for bench in result.benchmarks:
        row = [f"`{bench.name}`"]
        for name in result.loops:
            cell = result.cells[bench.name][name]
            median = cell.median
            if median is None:
                row.append(cell.status)
            elif name == result.baseline:
                row.append(format_ms(median))
            else:
                ratio = result.ratio(bench.name, name)
                shown = f"{ratio:.2f}x" if ratio is not None else "-"
                row.append(f"{shown} ({format_ms(median)})")
        lines.append("| " + " | ".join(row) + " |")
    total = len(result.benchmarks)
    row = ["**geometric mean**"]
    for name in result.loops:
        if name == result.baseline:
            row.append("1.00x")
            continue
        mean, count = result.geomean(name)
        text = f"**{mean:.2f}x**" if mean is not None else "-"
        if mean is not None and count < total:
            text += f" (of {count})"
        row.append(text)
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def to_json(result: SuiteResult, env: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, raw samples included, as a JSON-ready dict."""
    benches: dict[str, Any] = {}
    for bench in result.benchmarks:
        entry: dict[str, Any] = {
            "description": bench.description,
            "size": size_for(bench, smoke=result.smoke, scale=result.scale),
            "loops": {},
        }
        for name in result.loops:
            cell = result.cells[bench.name][name]
            data: dict[str, Any] = {"status": cell.status}
            if cell.note:
                data["note"] = cell.note
            if cell.median is not None:
                data["median_s"] = cell.median
                data["min_s"] = min(cell.samples)
                data["max_s"] = max(cell.samples)
                data["samples_s"] = cell.samples
                data["ratio"] = result.ratio(bench.name, name)
            entry["loops"][name] = data
        benches[bench.name] = entry
    geomeans = {}
    for name in result.loops:
        mean, count = result.geomean(name)
        geomeans[name] = {"ratio": mean, "benchmarks": count}
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": result.command,
        "environment": env,
        "settings": {
            "baseline": result.baseline,
            "loops": result.loops,
            "repeat": result.repeat,
            "warmup": result.warmup,
            "smoke": result.smoke,
            "scale": result.scale,
            "gc": result.collect_garbage,
        },
        "benchmarks": benches,
        "geometric_mean": geomeans,
    }


def default_json_path(env: dict[str, Any]) -> Path:
    """``benchmarks/results/<implementation>-<version>-<date>.json``."""
    day = datetime.date.today().isoformat()
    return RESULTS_DIR / f"{env['implementation'].lower()}-{env['python']}-{day}.json"


def write_json(result: SuiteResult, env: dict[str, Any], path: Path) -> Path:
    """Write the results to ``path`` (through a temporary file, so a crash leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_json(result, env), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def readme_section(result: SuiteResult, env: dict[str, Any]) -> str:
    """The Markdown that goes between the README's bench markers."""
    day = datetime.date.today().isoformat()
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    text = (
        f"Speed relative to {result.baseline}'s loop: median({result.baseline}) / median(loop), "
        f"so higher is faster; the {result.baseline} column is its median time. "
        f"Median of {result.repeat} runs per loop, loops interleaved"
        + ("; times are the process's CPU time" if env.get("clock") == "cpu" else "")
        + "; "
        f"{env['implementation']} {env['python']} on {env['system']} {env['machine']} with "
        f"{env['cpus']} CPUs; {versions}; commit {env['git_commit']}; {day}."
    )
    if any(c.status == "n/a" for row in result.cells.values() for c in row.values()):
        text += (
            " n/a: the loop cannot run that benchmark here (asyncio's eager task factory needs "
            "Python 3.12)."
        )
    text += (
        " Reproduce with `python benchmarks/run.py`; `benchmarks/README.md` says what each "
        "benchmark does."
    )
    return "\n".join(["## Benchmarks", "", textwrap.fill(text, 100), "", markdown_table(result)])


def update_readme(section: str, path: Path = README_PATH) -> None:
    """Replace the text between the bench markers of ``path`` with ``section``.

    Appends the markers at the end of the file if it has none yet; leaves the rest untouched.

    Raises:
        ValueError: the file has only one marker, or the end marker comes first.
    """
    text = path.read_text(encoding="utf-8")
    block = f"{README_START}\n{section.rstrip()}\n{README_END}"
    start, end = text.find(README_START), text.find(README_END)
    if start == -1 and end == -1:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    elif start == -1 or end == -1 or end < start:
        raise ValueError(
            f"{path}: expected {README_START} ... {README_END} in that order, once each; "
            f"fix the markers by hand"
        )
    else:
        text = text[:start] + block + text[end + len(README_END) :]
    path.write_text(text, encoding="utf-8")
