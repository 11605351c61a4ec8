"""Child processes: ``loop.subprocess_exec``/``subprocess_shell`` and reaping every child.

Owns: ``SubprocessTransport`` (an ``asyncio.SubprocessTransport`` around a ``subprocess.Popen``
whose pipes are tidal pipe transports), the per-loop ``ChildReaper`` that learns when a child
exits and reaps it, and the hand-off of still-running children when the loop closes.
Not here: the pipe transports themselves (transports/pipe.py), the stream-level API
(``asyncio.create_subprocess_exec`` and ``asyncio.subprocess.Process`` are asyncio's own and
run unchanged on top of this module), signal handlers (signals.py).

Lifecycle of a SubprocessTransport, as a ``SubprocessProtocol`` sees it:

    start -> connection_made [-> pipe_data_received* | pipe_connection_lost(fd)* |
             process_exited]  -> connection_lost

``process_exited`` and each ``pipe_connection_lost`` come in the order the loop learns of
them; ``connection_lost`` comes last, once the process has exited *and* every pipe is closed,
and it wakes the ``_wait()`` futures (``Process.wait`` awaits ``transport._wait()``).
Events that happen before the pipes are connected are queued (``_pending_calls``) and
replayed right after ``connection_made``.

Spawning: ``subprocess.Popen`` does not return until the child has exec'ed or failed to: it
blocks reading an exec-status pipe, for as long as the fork and exec take (milliseconds; more
under memory pressure or with a large parent). asyncio's loop blocks on it; tidal runs Popen in a
short-lived thread and awaits its outcome, so the loop keeps turning and tools that flag blocking
calls on the loop thread (blockbuster) find none. The semantics are asyncio's: an exec error
(no such program, not executable, bad ``cwd``) is raised from ``subprocess_exec``/
``create_subprocess_exec``, and a caller cancelled while the child starts leaves no child (it is
killed and reaped). One exception: with a ``preexec_fn``, Popen runs on the loop thread, as on
asyncio's loop, because the child's parent thread is observable from there (Linux's
``PR_SET_PDEATHSIG``, which a preexec_fn may set, fires when the *thread* that forked the child
exits, and the spawning thread exits at once).

How children are reaped (no child watcher, no SIGCHLD handler):
- pidfd (Linux >= 5.3): ``os.pidfd_open(pid)`` gives a descriptor that becomes readable when
  the child exits. It is registered with the loop's ``add_reader``; the callback reaps the
  child with ``waitpid(pid)`` and closes the pidfd. Signals go through
  ``signal.pidfd_send_signal``, which cannot hit a recycled pid.
- Otherwise, one daemon thread per child blocks in ``os.waitid(P_PID, pid, WEXITED|WNOWAIT)``,
  which waits for the exit *without* reaping, and reports through ``call_soon_threadsafe``;
  the loop thread then reaps. Reaping only in the loop thread means a ``send_signal`` on the
  loop thread cannot race with the reap and hit a recycled pid. Where ``os.waitid`` is
  missing (macOS), the thread reaps with a blocking ``waitpid`` itself, as asyncio's
  ThreadedChildWatcher does.
- Only the pids this loop started are ever waited for: no ``waitpid(-1)``, no global SIGCHLD
  handler, so other libraries' children are never stolen. asyncio's policy-level child
  watchers (3.11-3.13) are never created or consulted.
- If something else reaps our child first (typically ``Popen.poll()`` on the object from
  ``get_extra_info('subprocess')``), the exit status recorded on the Popen object is used; if
  there is none, the return code is 255 and a warning is logged, as asyncio does.
- When the loop closes with children still running, each one is handed to a daemon thread
  that reaps it whenever it exits: a closed loop leaves no zombies behind.

Invariants:
- The Popen object's ``returncode`` is set as soon as tidal reaps the child, so ``Popen``
  never reports it as still running nor queues it for ``subprocess._cleanup``.
- A ``_Child`` is in its reaper's ``_children`` until its exit was delivered or the loop
  closed; its pidfd is open exactly while it is registered with the loop.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

from .core.errors import FATAL_EXCEPTIONS

if TYPE_CHECKING:
    from .loop import EventLoop

_ProtocolT = TypeVar("_ProtocolT", bound=asyncio.BaseProtocol)

# asyncio's logger, so that existing logging configuration covers tidal's reports too.
logger: Final = logging.getLogger("asyncio")

# Return code reported when a child's exit status was consumed by someone else (asyncio's).
UNKNOWN_RETURNCODE: Final = 255

_pidfd_open: Callable[[int], int] | None = getattr(os, "pidfd_open", None)
_pidfd_send_signal: Callable[[int, int], None] | None = getattr(signal, "pidfd_send_signal", None)
_HAVE_WAITID: Final = hasattr(os, "waitid")

# Cleared at run time if the kernel refuses pidfd_open (ENOSYS on Linux < 5.3, or a seccomp
# sandbox): every later child then goes straight to the thread fallback. Tests set it to False
# to exercise the fallback on a kernel that has pidfds.
use_pidfd: bool = _pidfd_open is not None


# -- loop.subprocess_exec / subprocess_shell -------------------------------------------------


def _check_popen_options(bufsize: int, encoding: Any, errors: Any, text: Any) -> None:
    # asyncio's checks, in asyncio's order; the pipes carry bytes, decoding is the caller's.
    if bufsize != 0:
        raise ValueError("bufsize must be 0: the transports do their own buffering")
    if text:
        raise ValueError("text must be False: subprocess pipes carry bytes")
    if encoding is not None:
        raise ValueError("encoding must be None: decode the bytes you receive yourself")
    if errors is not None:
        raise ValueError("errors must be None: decode the bytes you receive yourself")


async def subprocess_exec(
    loop: EventLoop,
    protocol_factory: Callable[[], _ProtocolT],
    program: Any,
    *args: Any,
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    universal_newlines: bool,
    shell: bool,
    bufsize: int,
    encoding: Any,
    errors: Any,
    text: Any,
    **kwargs: Any,
) -> tuple[SubprocessTransport, _ProtocolT]:
    """Run ``program`` with ``args`` (no shell); see ``EventLoop.subprocess_exec``."""
    if universal_newlines:
        raise ValueError("universal_newlines must be False: subprocess pipes carry bytes")
    if shell:
        raise ValueError("shell must be False: use loop.subprocess_shell() to run a shell")
    _check_popen_options(bufsize, encoding, errors, text)
    protocol = protocol_factory()
    if loop.get_debug():
        # Arguments are not logged: they may hold secrets.
        _log_start(f"execute program {program!r}", stdin, stdout, stderr)
    transport = await _start(loop, protocol, (program, *args), False, stdin, stdout, stderr, kwargs)
    return transport, protocol


async def subprocess_shell(
    loop: EventLoop,
    protocol_factory: Callable[[], _ProtocolT],
    cmd: bytes | str,
    *,
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    universal_newlines: bool,
    shell: bool,
    bufsize: int,
    encoding: Any,
    errors: Any,
    text: Any,
    **kwargs: Any,
) -> tuple[SubprocessTransport, _ProtocolT]:
    """Run ``cmd`` through the shell; see ``EventLoop.subprocess_shell``."""
    if not isinstance(cmd, (bytes, str)):
        raise ValueError("cmd must be a string (a list of arguments goes to subprocess_exec)")
    if universal_newlines:
        raise ValueError("universal_newlines must be False: subprocess pipes carry bytes")
    if not shell:
        raise ValueError("shell must be True: use loop.subprocess_exec() to run without one")
    _check_popen_options(bufsize, encoding, errors, text)
    protocol = protocol_factory()
    if loop.get_debug():
        _log_start("run shell command", stdin, stdout, stderr)
    transport = await _start(loop, protocol, cmd, True, stdin, stdout, stderr, kwargs)
    return transport, protocol


def _log_start(what: str, stdin: Any, stdout: Any, stderr: Any) -> None:
    def describe(name: str, value: Any) -> str:
        if value == subprocess.PIPE:
            return f"{name}=<pipe>"
        if value == subprocess.STDOUT:
            return f"{name}=<stdout>"
        return f"{name}={value!r}"

    logger.debug(
        "%s %s %s %s",
        what,
        describe("stdin", stdin),
        describe("stdout", stdout),
        describe("stderr", stderr),
    )


async def _start(
    loop: EventLoop,
    protocol: asyncio.BaseProtocol,
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    kwargs: dict[str, Any],
) -> SubprocessTransport:
    loop._check_closed()  # before spawning: a closed loop could never reap the child
    popen_kwargs = dict(
        kwargs,
        shell=shell,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        universal_newlines=False,
        bufsize=0,
    )
    if popen_kwargs.get("preexec_fn") is None:
        proc = await _spawn_in_thread(loop, args, popen_kwargs)
    else:
        proc = subprocess.Popen(args, **popen_kwargs)  # see "Spawning" in the module docstring
    waiter: asyncio.Future[None] = loop.create_future()
    transport = SubprocessTransport(
        loop, protocol, proc, args, stdin, stdout, stderr, waiter=waiter
    )
    try:
        await waiter
    except FATAL_EXCEPTIONS:
        raise
    except BaseException:
        # Cancelled or a pipe failed to connect: kill the child and wait for it, so that the
        # caller never gets an exception while a process it cannot see keeps running.
        transport.close()
        await transport._wait()
        raise
    if loop.get_debug():
        logger.info("process started: %r", transport)
    return transport


# -- spawning -----------------------------------------------------------------------------------


async def _spawn_in_thread(
    loop: EventLoop, args: Any, popen_kwargs: dict[str, Any]
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **popen_kwargs)`` in a short-lived thread; its outcome here.

    Popen blocks until the child has exec'ed (or failed to): it reads the exec-status pipe.
    If the caller is cancelled (or the loop closes) meanwhile, the child that nobody will own
    is killed, its pipes closed and it is reaped, so it is never left behind.
    """
    spawned: asyncio.Future[subprocess.Popen[bytes]] = loop.create_future()
    thread = threading.Thread(
        target=_spawn, args=(loop, spawned, args, popen_kwargs), name="tidal-spawn", daemon=True
    )
    thread.start()
    try:
        return await asyncio.shield(spawned)
    except asyncio.CancelledError:
        # As when cancelled while the pipes connect (_start): the caller gets CancelledError
        # only once the child it will never see is gone. A second cancellation stops the wait;
        # _deliver_spawned then kills the child and reaps it in the background.
        try:
            proc = await spawned
        except Exception:
            pass  # the spawn failed: there is no child to clean up
        else:
            _discard_child(proc)
            exited: asyncio.Future[int] = loop.create_future()
            reaper_for(loop).watch(proc, exited.set_result)
            await exited
        raise


