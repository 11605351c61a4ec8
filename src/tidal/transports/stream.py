"""Stream socket transports (TCP and Unix): bytes in, bytes out, half-close, sendfile.

Owns: ``SocketTransport`` (reading for ``Protocol`` and ``BufferedProtocol``, buffered writing
with ``sendmsg``, ``write_eof``, the empty-buffer waiter ``sendfile`` needs) and
``sendfile``, ``loop.sendfile``'s implementation for any transport.
Not here: lifecycle and flow control (transports/base.py), TLS (tidal/tls.py).

Fast paths and their preconditions:
- ``write()`` with an empty buffer calls ``send`` at once; only what the kernel refused is
  buffered and only then is the writer registered (most writes never touch the poller).
- Per-protocol dispatch is decided in ``set_protocol``: the reader Handle's callback is
  ``_read_ready__data_received`` or ``_read_ready__get_buffer`` directly, no indirection.
- ``Protocol`` reads go into the loop's reusable buffer (transports/base.py) and hand the
  protocol a ``bytes`` copy of exactly what arrived.

Invariant: ``_buffer`` holds immutable chunks (bytes, or memoryviews of bytes) whose lengths
add up to ``_buffer_size``; a caller's bytearray is copied before it is queued.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import socket
from typing import TYPE_CHECKING, Any, Final

from ..core.errors import FATAL_EXCEPTIONS
from ..net.sockops import sendfile_native
from .base import (
    SocketTransportBase,
    logger,
    receive_buffer,
    set_nodelay,
    set_result_unless_cancelled,
)

if TYPE_CHECKING:
    from ..loop import EventLoop

_WOULD_BLOCK: Final = (BlockingIOError, InterruptedError)
_SendfileMode: Any = asyncio.constants._SendfileMode  # type: ignore[attr-defined]

# Most buffers handed to one sendmsg call (the kernel's IOV_MAX; POSIX guarantees 16).
try:
    IOV_MAX: Final = os.sysconf("SC_IOV_MAX")
except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
    IOV_MAX = 16  # type: ignore[misc]

_HAS_SENDMSG: Final = hasattr(socket.socket, "sendmsg")

# Bytes read from the file per step when sendfile falls back to read + write.
SENDFILE_FALLBACK_BLOCKSIZE: Final = 16 * 1024


class SocketTransport(SocketTransportBase, asyncio.Transport):
    """The transport of a connected stream socket (``create_connection``, servers)."""

    __slots__ = (
        "_buffer",  # deque of immutable chunks waiting to be sent (see module invariant)
        "_empty_waiter",  # future sendfile waits on until the buffer drains, or None
        "_eof",  # write_eof() was called: shut the write side once the buffer drains
        "_recv_view",  # the loop's shared receive buffer (memoryview)
    )

    # loop.sendfile() uses os.sendfile on this transport, start_tls() may wrap it.
    _sendfile_compatible = _SendfileMode.TRY_NATIVE
    _start_tls_compatible = True

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[Any] | None = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> None:
        self._buffer: collections.deque[Any] = collections.deque()
        self._eof = False
        self._empty_waiter: asyncio.Future[None] | None = None
        self._recv_view = receive_buffer(loop)
        super().__init__(loop, sock, protocol, extra, server)
        set_nodelay(sock)
        # connection_made first; reading only after it ran; the waiter last (asyncio's order).
        loop.call_soon(self._protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(set_result_unless_cancelled, waiter, None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        super().set_protocol(protocol)
        handle = self._read_handle
        if handle is not None and not handle._cancelled:
            handle._callback = self._read_callback()  # dispatch decided once per protocol

    def _read_callback(self) -> Any:
        if isinstance(self._protocol, asyncio.BufferedProtocol):
            return self._read_ready__get_buffer
        return self._read_ready__data_received

    # -- reading -------------------------------------------------------------------------------

    def _read_ready__data_received(self) -> None:
        if self._conn_lost:
            return
        view = self._recv_view
        try:
            nbytes = self._sock.recv_into(view)  # type: ignore[union-attr]
        except _WOULD_BLOCK:
            return
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not nbytes:
            self._read_ready__on_eof()
            return
        try:
            self._protocol.data_received(view[:nbytes].tobytes())
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _read_ready__get_buffer(self) -> None:
        if self._conn_lost:
            return
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
            nbytes = self._sock.recv_into(buf)  # type: ignore[union-attr]
        except _WOULD_BLOCK:
            return
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not nbytes:
            self._read_ready__on_eof()
            return
        try:
            self._protocol.buffer_updated(nbytes)
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")

    def _read_ready__on_eof(self) -> None:
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if keep_open:
            # Half-closed: the protocol may still write, but nothing more can arrive.
            self._stop_reading()
        else:
            self.close()

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending; sent at once when the buffer is empty.

        Raises:
            TypeError: ``data`` is not bytes-like.
            RuntimeError: after ``write_eof()``, or while ``sendfile`` is in progress.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if not data:
            return
        if self._conn_lost:
            self._log_write_after_loss()
            return
        if type(data) is memoryview and (data.itemsize != 1 or data.ndim != 1):
            data = data.tobytes()  # lengths below must count bytes, not items
        if not self._buffer:
            # Fast path (precondition: nothing queued, so ordering is preserved).
            try:
                sent = self._sock.send(data)  # type: ignore[union-attr]
            except _WOULD_BLOCK:
                sent = 0
            except FATAL_EXCEPTIONS:
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            if sent == len(data):
                return
            if type(data) is bytes:
                data = memoryview(data)[sent:]
            else:
                data = bytes(data[sent:])
            self._start_writing()
        elif type(data) is not bytes:
            data = bytes(data)  # the caller may mutate its buffer after write() returns
        self._buffer.append(data)
        self._buffer_size += len(data)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        """Write every buffer of ``list_of_data``, in order, as ``write`` would.

        Raises:
            RuntimeError: after ``write_eof()``, or while ``sendfile`` is in progress.
        """
        if self._eof:
            raise RuntimeError("Cannot call writelines() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to writelines; sendfile is in progress")
        chunks = list(list_of_data)
        if chunks:
            self.write(b"".join(chunks))

    def _write_ready(self) -> None:
        if self._conn_lost:
            return
        buffer = self._buffer
        try:
            if len(buffer) == 1 or not _HAS_SENDMSG:
                sent = self._sock.send(buffer[0])  # type: ignore[union-attr]
            else:
                sent = self._sock.sendmsg(itertools.islice(buffer, IOV_MAX))  # type: ignore[union-attr]
        except _WOULD_BLOCK:
            return
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._stop_writing()
            self._clear_buffer()
            self._fatal_error(exc, "Fatal write error on socket transport")
            if self._empty_waiter is not None:
                self._empty_waiter.set_exception(exc)
            return
        self._buffer_size -= sent
        while sent:
            chunk = buffer.popleft()
            size = len(chunk)
            if size > sent:
                buffer.appendleft(memoryview(chunk)[sent:])
                break
            sent -= size
        self._maybe_resume_protocol()  # may append to the buffer
        if not buffer:
            self._stop_writing()
            if self._empty_waiter is not None:
                self._empty_waiter.set_result(None)
            if self._closing:
                self._conn_lost += 1
                self._call_connection_lost(None)
            elif self._eof:
                self._sock.shutdown(socket.SHUT_WR)  # type: ignore[union-attr]

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._buffer_size = 0

    def write_eof(self) -> None:
        """Close the write side once the buffer drains; the peer then reads EOF."""
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            self._sock.shutdown(socket.SHUT_WR)  # type: ignore[union-attr]

    def can_write_eof(self) -> bool:
        return True

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        super()._call_connection_lost(exc)
        if self._empty_waiter is not None:
            self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))

    # -- sendfile support --------------------------------------------------------------------

    def _make_empty_waiter(self) -> asyncio.Future[None]:
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._empty_waiter = waiter
        if not self._buffer:
            waiter.set_result(None)
        return waiter

    def _reset_empty_waiter(self) -> None:
        self._empty_waiter = None


# -- loop.sendfile -----------------------------------------------------------------------------


async def sendfile(
    loop: EventLoop,
    transport: Any,
    file: Any,
    offset: int = 0,
    count: int | None = None,
    *,
    fallback: bool = True,
) -> int:
    """Send ``file`` through ``transport``: ``os.sendfile`` when the transport allows it.

    Raises:
        RuntimeError: the transport is closing or cannot send files at all, or the native path
            is unavailable and ``fallback`` is False.
        asyncio.SendfileNotAvailableError: native sendfile failed and ``fallback`` is False.
    """
    if transport.is_closing():
        raise RuntimeError("Transport is closing")
    mode = getattr(transport, "_sendfile_compatible", _SendfileMode.UNSUPPORTED)
    if mode is _SendfileMode.UNSUPPORTED:
        raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
    if mode is _SendfileMode.TRY_NATIVE:
        try:
            # Through the loop's attribute, as asyncio does: tests replace it to force a path.
            return await loop._sendfile_native(transport, file, offset, count)
        except asyncio.SendfileNotAvailableError:
            if not fallback:
                raise
    if not fallback:
        raise RuntimeError(
            f"fallback is disabled and native sendfile is not supported for transport {transport!r}"
        )
    return await _sendfile_fallback(loop, transport, file, offset, count)


async def transport_sendfile_native(
    loop: EventLoop, transport: SocketTransport, file: Any, offset: int, count: int | None
) -> int:
    # The socket is lent to sock-level sendfile: out of the transport registry, reading
    # paused, the write buffer drained first so bytes stay in order.
    del loop._transports[transport._sock_fd]
    resume_reading = transport.is_reading()
    transport.pause_reading()
    await transport._make_empty_waiter()
    try:
        return await sendfile_native(loop, transport._sock, file, offset, count)  # type: ignore[arg-type]
    finally:
        transport._reset_empty_waiter()
        if resume_reading:
            transport.resume_reading()
        loop._transports[transport._sock_fd] = transport


async def _sendfile_fallback(
    loop: EventLoop, transport: Any, file: Any, offset: int, count: int | None
) -> int:
    if offset:
        file.seek(offset)
    blocksize = min(count, SENDFILE_FALLBACK_BLOCKSIZE) if count else SENDFILE_FALLBACK_BLOCKSIZE
    buf = bytearray(blocksize)
    total = 0
    drain = _DrainWaiter(transport)
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
            await drain.drain()
            transport.write(bytes(view[:read]))
            total += read
    finally:
        if total > 0 and hasattr(file, "seek"):
            file.seek(offset + total)
        await drain.restore()


class _DrainWaiter(asyncio.Protocol):
    """Stands in for the transport's protocol during fallback sendfile to follow flow control.

    It forwards nothing but ``pause_writing``/``resume_writing`` bookkeeping and
    ``connection_lost``; the real protocol is put back by ``restore()``, with the transport's
    reading state as it was.
    """

    def __init__(self, transport: Any) -> None:
        if not isinstance(transport, asyncio.WriteTransport):
            raise TypeError("transport should be _FlowControlMixin instance")
        self._init(transport)

    def _init(self, transport: Any) -> None:
        self._transport = transport
        self._proto = transport.get_protocol()
        self._should_resume_reading = transport.is_reading()
        self._should_resume_writing = getattr(transport, "_protocol_paused", False)
        transport.pause_reading()
        transport.set_protocol(self)
        loop = transport._loop if hasattr(transport, "_loop") else asyncio.get_running_loop()
        self._write_ready_fut: asyncio.Future[None] | None = None
        if self._should_resume_writing:
            self._write_ready_fut = loop.create_future()
        self._loop = loop

    async def drain(self) -> None:
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        fut = self._write_ready_fut
        if fut is None:
            return
        await fut

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raise RuntimeError("Invalid state: connection should have been established already.")

    def connection_lost(self, exc: Exception | None) -> None:
        fut = self._write_ready_fut
        if fut is not None:
            if exc is None:
                fut.set_exception(ConnectionError("Connection is closed by peer"))
            else:
                fut.set_exception(exc)
        self._proto.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._write_ready_fut is None:
            self._write_ready_fut = self._loop.create_future()

    def resume_writing(self) -> None:
        fut = self._write_ready_fut
        if fut is not None:
            fut.set_result(None)
            self._write_ready_fut = None

    def data_received(self, data: bytes) -> None:
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self) -> bool:
        raise RuntimeError("Invalid state: reading should be paused")

    async def restore(self) -> None:
        self._transport.set_protocol(self._proto)
        if self._should_resume_reading:
            self._transport.resume_reading()
        fut = self._write_ready_fut
        if fut is not None:
            # Wake a drain() that is still waiting: the transport is being handed back.
            fut.cancel()
        if self._should_resume_writing:
            self._proto.resume_writing()
