"""Recipe (docs/recipes.md, "Every core"): one app on several worker processes, a tidal loop each.

Real servers in real processes: ``uvicorn --workers 2 --loop tidal:new_event_loop`` and gunicorn
with the worker class of benchmarks/uvicorn_workers.py. The app answers with the module of the
loop serving it and its process id; the test makes concurrent requests with a plain HTTP client
until both workers have answered, and checks every answer came from a tidal loop in a worker
process of that server.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httptools")

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 40.0  # seconds: two interpreters import uvicorn on a busy 2-core machine

APP = textwrap.dedent(
    """
    import asyncio, json, os

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = json.dumps({
            "loop": type(asyncio.get_running_loop()).__module__,
            "pid": os.getpid(),
        }).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ask(port: int) -> dict[str, object]:
    """One GET / on a new connection; the app's JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        answer: dict[str, object] = json.loads(response.read())
        return answer
    finally:
        conn.close()


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "workers_app.py").write_text(APP)
    return tmp_path


@contextmanager
def serve(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own process group until ``GET /`` answers; stop it afterwards."""
    proc = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            try:
                ask(port)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer in time"
                time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            output = proc.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0].decode(errors="replace")
        assert "Traceback" not in output, output


def answers_from_every_worker(port: int, workers: int) -> list[dict[str, object]]:
    """Concurrent requests until ``workers`` distinct pids answered (or 30 s passed)."""
    answers: list[dict[str, object]] = []
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(8) as pool:
        while len({a["pid"] for a in answers}) < workers and time.monotonic() < deadline:
            answers += pool.map(lambda _: ask(port), range(32))
    return answers


def check_tidal_workers(proc: subprocess.Popen[bytes], port: int) -> None:
    answers = answers_from_every_worker(port, 2)
    pids = {int(str(a["pid"])) for a in answers}
    assert len(pids) == 2, f"expected answers from 2 worker processes, got pids {pids}"
    assert {a["loop"] for a in answers} == {"tidal.loop"}
    for pid in pids:  # workers of this server, not the server's own process
        assert pid != proc.pid
        assert parent_pid(pid) == proc.pid


@pytest.mark.slow
def test_uvicorn_workers_each_serve_on_a_tidal_loop(app_dir: Path) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "workers_app:app", "--app-dir", str(app_dir),
        "--workers", "2", "--loop", "tidal:new_event_loop", "--http", "httptools",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    with serve(command, port) as proc:
        check_tidal_workers(proc, port)


@pytest.mark.slow
def test_gunicorn_tidal_worker_class_serves_on_tidal_loops(app_dir: Path) -> None:
    pytest.importorskip(
        "gunicorn", reason="gunicorn is in the bench extra: pip install -e .[bench]"
    )
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [
        str(gunicorn), "workers_app:app", "--pythonpath", f"{app_dir},{REPO_ROOT}",
        "--workers", "2", "--worker-class", "benchmarks.uvicorn_workers.TidalUvicornWorker",
        "--bind", f"127.0.0.1:{port}", "--no-control-socket", "--log-level", "warning",
    ]  # fmt: skip
    with serve(command, port) as proc:
        check_tidal_workers(proc, port)
