"""``tidal.EventLoop``: asyncio's whole event-loop API, one hop from each implementation.

Owns: the public class and the parts of the API that sit on top of the scheduler: futures and
tasks, ``run_until_complete``, the default executor, async-generator tracking, name resolution.
Not here: the turn of the loop and callback scheduling (core/scheduler.py), thread pools
(threads.py), coroutine stepping (tasks.py).

Anything asyncio defines and tidal does not implement yet is inherited from
``asyncio.AbstractEventLoop`` and raises ``NotImplementedError``: it never half-works.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import socket
import subprocess
import sys
import warnings
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from typing import IO, Any, Final, TypeVar, TypeVarTuple

from . import signals, threads, tls
from . import subprocess as subprocesses
from . import tasks as _tasks_module
from .core.handles import PACKAGE_DIR
from .core.scheduler import Scheduler
from .futures import Future
from .net import connect, serve, sockops
from .tasks import Task, eager_task_factory
from .transports import pipe as pipes
from .transports import stream

_T = TypeVar("_T")
_ProtocolT = TypeVar("_ProtocolT", bound=asyncio.BaseProtocol)
_Ts = TypeVarTuple("_Ts")

# asyncio's own done callback for run_until_complete: anyio finds the root task by looking for
# exactly this function among the task's callbacks, so tidal uses it rather than a copy.
_run_until_complete_cb: Callable[[Any], None] = asyncio.base_events._run_until_complete_cb  # type: ignore[attr-defined]

# Which Future and Task a loop makes (docs/design.md, decision log 2026-12-02):
# - "native": CPython's C Future and Task, the very classes asyncio's own loop (and uvloop) host.
#   Stepping a coroutine and completing a future then cost no Python frame; the loop still sees
#   every step (each arrives through call_soon as a callback whose __self__ is the task).
# - "python": tidal's own Future and Task (futures.py, tasks.py), the reference implementation,
#   kept selectable and tested: TIDAL_TASKS=python, or new_event_loop(tasks="python").
# Where CPython was built without its C accelerator (_asyncio), "native" means tidal's own.
TASK_IMPLEMENTATIONS: Final = ("native", "python")
_NativeFuture: Any = getattr(asyncio.futures, "_CFuture", None) or Future
_NativeTask: Any = getattr(asyncio.tasks, "_CTask", None) or Task
# The C Task can start eagerly from Python 3.12; on 3.11 eager tasks are always tidal's Task.
_NATIVE_EAGER: Final = _NativeTask is not Task and sys.version_info >= (3, 12)


def _implementation(tasks: str | None) -> str:
    """The Future/Task implementation to use: the argument, else $TIDAL_TASKS, else native."""
    chosen = tasks if tasks is not None else os.environ.get("TIDAL_TASKS") or "native"
    if chosen not in TASK_IMPLEMENTATIONS:
        source = "tasks" if tasks is not None else "TIDAL_TASKS"
        raise ValueError(
            f"{source}={chosen!r} is not a Task implementation; use one of "
            f"{', '.join(TASK_IMPLEMENTATIONS)}"
        )
    return chosen


def _drop_own_frames(source_traceback: list[Any]) -> None:
    """Debug mode: end a task's creation traceback at the user's line, not inside tidal.

    The C Task records the whole stack, create_task included; asyncio drops the last entry.
    tidal drops every trailing entry from its own files instead, because compiled tidal
    functions leave no frames and counting them would cut the user's line.
    """
    while source_traceback and source_traceback[-1].filename.startswith(PACKAGE_DIR):
        del source_traceback[-1]


class EventLoop(Scheduler, asyncio.AbstractEventLoop):
    """An asyncio event loop written from first principles in Python.

    Use it anywhere asyncio takes a loop: ``tidal.run(main())``,
    ``asyncio.Runner(loop_factory=tidal.new_event_loop)``, or ``tidal.install()``.

    Args:
        tasks: the Future and Task the loop makes: "native" (CPython's C classes, the default)
            or "python" (tidal's reference implementation); None reads ``$TIDAL_TASKS``.

    Raises:
        ValueError: ``tasks`` (or ``$TIDAL_TASKS``) names no implementation.
    """

    def __init__(self, *, tasks: str | None = None) -> None:
        implementation = _implementation(tasks)
        super().__init__()
        self._task_implementation = implementation
        native = implementation == "native"
        self._future_class: Any = _NativeFuture if native else Future
        self._task_class: Any = _NativeTask if native else Task
        # The class eager tasks are made of: the C Task can start eagerly from 3.12 only.
        self._eager_task_class: Any = _NativeTask if native and _NATIVE_EAGER else Task
        self._task_factory: Callable[..., Any] | None = None
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_shutdown_called = False  # read and set by anyio, as on asyncio's loop
        self._asyncgens: weakref.WeakSet[AsyncGenerator[Any, Any]] = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        # fd -> the socket transport that owns it; add_reader/sock_* refuse those fds.
        self._transports: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    # -- futures and tasks -------------------------------------------------------------------

    def create_future(self) -> Future[Any]:
        """Return a new Future bound to this loop (see ``TASK_IMPLEMENTATIONS``)."""
        return self._future_class(loop=self)  # type: ignore[no-any-return]

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        """Wrap ``coro`` in a Task (or the task factory's product) and schedule it.

        Raises:
            RuntimeError: the loop is closed.
            TypeError: ``coro`` is not a coroutine.
        """
        if self._closed:
            self._raise_closed()
        factory = self._task_factory
        if factory is None:
            task = self._task_class(coro, loop=self, name=name, context=context)
            if task._source_traceback:
                _drop_own_frames(task._source_traceback)
            observe_spawn = _tasks_module._observe_spawn
            if observe_spawn is not None and type(task) is not Task:
                observe_spawn(task)  # tidal's Task reports itself from __init__
            return task  # type: ignore[no-any-return]
        if factory is eager_task_factory:
            # tidal's own eager factory: build the task here, one call frame fewer per task.
            task = self._eager_task_class(
                coro, loop=self, name=name, context=context, eager_start=True
            )
            observe_spawn = _tasks_module._observe_spawn
            if observe_spawn is not None and type(task) is not Task:
                observe_spawn(task)  # after its eager first step: the C Task can't tell sooner
            return task  # type: ignore[no-any-return]
        task = factory(self, coro) if context is None else factory(self, coro, context=context)
        if name is not None:
            task.set_name(name)
        return task  # type: ignore[no-any-return]

    def set_task_factory(self, factory: Callable[..., Any] | None) -> None:
        """Make ``create_task`` call ``factory(loop, coro[, context=])``; None restores Task.

        Raises:
            TypeError: ``factory`` is neither callable nor None.
        """
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self) -> Callable[..., Any] | None:
        return self._task_factory

    def run_until_complete(self, future: Generator[Any, None, _T] | Awaitable[_T]) -> _T:
        """Run until ``future`` (a coroutine is wrapped in a Task) is done; return its result.

        Raises:
            RuntimeError: the loop is closed or already running, or it was stopped before the
                future completed.
        """
        self._check_closed()
        self._check_running()
        new_task = not asyncio.isfuture(future)
        fut: Any = asyncio.ensure_future(future, loop=self)  # type: ignore[arg-type]
        if new_task:
            # Its exception is raised to our caller, so a pending-task report would be noise.
            fut._log_destroy_pending = False
        fut.add_done_callback(_run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and fut.done() and not fut.cancelled():
                fut.exception()  # the caller has no handle on the task: mark it retrieved
            raise
        finally:
            fut.remove_done_callback(_run_until_complete_cb)
        if not fut.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return fut.result()  # type: ignore[no-any-return]

    # -- executors (threads.py does the work) -----------------------------------------------

    def run_in_executor(  # type: ignore[override]  # typeshed's TypeVarTuple form
        self, executor: concurrent.futures.Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """Run ``func(*args)`` in ``executor`` (the default thread pool if None)."""
        return threads.run_in_executor(self, executor, func, *args)

    def set_default_executor(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:  # type: ignore[override]
        """Use ``executor`` for ``run_in_executor(None, ...)``; it must be a ThreadPoolExecutor."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError(
                f"executor must be ThreadPoolExecutor instance, got {type(executor).__name__}"
            )
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Wait for the default executor's threads to finish (warn after ``timeout`` s)."""
        await threads.shutdown_default_executor(self, timeout)

    def close(self) -> None:
        """Close the loop and shut the default executor down without waiting.

        Raises:
            RuntimeError: the loop is running.
        """
        was_open = not self._closed
        super().close()  # raises the clear error if the loop is running
        if not was_open:
            return
        self._release_signals_and_children()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # -- async generators ----------------------------------------------------------------------

    def _install_asyncgen_hooks(self) -> None:
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
        )

    def _asyncgen_firstiter_hook(self, agen: AsyncGenerator[Any, Any]) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen: AsyncGenerator[Any, Any]) -> None:
        self._asyncgens.discard(agen)
        if not self._closed:
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        """Close every async generator this loop saw start and that is still suspended."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await asyncio.gather(*[ag.aclose() for ag in closing], return_exceptions=True)
        for result, agen in zip(results, closing, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # -- name resolution (blocking calls, so they run in the default executor) -------------

    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        """``socket.getaddrinfo`` without blocking the loop."""
        return await self.run_in_executor(
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        """``socket.getnameinfo`` without blocking the loop."""
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    # -- pipes, subprocesses, signals (transports/pipe.py, subprocess.py, signals.py) ------

    _signal_dispatcher: signals.SignalDispatcher | None = None  # made by add_signal_handler
    _child_reaper: subprocesses.ChildReaper | None = None  # made by the first subprocess

    async def connect_read_pipe(
        self, protocol_factory: Callable[[], _ProtocolT], pipe: Any
    ) -> tuple[asyncio.ReadTransport, _ProtocolT]:
        """Feed the read end of a pipe, FIFO, socket or character device to a protocol.

        Args:
            protocol_factory: returns the Protocol (or BufferedProtocol) to feed.
            pipe: a file-like object with ``fileno()``; it is made non-blocking and is closed
                with the transport.

        Returns:
            ``(transport, protocol)`` once ``protocol.connection_made`` has run.

        Raises:
            ValueError: ``pipe`` is a regular file or another kind poll cannot watch.
        """
        return await pipes.connect_read_pipe(self, protocol_factory, pipe)

    async def connect_write_pipe(
        self, protocol_factory: Callable[[], _ProtocolT], pipe: Any
    ) -> tuple[asyncio.WriteTransport, _ProtocolT]:
        """Wrap the write end of a pipe, FIFO, socket or character device in a transport.

        Args:
            protocol_factory: returns the Protocol; it gets ``pause_writing``/``resume_writing``.
            pipe: a file-like object with ``fileno()``; it is made non-blocking and is closed
                with the transport.

        Returns:
            ``(transport, protocol)`` once ``protocol.connection_made`` has run.

        Raises:
            ValueError: ``pipe`` is a regular file or another kind poll cannot watch.
        """
        return await pipes.connect_write_pipe(self, protocol_factory, pipe)

    async def subprocess_exec(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        program: Any,
        *args: Any,
        stdin: int | IO[Any] | None = subprocess.PIPE,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.PIPE,
        universal_newlines: bool = False,
        shell: bool = False,
        bufsize: int = 0,
        encoding: None = None,
        errors: None = None,
        text: bool | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.SubprocessTransport, _ProtocolT]:
        """Start ``program`` with ``args`` (no shell), its pipes reported to a protocol.

        Args:
            protocol_factory: returns the SubprocessProtocol.
            program, args: the command, as for ``subprocess.Popen``.
            stdin, stdout, stderr: ``subprocess.PIPE`` (default), ``DEVNULL``, ``STDOUT``
                (stderr only), a file object, a descriptor, or None to inherit.
            kwargs: passed on to ``subprocess.Popen`` (``cwd``, ``env``, ``pass_fds`` ...).

        Returns:
            ``(transport, protocol)`` once ``protocol.connection_made`` has run.

        Raises:
            ValueError: ``shell``, ``universal_newlines`` or ``text`` is true, ``bufsize`` is
                not 0, or ``encoding``/``errors`` is given (the pipes carry bytes).
            OSError: the program could not be started.
        """
        return await subprocesses.subprocess_exec(
            self, protocol_factory, program, *args, stdin=stdin, stdout=stdout, stderr=stderr,
            universal_newlines=universal_newlines, shell=shell, bufsize=bufsize,
            encoding=encoding, errors=errors, text=text, **kwargs,
        )  # fmt: skip

    async def subprocess_shell(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        cmd: bytes | str,
        *,
        stdin: int | IO[Any] | None = subprocess.PIPE,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.PIPE,
        universal_newlines: bool = False,
        shell: bool = True,
        bufsize: int = 0,
        encoding: None = None,
        errors: None = None,
        text: bool | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.SubprocessTransport, _ProtocolT]:
        """Run ``cmd`` through the shell, its pipes reported to a protocol.

        Same arguments, result and errors as ``subprocess_exec``, with ``cmd`` a string and
        ``shell`` necessarily True.
        """
        return await subprocesses.subprocess_shell(
            self, protocol_factory, cmd, stdin=stdin, stdout=stdout, stderr=stderr,
            universal_newlines=universal_newlines, shell=shell, bufsize=bufsize,
            encoding=encoding, errors=errors, text=text, **kwargs,
        )  # fmt: skip

    def add_signal_handler(self, sig: int, callback: Callable[[*_Ts], object], *args: *_Ts) -> None:
        """Run ``callback(*args)`` as a loop callback whenever signal ``sig`` arrives.

        Raises:
            TypeError: ``sig`` is not an int, or ``callback`` is a coroutine function or not
                callable.
            ValueError: ``sig`` is not a valid signal number.
            RuntimeError: not in the main thread, the loop is closed, or ``sig`` cannot be
                caught (SIGKILL, SIGSTOP).
        """
        signals.dispatcher_for(self).add(sig, callback, args)

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for ``sig`` and restore the disposition it had before.

        Returns:
            True if a handler was removed, False if ``sig`` had none.

        Raises:
            TypeError, ValueError: ``sig`` is not a valid signal number.
        """
        return signals.remove_signal_handler(self, sig)

    def _release_signals_and_children(self) -> None:
        """close() hook: remove signal handlers, restore the wake-up fd, hand children off."""
        signals.close(self)
        subprocesses.close(self)

    # -- network (net/, transports/, tls.py) ---------------------------------------------------
    # Each method returns its implementation's coroutine directly (no extra frame); the
    # implementations carry the full signatures and docstrings.

    def add_reader(self, fd: Any, callback: Callable[[*_Ts], object], *args: *_Ts) -> None:
        """Run ``callback(*args)`` whenever ``fd`` is readable (not on a transport's fd)."""
        sockops.ensure_fd_no_transport(self, fd)
        Scheduler.add_reader(self, fd, callback, *args)

    def add_writer(self, fd: Any, callback: Callable[[*_Ts], object], *args: *_Ts) -> None:
        """Run ``callback(*args)`` whenever ``fd`` is writable (not on a transport's fd)."""
        sockops.ensure_fd_no_transport(self, fd)
        Scheduler.add_writer(self, fd, callback, *args)

    def remove_reader(self, fd: Any) -> bool:
        """Stop watching ``fd`` for reading; return True if it was watched."""
        sockops.ensure_fd_no_transport(self, fd)
        return Scheduler.remove_reader(self, fd)

    def remove_writer(self, fd: Any) -> bool:
        """Stop watching ``fd`` for writing; return True if it was watched."""
        sockops.ensure_fd_no_transport(self, fd)
        return Scheduler.remove_writer(self, fd)

    def sock_recv(self, sock: socket.socket, nbytes: int) -> Coroutine[Any, Any, bytes]:
        return sockops.sock_recv(self, sock, nbytes)

    def sock_recv_into(self, sock: socket.socket, buf: Any) -> Coroutine[Any, Any, int]:
        return sockops.sock_recv_into(self, sock, buf)

    def sock_recvfrom(self, sock: socket.socket, bufsize: int) -> Coroutine[Any, Any, Any]:
        return sockops.sock_recvfrom(self, sock, bufsize)

    def sock_recvfrom_into(
        self, sock: socket.socket, buf: Any, nbytes: int = 0
    ) -> Coroutine[Any, Any, Any]:
        return sockops.sock_recvfrom_into(self, sock, buf, nbytes)

    def sock_sendall(self, sock: socket.socket, data: Any) -> Coroutine[Any, Any, None]:
        return sockops.sock_sendall(self, sock, data)

    def sock_sendto(self, sock: socket.socket, data: Any, address: Any) -> Coroutine[Any, Any, int]:
        return sockops.sock_sendto(self, sock, data, address)

    def sock_connect(self, sock: socket.socket, address: Any) -> Coroutine[Any, Any, None]:
        return sockops.sock_connect(self, sock, address)

    def sock_accept(self, sock: socket.socket) -> Coroutine[Any, Any, Any]:
        return sockops.sock_accept(self, sock)

    def sock_sendfile(
        self, sock: socket.socket, file: Any, offset: int = 0, count: int | None = None, **kw: Any
    ) -> Coroutine[Any, Any, int]:
        return sockops.sock_sendfile(self, sock, file, offset, count, **kw)

    def create_connection(
        self, protocol_factory: Any, host: Any = None, port: Any = None, **kw: Any
    ) -> Coroutine[Any, Any, Any]:
        return connect.create_connection(self, protocol_factory, host, port, **kw)

    def create_server(
        self, protocol_factory: Any, host: Any = None, port: Any = None, **kw: Any
    ) -> Coroutine[Any, Any, Any]:
        return serve.create_server(self, protocol_factory, host, port, **kw)

    def create_unix_connection(
        self, protocol_factory: Any, path: Any = None, **kw: Any
    ) -> Coroutine[Any, Any, Any]:
        return connect.create_unix_connection(self, protocol_factory, path, **kw)

    def create_unix_server(
        self, protocol_factory: Any, path: Any = None, **kw: Any
    ) -> Coroutine[Any, Any, Any]:
        return serve.create_unix_server(self, protocol_factory, path, **kw)

    def connect_accepted_socket(
        self, protocol_factory: Any, sock: Any, **kw: Any
    ) -> Coroutine[Any, Any, Any]:
        return connect.connect_accepted_socket(self, protocol_factory, sock, **kw)

    def create_datagram_endpoint(
        self, protocol_factory: Any, local_addr: Any = None, remote_addr: Any = None, **kw: Any
    ) -> Coroutine[Any, Any, Any]:
        return connect.create_datagram_endpoint(
            self, protocol_factory, local_addr, remote_addr, **kw
        )

    def sendfile(
        self, transport: Any, file: Any, offset: int = 0, count: int | None = None, **kw: Any
    ) -> Coroutine[Any, Any, int]:
        return stream.sendfile(self, transport, file, offset, count, **kw)

    def _stop_serving(self, sock: socket.socket) -> None:
        """Stop accepting on ``sock`` and close it (asyncio's private name; its tests use it)."""
        serve.stop_accepting(self, sock)

    def _sendfile_native(
        self, transport: Any, file: Any, offset: int, count: int | None
    ) -> Coroutine[Any, Any, int]:
        return stream.transport_sendfile_native(self, transport, file, offset, count)

    def start_tls(
        self, transport: Any, protocol: Any, sslcontext: Any, **kw: Any
    ) -> Coroutine[Any, Any, Any]:
        return tls.start_tls(self, transport, protocol, sslcontext, **kw)
