"""Recipes (docs/recipes.md) for the servers people run, against the real packages.

Each server runs in its own process, as a user starts it, and serves an app that answers with
the module of the loop it runs on: ``tidal.loop`` proves the recipe put the server on tidal.
``uvicorn --workers 2`` is tests/recipes/test_workers.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 40.0  # seconds: a busy 2-core machine importing uvicorn or aiohttp

ASGI_APP = textwrap.dedent(
    """
    import asyncio, json

    async def app(scope, receive, send):
        assert scope["type"] == "http"
        body = json.dumps({"loop": type(asyncio.get_running_loop()).__module__}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    """
)

AIOHTTP_SERVER = textwrap.dedent(
    """
    import asyncio, socket
    from aiohttp import web
    import tidal

    async def where(request):
        return web.json_response({"loop": type(asyncio.get_running_loop()).__module__})

    app = web.Application()
    app.router.add_get("/", where)
    sock = socket.create_server(("127.0.0.1", 0))
    print(f"listening on port {sock.getsockname()[1]}", flush=True)
    web.run_app(app, sock=sock, loop=tidal.new_event_loop(), print=None)
    """
)


def ask(port: int) -> dict[str, object]:
    """``GET /`` on a new connection; the JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        answer: dict[str, object] = json.loads(response.read())
        return answer
    finally:
        conn.close()


@contextmanager
def serving(command: list[str], cwd: Path, port_line: str) -> Iterator[int]:
    """Start the server; yield its port once a line of its output matches ``port_line``; stop
    it with SIGINT (Ctrl-C) and check it shut down cleanly."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        port = None
        while port is None:
            line = proc.stdout.readline()
            assert line, "the server exited before listening:\n" + "".join(lines)
            assert time.monotonic() < deadline, "the server did not start in time"
            lines.append(line)
            match = re.search(port_line, line)
            if match:
                port = int(match[1])
        yield port
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=20)
        output = "".join(lines) + rest
        assert proc.returncode == 0, output
        for trouble in ("Traceback", "Error", "Warning"):
            assert trouble not in output, output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


UVICORN_PORT = r"Uvicorn running on http://127\.0\.0\.1:(\d+)"


@pytest.mark.slow
def test_uvicorn_with_loop_tidal_new_event_loop(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    (tmp_path / "app.py").write_text(ASGI_APP)
    command = [sys.executable, "-m", "uvicorn", "app:app", "--port", "0", "--lifespan", "off"]
    with serving([*command, "--loop", "tidal:new_event_loop"], tmp_path, UVICORN_PORT) as port:
        assert ask(port) == {"loop": "tidal.loop"}


@pytest.mark.slow
def test_uvicorn_under_python_m_tidal_keeps_its_own_loop_unless_told(tmp_path: Path) -> None:
    # The trap docs/recipes.md warns about: uvicorn's default --loop auto picks uvloop (or
    # asyncio's selector loop) itself, whatever asyncio's policy says. --loop none defers to
    # the policy, which python -m tidal has set.
    pytest.importorskip("uvicorn")
    (tmp_path / "app.py").write_text(ASGI_APP)
    command = [sys.executable, "-m", "tidal", "-m", "uvicorn", "app:app", "--port", "0"]
    command += ["--lifespan", "off"]
    with serving(command, tmp_path, UVICORN_PORT) as port:
        assert ask(port)["loop"] in {"uvloop", "asyncio.unix_events"}
    with serving([*command, "--loop", "none"], tmp_path, UVICORN_PORT) as port:
        assert ask(port) == {"loop": "tidal.loop"}


@pytest.mark.slow
def test_aiohttp_run_app_on_a_tidal_loop(tmp_path: Path) -> None:
    pytest.importorskip("aiohttp")
    (tmp_path / "server.py").write_text(AIOHTTP_SERVER)
    command = [sys.executable, "server.py"]
    with serving(command, tmp_path, r"listening on port (\d+)") as port:
        assert ask(port) == {"loop": "tidal.loop"}
