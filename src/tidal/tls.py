"""TLS over any stream transport, with ``ssl.MemoryBIO`` and ``ssl.SSLObject``.

Owns: ``TLSProtocol`` (sits on a plain transport as its protocol: feeds received bytes into the
TLS engine, writes the engine's output to the transport, runs the handshake and the closing
alert exchange, with timeouts), ``SSLTransport`` (what the application's protocol sees),
``make_ssl_transport`` (``ssl=`` on connections and servers) and ``start_tls``.
Not here: the socket transport underneath (transports/stream.py), certificate policy (the
caller's ``SSLContext``).

asyncio's ``sslproto`` is the behavioural reference: the same states, the same exceptions
surface in the same places (a handshake failure is raised by ``create_connection``; EOF during
the handshake is ``ConnectionResetError``; a handshake timeout is ``ConnectionAbortedError``;
a shutdown timeout force-closes with ``TimeoutError``), the same flow-control defaults.

States of the TLS layer::

    PLAIN --connection_made--> HANDSHAKING --ok--> OPEN --close()/peer's close_notify-->
        CLOSING (deliver what is still readable) --> SHUTTING_DOWN (exchange close_notify)
        --> transport.close() --> PLAIN
    any state --connection lost / abort / fatal error--> PLAIN

The application protocol's own lifecycle is tracked separately (``_AppState``) so that
``connection_made``, ``eof_received`` and ``connection_lost`` each reach it at most once, and
``connection_lost`` only if ``connection_made`` did.

Invariants:
- Bytes the engine produced are written to the transport as soon as they exist, unless the
  transport asked us to pause writing; ``resume_writing`` flushes them.
- ``_backlog`` holds application data accepted by ``write()`` but not yet encrypted
  (encryption waits for the handshake); ``_backlog_size`` is its length in bytes.
- Reading from the transport is paused while more than the read high-water mark of encrypted
  bytes sits undecrypted (the application paused reading).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import warnings
from typing import TYPE_CHECKING, Any, Final

from .core.errors import FATAL_EXCEPTIONS

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import socket

    from .loop import EventLoop

logger: Final = logging.getLogger("asyncio")

# Seconds allowed for the handshake and for the closing exchange (asyncio's defaults).
SSL_HANDSHAKE_TIMEOUT: Final = 60.0
SSL_SHUTDOWN_TIMEOUT: Final = 30.0

# Bytes: default high-water marks for undecrypted input and for unsent output (asyncio's
# FLOW_CONTROL_HIGH_WATER_SSL_READ/WRITE); the low marks default to a quarter.
READ_HIGH_WATER: Final = 256 * 1024
WRITE_HIGH_WATER: Final = 512 * 1024

# Bytes: the most one SSLObject.read() returns, and the size of the receive buffer.
MAX_READ: Final = 256 * 1024

LOG_THRESHOLD_FOR_CONNLOST_WRITES: Final = 5

_AGAIN: Final = (ssl.SSLWantReadError, ssl.SSLSyscallError) if ssl is not None else ()
_SendfileMode: Any = asyncio.constants._SendfileMode  # type: ignore[attr-defined]


class _State(enum.Enum):
    PLAIN = "UNWRAPPED"
    HANDSHAKING = "DO_HANDSHAKE"
    OPEN = "WRAPPED"
    CLOSING = "FLUSHING"
    SHUTTING_DOWN = "SHUTDOWN"


# Which transitions are legal; anything else is a bug in this module and raises.
_TRANSITIONS: Final = {
    (_State.PLAIN, _State.HANDSHAKING),
    (_State.HANDSHAKING, _State.OPEN),
    (_State.OPEN, _State.CLOSING),
    (_State.CLOSING, _State.SHUTTING_DOWN),
}


class _AppState(enum.Enum):
    INIT = "STATE_INIT"  # connection_made not called yet
    CONNECTED = "STATE_CON_MADE"
    EOF = "STATE_EOF"  # eof_received called
    LOST = "STATE_CON_LOST"  # connection_lost scheduled


def _water_marks(high: int | None, low: int | None, default_high: int) -> tuple[int, int]:
    if high is None:
        high = default_high if low is None else 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
    return high, low


def _default_context(server_side: bool, server_hostname: str | None) -> ssl.SSLContext:
    if server_side:
        raise ValueError("Server side SSL needs a valid SSLContext")
    context = ssl.create_default_context()
    if not server_hostname:
        context.check_hostname = False
    return context


class SSLTransport(asyncio.Transport):
    """The application's view of a TLS connection: plaintext in, plaintext out."""

    # sendfile() works through the generic read-and-write path; start_tls() may nest.
    _start_tls_compatible = True
    _sendfile_compatible = _SendfileMode.FALLBACK

    def __init__(self, loop: EventLoop, tls: TLSProtocol) -> None:
        super().__init__()
        self._loop = loop
        # The TLS layer (asyncio's attribute name: CPython's tests reach through it).
        self._ssl_protocol: TLSProtocol | None = tls
        self._closed = False

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} closed={self._closed}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Extra info: ``peercert``, ``cipher``, ``compression``, ``ssl_object``,
        ``sslcontext``, and everything the transport underneath knows (``peername``...)."""
        tls = self._ssl_protocol
        return default if tls is None else tls._get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert self._ssl_protocol is not None
        self._ssl_protocol._set_app_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._ssl_protocol is not None
        protocol: asyncio.BaseProtocol = self._ssl_protocol._app_protocol
        return protocol

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Send close_notify once pending data is out; ``connection_lost(None)`` follows."""
        if not self._closed:
            self._closed = True
            if self._ssl_protocol is not None:
                self._ssl_protocol._start_shutdown()
        else:
            self._ssl_protocol = None

    def abort(self) -> None:
        """Close the connection at once, dropping buffered data."""
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        self._closed = True
        if self._ssl_protocol is not None:
            self._ssl_protocol._abort(exc)

    def is_reading(self) -> bool:
        return self._ssl_protocol is not None and not self._ssl_protocol._app_reading_paused

    def pause_reading(self) -> None:
        if self._ssl_protocol is not None:
            self._ssl_protocol._app_reading_paused = True

    def resume_reading(self) -> None:
        if self._ssl_protocol is not None:
            self._ssl_protocol._resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        tls = self._ssl_protocol
        assert tls is not None
        tls._write_high, tls._write_low = _water_marks(high, low, WRITE_HIGH_WATER)
        tls._control_app_writing()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        assert self._ssl_protocol is not None
        return (self._ssl_protocol._write_low, self._ssl_protocol._write_high)

    def get_write_buffer_size(self) -> int:
        """Plaintext not yet encrypted plus ciphertext not yet handed to the transport."""
        tls = self._ssl_protocol
        return 0 if tls is None else tls._write_buffer_size()

    def set_read_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        tls = self._ssl_protocol
        assert tls is not None
        tls._read_high, tls._read_low = _water_marks(high, low, READ_HIGH_WATER)
        tls._control_ssl_reading()

    def get_read_buffer_limits(self) -> tuple[int, int]:
        assert self._ssl_protocol is not None
        return (self._ssl_protocol._read_low, self._ssl_protocol._read_high)

    def get_read_buffer_size(self) -> int:
        tls = self._ssl_protocol
        return 0 if tls is None else tls._incoming.pending

    @property
    def _protocol_paused(self) -> bool:
        # Read by the fallback sendfile path (transports/stream.py) to respect flow control.
        return self._ssl_protocol is not None and self._ssl_protocol._app_writing_paused

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data`` (buffered until the handshake is done).

        Raises:
            TypeError: ``data`` is not bytes-like.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        if not data:
            return
        assert self._ssl_protocol is not None, "write() after the transport was closed twice"
        self._ssl_protocol._write_appdata((data,))

    def writelines(self, list_of_data: Any) -> None:
        assert self._ssl_protocol is not None
        self._ssl_protocol._write_appdata(list_of_data)

    def write_eof(self) -> None:
        """TLS has no half-close: this raises NotImplementedError, as asyncio's does."""
        raise NotImplementedError

    def can_write_eof(self) -> bool:
        return False

    def _test__append_write_backlog(self, data: bytes) -> None:
        """Queue ``data`` without encrypting it yet (a hook CPython's test_ssl uses)."""
        assert self._ssl_protocol is not None
        self._ssl_protocol._backlog.append(data)
        self._ssl_protocol._backlog_size += len(data)


