"""Security of the observability surfaces: the monitor's sockets and the timeline page.

- The Unix-socket monitor is usable only by its own user. Checked with a real second user
  (``nobody``, through ``runuser``) where this process may switch users (root); skipped with
  the reason otherwise.
- The loopback TCP monitor answers only requests carrying its token; the token file is
  private to the user.
- The timeline page shows hostile strings (task names, exception messages) as text: opened in
  headless chromium, none of them runs script.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidal
import tidal.trace
from tidal.observe import monitor

# The other user's interpreter must be one that user can run: the system Python, not a venv
# under /root.
SYSTEM_PYTHON = "/usr/bin/python3"
RUNUSER = shutil.which("runuser")


def _other_user_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "switching to a second user needs root (runuser)"
    if RUNUSER is None:
        return "runuser is not installed"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is not there for the second user to run"
    probe = subprocess.run(
        [RUNUSER, "-u", "nobody", "--", SYSTEM_PYTHON, "-c", "import os; print(os.getuid())"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0 or probe.stdout.strip() == "0":
        return f"cannot run a process as 'nobody': {probe.stderr.strip()[-200:]}"
    return None


def _as_nobody(code: str) -> str:
    """Run ``code`` with the system Python as user nobody; return what it printed."""
    assert RUNUSER is not None
    result = subprocess.run(
        [RUNUSER, "-u", "nobody", "--", SYSTEM_PYTHON, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def other_user() -> None:
    reason = _other_user_skip_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def private_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # tmp_path's parents are open to everyone on a usual machine; the monitor's directory is not.
    directory = tmp_path / "monitor"
    monkeypatch.setenv("TIDAL_MONITOR_DIR", str(directory))
    return directory


@pytest.fixture
def unix_monitor(private_dir: Path) -> Iterator[monitor.Monitor]:
    served = monitor.Monitor(str(private_dir / "m.sock"))
    served.start()
    try:
        yield served
    finally:
        served.stop()


CONNECT_UNIX = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({path!r})
    try:
        s.sendall(b"ping\\n")
    except BrokenPipeError:
        pass  # the monitor refused us and closed first; its answer is still to be read
    print(s.recv(4096).decode().strip())
except OSError as exc:
    print(type(exc).__name__)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("other_user")
def test_another_user_cannot_reach_the_unix_socket(unix_monitor: monitor.Monitor) -> None:
    private = Path(unix_monitor.path).parent
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE(os.stat(unix_monitor.path).st_mode) == 0o600
    # Reachable by us...
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(unix_monitor.path)
        conn.sendall(b"ping\n")
        assert json.loads(conn.recv(4096))["ok"] is True
    # ...but the other user cannot even enter the directory. tmp_path's parents are 0700 on
    # root's machine, so open them for this check: only the monitor's own modes protect it.
    opened = [p for p in private.parents if str(p).startswith(str(private.parents[2]))]
    for parent in opened:
        parent.chmod(0o755)
    assert _as_nobody(CONNECT_UNIX.format(path=unix_monitor.path)) == "PermissionError"


@pytest.mark.slow
@pytest.mark.usefixtures("other_user")
def test_peer_credentials_refuse_another_user_even_through_open_modes(
    unix_monitor: monitor.Monitor,
) -> None:
    # Defence in depth: if the directory and socket modes were loosened after start (an
    # operator's chmod), SO_PEERCRED still turns the other user away without an answer.
    private = Path(unix_monitor.path).parent
    for parent in [private, *private.parents]:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(0o755)
    os.chmod(unix_monitor.path, 0o666)
    answer = _as_nobody(CONNECT_UNIX.format(path=unix_monitor.path))
    assert answer.startswith("{"), answer
    reply = json.loads(answer)
    assert reply == {"ok": False, "error": "permission denied: not the same user"}


@pytest.fixture
def tcp_monitor(private_dir: Path) -> Iterator[monitor.TcpMonitor]:
    served = monitor.TcpMonitor(info_path=str(private_dir / "m.tcp"))
    loop = tidal.new_event_loop()
    served.add_loop(loop, track_tasks=False)
    served.start()
    try:
        yield served
    finally:
        served.stop()
        loop.close()


def _raw_request(port: int, line: bytes) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(line)
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    reply: dict[str, object] = json.loads(data)
    return reply


def test_tcp_monitor_answers_only_requests_with_its_token(
    tcp_monitor: monitor.TcpMonitor,
) -> None:
    port, token = tcp_monitor.port, tcp_monitor.token
    assert len(token) == 64
    refused = {"ok": False, "error": "permission denied: bad or missing token"}
    assert _raw_request(port, b"ping\n") == refused
    assert _raw_request(port, b"snapshot\n") == refused
    assert _raw_request(port, f"{token[:-1]}x ping\n".encode()) == refused
    assert _raw_request(port, f"{token}\n".encode())["ok"] is False  # token, no command
    assert _raw_request(port, f"{token} ping\n".encode()) == {"ok": True, "pid": os.getpid()}
    reply = monitor.fetch_tcp(os.getpid(), "snapshot", info_path=tcp_monitor.path)
    assert reply["ok"] is True and len(reply["loops"]) == 1
    with pytest.raises(monitor.MonitorError, match="bad or missing token"):
        monitor.fetch_address("127.0.0.1", port, "0" * 64, "ping")


def test_tcp_monitor_info_file_is_private_and_removed_on_stop(private_dir: Path) -> None:
    served = monitor.TcpMonitor(info_path=str(private_dir / "m.tcp"))
    served.start()
    try:
        info = Path(served.path)
        assert stat.S_IMODE(info.stat().st_mode) == 0o600
        assert stat.S_IMODE(private_dir.stat().st_mode) == 0o700
        saved = json.loads(info.read_text())
        assert saved == {
            "pid": os.getpid(),
            "host": "127.0.0.1",
            "port": served.port,
            "token": served.token,
        }
    finally:
        served.stop()
    assert not Path(served.path).exists()
    with pytest.raises(monitor.MonitorError, match="cannot talk"):
        monitor.fetch_address("127.0.0.1", served.port, served.token, "ping", timeout=1)


def test_tcp_monitor_refuses_non_loopback_hosts_and_short_tokens() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        monitor.TcpMonitor("0.0.0.0")
    with pytest.raises(ValueError, match="loopback IP address"):
        monitor.TcpMonitor("localhost.example")
    with pytest.raises(ValueError, match="at least 32"):
        monitor.TcpMonitor(token="short")


def test_enable_tcp_serves_the_running_loop_until_disabled(private_dir: Path) -> None:
    async def main() -> tuple[list[str], str]:
        served = monitor.enable_tcp()
        try:
            sleeper = asyncio.create_task(asyncio.sleep(10), name="sleeper")
            reply = await asyncio.to_thread(monitor.fetch_tcp, os.getpid())
            sleeper.cancel()
            names = [t["name"] for snap in reply["loops"] for t in snap["tasks"]]
            return names, served.path
        finally:
            monitor.disable_tcp()

    names, path = tidal.run(main())
    assert "sleeper" in names
    assert not Path(path).exists()
    with pytest.raises(monitor.MonitorError, match="no tidal TCP monitor"):
        monitor.fetch_tcp(os.getpid())


@pytest.mark.slow
@pytest.mark.usefixtures("other_user")
def test_another_user_cannot_read_the_tcp_token(tcp_monitor: monitor.TcpMonitor) -> None:
    private = Path(tcp_monitor.path).parent
    for parent in private.parents:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(0o755)
    code = f"""
    try:
        open({tcp_monitor.path!r}).read()
        print("read")
    except OSError as exc:
        print(type(exc).__name__)
    """
    assert _as_nobody(code) == "PermissionError"
    # Guessing is all that is left to them: a wrong token is refused.
    probe = f"""
    import socket
    s = socket.create_connection(("127.0.0.1", {tcp_monitor.port}))
    s.sendall(b"{"f" * 64} snapshot\\n")
    print(s.recv(4096).decode().strip())
    """
    assert "bad or missing token" in _as_nobody(probe)


# -- the timeline page ----------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Each payload, if the page ever inserted it as markup, would set an attribute on <html> that
# chromium's --dump-dom then shows.
PAYLOADS = (
    "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','img')\">",
    "</script><script>document.documentElement.setAttribute('data-pwned','script')</script>",
    "\"'><svg onload=\"document.documentElement.setAttribute('data-pwned','svg')\">",
    "javascript:document.documentElement.setAttribute('data-pwned','href')",
    "${document.documentElement.setAttribute('data-pwned','template')}",
)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_timeline_page_runs_no_script_from_task_names_or_errors(tmp_path: Path) -> None:
    async def hostile(payload: str) -> None:
        await asyncio.sleep(0.001)
        raise ValueError(payload)

    async def main() -> None:
        tasks = [asyncio.create_task(hostile(p), name=p) for p in PAYLOADS]
        sleeper = asyncio.create_task(asyncio.sleep(5), name=PAYLOADS[0] + "-cancelled")
        await asyncio.sleep(0.01)
        sleeper.cancel(PAYLOADS[1])
        await asyncio.gather(*tasks, sleeper, return_exceptions=True)

    with tidal.trace.record() as session:
        tidal.run(main())
    page = tmp_path / "timeline.html"
    session.save(page, title=PAYLOADS[2])

    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=2000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    dom = result.stdout.decode()
    # The escaped payloads contain the text data-pwned; an attribute set by script reads so:
    assert 'data-pwned="' not in dom, "a hostile string ran as script"
    # The page did render the strings, as text.
    assert "&lt;img src=x onerror=" in dom
