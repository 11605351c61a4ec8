"""Observing executor jobs never changes what is sent to an executor (issue 10, A1).

An executor that pickles its jobs (``ProcessPoolExecutor``, Dask's ``client.get_executor()``)
must get ``func, *args`` exactly as given while executor-job hooks listen, which they always do
under ``python -m tidal`` (its leak report listens). The same calls run on asyncio's loop (no
hooks) and on tidal's (with an observer attached) and must give the same results; on tidal the
observer still sees every job start and finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import multiprocessing
import operator
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidal.loop import EventLoop
from tidal.observe.hooks import ExecutorJob, hooks_for

Loop = asyncio.AbstractEventLoop


class JobLog:
    """An observer of both executor-job hooks (called from worker and executor threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[ExecutorJob] = []
        self.finished: list[ExecutorJob] = []

    def executor_job_started(self, job: ExecutorJob) -> None:
        with self.lock:
            self.started.append(job)

    def executor_job_finished(self, job: ExecutorJob) -> None:
        with self.lock:
            self.finished.append(job)


@pytest.fixture
def job_log(loop: Loop) -> JobLog:
    """Executor-job hooks listening on tidal's loop (asyncio's loop has no hooks)."""
    log = JobLog()
    if isinstance(loop, EventLoop):
        hooks_for(loop).add_observer(log)
    return log


@pytest.fixture(scope="module")
def process_pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    # "spawn": forking a multi-threaded test process is deprecated (and unsafe) on 3.12+.
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        yield pool


@pytest.mark.slow
def test_a_process_pool_gets_the_job_untouched_while_hooks_listen(
    loop: Loop, job_log: JobLog, process_pool: concurrent.futures.ProcessPoolExecutor
) -> None:
    async def main() -> tuple[int, str]:
        value = await loop.run_in_executor(process_pool, operator.pow, 2, 10)
        try:
            await loop.run_in_executor(process_pool, math.sqrt, -1)
        except ValueError as exc:
            return value, str(exc)
        raise AssertionError("math.sqrt(-1) did not raise")

    assert loop.run_until_complete(main()) == (1024, "math domain error")
    if isinstance(loop, EventLoop):
        # The jobs were still observed, from outside the executor.
        assert [job.func for job in job_log.started] == [operator.pow, math.sqrt]
        assert [job.func for job in job_log.finished] == [operator.pow, math.sqrt]
        assert job_log.finished[0].error is None
        assert isinstance(job_log.finished[1].error, ValueError)
        for job in job_log.finished:
            assert job.finished is not None and job.finished >= job.submitted


class RecordingExecutor(concurrent.futures.Executor):
    """An executor that runs jobs at once and records exactly what it was given."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Any, tuple[Any, ...]]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.submitted.append((fn, args))
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_any_executor_but_tidals_own_pool_sees_func_and_args_as_given(
    loop: Loop, job_log: JobLog
) -> None:
    executor = RecordingExecutor()
    thread_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def main() -> list[int]:
        return [
            await loop.run_in_executor(executor, operator.add, 1, 2),
            await loop.run_in_executor(thread_pool, operator.mul, 3, 4),
            await loop.run_in_executor(None, operator.sub, 9, 4),  # the default pool
        ]

    try:
        assert loop.run_until_complete(main()) == [3, 12, 5]
    finally:
        thread_pool.shutdown(wait=True)
    assert executor.submitted == [(operator.add, (1, 2))]
    if isinstance(loop, EventLoop):
        funcs = [operator.add, operator.mul, operator.sub]
        assert [job.func for job in job_log.started] == funcs
        assert sorted(map(id, (job.func for job in job_log.finished))) == sorted(map(id, funcs))
        # Only tidal's own pool runs the job inside the hooks' wrapper, which knows its thread.
        threads = {job.func: job.thread for job in job_log.finished}
        assert threads[operator.add] is None and threads[operator.mul] is None
        assert threads[operator.sub] is not None and threads[operator.sub].startswith("asyncio")


@pytest.mark.slow
def test_python_m_tidal_runs_a_process_pool_script(tmp_path: Path) -> None:
    script = tmp_path / "pool.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, concurrent.futures, multiprocessing, operator

            async def main():
                loop = asyncio.get_running_loop()
                context = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                    print(await loop.run_in_executor(pool, operator.pow, 3, 4))

            if __name__ == "__main__":
                asyncio.run(main())
            """
        )
    )
    for command in (
        ["python", str(script)],
        ["python", "-m", "tidal", "--leak-report", str(script)],
    ):
        result = subprocess.run(
            [sys.executable, *command[1:]], capture_output=True, text=True, timeout=60
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "81\n", ""), command


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
    ) as client:
        yield client


@pytest.mark.slow
def test_dasks_executor_gets_the_job_untouched_while_hooks_listen(
    loop: Loop, job_log: JobLog, dask_client: Any
) -> None:
    executor = dask_client.get_executor()
    assert loop.run_until_complete(loop.run_in_executor(executor, operator.pow, 2, 5)) == 32
    if isinstance(loop, EventLoop):
        assert [job.func for job in job_log.finished] == [operator.pow]