class TLSProtocol(asyncio.BufferedProtocol):
    """The protocol of the plain transport under a TLS connection.

    Args:
        loop: the loop.
        app_protocol: the application's protocol, which sees plaintext.
        sslcontext: the context (None: a default client context).
        waiter: completed when the handshake succeeds (or with its exception).
        server_side: act as the TLS server.
        server_hostname: the name to check the certificate against (clients).
        call_connection_made: False for ``start_tls``, whose protocol is connected already.
        ssl_handshake_timeout: seconds (default 60).
        ssl_shutdown_timeout: seconds (default 30).

    Raises:
        ValueError: a timeout is not positive, or a server has no context.
    """

    def __init__(
        self,
        loop: EventLoop,
        app_protocol: asyncio.BaseProtocol,
        sslcontext: ssl.SSLContext | None,
        waiter: asyncio.Future[Any] | None,
        server_side: bool = False,
        server_hostname: str | None = None,
        call_connection_made: bool = True,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> None:
        if ssl is None:
            raise RuntimeError("stdlib ssl module not available")
        if ssl_handshake_timeout is None:
            ssl_handshake_timeout = SSL_HANDSHAKE_TIMEOUT
        elif ssl_handshake_timeout <= 0:
            raise ValueError(
                f"ssl_handshake_timeout should be a positive number, got {ssl_handshake_timeout}"
            )
        if ssl_shutdown_timeout is None:
            ssl_shutdown_timeout = SSL_SHUTDOWN_TIMEOUT
        elif ssl_shutdown_timeout <= 0:
            raise ValueError(
                f"ssl_shutdown_timeout should be a positive number, got {ssl_shutdown_timeout}"
            )
        if not sslcontext:
            sslcontext = _default_context(server_side, server_hostname)
        self._loop = loop
        self._waiter = waiter
        self._server_side = server_side
        self._server_hostname = server_hostname if server_hostname and not server_side else None
        self._handshake_timeout = ssl_handshake_timeout
        self._shutdown_timeout = ssl_shutdown_timeout
        self._extra: dict[str, Any] = {"sslcontext": sslcontext}
        self._incoming = ssl.MemoryBIO()  # ciphertext received, not yet consumed by the engine
        self._outgoing = ssl.MemoryBIO()  # ciphertext produced, not yet written to transport
        self._sslobj = sslcontext.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=self._server_hostname,
        )
        self._recv_buffer = memoryview(bytearray(MAX_READ))  # get_buffer() hands this out
        self._backlog: collections.deque[Any] = collections.deque()
        self._backlog_size = 0
        self._state = _State.PLAIN
        self._app_state = _AppState.INIT if call_connection_made else _AppState.CONNECTED
        self._conn_lost = 0  # counts writes after the connection closed, for the log
        self._transport: Any = None  # the plain transport, once connection_made ran
        self._eof_received = False  # the plain transport saw EOF
        self._ssl_writing_paused = False  # the plain transport asked us to stop writing
        self._ssl_reading_paused = False  # we paused the plain transport's reading
        self._app_reading_paused = False  # the application paused reading
        self._app_writing_paused = False  # we called the application's pause_writing()
        self._read_high, self._read_low = _water_marks(None, None, READ_HIGH_WATER)
        self._write_high, self._write_low = _water_marks(None, None, WRITE_HIGH_WATER)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._shutdown_timer: asyncio.TimerHandle | None = None
        self._handshake_started = 0.0
        self._app_protocol: Any = None
        self._app_buffered = False
        self._set_app_protocol(app_protocol)
        self._app_transport: SSLTransport | None = SSLTransport(loop, self)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} state={self._state.value}>"

    def _set_app_protocol(self, app_protocol: asyncio.BaseProtocol) -> None:
        self._app_protocol = app_protocol
        self._app_buffered = isinstance(app_protocol, asyncio.BufferedProtocol)

    def _set_state(self, new: _State) -> None:
        if new is not _State.PLAIN and (self._state, new) not in _TRANSITIONS:
            raise RuntimeError(f"cannot switch state from {self._state} to {new}")
        self._state = new

    def _wakeup_waiter(self, exc: BaseException | None = None) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if not waiter.cancelled():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def _get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._extra:
            return self._extra[name]
        if self._transport is not None:
            return self._transport.get_extra_info(name, default)
        return default

    # -- the plain transport's protocol interface ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if self._loop.get_debug():
            logger.debug("%r starts SSL handshake", self)
            self._handshake_started = self._loop.time()
        self._set_state(_State.HANDSHAKING)
        self._handshake_timer = self._loop.call_later(
            self._handshake_timeout, self._check_handshake_timeout
        )
        self._do_handshake()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._backlog.clear()
        self._backlog_size = 0
        self._outgoing.read()
        self._conn_lost += 1
        if self._app_transport is not None:
            self._app_transport._closed = True
        if self._state is not _State.HANDSHAKING and self._app_state in (
            _AppState.CONNECTED,
            _AppState.EOF,
        ):
            self._app_state = _AppState.LOST
            self._loop.call_soon(self._app_protocol.connection_lost, exc)
        self._set_state(_State.PLAIN)
        self._transport = None
        self._app_transport = None
        self._app_protocol = None
        self._wakeup_waiter(exc)
        self._cancel_timers()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._recv_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._incoming.write(self._recv_buffer[:nbytes])
        state = self._state
        if state is _State.OPEN:
            self._do_read()
        elif state is _State.HANDSHAKING:
            self._do_handshake()
        elif state is _State.CLOSING:
            self._do_flush()
        elif state is _State.SHUTTING_DOWN:
            self._do_shutdown()

    def eof_received(self) -> bool | None:
        self._eof_received = True
        try:
            if self._loop.get_debug():
                logger.debug("%r received EOF", self)
            state = self._state
            if state is _State.HANDSHAKING:
                self._on_handshake_complete(ConnectionResetError())
            elif state is _State.OPEN:
                self._set_state(_State.CLOSING)
                if self._app_reading_paused:
                    return True  # keep the transport until the application reads the rest
                self._do_flush()
            elif state is _State.CLOSING:
                self._do_write()
                self._set_state(_State.SHUTTING_DOWN)
                self._do_shutdown()
            elif state is _State.SHUTTING_DOWN:
                self._do_shutdown()
        except Exception:
            self._transport.close()
            raise
        return None

    def pause_writing(self) -> None:
        self._ssl_writing_paused = True

    def resume_writing(self) -> None:
        self._ssl_writing_paused = False
        self._process_outgoing()

    # -- handshake -----------------------------------------------------------------------------

    def _check_handshake_timeout(self) -> None:
        if self._state is _State.HANDSHAKING:
            self._fatal_error(
                ConnectionAbortedError(
                    f"SSL handshake is taking longer than {self._handshake_timeout} seconds: "
                    f"aborting the connection"
                )
            )

    def _do_handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except _AGAIN:
            self._process_outgoing()
        except ssl.SSLError as exc:
            self._on_handshake_complete(exc)
        else:
            self._on_handshake_complete(None)

    def _on_handshake_complete(self, failure: BaseException | None) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        sslobj = self._sslobj
        try:
            if failure is not None:
                raise failure
            self._set_state(_State.OPEN)
            peercert = sslobj.getpeercert()
        except Exception as exc:
            self._set_state(_State.PLAIN)
            if isinstance(exc, ssl.CertificateError):
                message = "SSL handshake failed on verifying the certificate"
            else:
                message = "SSL handshake failed"
            self._fatal_error(exc, message)
            self._wakeup_waiter(exc)
            return
        if self._loop.get_debug():
            took = self._loop.time() - self._handshake_started
            logger.debug("%r: SSL handshake took %.1f ms", self, took * 1e3)
        self._extra.update(
            peercert=peercert,
            cipher=sslobj.cipher(),
            compression=sslobj.compression(),
            ssl_object=sslobj,
        )
        if self._app_state is _AppState.INIT:
            self._app_state = _AppState.CONNECTED
            self._app_protocol.connection_made(self._app_transport)
        self._wakeup_waiter()
        self._do_read()

    # -- closing -------------------------------------------------------------------------------

    def _start_shutdown(self) -> None:
        if self._state in (_State.CLOSING, _State.SHUTTING_DOWN, _State.PLAIN):
            return
        if self._app_transport is not None:
            self._app_transport._closed = True
        if self._state is _State.HANDSHAKING:
            self._abort(None)
            return
        self._set_state(_State.CLOSING)
        self._shutdown_timer = self._loop.call_later(
            self._shutdown_timeout, self._check_shutdown_timeout
        )
        self._do_flush()

    def _check_shutdown_timeout(self) -> None:
        if self._state in (_State.CLOSING, _State.SHUTTING_DOWN):
            self._transport._force_close(TimeoutError("SSL shutdown timed out"))

    def _do_flush(self) -> None:
        self._do_read()
        self._set_state(_State.SHUTTING_DOWN)
        self._do_shutdown()

    def _do_shutdown(self) -> None:
        try:
            if not self._eof_received:
                self._sslobj.unwrap()
        except _AGAIN:
            self._process_outgoing()
        except ssl.SSLError as exc:
            self._on_shutdown_complete(exc)
        else:
            self._process_outgoing()
            self._call_eof_received()
            self._on_shutdown_complete(None)

    def _on_shutdown_complete(self, failure: BaseException | None) -> None:
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
            self._shutdown_timer = None
        if failure is not None:
            self._fatal_error(failure)
        else:
            self._loop.call_soon(self._transport.close)

    def _abort(self, exc: BaseException | None) -> None:
        self._set_state(_State.PLAIN)
        if self._transport is not None:
            self._transport._force_close(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._handshake_timer, self._shutdown_timer):
            if timer is not None:
                timer.cancel()
        self._handshake_timer = self._shutdown_timer = None

    # -- writing -------------------------------------------------------------------------------

    def _write_appdata(self, list_of_data: Any) -> None:
        if self._state in (_State.CLOSING, _State.SHUTTING_DOWN, _State.PLAIN):
            if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("SSL connection is closed")
            self._conn_lost += 1
            return
        for data in list_of_data:
            self._backlog.append(data)
            self._backlog_size += len(data)
        try:
            if self._state is _State.OPEN:
                self._do_write()
        except Exception as exc:
            self._fatal_error(exc, "Fatal error on SSL protocol")

    def _do_write(self) -> None:
        backlog = self._backlog
        write = self._sslobj.write
        try:
            while backlog:
                data = backlog[0]
                written = write(data)
                if written < len(data):
                    backlog[0] = memoryview(data)[written:]
                else:
                    backlog.popleft()
                self._backlog_size -= written
        except _AGAIN:
            pass  # renegotiation wants to read first; the rest goes after the next read
        self._process_outgoing()

    def _process_outgoing(self) -> None:
        if not self._ssl_writing_paused:
            data = self._outgoing.read()
            if data:
                self._transport.write(data)
        self._control_app_writing()

    def _write_buffer_size(self) -> int:
        return self._outgoing.pending + self._backlog_size

    def _control_app_writing(self) -> None:
        size = self._write_buffer_size()
        if size >= self._write_high and not self._app_writing_paused:
            self._app_writing_paused = True
            self._call_app_flow("pause_writing")
        elif size <= self._write_low and self._app_writing_paused:
            self._app_writing_paused = False
            self._call_app_flow("resume_writing")

    def _call_app_flow(self, method: str) -> None:
        try:
            getattr(self._app_protocol, method)()
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{method}() failed",
                    "exception": exc,
                    "transport": self._app_transport,
                    "protocol": self,
                }
            )

    # -- reading -------------------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if not self._app_reading_paused:
            return
        self._app_reading_paused = False
        self._loop.call_soon(self._continue_after_resume)

    def _continue_after_resume(self) -> None:
        state = self._state
        if state is _State.OPEN:
            self._do_read()
        elif state is _State.CLOSING:
            self._do_flush()
        elif state is _State.SHUTTING_DOWN:
            self._do_shutdown()

    def _do_read(self) -> None:
        if self._state not in (_State.OPEN, _State.CLOSING):
            return
        try:
            if not self._app_reading_paused:
                if self._app_buffered:
                    self._read_into_app_buffer()
                else:
                    self._read_and_deliver()
                if self._backlog:
                    self._do_write()
                else:
                    self._process_outgoing()
            self._control_ssl_reading()
        except Exception as exc:
            self._fatal_error(exc, "Fatal error on SSL protocol")

    def _read_and_deliver(self) -> None:
        """Decrypt everything available and hand it over in one ``data_received`` call."""
        chunks: list[bytes] = []
        chunk: bytes = b"?"  # anything non-empty: "no close_notify seen yet"
        read = self._sslobj.read
        try:
            while True:
                chunk = read(MAX_READ)
                if not chunk:
                    break  # close_notify from the peer
                chunks.append(chunk)
        except _AGAIN:
            pass
        if chunks:
            self._app_protocol.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if not chunk:
            self._call_eof_received()
            self._start_shutdown()

    def _read_into_app_buffer(self) -> None:
        """Decrypt straight into the BufferedProtocol's buffer."""
        # A memoryview, so that reading into buf[filled:] fills the protocol's own buffer
        # (slicing a bytearray would copy it; asyncio has that bug with bytearray buffers).
        buf = memoryview(self._app_protocol.get_buffer(self._incoming.pending)).cast("B")
        wanted = len(buf)
        filled = 0
        count: int = 1
        try:
            count = self._sslobj.read(wanted, buf)  # type: ignore[assignment]  # int with a buffer
            if count > 0:
                filled = count
                while filled < wanted:
                    count = self._sslobj.read(wanted - filled, buf[filled:])  # type: ignore[assignment]
                    if count <= 0:
                        break
                    filled += count
                else:
                    # The buffer filled up: there may be more; continue on the next turn.
                    self._loop.call_soon(self._do_read)
        except _AGAIN:
            pass
        if filled:
            self._app_protocol.buffer_updated(filled)
        if not count:
            self._call_eof_received()
            self._start_shutdown()

    def _call_eof_received(self) -> None:
        try:
            if self._app_state is _AppState.CONNECTED:
                self._app_state = _AppState.EOF
                if self._app_protocol.eof_received():
                    logger.warning(
                        "returning true from eof_received() has no effect when using ssl"
                    )
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Error calling eof_received()")

    def _control_ssl_reading(self) -> None:
        size = self._incoming.pending
        if size >= self._read_high and not self._ssl_reading_paused:
            self._ssl_reading_paused = True
            self._transport.pause_reading()
        elif size <= self._read_low and self._ssl_reading_paused:
            self._ssl_reading_paused = False
            self._transport.resume_reading()

    # -- errors --------------------------------------------------------------------------------

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if self._transport is not None:
            self._transport._force_close(exc)
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        elif not isinstance(exc, asyncio.CancelledError):
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self._transport,
                    "protocol": self,
                }
            )