def _spawn(
    loop: EventLoop,
    spawned: asyncio.Future[subprocess.Popen[bytes]],
    args: Any,
    popen_kwargs: dict[str, Any],
) -> None:
    """The spawning thread: run Popen and hand its outcome to the loop."""
    try:
        proc = subprocess.Popen(args, **popen_kwargs)
    except BaseException as exc:
        try:
            loop.call_soon_threadsafe(_deliver_spawn_error, spawned, exc)
        except RuntimeError:
            pass  # the loop closed: nobody is waiting for the error
        return
    try:
        loop.call_soon_threadsafe(_deliver_spawned, spawned, proc)
    except RuntimeError:  # the loop closed meanwhile: the child has no owner
        _discard_child(proc)
        _reap(proc)


def _deliver_spawn_error(
    spawned: asyncio.Future[subprocess.Popen[bytes]], exc: BaseException
) -> None:
    if not spawned.done():
        spawned.set_exception(exc)


def _deliver_spawned(
    spawned: asyncio.Future[subprocess.Popen[bytes]], proc: subprocess.Popen[bytes]
) -> None:
    if spawned.done():  # the caller was cancelled while the child started
        _discard_child(proc)
        _reap_eventually(proc)
    else:
        spawned.set_result(proc)


def _discard_child(proc: subprocess.Popen[bytes]) -> None:
    """Kill a child nobody owns and close the pipe ends Popen opened for it."""
    try:
        proc.kill()
    except ProcessLookupError:  # pragma: no cover - it exited and was reaped already
        pass
    for pipe_file in (proc.stdin, proc.stdout, proc.stderr):
        if pipe_file is not None:
            pipe_file.close()


