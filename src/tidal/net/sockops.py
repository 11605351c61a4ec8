"""Socket coroutines (``loop.sock_*``) and the descriptor registration they and transports share.

Owns: ``sock_recv``, ``sock_recv_into``, ``sock_recvfrom``, ``sock_recvfrom_into``,
``sock_sendall``, ``sock_sendto``, ``sock_connect``, ``sock_accept``, ``sock_sendfile``; the
``watch``/``unwatch`` helpers that put a ready-made Handle in the poller; the check that a
descriptor owned by a transport is not watched by anyone else (``ensure_fd_no_transport``).
Not here: name resolution (net/connect.py), transports (tidal.transports), the poller itself
and ``add_reader``'s generic path (core/scheduler.py).

How one operation runs (the same contract as asyncio's selector loop):

    try the syscall at once ------------------------------> result (no future, no poller)
      | would block
      v
    _IOWaiter: a Future + Handle(callback) registered for the event
      | descriptor ready: callback retries the syscall
      |   would block again -> stay registered (re-armed)
      |   done / failed     -> unregister (or park), then set the result / exception
      | the awaiting task is cancelled
      v
    the Future's done callback unregisters, so the socket is usable by the next call

Invariants:
- A waiter's Handle is in the poller exactly while the waiter is pending; unregistering is
  skipped when someone else's ``add_reader``/``add_writer`` has displaced (cancelled) it.
- Nothing here closes a socket it did not create.

Speed: asyncio's done callback unregisters one turn after every blocked operation; tidal
unregisters before completing the Future and drops the callback, so only cancellation pays
for it. With the epoll poller a waiter that is the descriptor's only watcher registers one-shot
(EPOLLONESHOT) and, once its event fired and the operation is done, *parks* the kernel entry
instead of deleting it (io/epoll.py): the next blocked operation on that socket re-arms it with
one ``epoll_ctl`` instead of two (ADD now, DEL later). A parked entry is disarmed, so it is safe
when the socket is closed, duplicated or its number reused before then (io/epoll.py says why);
to the loop it is unregistered (``remove_reader`` returns False, as on asyncio). A cancelled
operation, whose entry may still be armed, unregisters as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import io
import os
import socket
import weakref
from collections.abc import Callable, Generator
from operator import methodcaller as _methodcaller
from typing import TYPE_CHECKING, Any, Final

from ..core.errors import FATAL_EXCEPTIONS
from ..core.handles import Handle
from ..futures import PENDING, Future
from ..io.poller import EVENT_READ, EVENT_WRITE

try:
    import ssl as _ssl

    _SSLSocket: type | None = _ssl.SSLSocket
except ImportError:  # pragma: no cover - Python built without ssl
    _SSLSocket = None

try:
    from ..io.epoll import EpollPoller as _EpollPoller
except (ImportError, AttributeError):  # pragma: no cover - no epoll on this system
    _EpollPoller = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from ..loop import EventLoop

_copy_context = contextvars.copy_context
_WOULD_BLOCK: Final = (BlockingIOError, InterruptedError)

# Bytes read per fallback sendfile step (asyncio's SENDFILE_FALLBACK_READBUFFER_SIZE).
SENDFILE_FALLBACK_BLOCKSIZE: Final = 256 * 1024


# -- checks shared by every entry point ----------------------------------------------------------


def check_ssl_socket(sock: Any) -> None:
    """Raise TypeError for an ``ssl.SSLSocket``: its blocking I/O cannot run on a loop."""
    if _SSLSocket is not None and isinstance(sock, _SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _check_socket(loop: EventLoop, sock: Any) -> None:
    check_ssl_socket(sock)
    # asyncio checks blocking mode only in debug mode: it is a syscall's worth of cost.
    if loop._debug and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking; call sock.setblocking(False) first")


def fileobj_to_fd(fileobj: Any) -> int:
    """Return the descriptor number of an int or of an object with ``fileno()``.

    Raises:
        ValueError: ``fileobj`` is neither.
    """
    if isinstance(fileobj, int):
        return fileobj
    try:
        return int(fileobj.fileno())
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"Invalid file object: {fileobj!r}") from None


def ensure_fd_no_transport(loop: EventLoop, fd: Any) -> None:
    """Raise RuntimeError if a transport that is not closing owns ``fd``.

    A transport's own reader and writer registrations would be silently replaced otherwise.
    """
    transport = loop._transports.get(fileobj_to_fd(fd))
    if transport is not None and not transport.is_closing():
        raise RuntimeError(
            f"File descriptor {fd!r} is used by transport {transport!r}; close the "
            f"transport or use its own API instead"
        )


# -- poller registration with a ready-made Handle ----------------------------------------------


def watch(loop: EventLoop, fd: int, event: int, handle: Handle) -> None:
    """Run ``handle`` whenever ``fd`` is ready for ``event`` (EVENT_READ or EVENT_WRITE).

    The fast twin of ``loop.add_reader``/``add_writer`` for tidal's own callbacks: no callback
    checks and no new Handle per registration. A handle already registered for the same event
    is cancelled, as ``add_reader`` does. Registration data keeps the scheduler's
    ``(reader_handle, writer_handle)`` shape.
    """
    poller = loop._poller
    try:
        key = poller.get_key(fd)
    except KeyError:
        poller.register(fd, event, (handle, None) if event == EVENT_READ else (None, handle))
        loop._io_registrations += 1
        return
    reader, writer = key.data
    if event == EVENT_READ:
        poller.modify(fd, key.events | EVENT_READ, (handle, writer))
        previous = reader
    else:
        poller.modify(fd, key.events | EVENT_WRITE, (reader, handle))
        previous = writer
    if previous is not None and previous is not handle:
        previous.cancel()


def unwatch(loop: EventLoop, fd: int, event: int) -> bool:
    """Stop watching ``fd`` for ``event``; the registered handle is cancelled."""
    return loop._remove_watcher(fd, event)


class _IOWaiter:
    """One blocked socket operation: its Future, and the Handle it keeps in the poller.

    The Future is a plain tidal Future, so the awaiting task takes its fast path. A done
    callback unregisters the Handle when the Future is cancelled; on completion the operation
    unregisters first and removes that callback, which saves a callback and a turn.
    """

    __slots__ = ("_done_entry", "_io_event", "_io_fd", "_io_handle", "_loop", "_oneshot", "fut")

    def __init__(self, loop: EventLoop, fd: int, event: int) -> None:
        self._loop = loop
        self.fut: Future[Any] = Future(loop=loop)  # what the operation's coroutine awaits
        self._io_fd = fd  # descriptor watched for this operation
        self._io_event = event  # EVENT_READ or EVENT_WRITE
        self._io_handle: Handle | None = None  # the registered callback; None once released
        self._done_entry: Any = None  # our (callback, context) entry in fut._callbacks
        self._oneshot = False  # registered with poller.register_oneshot (see the module doc)

    def _arm(self, callback: Callable[..., object], *args: Any) -> None:
        context = _copy_context()
        loop = self._loop
        handle = Handle(callback, (self, *args), loop, context)
        self._io_handle = handle
        fd, event = self._io_fd, self._io_event
        poller = loop._poller
        if type(poller) is _EpollPoller and fd not in poller.get_map():
            data = (handle, None) if event == EVENT_READ else (None, handle)
            poller.register_oneshot(fd, event, data)
            loop._io_registrations += 1
            self._oneshot = True
        else:  # someone else watches fd too (or not the epoll poller): an ordinary registration
            watch(loop, fd, event, handle)
        entry = self._done_entry = (self._on_cancelled, context)
        self.fut._callbacks.append(entry)  # first in line: nobody else has the future yet

    def _again(self) -> None:
        """The event fired but the operation must wait more (a spurious wake-up, a partial send).

        A one-shot registration becomes an ordinary one (one ``epoll_ctl``): an operation that
        waits twice may well wait many times, a large ``sock_sendall`` to a slow reader above all.
        """
        if self._oneshot:
            self._oneshot = False
            poller = self._loop._poller
            key = poller.get_key(self._io_fd)
            poller.modify(self._io_fd, key.events, key.data)  # drops EPOLLONESHOT, re-arms

    def _on_cancelled(self, fut: Future[Any]) -> None:
        self._release(fired=False)

    def _release(self, *, fired: bool = True) -> None:
        # ``fired``: called from our own event callback, so a one-shot entry is disarmed and
        # may be parked; a cancelled waiter's entry may still be armed and is deleted.
        handle = self._io_handle
        if handle is not None:
            self._io_handle = None
            if not handle._cancelled:  # else someone's add_reader replaced us: leave theirs
                loop = self._loop
                if fired and self._oneshot and loop._poller.park(self._io_fd):  # type: ignore[attr-defined]
                    loop._io_registrations -= 1
                else:
                    loop._remove_watcher(self._io_fd, self._io_event)
        callbacks = self.fut._callbacks
        if callbacks and callbacks[0] is self._done_entry:
            del callbacks[0]
        self._done_entry = None

    def _finish(self, result: Any) -> None:
        self._release()
        self.fut.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        self._release()
        self.fut.set_exception(exc)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.fut.__await__()


def _waiter(loop: EventLoop, sock: Any, event: int) -> _IOWaiter:
    fd = sock.fileno()
    ensure_fd_no_transport(loop, fd)
    return _IOWaiter(loop, fd, event)


# -- receiving -------------------------------------------------------------------------------

# Bytes; a sock_recv asking for more than this reads into the loop's reusable buffer and returns
# a copy of what arrived. ``sock.recv(n)`` allocates n bytes first and shrinks them afterwards;
# past glibc's mmap threshold (128 KiB at first) that can cost an mmap/munmap pair per call,
# depending on the allocator's history (callers often ask for 256 KiB to get "whatever is there").
RECV_COPY_THRESHOLD: Final = 64 * 1024

# Bytes in the per-loop receive buffer (asyncio's transports read up to this much at once).
RECV_BUFFER_SIZE: Final = 256 * 1024

# loop -> memoryview of its receive buffer, shared by sock_recv and the loop's transports. Safe
# to share: a loop runs one callback at a time and bytes are copied out before any other code
# runs; never shared across loops, whose threads may recv concurrently.
_receive_buffers: weakref.WeakKeyDictionary[Any, memoryview] = weakref.WeakKeyDictionary()


def receive_buffer(loop: EventLoop) -> memoryview:
    """The loop's reusable receive buffer, a memoryview of ``RECV_BUFFER_SIZE`` bytes."""
    view = _receive_buffers.get(loop)
    if view is None:
        view = _receive_buffers[loop] = memoryview(bytearray(RECV_BUFFER_SIZE))
    return view


