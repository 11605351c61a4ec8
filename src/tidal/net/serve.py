"""Servers: listening sockets, the accept loop, and the ``Server`` object users hold.

Owns: ``Server`` (what ``create_server``/``create_unix_server`` return), ``create_server``,
``create_unix_server``, and accepting: one reader per listening socket that accepts up to
``backlog`` connections per readiness event and wraps each in a transport.
Not here: transports (tidal.transports), TLS handshakes (tidal/tls.py), name resolution
(net/connect.py).

``Server`` subclasses ``asyncio.base_events.Server`` only for identity (uvicorn and websockets
annotate that class and some code checks ``isinstance``); every method is tidal's own.

Server states::

    created --start_serving()/serve_forever()--> serving --close()--> closed
    closed + no client transports left --> wait_closed() returns (3.12+; see below)

Invariants:
- ``_sockets`` is None exactly when the server is closed; a closed server never serves again.
- ``_waiters`` becomes None once the server is closed and (3.12+) its last client detached;
  from then on ``wait_closed()`` returns at once.
- Every accepted socket ends up owned by a transport or closed.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import errno
import itertools
import os
import socket
import sys
import weakref
from asyncio.trsock import TransportSocket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..core.errors import FATAL_EXCEPTIONS
from ..core.handles import Handle
from ..io.poller import EVENT_READ
from ..transports.base import logger
from ..transports.stream import SocketTransport
from .connect import ensure_resolved, remove_stale_unix_socket, set_reuseport
from .sockops import check_ssl_socket, watch

if TYPE_CHECKING:
    from ..loop import EventLoop

_HAS_IPV6: Final = hasattr(socket, "AF_INET6")

# Seconds to stop accepting after the process ran out of descriptors or memory (asyncio's
# ACCEPT_RETRY_DELAY): Linux keeps reporting the listening socket readable meanwhile.
ACCEPT_RETRY_DELAY: Final = 1.0

# Until 3.12, asyncio's wait_closed() returned at once if the server was already closed, even
# with clients still connected; 3.12.1 made it wait for them. tidal follows the running Python.
_WAIT_FOR_CLIENTS: Final = sys.version_info >= (3, 12)

# 3.13 removes a Unix server's socket file on close (cleanup_socket=True by default).
_CLEANUP_UNIX_SOCKET_DEFAULT: Final = sys.version_info >= (3, 13)

# 3.13's create_server skips an address whose bind fails with EADDRNOTAVAIL (its family is
# assumed disabled, bpo-30945) and words bind errors with str(err); 3.11 and 3.12 raise for
# every failed bind, worded with err.strerror. tidal follows the running Python.
_SKIP_UNAVAILABLE_ADDRESSES: Final = sys.version_info >= (3, 13)

_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Server(asyncio.base_events.Server):
    """A listening server: ``serve_forever``, ``close``, ``wait_closed``, async context manager.

    ``close_clients()``/``abort_clients()`` (new in 3.13) are there on every Python version.
    The private ``_attach``/``_detach`` that transports call have the running Python's
    signature: no argument before 3.13 (connections are counted in ``_active_count``), the
    transport from 3.13 on. tidal's transports pass themselves on every version, so that
    ``close_clients()`` can find them.
    """

    def __init__(
        self,
        loop: EventLoop,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        ssl_context: Any,
        backlog: int,
        ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None = None,
        unix_inodes: dict[socket.socket, int] | None = None,
    ) -> None:
        self._loop = loop
        self._sockets: list[socket.socket] | None = sockets
        # Weak, so an abandoned transport is still collected and warns about being unclosed.
        self._clients: weakref.WeakSet[Any] = weakref.WeakSet()
        if sys.version_info < (3, 13):
            self._active_count = 0  # attached connections, tidal's and asyncio's transports
        self._waiters: list[asyncio.Future[None]] | None = []
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut: asyncio.Future[None] | None = None
        # Unix socket -> inode of its file, removed on close if still the same file (3.13).
        self._unix_inodes = unix_inodes or {}

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} sockets={self.sockets!r}>"

    # -- transports report in and out ----------------------------------------------------------

    if sys.version_info >= (3, 13):

        def _attach(self, transport: Any) -> None:
            self._clients.add(transport)

        def _detach(self, transport: Any) -> None:
            self._clients.discard(transport)
            if len(self._clients) == 0 and self._sockets is None:
                self._wakeup()

        def _has_clients(self) -> bool:
            return len(self._clients) > 0

    else:

        def _attach(self, transport: Any = None) -> None:
            self._active_count += 1
            if transport is not None:
                self._clients.add(transport)

        def _detach(self, transport: Any = None) -> None:
            self._active_count -= 1
            if transport is not None:
                self._clients.discard(transport)
            if self._active_count == 0 and self._sockets is None:
                self._wakeup()

        def _has_clients(self) -> bool:
            return self._active_count > 0

    def _wakeup(self) -> None:
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # -- serving -------------------------------------------------------------------------------

    def _start_serving(self) -> None:
        if self._serving or self._sockets is None:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            _start_accepting(self._loop, self, sock)

    def get_loop(self) -> EventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[Any, ...]:
        if self._sockets is None:
            return ()
        return tuple(TransportSocket(s) for s in self._sockets)

    def close(self) -> None:
        """Stop listening and close the listening sockets; connections stay open."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for sock in sockets:
            stop_accepting(self._loop, sock, self._unix_inodes.pop(sock, None))
        self._serving = False
        fut = self._serving_forever_fut
        if fut is not None and not fut.done():
            fut.cancel()
            self._serving_forever_fut = None
        if not self._has_clients():
            self._wakeup()

    def close_clients(self) -> None:
        """Close every connection this server accepted (after their buffers flush)."""
        for transport in self._clients.copy():
            transport.close()

    def abort_clients(self) -> None:
        """Abort every connection this server accepted, dropping buffered data."""
        for transport in self._clients.copy():
            transport.abort()

    async def start_serving(self) -> None:
        """Start accepting connections (no-op if already serving)."""
        self._start_serving()
        await asyncio.sleep(0)  # one turn, so the accept readers are registered on return

    async def serve_forever(self) -> None:
        """Accept connections until cancelled; cancelling closes the server.

        Raises:
            RuntimeError: already awaited by another ``serve_forever()``, or closed.
        """
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self) -> None:
        """Wait until the server is closed and (on 3.12+) all its connections are gone."""
        if self._waiters is None:
            return
        if not _WAIT_FOR_CLIENTS and self._sockets is None:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


