"""Live inspection of a running process: an opt-in, read-only monitor on a Unix socket.

Owns: ``Monitor`` (a daemon thread serving task snapshots), ``enable``/``disable`` (the
process-wide monitor), the socket location convention, and ``fetch`` (the client side of
``python -m tidal ps PID`` / ``pstree PID``).
Not here: building and rendering snapshots (tree.py), per-task accounting (stats.py).

Security model, in order of the checks:
- Off by default. A process is inspectable only after ``enable()``, ``python -m tidal --monitor``
  or ``TIDAL_MONITOR=1`` under ``python -m tidal``.
- The socket lives in a directory only its owner can enter (mode 0700, owned by us; an existing
  directory with any other owner or mode is refused), and the socket itself is mode 0600.
- On Linux each connection's peer credentials (SO_PEERCRED) must show our own uid.
- The protocol is one request line naming a command from a fixed set, answered with JSON.
  Nothing a client sends is ever evaluated, unpickled or executed; no command changes state.
- The loopback TCP variant (``enable_tcp``/``TcpMonitor``, for hosts where a Unix socket cannot
  be reached, e.g. from another container sharing the network namespace) binds a loopback
  address only and requires a 256-bit random token as the first word of every request,
  compared in constant time. The token is written, with the port, to ``monitor-PID.tcp`` in the
  same private directory (mode 0600), so only our user can read it; ``fetch_tcp`` reads it.

How a snapshot is taken: the monitor thread asks the loop to take it on its own thread
(``call_soon_threadsafe``) and waits ``ANSWER_TIMEOUT`` seconds. If the loop does not answer it
is blocked: the monitor then reads the tasks from its own thread (``consistent=False``) and adds
the loop thread's current stack, so ``ps`` shows what the loop is stuck in.

Invariants:
- The monitor never keeps a loop alive (loops are held weakly) and never blocks the loop.
- One request per connection; requests are bounded in size and time.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hmac
import ipaddress
import json
import os
import secrets
import signal
import socket
import stat
import struct
import tempfile
import threading
import weakref
from typing import Any, Final

from ..core.scheduler import Scheduler
from .hooks import add_loop_watcher, remove_loop_watcher
from .stats import track
from .tree import Snapshot, snapshot
from .watchdog import thread_stack

ANSWER_TIMEOUT: Final = 0.5  # seconds the loop gets to take its own snapshot
REQUEST_TIMEOUT: Final = 2.0  # seconds a client gets to send its request line
MAX_REQUEST: Final = 256  # bytes; requests are single short words
COMMANDS: Final = ("snapshot", "ping")


def socket_dir() -> str:
    """The per-user directory holding monitor sockets (``$TIDAL_MONITOR_DIR`` overrides)."""
    override = os.environ.get("TIDAL_MONITOR_DIR")
    if override:
        return override
    return os.path.join(tempfile.gettempdir(), f"tidal-{os.getuid()}")


def socket_path(pid: int) -> str:
    """Where the monitor of process ``pid`` listens."""
    return os.path.join(socket_dir(), f"monitor-{pid}.sock")


def _private_dir(path: str) -> None:
    """Create ``path`` with mode 0700, or check an existing one is ours and private.

    Raises:
        PermissionError: the directory exists but another user owns it or others may enter it.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a directory owned by this user; refusing to use it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise PermissionError(
            f"{path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run chmod 700 on it or set TIDAL_MONITOR_DIR"
        )