def _recv_copied(loop: EventLoop, sock: socket.socket, nbytes: int) -> bytes:
    view = receive_buffer(loop)
    if nbytes < len(view):
        view = view[:nbytes]
    return view[: sock.recv_into(view)].tobytes()


def _recv(loop: EventLoop, sock: socket.socket, nbytes: int) -> bytes:
    if nbytes > RECV_COPY_THRESHOLD:
        return _recv_copied(loop, sock, nbytes)
    return sock.recv(nbytes)


async def _attempt(
    loop: EventLoop, sock: socket.socket, event: int, op: Callable[[Any], Any]
) -> Any:
    """Run the one-shot socket call ``op(sock)`` now, or once ``sock`` is ready for ``event``.

    The shape of every sock_* operation that completes in a single system call: try it first
    (no registration when data or buffer space is already there), else wait for readiness and
    retry in ``_retry_ready``; its result (or exception) is the operation's. ``op`` looks the
    socket method up on each try (``operator.methodcaller``), as asyncio's retries do, so a
    wrapped or patched socket behaves the same on both loops.
    """
    _check_socket(loop, sock)
    try:
        return op(sock)
    except _WOULD_BLOCK:
        pass
    waiter = _waiter(loop, sock, event)
    waiter._arm(_retry_ready, sock, op)
    return await waiter


