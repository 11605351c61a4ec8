"""EpollPoller keeps selectors.EpollSelector's contract: same results, same exceptions.

Each scenario runs on both (the selector is the oracle), with real socket pairs.
"""

from __future__ import annotations

import select
import selectors
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tidal.io.poller import EVENT_READ, EVENT_WRITE, default_poller

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux-only")

if hasattr(select, "epoll"):
    from tidal.io.epoll import EpollPoller


@pytest.fixture(params=["selectors", "tidal"])
def poller(request: pytest.FixtureRequest) -> Iterator[Any]:
    made: Callable[[], Any] = (
        selectors.EpollSelector if request.param == "selectors" else EpollPoller
    )
    instance = made()
    yield instance
    instance.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _ready(poller: Any, timeout: float | None = 0) -> dict[int, tuple[int, Any]]:
    return {key.fd: (mask, key.data) for key, mask in poller.select(timeout)}


def test_default_poller_is_the_epoll_one() -> None:
    poller = default_poller()
    try:
        assert isinstance(poller, EpollPoller)
    finally:
        poller.close()


def test_readiness_is_masked_by_what_was_asked(poller: Any, pair: Any) -> None:
    a, b = pair
    poller.register(a, EVENT_READ, "a")
    poller.register(b.fileno(), EVENT_READ | EVENT_WRITE, "b")
    assert _ready(poller) == {b.fileno(): (EVENT_WRITE, "b")}
    b.send(b"x")
    assert _ready(poller, 1.0) == {
        a.fileno(): (EVENT_READ, "a"),
        b.fileno(): (EVENT_WRITE, "b"),
    }


def test_modify_changes_events_and_data(poller: Any, pair: Any) -> None:
    a, _ = pair
    poller.register(a, EVENT_READ, 1)
    key = poller.modify(a, EVENT_WRITE, 2)
    assert (key.fileobj, key.fd, key.events, key.data) == (a, a.fileno(), EVENT_WRITE, 2)
    assert poller.get_key(a.fileno()).data == 2
    assert _ready(poller) == {a.fileno(): (EVENT_WRITE, 2)}
    poller.modify(a, EVENT_WRITE, 3)  # same events: data only
    assert _ready(poller) == {a.fileno(): (EVENT_WRITE, 3)}


def test_a_peer_hangup_reads_as_readable(poller: Any, pair: Any) -> None:
    a, b = pair
    poller.register(a, EVENT_READ, None)
    b.close()
    assert _ready(poller, 1.0) == {a.fileno(): (EVENT_READ, None)}


def test_unregister_forgets_and_tolerates_a_closed_descriptor(poller: Any, pair: Any) -> None:
    a, b = pair
    poller.register(a, EVENT_READ, None)
    poller.register(b, EVENT_WRITE, None)
    assert poller.unregister(a).fileobj is a
    assert len(poller.get_map()) == 1
    b.close()  # the kernel drops it from the epoll set by itself
    assert poller.unregister(b).fileobj is b  # found by identity although fileno() is -1
    assert len(poller.get_map()) == 0
    assert poller.select(0) == []


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda p, s: p.register(s, 0), ValueError),
        (lambda p, s: p.register(s, 4), ValueError),
        (lambda p, s: p.register(-1, EVENT_READ), ValueError),
        (lambda p, s: p.register(object(), EVENT_READ), ValueError),
        (lambda p, s: p.unregister(s), KeyError),
        (lambda p, s: p.modify(s, EVENT_READ), KeyError),
        (lambda p, s: p.get_key(s), KeyError),
    ],
)
def test_bad_calls_raise_what_selectors_raises(
    poller: Any, pair: Any, call: Callable[[Any, Any], Any], exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        call(poller, pair[0])


def test_registering_twice_or_modifying_a_closed_socket(poller: Any, pair: Any) -> None:
    a, _ = pair
    poller.register(a, EVENT_READ)
    with pytest.raises(KeyError):
        poller.register(a.fileno(), EVENT_WRITE)
    assert poller.get_key(a).events == EVENT_READ
    a.close()
    with pytest.raises(OSError):
        poller.modify(a, EVENT_WRITE)
    assert len(poller.get_map()) == 0  # a failed modify unregisters


def test_a_regular_file_is_refused_and_not_kept(poller: Any, tmp_path: Any) -> None:
    with open(tmp_path / "f", "wb") as f:
        with pytest.raises(PermissionError):
            poller.register(f, EVENT_READ)
        assert len(poller.get_map()) == 0


def test_a_timeout_never_returns_early(poller: Any, pair: Any) -> None:
    import time

    poller.register(pair[0], EVENT_READ)
    started = time.monotonic()
    assert poller.select(0.0015) == []
    assert time.monotonic() - started >= 0.0015
