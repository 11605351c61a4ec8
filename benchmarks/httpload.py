"""What the HTTP server benchmarks share: wrk, server processes, CPU time, medians, README blocks.

Owns: finding and running Debian's ``wrk`` (a compiled load generator in its own process) with
a Lua ``done`` hook that prints its summary as JSON (``run_wrk``); ``ServerProcess``, a server
started as a child process, waited for until ``GET /loop`` answers, checked to be on the
expected loop, and stopped; a process's CPU seconds from ``/proc/<pid>/stat``; free ports; the
Markdown block between a section's README markers, one sub-block per Python version.
Not here: the apps (benchmarks/server_apps.py), the benchmarks and their tables
(benchmarks/servers.py, benchmarks/scale.py).

Invariants:
- A server is benchmarked only after ``GET /loop`` showed the loop module (and, for tidal, the
  build) the caller expects; a server on the wrong loop is an error, never a number.
- ``run_wrk`` reports errors (connect, read, write, timeout, non-2xx) rather than hiding them;
  callers treat a run with errors as failed.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
README_PATH: Final = REPO_ROOT / "README.md"

# Seconds a server may take from spawn to its first answer (imports, binding, workers forking).
STARTUP_TIMEOUT: Final = 30.0

# The summary wrk prints when its run is done, as one JSON line (latencies in microseconds).
_WRK_DONE_LUA: Final = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK-JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "non2xx": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


class LoadError(RuntimeError):
    """wrk failed or reported errors, or a server did not come up on the expected loop."""


def find_wrk() -> str | None:
    """The path of the ``wrk`` executable, or None (install it: ``apt-get install -y wrk``)."""
    return shutil.which("wrk")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_count() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


# -- CPU time --------------------------------------------------------------------------------

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads included.

    Read from ``/proc/<pid>/stat`` (fields 14 and 15, in clock ticks of 1/SC_CLK_TCK s).
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


# -- wrk -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    """One wrk run's summary."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def run_wrk(
    url: str, *, connections: int, seconds: float, threads: int = 1, cpu: int | None = None
) -> WrkResult:
    """Drive ``url`` with wrk for ``seconds`` over ``connections`` keep-alive connections.

    ``cpu`` pins wrk to one CPU (``taskset``). Raises LoadError if wrk fails or reports
    socket errors or non-2xx answers.
    """
    wrk = find_wrk()
    if wrk is None:
        raise LoadError("wrk is not installed; apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_DONE_LUA)
    try:
        command = [
            wrk,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            script.name,
            url,
        ]
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(script.name)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise LoadError(f"wrk failed (exit {done.returncode}): {done.stderr or done.stdout}")
    data = json.loads(line.removeprefix("WRK-JSON "))
    errors = {
        k: data[k]
        for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "non2xx")
        if data[k]
    }
    if errors or not data["requests"]:
        raise LoadError(f"wrk on {url}: {data['requests']} requests, errors {errors}")
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        errors=errors,
    )


# -- server processes ------------------------------------------------------------------------


def loop_env(variant: str) -> dict[str, str]:
    """The environment for a server on loop ``variant`` (TIDAL_PURE=1 for tidal-pure)."""
    env = dict(os.environ)
    env.pop("TIDAL_PURE", None)
    if variant == "tidal-pure":
        env["TIDAL_PURE"] = "1"
    return env


def loop_name(variant: str) -> str:
    """The loop a variant runs: "tidal-pure" and "tidal-compiled" both run "tidal"."""
    return "tidal" if variant.startswith("tidal") else variant


def check_loop(variant: str, description: dict[str, Any]) -> None:
    """Raise LoadError unless ``description`` (from ``GET /loop``) is ``variant``'s loop."""
    module = str(description.get("loop"))
    name = loop_name(variant)
    if module.split(".")[0] != name:
        raise LoadError(f"{variant}: the server runs a {module} loop, not {name}")
    compiled = description.get("tidal_compiled")
    if variant == "tidal-pure" and compiled:
        raise LoadError("tidal-pure: the server runs tidal's compiled build despite TIDAL_PURE=1")
    if variant == "tidal-compiled" and compiled is not True:
        raise LoadError(f"tidal-compiled: tidal.COMPILED is {compiled!r} in the server")


