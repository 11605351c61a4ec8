"""Where and when the leak report is delivered, and what it leaves out (issue 10, A2).

- A loop closed in a thread while ``sys.stderr`` is replaced (a Jupyter kernel: ipykernel's
  stream sends through the very thread that closes its loop) must not write through that stream
  from that thread: ``close()`` returns, and the report reaches the real stderr at exit.
- Nothing is reported after Ctrl-C.
- Libraries' own long-lived tasks are counted, not listed, and alone make no report.
- Every section says what to do.

The subprocess tests run the same script under ``python`` (asyncio's loop, no report) and under
``python -m tidal``: both must finish the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import tidal
from tidal.observe import leaks

TIMEOUT = 60  # seconds; every subprocess is bounded

JUPYTER_LIKE = """
import asyncio, sys, threading

class SendsThroughItsThread:
    # Like ipykernel's stream: writes are handed to one thread to send; a write made from
    # that very thread waits for itself forever.
    def __init__(self):
        self.sender = None
        self.written = []

    def write(self, text):
        if threading.current_thread() is self.sender:
            threading.Event().wait()
        self.written.append(text)
        return len(text)

    def flush(self):
        pass

async def forgotten():
    await asyncio.sleep(60)

async def main():
    asyncio.create_task(forgotten(), name="forgotten")
    await asyncio.sleep(0)

def sender_thread(stream):
    stream.sender = threading.current_thread()
    asyncio.run(main())  # its loop closes in this thread

stream = SendsThroughItsThread()
sys.stderr = stream
thread = threading.Thread(target=sender_thread, args=(stream,), daemon=True)
thread.start()
thread.join(5)
sys.stderr = sys.__stderr__
print("hung" if thread.is_alive() else "closed", "".join(stream.written).count("leak report"))
"""

CTRL_C = """
import asyncio, os, signal

async def forgotten():
    await asyncio.sleep(60)

async def main():
    asyncio.create_task(forgotten(), name="forgotten")
    await asyncio.sleep(0)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(30)

asyncio.run(main())
"""

CTRL_C_WITHOUT_RUNNER = """
import asyncio, os, signal

async def forgotten():
    await asyncio.sleep(60)

async def main():
    asyncio.ensure_future(forgotten())
    await asyncio.sleep(0)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(30)

