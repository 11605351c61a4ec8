"""What every socket transport shares: lifecycle, reading on/off, write flow control.

Owns: ``SocketTransportBase`` (the socket, the protocol, extra info, ``close``/``abort``,
``_fatal_error``/``_force_close``/``_call_connection_lost``, ``pause_reading``/``resume_reading``,
write-buffer limits and ``pause_writing``/``resume_writing`` calls), and the per-loop receive
buffer that stream transports reuse.
Not here: reading and writing bytes (transports/stream.py, transports/datagram.py), TLS
(tidal/tls.py), pipes (transports/pipe.py).

Lifecycle (asyncio's protocol state machine, seen from the transport)::

    __init__ --call_soon--> connection_made --call_soon--> reading registered
        -> [data_received* / buffer_updated*] -> [eof_received]
        -> close() / abort() / fatal error --call_soon--> connection_lost --> socket closed

Invariants:
- ``_conn_lost`` is 0 until ``connection_lost`` is scheduled; it is incremented before every
  path that schedules or calls ``_call_connection_lost``, so the protocol hears it exactly
  once. Writes after that only count up (and log past a threshold, as asyncio does).
- ``_closing`` is True from ``close()``/``_force_close()`` on; the reader is off from then on.
- ``_buffer_size`` is the number of bytes queued for writing (stream) or their accounted size
  (datagram); flow control compares it with ``_high_water``/``_low_water``.
- ``_read_handle`` is the Handle in the poller for reading, or a cancelled/None one when not
  reading: a removed registration is always cancelled, so a stale event in the same loop turn
  never runs it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import sys
import warnings
from asyncio.trsock import TransportSocket
from typing import TYPE_CHECKING, Any, Final

from ..core.handles import Handle
from ..io.poller import EVENT_READ, EVENT_WRITE
from ..net import sockops
from ..net.sockops import watch
from .flow import DEFAULT_HIGH_WATER, WriteFlowControl

if TYPE_CHECKING:
    from ..loop import EventLoop

logger: Final = logging.getLogger("asyncio")

# Writes after the connection was lost are dropped; past this many, each one logs a warning
# (asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES).
LOG_THRESHOLD_FOR_CONNLOST_WRITES: Final = 5


# Bytes asked for per recv, as asyncio's max_size. Stream transports read into the loop's
# reusable buffer (net/sockops.py ``receive_buffer``): a fresh 256 KiB allocation per read makes
# throughput depend on the allocator's state (glibc switches between mmap and the heap there).
RECV_BUFFER_SIZE: Final = sockops.RECV_BUFFER_SIZE
receive_buffer = sockops.receive_buffer

_copy_context = contextvars.copy_context


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm on TCP sockets: small writes go out without waiting for ACKs.

    A stream socket of the INET families made with ``proto=0`` is TCP too (the kernel picks
    TCP), so it counts; asyncio's check wants ``proto == IPPROTO_TCP`` and leaves Nagle on for
    sockets a server framework made itself (uvicorn's ``--workers`` listener is one: every
    keep-alive response then waited ~40 ms for a delayed ACK). uvloop sets it on both too.
    """
    if (
        hasattr(socket, "TCP_NODELAY")
        and sock.family in (socket.AF_INET, getattr(socket, "AF_INET6", -1))
        and sock.type == socket.SOCK_STREAM
        and sock.proto in (0, socket.IPPROTO_TCP)
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_result_unless_cancelled(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.cancelled():
        fut.set_result(result)


class SocketTransportBase(WriteFlowControl, asyncio.BaseTransport):
    """A protocol driven by a non-blocking socket on a tidal loop (abstract: no reading)."""

    __slots__ = (
        # An instance dict, so that a method can be replaced on a live transport
        # (``transport.write = ...``), as asyncio's transports allow and test suites do. It is
        # allocated only when something is stored in it; the fields below stay slots.
        "__dict__",
        "__weakref__",
        "_buffer_size",  # bytes queued for writing (see module invariants)
        "_closing",  # close()/abort()/fatal error happened; no more reading
        "_conn_lost",  # see the module invariant; counts writes after the loss too
        "_high_water",  # bytes: pause_writing() when the write buffer goes above this
        "_loop",  # the loop; None after connection_lost
        "_low_water",  # bytes: resume_writing() when it drains to this or below
        "_paused",  # pause_reading() was called and not undone
        "_protocol",  # the protocol; None after connection_lost
        "_protocol_connected",  # False until set_protocol; connection_lost goes only to it
        "_protocol_paused",  # pause_writing() called and resume_writing() not yet
        "_read_handle",  # the reader Handle registered in the poller, or None
        "_server",  # the Server that accepted us, or None
        "_sock",  # the socket; None once closed by _call_connection_lost
        "_sock_fd",  # its descriptor number, kept after closing for repr and registries
        "_write_handle",  # the writer Handle registered in the poller, or None
    )

    max_size = RECV_BUFFER_SIZE

    _loop: Any
    _protocol: Any
    _extra: dict[str, Any]  # BaseTransport's slot

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> None:
        super().__init__(extra)
        self._extra["socket"] = TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._sock_fd = sock.fileno()
        self._protocol_connected = False
        self._server = server
        self._closing = False
        self._conn_lost = 0
        self._paused = False
        self._high_water = DEFAULT_HIGH_WATER
        self._low_water = DEFAULT_HIGH_WATER // 4
        self._protocol_paused = False
        self._buffer_size = 0
        self._read_handle: Handle | None = None
        self._write_handle: Handle | None = None
        self.set_protocol(protocol)
        if server is not None:
            server._attach(self)
        loop._transports[self._sock_fd] = self

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            reading = self._read_handle is not None and not self._read_handle._cancelled
            info.append(f"read={'polling' if reading else 'idle'}")
            writing = self._write_handle is not None and not self._write_handle._cancelled
            info.append(
                f"write=<{'polling' if writing else 'idle'}, "
                f"bufsize={self.get_write_buffer_size()}>"
            )
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Any = warnings.warn, _finalizing: Any = sys.is_finalizing) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if _finalizing():
                return  # interpreter shutdown: module globals may be gone; the OS closes it
            sock.close()
            server = self._server
            if server is not None:
                server._detach(self)

    # -- protocol ------------------------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._protocol_connected = True

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    # -- reading on and off --------------------------------------------------------------------

    def _read_callback(self) -> Any:
        """The bound method the poller runs when the socket is readable (per subclass)."""
        raise NotImplementedError

    def _start_reading(self) -> None:
        """Register for reading unless closing or paused (runs after connection_made)."""
        if self._closing or self._paused:
            return
        handle = self._read_handle
        if handle is None or handle._cancelled:
            handle = self._read_handle = Handle(
                self._read_callback(), (), self._loop, _copy_context()
            )
        watch(self._loop, self._sock_fd, EVENT_READ, handle)

    def _stop_reading(self) -> None:
        handle = self._read_handle
        if handle is not None:
            self._read_handle = None
            if not handle._cancelled:
                self._loop._remove_watcher(self._sock_fd, EVENT_READ)

    def _start_writing(self) -> None:
        handle = self._write_handle
        if handle is None or handle._cancelled:
            handle = self._write_handle = Handle(self._write_ready, (), self._loop, _copy_context())
        watch(self._loop, self._sock_fd, EVENT_WRITE, handle)

    def _stop_writing(self) -> None:
        handle = self._write_handle
        if handle is not None:
            self._write_handle = None
            if not handle._cancelled:
                self._loop._remove_watcher(self._sock_fd, EVENT_WRITE)

    def _write_ready(self) -> None:
        raise NotImplementedError

    def is_reading(self) -> bool:
        """True unless the transport is closing or ``pause_reading()`` is in effect."""
        return not self._closing and not self._paused

    def pause_reading(self) -> None:
        """Stop calling the protocol's receive methods until ``resume_reading()``."""
        if self._closing or self._paused:
            return
        self._paused = True
        self._stop_reading()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        """Resume calling the protocol's receive methods."""
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    # -- closing -------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close once buffered data is flushed; ``connection_lost(None)`` follows."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffer_size:
            self._conn_lost += 1
            self._stop_writing()
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        """Close at once, dropping buffered data; ``connection_lost(None)`` follows."""
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        """Report ``exc`` (OSErrors only in debug mode, as asyncio) and force-close."""
        if isinstance(exc, OSError):
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
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        if self._buffer_size:
            self._clear_buffer()
            self._stop_writing()
        if not self._closing:
            self._closing = True
            self._stop_reading()
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _clear_buffer(self) -> None:
        self._buffer_size = 0

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            sock = self._sock
            if sock is not None:
                sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                self._server = None
                server._detach(self)

    # -- write flow control: transports/flow.py -------------------------------------------------

    def _log_write_after_loss(self) -> None:
        if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            logger.warning("socket.send() raised exception.")
        self._conn_lost += 1