def tidal_compiled_available(python: str = sys.executable) -> bool:
    """True if ``python`` imports tidal's compiled build (``tidal.COMPILED``) by default."""
    done = subprocess.run(
        [python, "-c", "import tidal; print(getattr(tidal, 'COMPILED', False))"],
        capture_output=True,
        text=True,
        env=loop_env("tidal-compiled"),
        check=False,
    )
    return done.stdout.strip() == "True"


def get_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


class ServerProcess:
    """A server command run as a child process on ``port``, for one loop variant."""

    def __init__(
        self,
        name: str,
        variant: str,
        command: Sequence[str],
        port: int,
        *,
        cpu: int | None = None,
    ) -> None:
        self.name = name
        self.variant = variant
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]  # taskset execs: same pid
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(
            list(command),
            cwd=REPO_ROOT,
            env=loop_env(variant),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches its workers too
        )
        self.description: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-3000:]

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> dict[str, Any]:
        """Wait until ``GET /loop`` answers; check the loop; return its description."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LoadError(
                    f"{self.name}: server exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                self.description = get_json(self.url + "loop", timeout=2.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise LoadError(
                        f"{self.name}: no answer in {timeout} s:\n{self.output()}"
                    ) from None
                time.sleep(0.1)
        check_loop(self.variant, self.description)
        return self.description

    def cpu_seconds(self, *, with_children: bool = False) -> float:
        total = cpu_seconds(self.pid)
        if with_children:
            for child in children(self.pid):
                try:
                    total += cpu_seconds(child)
                except OSError:  # exited meanwhile
                    continue
        return total

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 10 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._log.close()


# -- statistics and reports ------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rotated(items: Sequence[str], by: int) -> list[str]:
    """``items`` rotated left by ``by``: each round starts with another loop."""
    if not items:
        return []
    by %= len(items)
    return [*items[by:], *items[:by]]


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def python_tag() -> str:
    return f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"


def today() -> str:
    return datetime.date.today().isoformat()


def update_readme_block(
    section: str, heading: str, intro: str, python: str, body: str, path: Path = README_PATH
) -> None:
    """Put ``body`` in the README between ``<!-- {section}-{python}:start/end -->``.

    The sub-block lives inside ``<!-- {section}:start -->`` ... ``<!-- {section}:end -->``,
    which holds ``heading`` and ``intro`` (rewritten each time) and one sub-block per Python
    version (others left as they are). Missing markers are added at the end of the file.

    Raises:
        ValueError: markers out of order or half present; fix them by hand.
    """
    text = path.read_text(encoding="utf-8")
    outer = (f"<!-- {section}:start -->", f"<!-- {section}:end -->")
    inner = (f"<!-- {section}-{python}:start -->", f"<!-- {section}-{python}:end -->")
    start, end = text.find(outer[0]), text.find(outer[1])
    if start == -1 and end == -1:
        text = text.rstrip("\n") + f"\n\n{outer[0]}\n{outer[1]}\n"
        start, end = text.find(outer[0]), text.find(outer[1])
    elif start == -1 or end == -1 or end < start:
        raise ValueError(f"{path}: expected {outer[0]} ... {outer[1]}; fix the markers by hand")
    inside = text[start + len(outer[0]) : end]
    blocks: dict[str, str] = {}
    pos = 0
    while (i := inside.find(f"<!-- {section}-", pos)) != -1:
        tag_end = inside.index(":start -->", i)
        tag = inside[i + len(f"<!-- {section}-") : tag_end]
        close = f"<!-- {section}-{tag}:end -->"
        j = inside.find(close, tag_end)
        if j == -1:
            raise ValueError(f"{path}: {close} is missing; fix the markers by hand")
        blocks[tag] = inside[i : j + len(close)]
        pos = j + len(close)
    blocks[python] = f"{inner[0]}\n{body.rstrip()}\n{inner[1]}"
    ordered = [blocks[k] for k in sorted(blocks)]
    new_inside = "\n" + "\n\n".join([heading, intro.rstrip(), *ordered]) + "\n"
    path.write_text(text[: start + len(outer[0])] + new_inside + text[end:], encoding="utf-8")


def git_commit() -> str:
    """The short commit of the checkout, "+uncommitted" if src/ differs from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no", "src"):
        commit += "+uncommitted"
    return commit