# -- accepting -------------------------------------------------------------------------------


def _start_accepting(loop: EventLoop, server: Server, sock: socket.socket) -> None:
    handle = Handle(_accept_ready, (loop, server, sock), loop, contextvars.copy_context())
    watch(loop, sock.fileno(), EVENT_READ, handle)


def stop_accepting(loop: EventLoop, sock: socket.socket, unix_inode: int | None = None) -> None:
    """Stop watching a listening socket and close it (removing its Unix socket file if
    ``unix_inode`` says the file is still the one this server created)."""
    loop._remove_watcher(sock.fileno(), EVENT_READ)
    if unix_inode is not None:
        path = sock.getsockname()
        try:
            if os.stat(path).st_ino == unix_inode:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)
    sock.close()


def _accept_ready(loop: EventLoop, server: Server, sock: socket.socket) -> None:
    """Accept what is waiting, up to ``backlog`` connections per readiness event.

    Several connections can be queued behind one event (https://bugs.python.org/issue27906),
    so looping here saves a poll per connection; the bound keeps other work from starving.
    """
    for _ in range(server._backlog):
        try:
            conn, addr = sock.accept()
            if loop._debug:
                logger.debug("%r got a new connection from %r: %r", server, addr, conn)
            conn.setblocking(False)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # nothing more queued (or the peer gave up before we got to it)
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise  # reported by the loop; the server keeps listening
            # Out of descriptors or memory: Linux keeps the socket readable, so stop watching
            # for a while instead of spinning.
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": TransportSocket(sock),
                }
            )
            loop._remove_watcher(sock.fileno(), EVENT_READ)
            loop.call_later(ACCEPT_RETRY_DELAY, _resume_accepting, loop, server, sock)
            return
        if server._ssl_context:
            loop.create_task(_accept_tls(loop, server, conn, addr))
        else:
            _accept_plain(loop, server, conn, addr)