def _peer_uid(conn: socket.socket) -> int | None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:  # pragma: no cover - not Linux; the 0700 directory still protects us
        return None
    creds = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class Monitor:
    """Serve read-only task snapshots of some loops over a Unix socket.

    Args:
        path: the socket path; default ``socket_path(os.getpid())``.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path or socket_path(os.getpid())
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def add_loop(self, loop: asyncio.AbstractEventLoop, *, track_tasks: bool = True) -> None:
        """Serve ``loop``'s tasks too; with ``track_tasks``, also start accounting on it
        (creator, age, steps, running time; tidal loops only)."""
        self._loops.add(loop)
        if track_tasks and isinstance(loop, Scheduler):
            track(loop)

    def start(self) -> None:
        """Bind the socket and start serving in a daemon thread.

        Raises:
            PermissionError: the socket directory is not private to this user.
            OSError: the socket cannot be bound.
        """
        directory = os.path.dirname(self.path)
        _private_dir(directory)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a stale socket of a dead process with our pid
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            server.bind(self.path)
        except BaseException:
            server.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        server.listen(8)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="tidal-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket."""
        self._closing.set()
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # -- the serving thread ------------------------------------------------------------------

    def _serve(self) -> None:
        server = self._server
        while server is not None and not self._closing.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed by stop()
            with conn:
                try:
                    self._handle(conn)
                except OSError:
                    continue  # the client went away; nothing to clean up

    def _handle(self, conn: socket.socket) -> None:
        uid = _peer_uid(conn)
        if uid is not None and uid != os.getuid():
            conn.sendall(_encode({"ok": False, "error": "permission denied: not the same user"}))
            return
        conn.sendall(_encode(self._reply(_read_request(conn))))

    def _reply(self, command: str) -> dict[str, Any]:
        """The JSON reply to one request line (already authenticated)."""
        if command == "ping":
            reply: dict[str, Any] = {"ok": True, "pid": os.getpid()}
        elif command == "snapshot":
            reply = {"ok": True, "pid": os.getpid(), "loops": self.snapshots()}
        else:
            reply = {
                "ok": False,
                "error": f"unknown command {command[:40]!r}; commands: {', '.join(COMMANDS)}",
            }
        return reply

    def snapshots(self) -> list[dict[str, Any]]:
        """A snapshot dict of every monitored loop that is still open."""
        out = []
        for loop in list(self._loops):
            if loop.is_closed():
                continue
            out.append(take_snapshot(loop).to_dict())
        return out


def _read_request(conn: socket.socket) -> str:
    """The first line a client sends (bounded in size and time), stripped."""
    conn.settimeout(REQUEST_TIMEOUT)
    request = b""
    while b"\n" not in request and len(request) <= MAX_REQUEST:
        chunk = conn.recv(MAX_REQUEST)
        if not chunk:
            break
        request += chunk
    return request.split(b"\n", 1)[0].decode("ascii", "replace").strip()


def take_snapshot(loop: asyncio.AbstractEventLoop, timeout: float = ANSWER_TIMEOUT) -> Snapshot:
    """A snapshot of ``loop`` taken on its own thread if it answers within ``timeout``, else
    from this thread with the loop thread's stack attached."""
    if loop.is_running() and getattr(loop, "_thread_id", None) != threading.get_ident():
        done = threading.Event()
        box: list[Snapshot] = []

        def take() -> None:
            try:
                box.append(snapshot(loop))
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(take)
        except RuntimeError:  # closed meanwhile
            return Snapshot(tasks=(), loop=repr(loop), note="the loop closed")
        if done.wait(timeout) and box:
            return box[0]
        thread_id = getattr(loop, "_thread_id", None)
        stack = thread_stack(thread_id) if thread_id is not None else ()
        base = snapshot(loop, consistent=False)
        return Snapshot(
            tasks=base.tasks,
            loop=base.loop,
            consistent=False,
            loop_stack=stack,
            note=f"the loop did not answer within {timeout:.1f} s: it is blocked; "
            f"tasks were read from outside the loop",
        )
    return snapshot(loop, consistent=True)


def _encode(reply: dict[str, Any]) -> bytes:
    return (json.dumps(reply) + "\n").encode()


# -- the process-wide monitor ---------------------------------------------------------------

_monitor: Monitor | None = None
_monitor_lock = threading.Lock()


def _watch_new_loop(loop: Any) -> None:
    if _monitor is not None:
        _monitor.add_loop(loop)


def enable(loop: asyncio.AbstractEventLoop | None = None, *, path: str | None = None) -> Monitor:
    """Turn on this process's monitor (idempotent) and return it.

    With ``loop``, serve that loop (any asyncio loop); without, serve every tidal loop that
    creates a task from now on, plus the running loop if there is one. Task accounting
    (creator, age, steps, running time) is turned on for the tidal loops served.

    Raises:
        PermissionError, OSError: see ``Monitor.start``.
    """
    global _monitor
    with _monitor_lock:
        if _monitor is None:
            monitor = Monitor(path)
            monitor.start()
            _monitor = monitor
            atexit.register(disable)
            _remove_socket_on_sigterm()
            if loop is None:
                add_loop_watcher(_watch_new_loop)
        monitor = _monitor
    target = loop if loop is not None else asyncio.events._get_running_loop()
    if target is not None:
        monitor.add_loop(target)
    return monitor


