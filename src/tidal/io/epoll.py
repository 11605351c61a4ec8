"""A poller built directly on ``select.epoll`` (Linux), for the loop's I/O hot path.

Owns: ``EpollPoller``, the descriptor table (fd -> ``Registration``) and the epoll instance.
Not here: what a registration's ``data`` means (core/scheduler.py keeps its
``(reader_handle, writer_handle)`` pair there), the portable fallback (io/poller.py).

Why not ``selectors.EpollSelector``: it is correct and general, but each call pays for that
generality in Python code the loop runs once or twice per I/O operation: ``get_key`` and
``register`` resolve the file object through two helper functions and ``isinstance`` checks,
every ``register``/``modify`` builds a new ``SelectorKey`` named tuple, and ``select`` looks each
ready descriptor up through a helper method. Here the common case (an ``int`` descriptor) is one
``type`` test and one dict operation, registrations are updated in place, and ``select`` is one
loop over ``epoll.poll``'s result. Measured with ``benchmarks/net_echo.py -r 7`` on 3.11
(medians of interleaved runs, tidal's time): echo_sockets_1k 376 -> 336 ms, echo_sockets_64k
93 -> 86 ms; the other echo benchmarks poll once per message and move by 1-3%.

Contract: the same as ``selectors.BaseSelector`` for the methods in ``io/poller.Poller``, with
the same exceptions (ValueError for a bad file object or event mask, KeyError for a descriptor
registered twice or not at all), so the scheduler, observers and test harnesses that swap in
a ``selectors`` object of their own see no difference. The keys handed out are
``Registration`` objects (same field names as ``SelectorKey``) that ``modify`` updates in place:
callers must read a key's fields when they use them rather than keep a key as a snapshot.

Some facts about epoll this relies on:
- epoll watches open file *descriptions*, not descriptor numbers; closing the last descriptor of
  one removes it from the epoll set by itself, which is why ``unregister`` ignores the OSError
  (EBADF or ENOENT) it gets for a descriptor closed before it was unregistered, as selectors does.
- EPOLLERR and EPOLLHUP are always reported, whatever was asked for; like selectors, any bit
  other than EPOLLIN counts as writable and any bit other than EPOLLOUT as readable, then the
  result is masked with what the registration asked for.
- ``epoll.poll`` retries on EINTR by itself (PEP 475) and rounds its timeout down to whole
  milliseconds, so the timeout is rounded *up* here: a turn never wakes before its timer is due.

One-shot registrations (``register_oneshot``, for the loop's one-shot socket operations in
net/sockops.py): the kernel entry carries EPOLLONESHOT, so after it reported one event it stays
in the epoll set but is disarmed and reports nothing until re-armed. Such an entry, once it
fired, can be *parked* (``park``): dropped from the table with no syscall, and re-armed later
with one ``epoll_ctl(MOD)`` instead of an ADD now and a DEL later. A parked entry is safe
whatever happens to its descriptor meanwhile, because it is silent: closed (the kernel drops
it), closed while a duplicate keeps the file open (it stays, disarmed, and never reports under
the reused number), or reused by a new file (epoll keys entries by file *and* number, so an
ADD for the new file succeeds, and a MOD fails with ENOENT and falls back to ADD). Any register
of a number whose file still has a parked entry gets EEXIST and falls back to MOD.

Invariant: a descriptor is in ``_table`` exactly while it is registered and armed with
``_epoll`` (``unregister`` removes it from the table even when the kernel had already dropped
it); a descriptor in ``_parked`` is not in ``_table`` and may have a disarmed kernel entry.
"""

from __future__ import annotations

import math
import select
from typing import Any, Final, final

from .poller import EVENT_READ, EVENT_WRITE

_EPOLLIN: Final = select.EPOLLIN
_EPOLLOUT: Final = select.EPOLLOUT
_EPOLLONESHOT: Final = select.EPOLLONESHOT
_NOT_EPOLLIN: Final = ~select.EPOLLIN
_NOT_EPOLLOUT: Final = ~select.EPOLLOUT
_ALL_EVENTS: Final = EVENT_READ | EVENT_WRITE


def _to_epoll(events: int) -> int:
    return (_EPOLLIN if events & EVENT_READ else 0) | (_EPOLLOUT if events & EVENT_WRITE else 0)


@final
class Registration:
    """One registered descriptor; duck-compatible with ``selectors.SelectorKey``."""

    __slots__ = ("data", "events", "fd", "fileobj", "oneshot")

    def __init__(self, fileobj: Any, fd: int, events: int, data: Any) -> None:
        self.fileobj = fileobj  # what the caller registered: an int or an object with fileno()
        self.fd = fd  # its descriptor number, the key of the table
        self.events = events  # EVENT_READ | EVENT_WRITE bits asked for
        self.data = data  # the caller's data (the scheduler's (reader, writer) pair)
        self.oneshot = False  # the kernel entry has EPOLLONESHOT (register_oneshot)

    def __repr__(self) -> str:
        return (
            f"Registration(fileobj={self.fileobj!r}, fd={self.fd}, "
            f"events={self.events}, data={self.data!r})"
        )


