"""Making connections: name resolution, happy eyeballs, and the endpoint constructors.

Owns: ``ensure_resolved`` (skip ``getaddrinfo`` for numeric addresses), address interleaving,
the staggered connection race (RFC 8305 "happy eyeballs"), ``create_connection``,
``create_unix_connection``, ``connect_accepted_socket``, ``create_datagram_endpoint`` and the
step every one of them ends with: wrapping a connected socket in a transport.
Not here: the socket coroutines (net/sockops.py), transports (tidal.transports), TLS
(tidal.tls), servers (net/serve.py).

Invariants:
- A socket created here is closed on every failure path, including cancellation.
- Argument errors raise what asyncio raises (ValueError/TypeError) before any I/O starts.
- In a happy-eyeballs race exactly one socket survives; late winners are closed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..transports.datagram import DatagramTransport
from ..transports.stream import SocketTransport
from .sockops import check_ssl_socket

if TYPE_CHECKING:
    from ..loop import EventLoop

_HAS_IPV6 = hasattr(socket, "AF_INET6")
AddrInfo = tuple[Any, Any, Any, Any, Any]


# -- name resolution -------------------------------------------------------------------------


def ipaddr_info(
    host: Any, port: Any, family: int, type: int, proto: int, *rest: Any
) -> AddrInfo | None:
    """Return an addrinfo tuple for a numeric ``host``, or None if resolution is needed.

    ``rest`` carries IPv6 flowinfo and scope id when the caller gave a 4-tuple address.
    """
    if host is None or proto not in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        return None
    if type == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    if port is None or port == b"" or port == "":
        port = 0
    else:
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None  # a service name such as "http": getaddrinfo knows it
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        return None  # Linux's inet_pton rejects IPv6 zone indexes such as "::1%lo"
    if family:
        families = [family]
    else:
        families = [socket.AF_INET, socket.AF_INET6] if _HAS_IPV6 else [socket.AF_INET]
    for af in families:
        try:
            socket.inet_pton(af, host)
        except (OSError, ValueError):
            continue
        if _HAS_IPV6 and af == socket.AF_INET6:
            flowinfo, scopeid = (*rest, 0, 0)[:2]
            return af, type, proto, "", (host, port, flowinfo, scopeid)
        return af, type, proto, "", (host, port)
    return None


async def ensure_resolved(
    loop: EventLoop,
    address: Any,
    *,
    family: int = 0,
    type: int = socket.SOCK_STREAM,
    proto: int = 0,
    flags: int = 0,
) -> list[AddrInfo]:
    """Resolve ``address`` (host, port[, flowinfo, scopeid]) without blocking the loop."""
    host, port = address[:2]
    info = ipaddr_info(host, port, family, type, proto, *address[2:])
    if info is not None:
        return [info]
    return await loop.getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)


def interleave_addrinfos(infos: list[AddrInfo], first_family_count: int = 1) -> list[AddrInfo]:
    """Reorder ``infos`` so address families alternate (RFC 8305 section 4).

    The first family (in the resolver's order) keeps ``first_family_count`` addresses at the
    front; after that, families take turns.
    """
    by_family: dict[int, list[AddrInfo]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    ordered: list[AddrInfo] = []
    if first_family_count > 1:
        ordered.extend(queues[0][: first_family_count - 1])
        del queues[0][: first_family_count - 1]
    position = 0
    while any(queues):
        queue = queues[position % len(queues)]
        if queue:
            ordered.append(queue.pop(0))
        position += 1
    return ordered


# -- connecting ------------------------------------------------------------------------------


async def _connect_sock(
    loop: EventLoop,
    errors: list[list[OSError]],
    addr_info: AddrInfo,
    local_addr_infos: list[AddrInfo] | None,
) -> socket.socket:
    """Create, bind and connect one socket for ``addr_info``; close it on any failure."""
    mine: list[OSError] = []
    errors.append(mine)
    family, type_, proto, _, address = addr_info
    sock = None
    try:
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setblocking(False)
        if local_addr_infos is not None:
            for lfamily, _, _, _, laddr in local_addr_infos:
                if lfamily != family:
                    continue  # a local address of another family cannot be bound here
                try:
                    sock.bind(laddr)
                    break
                except OSError as exc:
                    message = (
                        f"error while attempting to bind on address {laddr!r}: {str(exc).lower()}"
                    )
                    mine.append(OSError(exc.errno, message))
            else:
                if mine:
                    raise mine.pop()
                raise OSError(f"no matching local address with family={family} found")
        await loop.sock_connect(sock, address)
        return sock
    except OSError as exc:
        mine.append(exc)
        if sock is not None:
            sock.close()
        raise
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    finally:
        del errors, mine  # an error's traceback keeps this frame: it must not keep the errors


async def _race(
    loop: EventLoop,
    attempts: Iterable[Callable[[], Any]],
    delay: float,
) -> socket.socket | None:
    """Happy eyeballs: start an attempt, and the next one after ``delay`` s or on failure.

    The first attempt to connect wins; the others are cancelled, and a socket from one that
    connected anyway is closed. Returns None when every attempt failed.
    """
    pending: set[asyncio.Task[socket.socket]] = set()
    upcoming = iter(attempts)
    winner: socket.socket | None = None
    exhausted = False

    def start_next() -> None:
        nonlocal exhausted
        attempt = next(upcoming, None)
        if attempt is None:
            exhausted = True
        else:
            pending.add(loop.create_task(attempt()))

    try:
        start_next()
        while pending:
            done, _ = await asyncio.wait(
                pending,
                timeout=None if exhausted else delay,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                start_next()  # the delay passed with no answer: race one more address
                continue
            for task in done:
                pending.discard(task)
                if winner is None and not task.cancelled() and task.exception() is None:
                    winner = task.result()
                else:
                    _discard_attempt(task)
            if winner is not None:
                break
            start_next()  # an attempt failed: start the next one at once
        return winner
    finally:
        for task in pending:
            task.cancel()
            task.add_done_callback(_discard_attempt)


def _discard_attempt(task: asyncio.Task[socket.socket]) -> None:
    """Collect a losing attempt: close its socket if it connected after all."""
    if task.cancelled():
        return
    if task.exception() is None:
        task.result().close()


async def create_connection(
    loop: EventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: Any = None,
    port: Any = None,
    *,
    ssl: Any = None,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    sock: socket.socket | None = None,
    local_addr: Any = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    happy_eyeballs_delay: float | None = None,
    interleave: int | None = None,
    all_errors: bool = False,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    if server_hostname is not None and not ssl:
        raise ValueError("server_hostname is only meaningful with ssl")
    if server_hostname is None and ssl:
        if not host:
            raise ValueError(
                "You must set server_hostname when using ssl without a host "
                "(pass server_hostname='' to skip the hostname check)"
            )
        server_hostname = host
    if ssl_handshake_timeout is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl_shutdown_timeout is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
    if sock is not None:
        check_ssl_socket(sock)
    if happy_eyeballs_delay is not None and interleave is None:
        interleave = 1  # happy eyeballs interleaves families by default

    if host is not None or port is not None:
        if sock is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
        infos = await ensure_resolved(
            loop, (host, port), family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
        )
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        laddr_infos = None
        if local_addr is not None:
            laddr_infos = await ensure_resolved(
                loop, local_addr, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
            )
            if not laddr_infos:
                raise OSError("getaddrinfo() returned empty list")
        if interleave:
            infos = interleave_addrinfos(infos, interleave)
        errors: list[list[OSError]] = []
        if happy_eyeballs_delay is None:
            for info in infos:
                try:
                    sock = await _connect_sock(loop, errors, info, laddr_infos)
                    break
                except OSError:
                    continue
        else:
            sock = await _race(
                loop,
                (_attempt(loop, errors, info, laddr_infos) for info in infos),
                happy_eyeballs_delay,
            )
        if sock is None:
            try:
                raise _connection_error([exc for group in errors for exc in group], all_errors)
            finally:
                del errors  # the traceback keeps this frame: it must not keep the errors too
    else:
        if sock is None:
            raise ValueError("host and port was not specified and no sock specified")
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")

    return await make_connection_transport(
        loop,
        sock,
        protocol_factory,
        ssl,
        server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )


def _attempt(
    loop: EventLoop,
    errors: list[list[OSError]],
    info: AddrInfo,
    laddr_infos: list[AddrInfo] | None,
) -> Callable[[], Any]:
    return lambda: _connect_sock(loop, errors, info, laddr_infos)


def _connection_error(errors: list[OSError], all_errors: bool) -> BaseException:
    """The exception asyncio raises when no address could be connected."""
    if all_errors:
        return ExceptionGroup("create_connection failed", errors)
    if len(errors) == 1:
        return errors[0]
    model = str(errors[0])
    if all(str(exc) == model for exc in errors):
        return errors[0]
    return OSError("Multiple exceptions: {}".format(", ".join(str(exc) for exc in errors)))


async def make_connection_transport(
    loop: EventLoop,
    sock: socket.socket,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    ssl: Any,
    server_hostname: str | None,
    *,
    server_side: bool = False,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    """Wrap a connected socket in a transport; return once ``connection_made`` has run."""
    sock.setblocking(False)
    transport: asyncio.BaseTransport
    try:
        protocol = protocol_factory()
        waiter = loop.create_future()
        if ssl:
            from .. import tls

            transport = tls.make_ssl_transport(
                loop,
                sock,
                protocol,
                None if isinstance(ssl, bool) else ssl,
                waiter,
                server_side=server_side,
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
        else:
            transport = SocketTransport(loop, sock, protocol, waiter)
    except BaseException:
        sock.close()  # no transport owns it yet (a failing factory, bad TLS arguments)
        raise
    try:
        await waiter
    except BaseException:
        transport.close()
        # The exception's traceback keeps this frame alive: let go of the connection objects.
        del transport, protocol, waiter
        raise
    return transport, protocol


async def create_unix_connection(
    loop: EventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    path: Any = None,
    *,
    ssl: Any = None,
    sock: socket.socket | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    if ssl:
        if server_hostname is None:
            raise ValueError("you have to pass server_hostname when using ssl")
    else:
        if server_hostname is not None:
            raise ValueError("server_hostname is only meaningful with ssl")
        if ssl_handshake_timeout is not None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
    if path is not None:
        if sock is not None:
            raise ValueError("path and sock can not be specified at the same time")
        path = os.fspath(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
    else:
        if sock is None:
            raise ValueError("no path and sock were specified")
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        sock.setblocking(False)
    return await make_connection_transport(
        loop,
        sock,
        protocol_factory,
        ssl,
        server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )


async def connect_accepted_socket(
    loop: EventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    sock: socket.socket,
    *,
    ssl: Any = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"A Stream Socket was expected, got {sock!r}")
    if ssl_handshake_timeout is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl_shutdown_timeout is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
    check_ssl_socket(sock)
    return await make_connection_transport(
        loop,
        sock,
        protocol_factory,
        ssl,
        "",
        server_side=True,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )


# -- datagrams ----------------------------------------------------------------------------------


async def create_datagram_endpoint(
    loop: EventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    local_addr: Any = None,
    remote_addr: Any = None,
    *,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    reuse_port: bool | None = None,
    allow_broadcast: bool | None = None,
    sock: socket.socket | None = None,
) -> tuple[asyncio.DatagramTransport, asyncio.BaseProtocol]:
    remote: Any = None
    if sock is not None:
        # 3.13 refuses only stream sockets; 3.11 and 3.12 accept nothing but SOCK_DGRAM.
        if sys.version_info >= (3, 13):
            if sock.type == socket.SOCK_STREAM:
                raise ValueError(f"A datagram socket was expected, got {sock!r}")
        elif sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"A UDP Socket was expected, got {sock!r}")
        options = {
            "local_addr": local_addr,
            "remote_addr": remote_addr,
            "family": family,
            "proto": proto,
            "flags": flags,
            "reuse_port": reuse_port,
            "allow_broadcast": allow_broadcast,
        }
        if any(options.values()):
            problems = ", ".join(f"{k}={v}" for k, v in options.items() if v)
            raise ValueError(
                f"socket modifier keyword arguments can not be used when sock is specified. "
                f"({problems})"
            )
        sock.setblocking(False)
    else:
        sock, remote = await _open_datagram_socket(
            loop, local_addr, remote_addr, family, proto, flags, reuse_port, allow_broadcast
        )
    protocol = protocol_factory()
    waiter = loop.create_future()
    transport = DatagramTransport(loop, sock, protocol, remote, waiter)
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return transport, protocol


async def _open_datagram_socket(
    loop: EventLoop,
    local_addr: Any,
    remote_addr: Any,
    family: int,
    proto: int,
    flags: int,
    reuse_port: bool | None,
    allow_broadcast: bool | None,
) -> tuple[socket.socket, Any]:
    """Resolve, create, bind and (unless broadcasting) connect a datagram socket."""
    pairs: list[tuple[tuple[int, int], list[Any]]]
    if not (local_addr or remote_addr):
        if family == 0:
            raise ValueError("unexpected address family")
        pairs = [((family, proto), [None, None])]
    elif hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
        for addr in (local_addr, remote_addr):
            if addr is not None and not isinstance(addr, str):
                raise TypeError("string is expected")
        if local_addr and local_addr[0] not in (0, "\x00"):
            remove_stale_unix_socket(local_addr)
        pairs = [((family, proto), [local_addr, remote_addr])]
    else:
        by_key: dict[tuple[int, int], list[Any]] = {}
        for index, addr in ((0, local_addr), (1, remote_addr)):
            if addr is None:
                continue
            if not (isinstance(addr, tuple) and len(addr) == 2):
                raise TypeError("2-tuple is expected")
            infos = await ensure_resolved(
                loop, addr, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            for fam, _, pro, _, address in infos:
                by_key.setdefault((fam, pro), [None, None])[index] = address
        pairs = [
            (key, pair)
            for key, pair in by_key.items()
            if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
        ]
        if not pairs:
            raise ValueError("can not get address information")
    errors: list[OSError] = []
    for (fam, pro), (local_address, remote_address) in pairs:
        sock = None
        try:
            sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
            if reuse_port:
                set_reuseport(sock)
            if allow_broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            if local_addr:
                sock.bind(local_address)
            remote = None
            if remote_addr:
                if not allow_broadcast:
                    await loop.sock_connect(sock, remote_address)
                remote = remote_address
        except OSError as exc:
            if sock is not None:
                sock.close()
            errors.append(exc)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        else:
            return sock, remote
    raise errors[0]


def set_reuseport(sock: socket.socket) -> None:
    """Set SO_REUSEPORT, or raise ValueError where the platform lacks it (asyncio's wording)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


def remove_stale_unix_socket(path: Any) -> None:
    """Remove a socket file left by a previous run so that ``bind`` can succeed."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        from ..core.scheduler import logger

        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)
