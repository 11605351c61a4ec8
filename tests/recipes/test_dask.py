"""Recipe (docs/recipes.md, "CPU work on Dask"): ``run_in_executor`` with a Dask client.

A real Dask distributed ``LocalCluster`` of two worker processes and ``Client(asynchronous=True)``
running on a tidal loop; CPU-heavy calls go through ``loop.run_in_executor(
client.get_executor(), fn, x)``. The program is the recipe's, run as a script in a fresh
interpreter: with plain ``python`` (no hooks listening); under ``python -m tidal``, whose leak
report listens for executor jobs; and under ``python -m tidal trace``, whose timeline records
them (observing must not change what is sent to the executor: Dask pickles the function it is
given). The script reports the loop's class, its
own process id, each result with the worker process that computed it, and how often a ticker
task ran on the loop meanwhile (the work is off the loop thread, so the loop keeps turning).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

# Checked without importing it: distributed starts threads and sets up logging on import.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="dask.distributed is not installed (pip install -e .[test])",
)

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 60.0  # seconds: starting two worker interpreters on a busy 2-core machine

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, os
    import tidal
    from dask.distributed import Client, LocalCluster

    def checksum(n):
        # CPU-bound pure Python: holds a core (and its process's GIL) for a while.
        total = 0
        for i in range(n):
            total = (total * 31 + i) % 1_000_003
        return total, os.getpid()

    async def main():
        loop = asyncio.get_running_loop()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        async with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True,
            asynchronous=True, dashboard_address=None,
        ) as cluster, Client(cluster, asynchronous=True) as client:
            executor = client.get_executor()
            beat = asyncio.create_task(ticker())
            sizes = [300_000 + 1_000 * n for n in range(8)]
            results = await asyncio.gather(
                *(loop.run_in_executor(executor, checksum, n) for n in sizes)
            )
            beat.cancel()
        print(json.dumps({
            "loop": type(loop).__module__ + "." + type(loop).__qualname__,
            "pid": os.getpid(),
            "sizes": sizes,
            "results": results,
            "ticks": ticks,
        }))

    if __name__ == "__main__":  # worker processes import this file again
        tidal.run(main())
    """
)


def _checksum(n: int) -> int:
    total = 0
    for i in range(n):
        total = (total * 31 + i) % 1_000_003
    return total


def _run(tmp_path: Path, *launcher: str) -> dict[str, Any]:
    """Run the recipe as ``python [launcher...] script``; its JSON report."""
    script = tmp_path / "dask_recipe.py"
    script.write_text(PROGRAM)
    result = subprocess.run(
        [sys.executable, *launcher, str(script)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _check(report: dict[str, Any]) -> None:
    assert report["loop"] == "tidal.loop.EventLoop"
    expected = [_checksum(n) for n in report["sizes"]]
    assert [value for value, _ in report["results"]] == expected
    workers = {pid for _, pid in report["results"]}
    assert report["pid"] not in workers  # computed in other processes
    assert len(workers) == 2  # both worker processes took jobs
    assert report["ticks"] >= 3  # the loop kept turning while the workers computed


@pytest.mark.slow
def test_dask_executor_on_a_tidal_loop(tmp_path: Path) -> None:
    _check(_run(tmp_path))


@pytest.mark.slow
def test_dask_executor_under_python_m_tidal(tmp_path: Path) -> None:
    # The leak report (--leak-report) listens for executor jobs.
    _check(_run(tmp_path, "-m", "tidal", "--leak-report"))


@pytest.mark.slow
def test_dask_jobs_in_a_recorded_timeline(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    _check(_run(tmp_path, "-m", "tidal", "trace", "-o", str(trace)))
    events = json.loads(trace.read_text())["traceEvents"]
    lanes = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    jobs = [e for e in events if e["ph"] == "X" and e["cat"] == "job"]
    checksums = [e for e in jobs if e["args"]["detail"].startswith("checksum\n")]
    # Dask's executor is not a pool of tidal's: its jobs go on "other executor" lanes, each
    # tied by a flow arrow to the step of main that submitted it.
    assert len(checksums) == 8
    assert all(lanes[e["tid"]].startswith("other executor") for e in checksums)
    assert all("submitted by task" in e["args"]["detail"] for e in checksums)
    starts = {e["id"]: e for e in events if e["ph"] == "s" and e["name"] == "executor job"}
    ends = [e for e in events if e["ph"] == "f" and e["id"] in starts]
    for job in checksums:
        arrows = [starts[e["id"]] for e in ends if (e["tid"], e["ts"]) == (job["tid"], job["ts"])]
        assert len(arrows) == 1 and lanes[arrows[0]["tid"]].endswith(" (main)")