@final
class EpollPoller:
    """The ``Poller`` protocol on one ``select.epoll`` object, with a dict of registrations."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._table: dict[int, Registration] = {}  # fd -> its registration (module invariant)
        self._parked: set[int] = set()  # fds whose fired one-shot entry may still be in the set

    def fileno(self) -> int:
        """The epoll instance's own descriptor."""
        return self._epoll.fileno()

    def _fd(self, fileobj: Any) -> int:
        """The descriptor number of ``fileobj``, as ``selectors`` resolves it.

        A file object that is already closed (``fileno()`` fails or gives -1) is found by
        identity among the registrations, so it can still be unregistered.
        """
        if type(fileobj) is int:  # fast path (precondition: a plain descriptor number)
            if fileobj < 0:
                raise ValueError(f"Invalid file descriptor: {fileobj}")
            return fileobj
        try:
            if isinstance(fileobj, int):
                fd = int(fileobj)
            else:
                fd = int(fileobj.fileno())
            if fd < 0:
                raise ValueError(f"Invalid file descriptor: {fd}")
        except (AttributeError, TypeError, ValueError):
            for registration in self._table.values():
                if registration.fileobj is fileobj:
                    return registration.fd
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
        return fd

    def register(self, fileobj: Any, events: int, data: Any = None) -> Registration:
        """Watch ``fileobj`` for ``events`` (EVENT_READ and/or EVENT_WRITE).

        Raises:
            ValueError: ``events`` is 0 or has other bits, or ``fileobj`` has no descriptor.
            KeyError: the descriptor is already registered.
            OSError: epoll refused it (a regular file, for instance).
        """
        if not events or events & ~_ALL_EVENTS:
            raise ValueError(f"Invalid events: {events!r}")
        fd = self._fd(fileobj)
        if fd in self._table:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        self._parked.discard(fd)
        try:
            self._epoll.register(fd, _to_epoll(events))
        except FileExistsError:  # a parked one-shot entry of this same file: re-arm it
            self._epoll.modify(fd, _to_epoll(events))
        registration = self._table[fd] = Registration(fileobj, fd, events, data)
        return registration

    def register_oneshot(self, fd: int, events: int, data: Any = None) -> Registration:
        """Watch descriptor ``fd`` for one report of ``events`` (EPOLLONESHOT).

        After the report the registration stays in the table but the kernel entry is
        disarmed: ``modify`` makes it an ordinary (armed) registration, ``park`` or
        ``unregister`` drop it.

        Raises:
            KeyError: ``fd`` is already registered.
            OSError: epoll refused it.
        """
        if fd in self._table:
            raise KeyError(f"FD {fd} is already registered")
        mask = _to_epoll(events) | _EPOLLONESHOT
        if fd in self._parked:  # most likely its own parked entry: one MOD re-arms it
            self._parked.discard(fd)
            try:
                self._epoll.modify(fd, mask)
            except FileNotFoundError:  # closed since, or another file now: a new entry
                self._epoll.register(fd, mask)
        else:
            try:
                self._epoll.register(fd, mask)
            except FileExistsError:
                self._epoll.modify(fd, mask)
        registration = self._table[fd] = Registration(fd, fd, events, data)
        registration.oneshot = True
        return registration

    def park(self, fd: int) -> bool:
        """Drop the one-shot registration of ``fd``, which has reported its event, no syscall.

        The caller guarantees the entry fired and was not re-armed since. Returns False (and
        changes nothing) if ``fd``'s registration is not one-shot: unregister it instead.
        """
        registration = self._table.get(fd)
        if registration is None or not registration.oneshot:
            return False
        del self._table[fd]
        self._parked.add(fd)
        return True

    def unregister(self, fileobj: Any) -> Registration:
        """Stop watching ``fileobj``; return its last registration.

        Raises:
            KeyError: it is not registered.
        """
        fd = self._fd(fileobj)
        try:
            registration = self._table.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed before it was unregistered: the kernel dropped it already
        return registration

    def modify(self, fileobj: Any, events: int, data: Any = None) -> Registration:
        """Change what ``fileobj`` is watched for and its data (no syscall if events are the same).

        Raises:
            KeyError: it is not registered.
            OSError: epoll refused the change (the descriptor is then unregistered).
        """
        fd = self._fd(fileobj)
        registration = self._table.get(fd)
        if registration is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if events != registration.events or registration.oneshot:
            try:  # a one-shot entry becomes an ordinary (and armed) one here
                self._epoll.modify(fd, _to_epoll(events))
            except BaseException:
                del self._table[fd]  # as selectors does: a failed modify unregisters
                raise
            registration.events = events
            registration.oneshot = False
        registration.data = data
        return registration

    def get_key(self, fileobj: Any) -> Registration:
        """Return the registration of ``fileobj``.

        Raises:
            KeyError: it is not registered.
        """
        registration = self._table.get(self._fd(fileobj))
        if registration is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return registration

    def get_map(self) -> dict[int, Registration]:
        """The registrations by descriptor (read-only by convention, as selectors' map)."""
        return self._table

    def select(self, timeout: float | None = None) -> list[tuple[Registration, int]]:
        """Wait up to ``timeout`` seconds (None: forever) for registered descriptors.

        Returns:
            ``(registration, events)`` pairs, ``events`` limited to what was asked for.
        """
        if timeout is None:
            timeout = -1
        elif timeout <= 0:
            timeout = 0
        else:
            timeout = math.ceil(timeout * 1e3) * 1e-3  # see the module's note on rounding
        table = self._table
        ready = []
        for fd, flags in self._epoll.poll(timeout, len(table) or 1):
            registration = table.get(fd)
            if registration is not None:
                events = (EVENT_WRITE if flags & _NOT_EPOLLIN else 0) | (
                    EVENT_READ if flags & _NOT_EPOLLOUT else 0
                )
                ready.append((registration, events & registration.events))
        return ready

    def close(self) -> None:
        """Release the epoll descriptor and forget every registration."""
        self._table.clear()
        self._parked.clear()
        self._epoll.close()