def _retry_ready(waiter: _IOWaiter, sock: socket.socket, op: Callable[[Any], Any]) -> None:
    if waiter.fut._state is not PENDING:
        return
    try:
        result = op(sock)
    except _WOULD_BLOCK:
        waiter._again()  # spurious wake-up: stay registered
        return
    except FATAL_EXCEPTIONS:
        raise
    except BaseException as exc:
        waiter._fail(exc)
        del waiter  # exc's traceback keeps this frame: it must not keep exc's future too
    else:
        waiter._finish(result)


async def sock_recv(loop: EventLoop, sock: socket.socket, nbytes: int) -> bytes:
    return await _attempt(loop, sock, EVENT_READ, lambda s: _recv(loop, s, nbytes))  # type: ignore[no-any-return]


async def sock_recv_into(loop: EventLoop, sock: socket.socket, buf: Any) -> int:
    return await _attempt(loop, sock, EVENT_READ, _methodcaller("recv_into", buf))  # type: ignore[no-any-return]


async def sock_recvfrom(loop: EventLoop, sock: socket.socket, bufsize: int) -> tuple[bytes, Any]:
    return await _attempt(loop, sock, EVENT_READ, _methodcaller("recvfrom", bufsize))  # type: ignore[no-any-return]


async def sock_recvfrom_into(
    loop: EventLoop, sock: socket.socket, buf: Any, nbytes: int = 0
) -> tuple[int, Any]:
    return await _attempt(  # type: ignore[no-any-return]
        loop, sock, EVENT_READ, _methodcaller("recvfrom_into", buf, nbytes or len(buf))
    )


