"""What the reliability scenarios share: the loops, one child process per loop, process gauges.

Owns: ``LOOPS`` (asyncio, uvloop where it imports, tidal), running a scenario's child for one
loop and reading back its JSON report (``run_children``), the gauges sampled from /proc (RSS,
open fds, threads, live child processes), raising the fd limit, and the plain-text tables the
scenarios print.
Not here: the scenarios themselves (soak.py, faults.py, load.py).

Each loop runs in its own process: RSS, fd and child counts then belong to one loop only, and a
loop that crashes or hangs cannot take the others' figures with it. A child prints exactly one
JSON object as its last line of stdout.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _tidal_factory() -> asyncio.AbstractEventLoop:
    import tidal

    return tidal.new_event_loop()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": _uvloop_factory,
    "tidal": _tidal_factory,
}


def available_loops(names: Sequence[str]) -> list[str]:
    """The names among ``names`` that run here (uvloop needs its package)."""
    out = []
    for name in names:
        if name not in LOOPS:
            raise SystemExit(f"unknown loop {name!r}; choose from {', '.join(LOOPS)}")
        if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
            print("uvloop is not installed: left out (pip install -e '.[bench]')")
            continue
        out.append(name)
    return out


# -- gauges ---------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    return threading.active_count()


def child_processes() -> list[int]:
    """Pids of this process's live or zombie children (every thread's list)."""
    pids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return pids


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit (and the hard one if we may) to ``wanted``; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


# -- children -------------------------------------------------------------------------------------


def run_children(
    script: Path,
    loops: Sequence[str],
    args: Sequence[str],
    *,
    parallel: bool = False,
    timeout: float = 3600.0,
) -> dict[str, dict[str, Any]]:
    """Run ``script --child LOOP args`` once per loop; return each child's JSON report.

    A child that fails or prints no report gets ``{"error": ...}`` with the end of its output.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.pop("PYTHONASYNCIODEBUG", None)
    procs = {}
    reports: dict[str, dict[str, Any]] = {}
    for name in loops:
        command = [sys.executable, str(script), "--child", name, *args]
        procs[name] = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        if not parallel:
            reports[name] = _collect(procs[name], timeout)
    for name, proc in procs.items():
        if name not in reports:
            reports[name] = _collect(proc, timeout)
    return reports


def _collect(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s\n{err[-3000:]}"}
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}\n{(out + err)[-3000:]}"}
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        return {"error": f"no JSON report\n{(out + err)[-3000:]}"}
    if err.strip():
        report.setdefault("stderr", err[-3000:])
    return report


def emit(report: dict[str, Any]) -> None:
    """A child's report: one JSON line on stdout, last."""
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


# -- tables ---------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (it reads as plain text too)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def mib(n: float) -> str:
    return f"{n / MIB:.1f}"