def disable() -> None:
    """Turn the process's monitor off and remove its socket (no error if it is off)."""
    global _monitor
    with _monitor_lock:
        monitor, _monitor = _monitor, None
    if monitor is not None:
        remove_loop_watcher(_watch_new_loop)
        atexit.unregister(disable)
        if _in_main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        monitor.stop()


# SIGTERM's default action ends the process without running atexit, which would leave the socket
# behind. While the program has not chosen a SIGTERM handler of its own, ours removes the socket
# and then dies by SIGTERM exactly as before (same exit status, still no atexit). A program that
# installs its own handler exits through atexit, or leaves a socket that ``fetch`` recognises as
# stale: its process is gone.


def _remove_socket_on_sigterm() -> None:
    if _in_main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: object) -> None:
    monitor = _monitor
    if monitor is not None:
        with contextlib.suppress(OSError):
            os.unlink(monitor.path)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# -- the client ------------------------------------------------------------------------------


class MonitorError(Exception):
    """The monitor of another process could not be reached or refused the request."""


def fetch(pid: int, command: str = "snapshot", *, timeout: float = 5.0) -> dict[str, Any]:
    """Ask the monitor of process ``pid`` for ``command``; return its JSON reply.

    Raises:
        MonitorError: no monitor listens for ``pid``, or it answered with an error.
    """
    path = socket_path(pid)
    if not _is_running(pid):
        _remove_stale(path)
        raise MonitorError(f"process {pid} is not running")
    if not os.path.exists(path):
        raise MonitorError(
            f"no tidal monitor for pid {pid} (looked for {path}); start the program with "
            f"'python -m tidal --monitor script.py', or call tidal.observe.monitor.enable() in it"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(path)
            conn.sendall(command.encode("ascii") + b"\n")
            chunks = []
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as exc:
            if not _is_running(pid):  # it died just now, or long ago without removing its socket
                _remove_stale(path)
                raise MonitorError(f"process {pid} is not running") from None
            raise MonitorError(f"cannot talk to the tidal monitor of pid {pid}: {exc}") from exc
    try:
        reply: dict[str, Any] = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise MonitorError(f"the monitor of pid {pid} sent a malformed reply") from exc
    if not reply.get("ok"):
        raise MonitorError(str(reply.get("error", "the monitor refused the request")))
    return reply


def _is_running(pid: int) -> bool:
    """True if process ``pid`` exists and has not exited (a zombie awaiting its parent's wait()
    counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            # "pid (comm) state ...": comm may hold spaces and parentheses, so split at the last ")"
            return stat_file.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill() said it exists


def _remove_stale(path: str) -> None:
    """Remove the socket of a process that is gone (our private directory: only our files)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def fetch_snapshots(pid: int, *, timeout: float = 5.0) -> list[Snapshot]:
    """The task snapshots of every loop process ``pid`` monitors.

    Raises:
        MonitorError: see ``fetch``.
    """
    reply = fetch(pid, "snapshot", timeout=timeout)
    try:
        return [Snapshot.from_dict(item) for item in reply["loops"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise MonitorError(f"the monitor of pid {pid} sent an unexpected reply: {exc}") from exc


# -- the loopback TCP variant ----------------------------------------------------------------


def tcp_info_path(pid: int) -> str:
    """Where the TCP monitor of process ``pid`` writes its address and token."""
    return os.path.join(socket_dir(), f"monitor-{pid}.tcp")


class TcpMonitor(Monitor):
    """The monitor on a loopback TCP port; every request starts with a secret token.

    A request is one line, ``TOKEN COMMAND``. Anyone on the machine can connect to a loopback
    port, so the token is what keeps other users out: 256 random bits, compared in constant
    time, readable only through the 0600 file in our private directory.

    Args:
        host: a loopback address (``127.0.0.1`` or ``::1``); anything else is refused.
        port: the port; 0 picks a free one (``port`` holds the bound one after ``start``).
        token: the secret; default a fresh ``secrets.token_hex(32)``.
        info_path: where host, port and token are written; default ``tcp_info_path(pid)``.

    Raises:
        ValueError: ``host`` is not a loopback address, or ``token`` is shorter than 32.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        info_path: str | None = None,
    ) -> None:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"host must be a loopback IP address such as '127.0.0.1', not {host!r}"
            ) from None
        if not address.is_loopback:
            raise ValueError(
                f"the TCP monitor listens on loopback only; {host!r} is not a loopback "
                f"address (use '127.0.0.1' or '::1')"
            )
        if token is not None and len(token) < 32:
            raise ValueError("token must be at least 32 characters; omit it to get a random one")
        super().__init__(info_path or tcp_info_path(os.getpid()))
        self.host = host
        self.port = port
        self.token = token if token is not None else secrets.token_hex(32)
        self._family = socket.AF_INET6 if address.version == 6 else socket.AF_INET

    def start(self) -> None:
        """Listen on the loopback port, write the info file, start serving.

        Raises:
            PermissionError: the info directory is not private to this user.
            OSError: the port cannot be bound.
        """
        _private_dir(os.path.dirname(self.path))
        server = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            server.bind((self.host, self.port))
            server.listen(8)
        except BaseException:
            server.close()
            raise
        self.port = server.getsockname()[1]
        info = {"pid": os.getpid(), "host": self.host, "port": self.port, "token": self.token}
        temporary = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        os.replace(temporary, self.path)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="tidal-monitor-tcp", daemon=True)
        self._thread.start()

    def _handle(self, conn: socket.socket) -> None:
        token, _, command = _read_request(conn).partition(" ")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            conn.sendall(_encode({"ok": False, "error": "permission denied: bad or missing token"}))
            return
        conn.sendall(_encode(self._reply(command.strip())))


_tcp_monitor: TcpMonitor | None = None


def _watch_new_loop_tcp(loop: Any) -> None:
    if _tcp_monitor is not None:
        _tcp_monitor.add_loop(loop)


def enable_tcp(
    loop: asyncio.AbstractEventLoop | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> TcpMonitor:
    """Turn on this process's loopback TCP monitor (idempotent) and return it.

    Serves the same loops as ``enable`` would (``loop``, or every tidal loop from now on);
    clients need the token from ``tcp_info_path(pid)`` (``fetch_tcp`` reads it).

    Raises:
        ValueError, PermissionError, OSError: see ``TcpMonitor``.
    """
    global _tcp_monitor
    with _monitor_lock:
        if _tcp_monitor is None:
            monitor = TcpMonitor(host, port)
            monitor.start()
            _tcp_monitor = monitor
            atexit.register(disable_tcp)
            if loop is None:
                add_loop_watcher(_watch_new_loop_tcp)
        monitor = _tcp_monitor
    target = loop if loop is not None else asyncio.events._get_running_loop()
    if target is not None:
        monitor.add_loop(target)
    return monitor


def disable_tcp() -> None:
    """Turn the TCP monitor off and remove its info file (no error if it is off)."""
    global _tcp_monitor
    with _monitor_lock:
        monitor, _tcp_monitor = _tcp_monitor, None
    if monitor is not None:
        remove_loop_watcher(_watch_new_loop_tcp)
        atexit.unregister(disable_tcp)
        monitor.stop()


def fetch_tcp(
    pid: int, command: str = "snapshot", *, info_path: str | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    """Ask the TCP monitor of process ``pid`` for ``command``, with the token from its file.

    Raises:
        MonitorError: no TCP monitor info for ``pid``, or the monitor refused or went away.
    """
    path = info_path or tcp_info_path(pid)
    try:
        with open(path) as f:
            info = json.load(f)
        host, port, token = str(info["host"]), int(info["port"]), str(info["token"])
    except FileNotFoundError:
        raise MonitorError(
            f"no tidal TCP monitor for pid {pid} (looked for {path}); "
            f"call tidal.observe.monitor.enable_tcp() in it"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MonitorError(f"cannot read the TCP monitor's info file {path}: {exc}") from exc
    return fetch_address(host, port, token, command, timeout=timeout)


def fetch_address(
    host: str, port: int, token: str, command: str = "snapshot", *, timeout: float = 5.0
) -> dict[str, Any]:
    """Send ``TOKEN COMMAND`` to a TCP monitor at ``host:port``; return its JSON reply.

    Raises:
        MonitorError: it cannot be reached, or it refused the request.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(f"{token} {command}\n".encode("ascii"))
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise MonitorError(f"cannot talk to the tidal TCP monitor at {host}:{port}: {exc}") from exc
    try:
        reply: dict[str, Any] = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise MonitorError(f"the monitor at {host}:{port} sent a malformed reply") from exc
    if not reply.get("ok"):
        raise MonitorError(str(reply.get("error", "the monitor refused the request")))
    return reply