# -- sending ---------------------------------------------------------------------------------


async def sock_sendall(loop: EventLoop, sock: socket.socket, data: Any) -> None:
    _check_socket(loop, sock)
    try:
        sent = sock.send(data)
    except _WOULD_BLOCK:
        sent = 0
    if sent == len(data):
        return
    waiter = _waiter(loop, sock, EVENT_WRITE)
    # The position lives in a one-element list so the callback can advance it in place.
    waiter._arm(_sendall_ready, sock, memoryview(data).cast("B"), [sent])
    await waiter


def _sendall_ready(
    waiter: _IOWaiter, sock: socket.socket, view: memoryview, pos: list[int]
) -> None:
    if waiter.fut._state is not PENDING:
        return
    start = pos[0]
    try:
        start += sock.send(view[start:])
    except _WOULD_BLOCK:
        waiter._again()
        return
    except FATAL_EXCEPTIONS:
        raise
    except BaseException as exc:
        waiter._fail(exc)
        del waiter  # exc's traceback keeps this frame: it must not keep exc's future too
        return
    if start == len(view):
        waiter._finish(None)
    else:
        pos[0] = start
        waiter._again()


async def sock_sendto(loop: EventLoop, sock: socket.socket, data: Any, address: Any) -> int:
    return await _attempt(loop, sock, EVENT_WRITE, _methodcaller("sendto", data, address))  # type: ignore[no-any-return]


# -- connecting and accepting -------------------------------------------------------------------


async def sock_connect(loop: EventLoop, sock: socket.socket, address: Any) -> None:
    _check_socket(loop, sock)
    if sock.family == socket.AF_INET or sock.family == getattr(socket, "AF_INET6", None):
        from .connect import ensure_resolved

        resolved = await ensure_resolved(
            loop, address, family=sock.family, type=sock.type, proto=sock.proto
        )
        address = resolved[0][4]
    try:
        sock.connect(address)
    except _WOULD_BLOCK:
        # Connecting goes on in the background (EINTR included: the kernel keeps going);
        # the socket turns writable once it succeeded or failed.
        pass
    else:
        return
    waiter = _waiter(loop, sock, EVENT_WRITE)
    waiter._arm(_connect_ready, sock, address)
    try:
        await waiter
    finally:
        waiter = None  # type: ignore[assignment]  # break the exception -> frame -> waiter cycle


def _connect_ready(waiter: _IOWaiter, sock: socket.socket, address: Any) -> None:
    if waiter.fut._state is not PENDING:
        return
    try:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"Connect call failed {address}")
    except _WOULD_BLOCK:
        waiter._again()  # still connecting
        return
    except FATAL_EXCEPTIONS:
        raise
    except BaseException as exc:
        waiter._fail(exc)
        del waiter  # exc's traceback keeps this frame: it must not keep exc's future too
    else:
        waiter._finish(None)


async def sock_accept(loop: EventLoop, sock: socket.socket) -> tuple[socket.socket, Any]:
    _check_socket(loop, sock)
    try:
        conn, address = sock.accept()
    except _WOULD_BLOCK:
        pass
    else:
        conn.setblocking(False)
        return conn, address
    waiter = _waiter(loop, sock, EVENT_READ)
    waiter._arm(_accept_ready, sock)
    return await waiter  # type: ignore[no-any-return]


