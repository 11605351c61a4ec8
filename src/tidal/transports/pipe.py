"""Pipe transports: one direction of a pipe, FIFO, character device or socket as a transport.

Owns: ``ReadPipeTransport`` and ``WritePipeTransport`` (what ``loop.connect_read_pipe`` and
``loop.connect_write_pipe`` return), the two coroutines that build them, and the write side's
flow control (high/low water marks, ``pause_writing``/``resume_writing``). The flow control is
written here rather than shared with the socket transports because a pipe needs only the
write half of it and nothing else from a socket transport's base.
Not here: the poller and its registrations (core/scheduler.py), subprocess pipes' routing to a
``SubprocessProtocol`` (subprocess.py, which uses these transports through the loop).

Lifecycles, each event at most once except where starred:

    read:   start -> connection_made [-> data_received*] [-> eof_received] -> connection_lost
    write:  start -> connection_made [-> pause_writing -> resume_writing]* -> connection_lost

Invariants:
- ``connection_made`` runs in a loop callback scheduled by the constructor; ``connection_lost``
  runs exactly once, always from a loop callback (never inside ``write``/``close``), and
  ``_lost_scheduled`` is set the moment it is scheduled.
- ``_pipe is None`` exactly when the file object has been closed: after ``connection_lost``,
  or when the constructor refused the descriptor (the caller keeps its file then).
- Read side: a reader is registered exactly when ``_reader_registered``; that is while
  ``is_reading()`` after ``connection_made`` ran.
- Write side: ``_buffer`` is non-empty exactly when a writer is registered (``_writing``).

OS facts these transports rely on:
- A write end learns that its reader went away by watching its own descriptor for
  *readability*: on Linux, epoll reports EPOLLERR on a pipe's write end once the last read end
  closes, and ``selectors`` turns EPOLLERR into EVENT_READ; a socket's peer shutdown makes it
  readable too. Terminals do not signal anything, so character devices are not watched
  (asyncio makes the same choice; on AIX only sockets work, so FIFOs are not watched there).
- Reading a pty master after its slave side closed fails with EIO: that is a normal close,
  not an error worth reporting (only logged in debug mode).
- Regular files are always "ready" for poll/epoll (epoll refuses them with EPERM), so a
  regular file is rejected with ValueError, as asyncio does.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..core.errors import FATAL_EXCEPTIONS
from .flow import DEFAULT_HIGH_WATER, WriteFlowControl

if TYPE_CHECKING:
    from ..loop import EventLoop

_ProtocolT = TypeVar("_ProtocolT", bound=asyncio.BaseProtocol)

# asyncio's logger, so that existing logging configuration covers tidal's reports too.
logger: Final = logging.getLogger("asyncio")

# Bytes; the most one read callback takes from a pipe (asyncio reads the same 256 KiB), so one
# busy pipe cannot hold the loop for long.
MAX_READ_SIZE: Final = 256 * 1024


# Writes attempted after the pipe was lost; from this many on, each is logged as a warning
# (asyncio's constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES).
LOG_THRESHOLD_FOR_CONNLOST_WRITES: Final = 5

# AIX only reports a closed reader on sockets (see "OS facts" above).
_WATCH_FIFO_FOR_PEER_CLOSE: Final = not sys.platform.startswith("aix")


def _descriptor_kind(fileno: int) -> tuple[bool, bool, bool]:
    """Return (is_fifo, is_socket, is_char_device) for ``fileno``."""
    mode = os.fstat(fileno).st_mode
    return stat.S_ISFIFO(mode), stat.S_ISSOCK(mode), stat.S_ISCHR(mode)


def _set_result_unless_cancelled(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.set_result(None)


async def connect_read_pipe(
    loop: EventLoop, protocol_factory: Callable[[], _ProtocolT], pipe: Any
) -> tuple[ReadPipeTransport, _ProtocolT]:
    """Build a ReadPipeTransport over ``pipe``; return once ``connection_made`` has run."""
    protocol = protocol_factory()
    waiter: asyncio.Future[None] = loop.create_future()
    transport = ReadPipeTransport(loop, pipe, protocol, waiter)
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    if loop.get_debug():
        logger.debug("Read pipe %r connected: (%r, %r)", pipe.fileno(), transport, protocol)
    return transport, protocol


async def connect_write_pipe(
    loop: EventLoop, protocol_factory: Callable[[], _ProtocolT], pipe: Any
) -> tuple[WritePipeTransport, _ProtocolT]:
    """Build a WritePipeTransport over ``pipe``; return once ``connection_made`` has run."""
    protocol = protocol_factory()
    waiter: asyncio.Future[None] = loop.create_future()
    transport = WritePipeTransport(loop, pipe, protocol, waiter)
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    if loop.get_debug():
        logger.debug("Write pipe %r connected: (%r, %r)", pipe.fileno(), transport, protocol)
    return transport, protocol


class _PipeEnd:
    """What both pipe transports share: repr, the unclosed warning, fatal errors and closing.

    No instance layout of its own; the transports provide ``_loop``, ``_pipe``, ``_fileno``,
    ``_protocol``, ``_closing`` and ``_lost_scheduled``, plus three hooks: ``_repr_state()``
    (words for an open transport's repr), ``_is_quiet_error(exc)`` (log it in debug mode only,
    instead of reporting it to the exception handler) and ``_stop_io()`` (unregister and drop
    buffers when closing).
    """

    if not TYPE_CHECKING:
        __slots__ = ()

    _loop: EventLoop
    _pipe: Any
    _fileno: int
    _protocol: Any
    _closing: bool
    _lost_scheduled: bool

    def _repr_state(self) -> list[str]:
        raise NotImplementedError

    def _is_quiet_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _stop_io(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is None:
            info.append("closed")
        elif self._loop.is_closed():
            info.append("open")
        else:
            info.extend(self._repr_state())
        return "<{}>".format(" ".join(info))

    def __del__(
        self,
        _warn: Callable[..., None] = warnings.warn,
        _finalizing: Callable[[], bool] = sys.is_finalizing,
    ) -> None:
        pipe = getattr(self, "_pipe", None)
        if pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if _finalizing():
                return  # interpreter shutdown: module globals may be gone; the OS closes it
            pipe.close()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    def is_closing(self) -> bool:
        return self._closing

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if self._is_quiet_error(exc):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._close(exc)

    def _close(self, exc: BaseException | None) -> None:
        self._closing = True
        self._stop_io()
        if not self._lost_scheduled:
            self._lost_scheduled = True
            self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._pipe.close()
            self._pipe = None
            self._protocol = None


class ReadPipeTransport(_PipeEnd, asyncio.ReadTransport):
    """The read end of a pipe, FIFO, character device or socket, feeding a protocol.

    A ``BufferedProtocol`` is fed through ``get_buffer``/``buffer_updated`` (asyncio's pipe
    transport supports only ``data_received``); anything else through ``data_received``.
    """

    # __dict__ stays so that tools and tests can patch a method on one instance, as they do
    # on asyncio's pipe transports (CPython's test_subprocess patches pause_reading).
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_buffered",
        "_closing",
        "_fileno",
        "_loop",
        "_lost_scheduled",
        "_paused",
        "_pipe",
        "_protocol",
        "_reader_registered",
    )
    _extra: dict[str, Any]  # asyncio.BaseTransport's, untyped in typeshed

    def __init__(
        self,
        loop: EventLoop,
        pipe: Any,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[None] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._pipe: Any = None  # the file object until it is closed (see invariants)
        self._fileno: int = pipe.fileno()
        self._protocol: Any = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._closing = False  # close(), EOF or a fatal error happened
        self._paused = False  # pause_reading() is in effect
        self._reader_registered = False
        self._lost_scheduled = False
        is_fifo, is_socket, is_char = _descriptor_kind(self._fileno)
        if not (is_fifo or is_socket or is_char):
            raise ValueError(
                "Pipe transport is for pipes, FIFOs, sockets and character devices only; "
                f"fd {self._fileno} is none of these (read a regular file with a thread, "
                "e.g. loop.run_in_executor)"
            )
        self._pipe = pipe
        self._extra["pipe"] = pipe
        os.set_blocking(self._fileno, False)
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)  # only after connection_made has run
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter)

    def _repr_state(self) -> list[str]:
        return ["polling" if self._reader_registered else "idle"]

    # -- reading ---------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if self.is_reading() and not self._reader_registered:
            self._loop.add_reader(self._fileno, self._read_ready)
            self._reader_registered = True

    def _stop_reading(self) -> None:
        if self._reader_registered:
            self._reader_registered = False
            self._loop.remove_reader(self._fileno)

    def _read_ready(self) -> None:
        if self._buffered:
            self._read_ready_into_buffer()
            return
        try:
            data = os.read(self._fileno, MAX_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on pipe transport")
            return
        if data:
            self._protocol.data_received(data)
        else:
            self._eof()

    def _read_ready_into_buffer(self) -> None:
        try:
            buf = self._protocol.get_buffer(-1)
            if not len(buf):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return
        try:
            nbytes = os.readv(self._fileno, [buf])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on pipe transport")
            return
        if not nbytes:
            self._eof()
            return
        try:
            self._protocol.buffer_updated(nbytes)
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")

    def _eof(self) -> None:
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._closing = True
        self._stop_reading()
        self._lost_scheduled = True
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def pause_reading(self) -> None:
        """Stop calling the protocol until ``resume_reading()``; no-op if not reading."""
        if not self.is_reading():
            return
        self._paused = True
        self._stop_reading()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        """Resume feeding the protocol; no-op unless paused and open."""
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def is_reading(self) -> bool:
        """True while the transport is open and not paused."""
        return not self._paused and not self._closing

    # -- protocol and lifecycle ------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def close(self) -> None:
        """Stop reading; ``connection_lost(None)`` follows on a later loop turn."""
        if not self._closing:
            self._close(None)

    def _is_quiet_error(self, exc: BaseException) -> bool:
        # EIO: a pty whose other side closed, an ordinary end of input.
        return isinstance(exc, OSError) and exc.errno == errno.EIO

    def _stop_io(self) -> None:
        self._stop_reading()


class WritePipeTransport(_PipeEnd, WriteFlowControl, asyncio.Transport):
    """The write end of a pipe, FIFO, character device or socket, with flow control.

    A subclass of ``asyncio.Transport``, as asyncio's write pipe transport is: its reading
    methods (``pause_reading``, ``resume_reading``, ``is_reading``) raise NotImplementedError.

    ``write()`` tries the descriptor at once and buffers only what it would not take; the
    protocol's ``pause_writing()`` runs when the buffer grows past the high-water mark and
    ``resume_writing()`` when it drains to the low-water mark.
    """

    __slots__ = (
        "__dict__",
        "__weakref__",
        "_buffer",
        "_closing",
        "_conn_lost",
        "_fileno",
        "_high_water",
        "_loop",
        "_lost_scheduled",
        "_low_water",
        "_pipe",
        "_protocol",
        "_protocol_paused",
        "_watching_peer",
        "_writing",
    )
    _extra: dict[str, Any]  # asyncio.BaseTransport's, untyped in typeshed

    def __init__(
        self,
        loop: EventLoop,
        pipe: Any,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[None] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._pipe: Any = None  # the file object until it is closed (see invariants)
        self._fileno: int = pipe.fileno()
        self._protocol: Any = protocol
        self._buffer = bytearray()  # bytes write() could not hand to the OS yet
        self._conn_lost = 0  # writes attempted after the pipe was lost or closed
        self._closing = False  # close(), write_eof(), abort() or a fatal error happened
        self._writing = False  # a writer is registered (exactly when _buffer is non-empty)
        self._watching_peer = False  # a reader is registered to notice the peer closing
        self._lost_scheduled = False
        self._protocol_paused = False  # pause_writing() was called, resume_writing() not yet
        self._high_water = DEFAULT_HIGH_WATER
        self._low_water = DEFAULT_HIGH_WATER // 4
        is_fifo, is_socket, is_char = _descriptor_kind(self._fileno)
        if not (is_fifo or is_socket or is_char):
            raise ValueError(
                "Pipe transport is for pipes, FIFOs, sockets and character devices only; "
                f"fd {self._fileno} is none of these (write a regular file with a thread, "
                "e.g. loop.run_in_executor)"
            )
        self._pipe = pipe
        self._extra["pipe"] = pipe
        os.set_blocking(self._fileno, False)
        loop.call_soon(protocol.connection_made, self)
        if is_socket or (is_fifo and _WATCH_FIFO_FOR_PEER_CLOSE):
            loop.call_soon(self._watch_peer)  # only after connection_made has run
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter)

    def _repr_state(self) -> list[str]:
        return ["polling" if self._writing else "idle", f"bufsize={len(self._buffer)}"]

    # -- noticing the reader go away ---------------------------------------------------------

    def _watch_peer(self) -> None:
        if not self._closing and not self._watching_peer:
            self._loop.add_reader(self._fileno, self._peer_closed)
            self._watching_peer = True

    def _unwatch_peer(self) -> None:
        if self._watching_peer:
            self._watching_peer = False
            self._loop.remove_reader(self._fileno)

    def _peer_closed(self) -> None:
        # Readable write end: the reader went away (see "OS facts" in the module docstring).
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._close(BrokenPipeError() if self._buffer else None)

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` without blocking; buffer what the descriptor does not take now.

        Raises:
            TypeError: ``data`` is not bytes, bytearray or memoryview.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}; "
                "encode text first"
            )
        if not data:
            return
        if self._conn_lost or self._closing:
            if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            # Fast path (nothing queued, so ordering allows it): try the descriptor first.
            try:
                written = os.write(self._fileno, data)
            except (BlockingIOError, InterruptedError):
                written = 0
            except FATAL_EXCEPTIONS:
                raise
            except BaseException as exc:
                self._conn_lost += 1
                self._fatal_error(exc, "Fatal write error on pipe transport")
                return
            if written == len(data):
                return
            if written:
                data = memoryview(data)[written:]
            self._loop.add_writer(self._fileno, self._write_ready)
            self._writing = True
        self._buffer += data
        self._maybe_pause_protocol()

    def _write_ready(self) -> None:
        try:
            written = os.write(self._fileno, self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._buffer.clear()
            self._conn_lost += 1
            self._stop_writing()
            self._fatal_error(exc, "Fatal write error on pipe transport")
            return
        if written < len(self._buffer):
            del self._buffer[:written]
            self._maybe_resume_protocol()
            return
        self._buffer.clear()
        self._stop_writing()
        self._maybe_resume_protocol()  # the protocol may write again from here
        if self._closing and not self._buffer and not self._lost_scheduled:
            # write_eof()/close() was waiting for the buffer to drain.
            self._unwatch_peer()
            self._lost_scheduled = True
            self._loop.call_soon(self._call_connection_lost, None)

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fileno)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Close the write end once the buffer has drained (a pipe has no half-close)."""
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._unwatch_peer()
            self._lost_scheduled = True
            self._loop.call_soon(self._call_connection_lost, None)

    def close(self) -> None:
        """Like ``write_eof()``: buffered data is still written before the pipe closes."""
        if self._pipe is not None and not self._closing:
            self.write_eof()

    def abort(self) -> None:
        """Close at once, dropping buffered data; ``connection_lost(None)`` follows."""
        self._close(None)

    # -- flow control (the water marks and pause/resume calls are transports/flow.py's) -----

    @property
    def _buffer_size(self) -> int:  # type: ignore[override]  # read-only here: len(_buffer)
        return len(self._buffer)

    # -- protocol and lifecycle ------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def _is_quiet_error(self, exc: BaseException) -> bool:
        # EPIPE, ECONNRESET and friends: the reader went away, which the protocol learns from
        # connection_lost(exc); not worth an exception-handler report (as asyncio).
        return isinstance(exc, OSError)

    def _stop_io(self) -> None:
        self._stop_writing()
        self._buffer.clear()
        self._unwatch_peer()