def _resume_accepting(loop: EventLoop, server: Server, sock: socket.socket) -> None:
    if server._sockets is not None and sock in server._sockets:
        _start_accepting(loop, server, sock)


def _accept_plain(loop: EventLoop, server: Server, conn: socket.socket, addr: Any) -> None:
    """Wrap an accepted socket in a transport at once: no task, no waiter (nothing to await)."""
    protocol = None
    try:
        protocol = server._protocol_factory()
        SocketTransport(loop, conn, protocol, None, {"peername": addr}, server)
    except FATAL_EXCEPTIONS:
        raise
    except BaseException as exc:
        conn.close()
        if loop._debug:
            context: dict[str, Any] = {
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            }
            if protocol is not None:
                context["protocol"] = protocol
            loop.call_exception_handler(context)


async def _accept_tls(loop: EventLoop, server: Server, conn: socket.socket, addr: Any) -> None:
    from .. import tls

    protocol = None
    transport = None
    try:
        protocol = server._protocol_factory()
        waiter = loop.create_future()
        transport = tls.make_ssl_transport(
            loop,
            conn,
            protocol,
            server._ssl_context,
            waiter,
            server_side=True,
            extra={"peername": addr},
            server=server,
            ssl_handshake_timeout=server._ssl_handshake_timeout,
            ssl_shutdown_timeout=server._ssl_shutdown_timeout,
        )
        try:
            await waiter
        except BaseException:
            transport.close()
            waiter = None  # type: ignore[assignment]  # drop the exception -> protocol cycle
            raise
    except FATAL_EXCEPTIONS:
        raise
    except BaseException as exc:
        if transport is None:
            conn.close()
        if loop._debug:
            context: dict[str, Any] = {
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            }
            if protocol is not None:
                context["protocol"] = protocol
            if transport is not None:
                context["transport"] = transport
            loop.call_exception_handler(context)


# -- creating servers -----------------------------------------------------------------------


def _check_ssl_arguments(
    ssl: Any, ssl_handshake_timeout: float | None, ssl_shutdown_timeout: float | None
) -> None:
    if isinstance(ssl, bool):
        raise TypeError("ssl argument must be an SSLContext or None")
    if ssl_handshake_timeout is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl_shutdown_timeout is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


