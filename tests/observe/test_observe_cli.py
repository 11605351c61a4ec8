"""``python -m tidal ps/pstree/trace``, ``--monitor`` and the leak report, as real subprocesses;
and the monitor's protocol and permissions in-process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidal
from tidal.observe import monitor

TIMEOUT = 30  # seconds; every subprocess is bounded


@pytest.fixture
def monitor_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "sockets"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("TIDAL_MONITOR_DIR", str(directory))
    return directory


def _tidal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidal", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )


@pytest.fixture
def monitored(tmp_path: Path, monitor_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """A program run with ``python -m tidal --monitor``, waiting for the test to inspect it."""
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys, time

            async def worker(n):
                await asyncio.sleep(60)

            async def main():
                tasks = [asyncio.create_task(worker(i), name=f"worker-{i}") for i in range(2)]
                await asyncio.sleep(0)
                print("ready", flush=True)
                line = await asyncio.to_thread(sys.stdin.readline)
                if line.strip() == "block":
                    print("blocking", flush=True)
                    time.sleep(20)  # the loop is stuck here
                for task in tasks:
                    task.cancel()

            asyncio.run(main())
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidal", "--monitor", str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)


def test_ps_and_pstree_show_the_tasks_of_another_process(
    monitored: subprocess.Popen[str], monitor_dir: Path
) -> None:
    path = monitor_dir / f"monitor-{monitored.pid}.sock"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    ps = _tidal("ps", str(monitored.pid))
    assert ps.returncode == 0, ps.stderr
    assert "worker-0" in ps.stdout and "worker-1" in ps.stdout
    assert "waiting" in ps.stdout and "sleep" in ps.stdout
    assert "serve.py" in ps.stdout  # file:line of the awaiting frame

    tree = _tidal("pstree", str(monitored.pid))
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert any(line.startswith(("├── (T) Task-1", "└── (T) Task-1")) for line in lines)
    assert any("(T) worker-0" in line and "created by" in line for line in lines)
    assert any("worker " in line and "serve.py:" in line for line in lines)

    as_json = _tidal("ps", str(monitored.pid), "--json")
    loops = json.loads(as_json.stdout)
    names = {task["name"] for task in loops[0]["tasks"]}
    assert {"worker-0", "worker-1"} <= names


def test_ps_of_a_blocked_process_shows_the_blocking_line(
    monitored: subprocess.Popen[str],
) -> None:
    assert monitored.stdin is not None and monitored.stdout is not None
    monitored.stdin.write("block\n")
    monitored.stdin.flush()
    assert monitored.stdout.readline().strip() == "blocking"
    ps = _tidal("ps", str(monitored.pid))
    assert ps.returncode == 0, ps.stderr
    assert "blocked" in ps.stdout
    assert "time.sleep(20)" in ps.stdout
    assert "worker-0" in ps.stdout
    stack = ps.stdout.split("loop thread stack (innermost last):\n", 1)[1].split("\nID ", 1)[0]
    # As the watchdog shows it: the program's coroutine down to the blocking line; no runpy,
    # launcher or loop frames (the JSON output keeps them all).
    assert stack.splitlines()[0].startswith("    main ") and "serve.py:" in stack
    assert stack.splitlines()[-1].strip().startswith("time.sleep(20)")
    assert "runpy" not in stack and "cli.py" not in stack and "tidal/" not in stack
    assert "of the launcher and the loop not shown" in ps.stdout
    as_json = json.loads(_tidal("ps", str(monitored.pid), "--json").stdout)
    assert any("runpy" in frame["filename"] for frame in as_json[0]["loop_stack"])


def test_ps_without_a_monitor_fails_clearly(monitor_dir: Path) -> None:
    result = _tidal("ps", str(os.getpid()))
    assert result.returncode == 1
    assert "no tidal monitor" in result.stderr and "--monitor" in result.stderr
    usage = _tidal("pstree", "not-a-pid")
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_trace_writes_html_and_json(tmp_path: Path) -> None:
    script = tmp_path / "concurrent.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys

            async def say_after(delay, what):
                await asyncio.sleep(delay)
                print(what)

            async def main():
                t1 = asyncio.create_task(say_after(0.05, "hello"))
                t2 = asyncio.create_task(say_after(0.1, "world"))
                await asyncio.gather(t1, t2)

            asyncio.run(main())
            sys.exit(int(sys.argv[1]))
            """
        )
    )
    html = tmp_path / "out.html"
    result = _tidal("trace", "-o", str(html), str(script), "3")
    assert result.returncode == 3, result.stderr  # the script's own exit status
    assert result.stdout.splitlines() == ["hello", "world"]
    assert "written to" in result.stderr
    page = html.read_text()
    lanes = json.loads(page.split('id="timeline-data">', 1)[1].split("</script>", 1)[0])["lanes"]
    assert sum(lane["kind"] == "task" and not lane["internal"] for lane in lanes) == 3
    assert "say_after" in page

    trace = tmp_path / "out.json"
    result = _tidal("trace", "-o", str(trace), "--", str(script), "0")
    assert result.returncode == 0, result.stderr
    data = json.loads(trace.read_text())
    assert any(e.get("cat") == "waiting" for e in data["traceEvents"])

    bad = _tidal("trace", "-o")
    assert bad.returncode == 2 and "expected one argument" in bad.stderr