# -- the transport ----------------------------------------------------------------------------


class _PipeProtocol(asyncio.Protocol):
    """Routes one pipe's events to its SubprocessTransport, tagged with the child's fd."""

    def __init__(self, owner: SubprocessTransport, fd: int) -> None:
        self.owner: SubprocessTransport | None = owner
        self.fd = fd
        self.pipe: Any = None  # the pipe transport, set by connection_made
        self.disconnected = False

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} fd={self.fd} pipe={self.pipe!r}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.pipe = transport

    def data_received(self, data: bytes) -> None:
        if self.owner is not None:
            self.owner._pipe_data_received(self.fd, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        owner, self.owner = self.owner, None
        if owner is not None:
            owner._pipe_connection_lost(self.fd, exc)

    def pause_writing(self) -> None:
        protocol = self.owner._protocol if self.owner is not None else None
        if protocol is not None:
            protocol.pause_writing()

    def resume_writing(self) -> None:
        protocol = self.owner._protocol if self.owner is not None else None
        if protocol is not None:
            protocol.resume_writing()


class SubprocessTransport(asyncio.SubprocessTransport):
    """A child process with up to three pipes, reported to a ``SubprocessProtocol``."""

    _extra: dict[str, Any]  # asyncio.BaseTransport's, untyped in typeshed

    def __init__(
        self,
        loop: EventLoop,
        protocol: asyncio.BaseProtocol,
        proc: subprocess.Popen[bytes],
        args: Any,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        *,
        waiter: asyncio.Future[None] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._protocol: Any = protocol  # None once connection_lost has run
        self._closed = False  # close() was called
        self._proc: subprocess.Popen[bytes] | None = None  # None before start and after finish
        self._pid: int | None = None
        self._returncode: int | None = None  # set when tidal learns of the exit
        self._child: _Child | None = None  # the reaper's record while the child is watched
        self._exit_waiters: list[asyncio.Future[int]] | None = []  # None after finish
        # Protocol calls made before connection_made, replayed right after it; None after.
        self._pending_calls: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]]
        self._pending_calls = collections.deque()
        # fd -> its _PipeProtocol once connected; None while connecting. PIPE fds only.
        self._pipes: dict[int, _PipeProtocol | None] = {}
        self._finished = False  # connection_lost is scheduled
        for fd, spec in ((0, stdin), (1, stdout), (2, stderr)):
            if spec == subprocess.PIPE:
                self._pipes[fd] = None
        self._proc = proc  # started by _start(), off the loop thread where it can be
        self._pid = self._proc.pid
        self._extra["subprocess"] = self._proc
        if loop.get_debug():
            program = args if isinstance(args, (bytes, str)) else args[0]
            logger.debug("process %r created: pid %s", program, self._pid)
        self._child = reaper_for(loop).watch(self._proc, self._process_exited)
        loop.create_task(self._connect_pipes(waiter))

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._closed:
            info.append("closed")
        if self._pid is not None:
            info.append(f"pid={self._pid}")
        if self._returncode is not None:
            info.append(f"returncode={self._returncode}")
        elif self._pid is not None:
            info.append("running")
        else:
            info.append("not started")
        for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
            pipe = self._pipes.get(fd)
            if pipe is not None:
                info.append(f"{name}={pipe.pipe}")
        return "<{}>".format(" ".join(info))

    def __del__(
        self,
        _warn: Callable[..., None] = warnings.warn,
        _finalizing: Callable[[], bool] = sys.is_finalizing,
    ) -> None:
        if not getattr(self, "_closed", True):
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if not _finalizing():  # at interpreter shutdown module globals may be gone
                self.close()

    async def _connect_pipes(self, waiter: asyncio.Future[None] | None) -> None:
        # Through the loop's public methods (not the transport classes), so that anything that
        # wraps loop.connect_*_pipe sees subprocess pipes too.
        loop = self._loop
        proc = self._proc
        assert proc is not None
        try:
            for fd, pipe_file in ((0, proc.stdin), (1, proc.stdout), (2, proc.stderr)):
                if pipe_file is None:
                    continue
                connect = loop.connect_write_pipe if fd == 0 else loop.connect_read_pipe
                _, route = await connect(functools.partial(_PipeProtocol, self, fd), pipe_file)
                self._pipes[fd] = route
                if self._closed:
                    route.pipe.close()  # close() ran while this pipe was connecting
            loop.call_soon(self._protocol.connection_made, self)
            pending, self._pending_calls = self._pending_calls, None  # type: ignore[assignment]
            for callback, args in pending:
                loop.call_soon(callback, *args)
        except FATAL_EXCEPTIONS:
            raise
        except asyncio.CancelledError:
            self._abandon_unconnected_pipes()
            if waiter is not None:
                waiter.cancel()
        except BaseException as exc:
            self._abandon_unconnected_pipes()
            if waiter is not None and not waiter.cancelled():
                waiter.set_exception(exc)
        else:
            if waiter is not None and not waiter.cancelled():
                waiter.set_result(None)

    def _abandon_unconnected_pipes(self) -> None:
        # Connecting the pipes failed: the caller gets the exception and the protocol never
        # got connection_made, so it hears nothing more. A pipe that never got a transport
        # would never report connection_lost, and _try_finish would wait for it forever
        # (asyncio's _wait() hangs in this case); drop such pipes instead.
        proc = self._proc
        for fd, route in list(self._pipes.items()):
            if route is None:
                del self._pipes[fd]
                pipe_file = None if proc is None else (proc.stdin, proc.stdout, proc.stderr)[fd]
                if pipe_file is not None:
                    pipe_file.close()
        self._protocol = asyncio.SubprocessProtocol()  # receives the events from here on
        pending, self._pending_calls = self._pending_calls, None  # type: ignore[assignment]
        for callback, args in pending or ():
            if callback == self._call_connection_lost:  # the exit waiters still need it
                self._loop.call_soon(callback, *args)
        self._try_finish()

    # -- SubprocessTransport API ---------------------------------------------------------------

    def get_pid(self) -> int:
        return self._pid  # type: ignore[return-value]  # None only if Popen() raised

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> Any:
        """The pipe transport for the child's ``fd`` (0, 1 or 2), or None if it has none."""
        route = self._pipes.get(fd)
        return None if route is None else route.pipe

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closed

    def send_signal(self, signal: int) -> None:
        """Send ``signal`` to the child; a no-op once it has exited.

        Raises:
            ProcessLookupError: the transport has finished (``connection_lost`` ran).
        """
        if self._proc is None:
            raise ProcessLookupError("the process has exited and its transport has finished")
        if self._returncode is not None:
            return  # reaped: its pid may already belong to another process
        child = self._child
        try:
            if child is not None and child.pidfd >= 0 and _pidfd_send_signal is not None:
                _pidfd_send_signal(child.pidfd, signal)
            else:
                os.kill(self._proc.pid, signal)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        """Send SIGTERM to the child (see ``send_signal``)."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL to the child (see ``send_signal``)."""
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Close the pipes and kill the child with SIGKILL if it is still running.

        ``connection_lost`` follows once the child has exited and every pipe is closed.
        """
        if self._closed:
            return
        self._closed = True
        for route in self._pipes.values():
            if route is not None and route.pipe is not None:
                route.pipe.close()
        proc = self._proc
        if proc is not None and self._returncode is None and _still_running(proc):
            if self._loop.get_debug():
                logger.warning("Close running child process: kill %r", self)
            try:
                proc.kill()
            except (ProcessLookupError, PermissionError):
                pass  # exited meanwhile, or a setuid child we may not signal

    async def _wait(self) -> int:
        """Return the exit code once the process has exited (asyncio's Process.wait uses it).

        If the exit is not known yet, this also waits for every pipe to close, as asyncio does.
        """
        if self._returncode is not None:
            return self._returncode
        waiter: asyncio.Future[int] = self._loop.create_future()
        assert self._exit_waiters is not None
        self._exit_waiters.append(waiter)
        return await waiter

    # -- events from the pipes and the reaper ----------------------------------------------

    def _call(self, callback: Callable[..., object], *args: Any) -> None:
        if self._pending_calls is not None:
            self._pending_calls.append((callback, args))
        else:
            self._loop.call_soon(callback, *args)

    def _pipe_data_received(self, fd: int, data: bytes) -> None:
        self._call(self._protocol.pipe_data_received, fd, data)

    def _pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        self._call(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _process_exited(self, returncode: int) -> None:
        self._child = None
        self._returncode = returncode
        if self._loop.get_debug():
            logger.info("%r exited with return code %r", self, returncode)
        self._call(self._protocol.process_exited)
        self._try_finish()

    def _try_finish(self) -> None:
        if self._returncode is None or self._finished:
            return
        if all(route is not None and route.disconnected for route in self._pipes.values()):
            self._finished = True
            self._call(self._call_connection_lost, None)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            waiters, self._exit_waiters = self._exit_waiters, None
            for waiter in waiters or ():
                if not waiter.cancelled():
                    waiter.set_result(self._returncode)  # type: ignore[arg-type]
            self._proc = None
            self._protocol = None


def _still_running(proc: subprocess.Popen[bytes]) -> bool:
    """True if ``proc`` has not exited; never reaps it (unlike ``Popen.poll``)."""
    if proc.returncode is not None:
        return False
    if not _HAVE_WAITID:  # pragma: no cover - macOS
        return proc.poll() is None
    try:
        # WNOWAIT: look at the exit status without consuming it; None means no state change.
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False  # already reaped by someone else


# -- reaping ------------------------------------------------------------------------------------


class _Child:
    """One child the reaper watches: how it learns of the exit, and where to report it."""

    __slots__ = ("detached", "exit_reported", "lock", "on_exit", "pidfd", "proc")

    def __init__(self, proc: subprocess.Popen[bytes], on_exit: Callable[[int], None]) -> None:
        self.proc = proc
        self.on_exit = on_exit  # called on the loop thread with the return code
        self.pidfd = -1  # open pidfd while registered with the loop, else -1
        self.lock = threading.Lock()  # thread fallback: orders "exited" against "detached"
        self.detached = False  # the loop closed: whoever sees the exit reaps, nobody reports
        self.exit_reported = False  # thread fallback: a loop callback for the exit is queued


class ChildReaper:
    """Per-loop watcher of the children this loop started (see the module docstring)."""

    def __init__(self, loop: EventLoop) -> None:
        self._loop = loop
        self._children: dict[int, _Child] = {}  # pid -> child, until reported or detached

    def watch(self, proc: subprocess.Popen[bytes], on_exit: Callable[[int], None]) -> _Child:
        """Start watching ``proc``; ``on_exit(returncode)`` runs on the loop once it is reaped."""
        global use_pidfd
        child = _Child(proc, on_exit)
        self._children[proc.pid] = child
        if use_pidfd and _pidfd_open is not None:
            try:
                child.pidfd = _pidfd_open(proc.pid)
            except OSError as exc:
                # ENOSYS/EPERM: no pidfds here, use threads from now on. ESRCH cannot
                # happen (an unreaped child keeps its pid) unless someone else reaped it;
                # the thread then reports it at once.
                if not isinstance(exc, ProcessLookupError):
                    use_pidfd = False
            else:
                self._loop.add_reader(child.pidfd, self._pidfd_readable, child)
                return child
        thread = threading.Thread(
            target=self._wait_in_thread,
            args=(child,),
            name=f"tidal-waitpid-{proc.pid}",
            daemon=True,
        )
        thread.start()
        return child

    def _pidfd_readable(self, child: _Child) -> None:
        self._loop.remove_reader(child.pidfd)
        os.close(child.pidfd)
        child.pidfd = -1
        self._report(child)

    def _wait_in_thread(self, child: _Child) -> None:
        pid = child.proc.pid
        if _HAVE_WAITID:
            try:
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # waits, leaves it unreaped
            except ChildProcessError:
                pass  # reaped elsewhere; _reap() reports what it can
            with child.lock:
                if not child.detached:
                    try:
                        self._loop.call_soon_threadsafe(self._report, child)
                    except RuntimeError:
                        child.detached = True  # the loop closed under us
                    else:
                        child.exit_reported = True
                        return
            _reap(child.proc)
            return
        returncode = _reap(child.proc)  # pragma: no cover - macOS: reap here, as asyncio does
        with child.lock:  # pragma: no cover
            if not child.detached:
                try:
                    self._loop.call_soon_threadsafe(self._deliver, child, returncode)
                except RuntimeError:
                    pass

    def _report(self, child: _Child) -> None:
        """Loop thread, the child has exited: reap it and tell its transport."""
        if child.detached:
            return
        self._deliver(child, _reap(child.proc))

    def _deliver(self, child: _Child, returncode: int) -> None:
        if child.detached:  # pragma: no cover - macOS path only
            return
        self._children.pop(child.proc.pid, None)
        child.on_exit(returncode)

    def close(self) -> None:
        """The loop is closing: stop reporting, and make sure every child still gets reaped."""
        children, self._children = self._children, {}
        for child in children.values():
            with child.lock:
                child.detached = True
                reap_now = child.exit_reported  # its queued report was dropped with the loop
            if child.pidfd >= 0:
                os.close(child.pidfd)  # the poller is already closed
                child.pidfd = -1
                _reap_eventually(child.proc)
            elif reap_now:
                _reap(child.proc)  # exited already (waitid said so): does not block
            # Otherwise its waiting thread sees `detached` and reaps the child itself.


def _reap(proc: subprocess.Popen[bytes]) -> int:
    """Reap ``proc``, which has exited, and return its return code (recorded on the Popen)."""
    try:
        _, status = os.waitpid(proc.pid, 0)
    except ChildProcessError:
        if proc.returncode is not None:
            return proc.returncode  # Popen.poll()/wait() got there first
        logger.warning(
            "child process pid %d exit status already read: will report returncode %d",
            proc.pid,
            UNKNOWN_RETURNCODE,
        )
        returncode = UNKNOWN_RETURNCODE
    else:
        try:
            returncode = os.waitstatus_to_exitcode(status)
        except ValueError:  # pragma: no cover - a status the OS should never report
            returncode = status
    if proc.returncode is None:
        proc.returncode = returncode
    return returncode


def _reap_eventually(proc: subprocess.Popen[bytes]) -> None:
    """Reap ``proc`` now if it has exited, else from a daemon thread when it does."""
    if not _still_running(proc):
        if proc.returncode is None:
            _reap(proc)
        return
    if sys.is_finalizing():
        return  # no thread can start now (3.11 hangs trying); init adopts and reaps the child
    threading.Thread(
        target=_reap, args=(proc,), name=f"tidal-waitpid-{proc.pid}", daemon=True
    ).start()


def reaper_for(loop: EventLoop) -> ChildReaper:
    """The loop's ChildReaper, created on first use."""
    reaper = loop._child_reaper
    if reaper is None:
        reaper = loop._child_reaper = ChildReaper(loop)
    return reaper


def close(loop: EventLoop) -> None:
    """Loop-close hook: hand children still running over to reaper threads."""
    reaper = loop._child_reaper
    if reaper is not None:
        reaper.close()