async def create_server(
    loop: EventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: Any = None,
    port: Any = None,
    *,
    family: int = socket.AF_UNSPEC,
    flags: int = socket.AI_PASSIVE,
    sock: socket.socket | None = None,
    backlog: int = 100,
    ssl: Any = None,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    keep_alive: bool | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    start_serving: bool = True,
) -> Server:
    _check_ssl_arguments(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
    if sock is not None:
        check_ssl_socket(sock)
    if host is not None or port is not None:
        if sock is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
        if reuse_address is None:
            reuse_address = os.name == "posix" and sys.platform != "cygwin"
        if host == "":
            hosts: list[Any] = [None]
        elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
            hosts = [host]
        else:
            hosts = list(host)
        resolved = await asyncio.gather(
            *(_server_addrinfo(loop, h, port, family, flags) for h in hosts)
        )
        infos = set(itertools.chain.from_iterable(resolved))
        sockets = _bind_server_sockets(loop, infos, reuse_address, reuse_port, keep_alive)
    else:
        if sock is None:
            raise ValueError("Neither host/port nor sock were specified")
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        sockets = [sock]
    for s in sockets:
        s.setblocking(False)
    server = Server(
        loop, sockets, protocol_factory, ssl, backlog, ssl_handshake_timeout, ssl_shutdown_timeout
    )
    if start_serving:
        server._start_serving()
        await asyncio.sleep(0)  # one turn, as asyncio: readers are registered on return
    if loop._debug:
        logger.info("%r is serving", server)
    return server


async def _server_addrinfo(
    loop: EventLoop, host: Any, port: Any, family: int, flags: int
) -> list[Any]:
    infos = await ensure_resolved(
        loop, (host, port), family=family, type=socket.SOCK_STREAM, flags=flags
    )
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned empty list")
    return infos


def _bind_server_sockets(
    loop: EventLoop,
    infos: set[Any],
    reuse_address: bool | None,
    reuse_port: bool | None,
    keep_alive: bool | None,
) -> list[socket.socket]:
    """One bound socket per distinct address; all closed again if any bind fails."""
    sockets: list[socket.socket] = []
    completed = False
    try:
        for af, socktype, proto, _canonname, sa in infos:
            try:
                sock = socket.socket(af, socktype, proto)
            except OSError:
                if loop._debug:
                    logger.warning(
                        "create_server() failed to create socket.socket(%r, %r, %r)",
                        af,
                        socktype,
                        proto,
                        exc_info=True,
                    )
                continue
            sockets.append(sock)
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
            if reuse_port:
                set_reuseport(sock)
            if keep_alive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
            if _HAS_IPV6 and af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                # Bind IPv6 sockets to IPv6 only, so an IPv4 socket can share the port.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            try:
                sock.bind(sa)
            except OSError as err:
                if not _SKIP_UNAVAILABLE_ADDRESSES:
                    reason = (err.strerror or str(err)).lower()
                    message = f"error while attempting to bind on address {sa!r}: {reason}"
                    raise OSError(err.errno, message) from None
                message = f"error while attempting to bind on address {sa!r}: {str(err).lower()}"
                if err.errno == errno.EADDRNOTAVAIL:
                    sockets.pop()
                    sock.close()
                    if loop._debug:
                        logger.warning(message)
                    continue
                raise OSError(err.errno, message) from None
        if not sockets:
            raise OSError(f"could not bind on any address out of {[info[4] for info in infos]!r}")
        completed = True
    finally:
        if not completed:
            for sock in sockets:
                sock.close()
    return sockets


async def create_unix_server(
    loop: EventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    path: Any = None,
    *,
    sock: socket.socket | None = None,
    backlog: int = 100,
    ssl: Any = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    start_serving: bool = True,
    cleanup_socket: bool = _CLEANUP_UNIX_SOCKET_DEFAULT,
) -> Server:
    _check_ssl_arguments(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
    if path is not None:
        if sock is not None:
            raise ValueError("path and sock can not be specified at the same time")
        path = os.fspath(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if path[0] not in (0, "\x00"):  # not an abstract socket: clear a stale file
            remove_stale_unix_socket(path)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
            raise
        except BaseException:
            sock.close()
            raise
    else:
        if sock is None:
            raise ValueError("path was not specified, and no sock specified")
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
    inodes: dict[socket.socket, int] = {}
    if cleanup_socket:
        name = sock.getsockname()
        if name and name[0] not in (0, "\x00"):
            try:
                inodes[sock] = os.stat(name).st_ino
            except FileNotFoundError:
                pass
    sock.setblocking(False)
    server = Server(
        loop,
        [sock],
        protocol_factory,
        ssl,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
        unix_inodes=inodes,
    )
    if start_serving:
        server._start_serving()
        await asyncio.sleep(0)
    return server