def _accept_ready(waiter: _IOWaiter, sock: socket.socket) -> None:
    if waiter.fut._state is not PENDING:
        return
    try:
        conn, address = sock.accept()
        conn.setblocking(False)
    except _WOULD_BLOCK:
        waiter._again()
        return
    except FATAL_EXCEPTIONS:
        raise
    except BaseException as exc:
        waiter._fail(exc)
        del waiter  # exc's traceback keeps this frame: it must not keep exc's future too
    else:
        waiter._finish((conn, address))


# -- sendfile ----------------------------------------------------------------------------------


def check_sendfile_params(sock: Any, file: Any, offset: Any, count: Any) -> None:
    """asyncio's argument checks for ``sock_sendfile`` and ``sendfile``, same exceptions."""
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if sock is not None and sock.type != socket.SOCK_STREAM:
        raise ValueError("only SOCK_STREAM type sockets are supported")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


async def sock_sendfile(
    loop: EventLoop,
    sock: socket.socket,
    file: Any,
    offset: int = 0,
    count: int | None = None,
    *,
    fallback: bool = True,
) -> int:
    if loop._debug and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking; call sock.setblocking(False) first")
    check_ssl_socket(sock)
    check_sendfile_params(sock, file, offset, count)
    try:
        return await sendfile_native(loop, sock, file, offset, count)
    except asyncio.SendfileNotAvailableError:
        if not fallback:
            raise
    return await _sendfile_fallback(loop, sock, file, offset, count)


async def sendfile_native(
    loop: EventLoop, sock: socket.socket, file: Any, offset: int, count: int | None
) -> int:
    """Send with ``os.sendfile``; the file position ends after the last byte sent.

    Raises:
        asyncio.SendfileNotAvailableError: no ``os.sendfile``, not a regular file, or the very
            first call failed (the caller may fall back to read + send).
    """
    if not hasattr(os, "sendfile"):
        raise asyncio.SendfileNotAvailableError("os.sendfile() is not available")
    try:
        fileno = file.fileno()
    except (AttributeError, io.UnsupportedOperation) as exc:
        raise asyncio.SendfileNotAvailableError("not a regular file") from exc
    try:
        fsize = os.fstat(fileno).st_size
    except OSError:
        raise asyncio.SendfileNotAvailableError("not a regular file") from None
    blocksize = count if count else fsize
    if not blocksize:
        return 0  # empty file
    fd = sock.fileno()
    total = 0
    waiter: _IOWaiter | None = None
    try:
        while True:
            if count:
                blocksize = count - total
                if blocksize <= 0:
                    return total
            try:
                sent = os.sendfile(fd, fileno, offset, blocksize)
            except _WOULD_BLOCK:
                waiter = _waiter(loop, sock, EVENT_WRITE)
                waiter._arm(_writable)
                await waiter
                continue
            except OSError as exc:
                if total == 0:
                    # Nothing went out yet: let the caller fall back to read + send.
                    raise asyncio.SendfileNotAvailableError("os.sendfile call failed") from exc
                if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                    raise ConnectionError(errno.ENOTCONN, "socket is not connected") from exc
                raise
            if sent == 0:
                return total  # end of file
            offset += sent
            total += sent
    finally:
        if total > 0:
            os.lseek(fileno, offset, os.SEEK_SET)


def _writable(waiter: _IOWaiter) -> None:
    if waiter.fut._state is PENDING:
        waiter._finish(None)


async def _sendfile_fallback(
    loop: EventLoop, sock: socket.socket, file: Any, offset: int, count: int | None
) -> int:
    if offset:
        file.seek(offset)
    blocksize = min(count, SENDFILE_FALLBACK_BLOCKSIZE) if count else SENDFILE_FALLBACK_BLOCKSIZE
    buf = bytearray(blocksize)
    total = 0
    try:
        while True:
            if count:
                blocksize = min(count - total, blocksize)
                if blocksize <= 0:
                    return total
            view = memoryview(buf)[:blocksize]
            read = await loop.run_in_executor(None, file.readinto, view)
            if not read:
                return total  # end of file
            await sock_sendall(loop, sock, view[:read])
            total += read
    finally:
        if total > 0 and hasattr(file, "seek"):
            file.seek(offset + total)
