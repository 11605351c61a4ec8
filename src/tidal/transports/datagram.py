"""Datagram transports (UDP, Unix datagram sockets).

Owns: ``DatagramTransport``: ``sendto`` with a send-at-once fast path and a queue for when the
kernel refuses, ``datagram_received``/``error_received`` delivery.
Not here: creating the socket (net/connect.py ``create_datagram_endpoint``), lifecycle and
flow control (transports/base.py).

Behaviour that differs from streams, as in asyncio: ``OSError`` while sending or receiving goes
to ``protocol.error_received`` and the transport stays open (ICMP errors on a connected UDP
socket surface this way); other exceptions are fatal.

Invariant: every queued entry is ``(bytes, address)`` and adds ``len(data) + 8`` to
``_buffer_size`` (asyncio counts 8 bytes of header per datagram); removal subtracts the same.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import sys
from typing import TYPE_CHECKING, Any, Final

from ..core.errors import FATAL_EXCEPTIONS
from .base import SocketTransportBase, receive_buffer, set_result_unless_cancelled

if TYPE_CHECKING:
    from ..loop import EventLoop

_WOULD_BLOCK: Final = (BlockingIOError, InterruptedError)

# Bytes of accounting per queued datagram on top of its payload.
DATAGRAM_HEADER_SIZE: Final = 8

# asyncio before 3.13 drops empty datagrams in sendto(); 3.13 sends them.
_DROP_EMPTY_DATAGRAMS: Final = sys.version_info < (3, 13)


class DatagramTransport(SocketTransportBase, asyncio.Transport, asyncio.DatagramTransport):
    """The transport of a datagram socket, optionally connected to ``address``.

    Like asyncio's, it is an ``asyncio.Transport`` as well as an ``asyncio.DatagramTransport``
    (CPython's tests check both); the stream-only methods raise NotImplementedError.
    """

    __slots__ = (
        "_address",  # the connected peer address, or None for an unconnected socket
        "_buffer",  # deque of (bytes, address) waiting for the socket to be writable
        "_recv_view",  # the loop's shared receive buffer
    )

    _extra: dict[str, Any]

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        address: Any = None,
        waiter: asyncio.Future[Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._address = address
        self._buffer: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._recv_view = receive_buffer(loop)
        super().__init__(loop, sock, protocol, extra)
        loop.call_soon(self._protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(set_result_unless_cancelled, waiter, None)

    def _read_callback(self) -> Any:
        return self._read_ready

    def _read_ready(self) -> None:
        if self._conn_lost:
            return
        view = self._recv_view
        try:
            nbytes, addr = self._sock.recvfrom_into(view)  # type: ignore[union-attr]
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self._protocol.error_received(exc)
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
        else:
            self._protocol.datagram_received(view[:nbytes].tobytes(), addr)

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Send ``data`` to ``addr`` (or to the connected peer); queued if the socket is full.

        Raises:
            TypeError: ``data`` is not bytes-like.
            ValueError: ``addr`` differs from the address the transport is connected to.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if _DROP_EMPTY_DATAGRAMS and not data:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost and self._address:
            self._log_write_after_loss()
            return
        if not self._buffer:
            try:
                if self._extra["peername"]:
                    self._sock.send(data)  # type: ignore[union-attr]
                else:
                    self._sock.sendto(data, addr)  # type: ignore[union-attr]
                return
            except _WOULD_BLOCK:
                self._start_writing()
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except FATAL_EXCEPTIONS:
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._buffer.append((bytes(data), addr))  # queued copies must not change under us
        self._buffer_size += len(data) + DATAGRAM_HEADER_SIZE
        self._maybe_pause_protocol()

    def _write_ready(self) -> None:
        buffer = self._buffer
        while buffer:
            data, addr = buffer.popleft()
            self._buffer_size -= len(data) + DATAGRAM_HEADER_SIZE
            try:
                if self._extra["peername"]:
                    self._sock.send(data)  # type: ignore[union-attr]
                else:
                    self._sock.sendto(data, addr)  # type: ignore[union-attr]
            except _WOULD_BLOCK:
                buffer.appendleft((data, addr))  # try again when writable
                self._buffer_size += len(data) + DATAGRAM_HEADER_SIZE
                break
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except FATAL_EXCEPTIONS:
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._maybe_resume_protocol()  # may queue more
        if not buffer:
            self._stop_writing()
            if self._closing:
                self._conn_lost += 1
                self._call_connection_lost(None)

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._buffer_size = 0