def test_leak_report_at_exit_under_python_m_tidal(tmp_path: Path) -> None:
    script = tmp_path / "leaky.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio

            async def forgotten():
                await asyncio.sleep(60)

            async def main():
                asyncio.create_task(forgotten(), name="forgotten")
                await asyncio.sleep(0)

            asyncio.run(main())
            """
        )
    )
    result = _tidal("--leak-report", str(script))
    assert result.returncode == 0
    assert "tidal leak report" in result.stderr
    assert "'forgotten'" in result.stderr and "leaky.py:" in result.stderr
    quiet = _tidal(str(script))  # off by default (it costs time per task)
    assert quiet.returncode == 0 and "leak report" not in quiet.stderr


def test_monitor_refuses_unknown_commands_and_never_runs_them(monitor_dir: Path) -> None:
    server = monitor.Monitor(str(monitor_dir / "m.sock"))
    loop = tidal.new_event_loop()
    server.add_loop(loop)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(server.path)
            conn.sendall(b"__import__('os').system('touch pwned')\n")
            reply = json.loads(conn.makefile().readline())
        assert reply["ok"] is False and "unknown command" in reply["error"]
        assert not Path("pwned").exists()
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(server.path)
            conn.sendall(b"snapshot\n")
            reply = json.loads(conn.makefile().readline())
        assert reply["ok"] is True and reply["loops"][0]["tasks"] == []
    finally:
        server.stop()
        loop.close()
    assert not os.path.exists(server.path)


def test_monitor_refuses_a_directory_others_can_enter(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    server = monitor.Monitor(str(shared / "m.sock"))
    with pytest.raises(PermissionError, match="accessible to other users"):
        server.start()


def test_take_snapshot_of_an_idle_loop_and_of_a_running_one(monitor_dir: Path) -> None:
    async def main() -> monitor.Snapshot:
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(monitor.take_snapshot, loop)

    snap = tidal.run(main())
    assert snap.consistent and [t.state.value for t in snap.tasks] == ["waiting"]


def _monitored_process(tmp_path: Path, prologue: str = "") -> subprocess.Popen[str]:
    """A ``--monitor`` program with exactly one task, blocked in ``await`` until killed."""
    script = tmp_path / "one_task.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os, signal
            {prologue}
            async def main():
                print("ready", flush=True)
                await asyncio.sleep(60)

            asyncio.run(main())
            """
        ).format(prologue=prologue)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidal", "--monitor", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.slow
def test_ps_counts_one_task_in_the_singular(tmp_path: Path, monitor_dir: Path) -> None:
    proc = _monitored_process(tmp_path)
    try:
        ps = _tidal("ps", str(proc.pid))
        assert ps.returncode == 0, ps.stderr
        assert ps.stdout.splitlines()[0] == f"pid {proc.pid}: 1 task"
        tree = _tidal("pstree", str(proc.pid))
        assert tree.stdout.splitlines()[0].startswith(f"pid {proc.pid}: 1 task on ")
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)


@pytest.mark.slow
def test_sigterm_removes_the_socket_and_ps_says_the_process_is_gone(
    tmp_path: Path, monitor_dir: Path
) -> None:
    proc = _monitored_process(tmp_path)
    path = monitor_dir / f"monitor-{proc.pid}.sock"
    assert path.exists()
    proc.terminate()
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGTERM  # it still dies by SIGTERM, as without a monitor
    assert not path.exists()
    ps = _tidal("ps", str(proc.pid))
    assert ps.returncode == 1
    assert ps.stderr == f"python -m tidal: process {proc.pid} is not running\n"


@pytest.mark.slow
def test_ps_removes_the_socket_a_dead_process_left_behind(
    tmp_path: Path, monitor_dir: Path
) -> None:
    # The program takes SIGTERM over and leaves without atexit: its socket stays behind.
    prologue = "signal.signal(signal.SIGTERM, lambda *args: os._exit(0))"
    proc = _monitored_process(tmp_path, prologue)
    path = monitor_dir / f"monitor-{proc.pid}.sock"
    proc.terminate()
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0 and path.exists()
    ps = _tidal("pstree", str(proc.pid))
    assert ps.returncode == 1
    assert ps.stderr == f"python -m tidal: process {proc.pid} is not running\n"
    assert not path.exists()