# -- entry points ------------------------------------------------------------------------------


def make_ssl_transport(
    loop: EventLoop,
    rawsock: socket.socket,
    protocol: asyncio.BaseProtocol,
    sslcontext: ssl.SSLContext | None,
    waiter: asyncio.Future[Any] | None,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    extra: dict[str, Any] | None = None,
    server: Any = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> SSLTransport:
    """A socket transport with a TLS layer on it; ``waiter`` completes after the handshake."""
    from .transports.stream import SocketTransport

    tls = TLSProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    SocketTransport(loop, rawsock, tls, None, extra, server)
    assert tls._app_transport is not None
    return tls._app_transport


async def start_tls(
    loop: EventLoop,
    transport: asyncio.BaseTransport,
    protocol: asyncio.BaseProtocol,
    sslcontext: ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> asyncio.Transport:
    """Upgrade ``transport`` to TLS; return the new transport ``protocol`` should use.

    Raises:
        TypeError: ``sslcontext`` is not an SSLContext, or the transport cannot be upgraded.
        ssl.SSLError, OSError: the handshake failed (the transport is closed).
    """
    if ssl is None:
        raise RuntimeError("Python ssl module is not available")
    if not isinstance(sslcontext, ssl.SSLContext):
        raise TypeError(
            f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
        )
    if not getattr(transport, "_start_tls_compatible", False):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")
    waiter = loop.create_future()
    tls = TLSProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        call_connection_made=False,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    # Reading stops until the TLS layer is the protocol, so no ciphertext reaches the old one.
    transport.pause_reading()  # type: ignore[attr-defined]
    transport.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)  # type: ignore[attr-defined]
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    assert tls._app_transport is not None
    return tls._app_transport