loop = asyncio.new_event_loop()
loop.run_until_complete(main())
"""

CTRL_C_CLOSING_IN_FINALLY = CTRL_C_WITHOUT_RUNNER.replace(
    "loop.run_until_complete(main())",
    "try:\n    loop.run_until_complete(main())\nfinally:\n    loop.close()",
)


def run(script: Path, under_tidal: bool) -> subprocess.CompletedProcess[str]:
    launcher = ["-m", "tidal", "--leak-report"] if under_tidal else []
    return subprocess.run(
        [sys.executable, *launcher, str(script)], capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.mark.slow
def test_a_loop_closed_in_a_thread_never_writes_through_a_replaced_stream(
    tmp_path: Path,
) -> None:
    script = tmp_path / "kernel_like.py"
    script.write_text(JUPYTER_LIKE)
    plain = run(script, under_tidal=False)
    assert (plain.returncode, plain.stdout, plain.stderr) == (0, "closed 0\n", "")
    result = run(script, under_tidal=True)
    assert (result.returncode, result.stdout) == (0, "closed 0\n")
    # The report still reaches the process's real stderr, at exit, and says where it came from.
    assert "tidal leak report" in result.stderr
    assert "'forgotten'" in result.stderr
    assert "reported at exit" in result.stderr and "Thread-1" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "body",
    [CTRL_C, CTRL_C_WITHOUT_RUNNER, CTRL_C_CLOSING_IN_FINALLY],
    ids=["runner", "no_runner", "close_in_finally"],
)
def test_nothing_is_reported_after_ctrl_c(tmp_path: Path, body: str) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(body)
    plain = run(script, under_tidal=False)
    result = run(script, under_tidal=True)
    assert result.returncode == plain.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in result.stderr
    assert "leak report" not in result.stderr


# -- in-process: what the report says ---------------------------------------------------------


@pytest.fixture
def fake_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A library installed in a directory the report counts as libraries' (as site-packages)."""
    libdir = tmp_path / "site"
    libdir.mkdir()
    (libdir / "fakelib.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            async def _heartbeat():
                await asyncio.sleep(3600)

            def start():
                return asyncio.get_running_loop().create_task(_heartbeat())
            """
        )
    )
    monkeypatch.syspath_prepend(str(libdir))
    monkeypatch.setattr(leaks, "LIBRARY_DIRS", [str(libdir) + "/", *leaks.LIBRARY_DIRS])
    monkeypatch.delitem(sys.modules, "fakelib", raising=False)
    return libdir


def close_with_leftovers(user_task: bool) -> tuple[list[leaks.LeakReport], list[leaks.LeakReport]]:
    """Close a loop with a library's task (and one of ours) pending: (reports delivered,
    reports made, empty ones included)."""
    import fakelib  # type: ignore[import-not-found]

    made: list[leaks.LeakReport] = []
    loop = tidal.new_event_loop()
    tracker = leaks.watch(loop, made.append)

    async def mine() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        fakelib.start()
        if user_task:
            asyncio.create_task(mine(), name="mine")  # noqa: RUF006  # the leak under test
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    pending = asyncio.all_tasks(loop)
    loop.close()
    for task in pending:  # the loop is closed: drop them without the "destroyed" log
        task._log_destroy_pending = False  # type: ignore[attr-defined]
    return made, tracker.reports


@pytest.mark.usefixtures("fake_library")
def test_library_tasks_are_counted_not_listed() -> None:
    delivered, _ = close_with_leftovers(user_task=True)
    report = delivered[0]
    assert [t.name for t in report.pending_at_close] == ["mine"]
    assert report.library_tasks == (("fakelib", 1),)
    text = report.format()
    assert "not listed: tasks of libraries still pending (fakelib: 1)" in text
    assert "_heartbeat" not in text


@pytest.mark.usefixtures("fake_library")
def test_library_tasks_alone_make_no_report() -> None:
    delivered, made = close_with_leftovers(user_task=False)
    assert delivered == []
    assert len(made) == 1 and not made[0]
    assert made[0].library_tasks == (("fakelib", 1),)


def test_every_section_says_what_to_do() -> None:
    task = leaks.LeakedTask("t", "coro", "f.py:1", None, "")
    error = leaks.LostError("t", "coro", "f.py:1", "ValueError()")
    report = leaks.LeakReport(
        "loop", (task,), "main", (task,), (error,), ("coroutine 'c' was never awaited",), ("job",)
    )
    text = report.format()
    assert text.count("    fix: ") == 5
    assert "--leak-report" in text


# The hang came about one shutdown in three: 3 cycles catch it 70% of the time, 10 cycles 98%
# (TIDAL_KERNEL_CYCLES=10). The deterministic test above covers the mechanism; this one the
# real kernel. A cycle costs about 4 s here.
KERNEL_CYCLES = int(os.environ.get("TIDAL_KERNEL_CYCLES", "3"))


@pytest.mark.slow
def test_a_jupyter_kernel_with_the_leak_report_shuts_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real case: ``python -m tidal -m ipykernel_launcher`` (leak report on) with a task
    left pending by a cell, shut down again and again; every shutdown must finish."""
    pytest.importorskip("ipykernel")
    manager_module = pytest.importorskip("jupyter_client.manager")
    spec_dir = tmp_path / "share" / "kernels" / "tidal-leaks"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "tidal", "--leak-report", "-m", "ipykernel_launcher"]
    argv += ["-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "tidal", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    cell = "import asyncio\nleft = asyncio.get_running_loop().create_task(asyncio.sleep(3600))"
    for cycle in range(KERNEL_CYCLES):
        manager = manager_module.KernelManager(kernel_name="tidal-leaks")
        manager.start_kernel()
        try:
            client = manager.client()
            client.start_channels()
            client.wait_for_ready(timeout=TIMEOUT)
            reply = client.execute_interactive(cell, timeout=TIMEOUT)
            assert reply["content"]["status"] == "ok"
            client.stop_channels()
            manager.request_shutdown()
            deadline = time.monotonic() + 20
            while manager.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not manager.is_alive(), f"the kernel hung at shutdown (cycle {cycle})"
        finally:
            manager.shutdown_kernel(now=True)
            manager.cleanup_resources()
